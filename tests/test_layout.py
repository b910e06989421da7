"""The house by rooms (README, Layout): imports run one way between the parts, and every room stays small."""
import ast
from pathlib import Path

import fkd

PKG = Path(fkd.__file__).parent
# part -> the parts it may import (at module level or inside a function); shared tools are open to all
SHARED = {"atomic", "errors", "device", "cores", "children", "plots", "config", "fieldtypes", "__init__"}
ALLOWED = {
    "competition": set(),
    "learn": {"competition"},
    "kaggle": {"competition"},
    "infer": {"competition", "learn", "kaggle"},
    "report": {"competition", "learn", "kaggle", "infer", "remote"},
    "remote": {"competition", "learn", "kaggle", "infer"},
    "pipeline": {"competition", "learn", "kaggle", "infer", "report", "remote"},
    "cli": {"competition", "learn", "kaggle", "infer", "report", "pipeline", "remote"},
    "config": {"competition", "learn"},     # its name checks read the registries of learn
    "__main__": {"cli"},
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
ROUTE_TABLE = PKG / "kaggle" / "server" / "routes.py"    # one method per API call: allowed to grow as a table


def part_of(module: Path) -> str:
    rel = module.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _part(path: list[str]) -> str:
    """The part a dotted path inside fkd names; a plain attribute of the package (__version__) is its __init__."""
    first = path[0]
    return first if (PKG / first).is_dir() or (PKG / f"{first}.py").is_file() else "__init__"


def imported_parts(module: Path) -> set[str]:
    """The fkd parts a module imports, resolved from its relative and absolute imports."""
    here = module.relative_to(PKG).parent.parts
    out = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [target] if node.module else [[*base, a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "fkd":
                names = [node.module.split(".")[1:] or [a.name for a in node.names][:1]]
            else:
                continue
            out |= {_part(n) for n in names if n}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fkd.")}
    return out


def modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_imports_run_one_way():
    wrong = []
    for m in modules():
        part = part_of(m)
        for other in imported_parts(m) - {part} - SHARED - ALLOWED.get(part, set()):
            wrong.append(f"{m.relative_to(PKG)} imports {other}")
    assert not wrong, "imports that run back up or sideways:\n" + "\n".join(wrong)


def test_competition_and_kaggle_import_no_torch_at_module_level():
    heavy = []
    for m in modules():
        if part_of(m) not in ("competition", "kaggle"):
            continue
        for node in ast.parse(m.read_text()).body:          # module level only: lazy imports inside functions are fine
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            heavy += [f"{m.relative_to(PKG)}: {n}" for n in names if n.split(".")[0] in ("torch", "timm")]
    assert not heavy, heavy


def test_rooms_a_reader_can_hold():
    big = []
    for m in modules():
        text = m.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{m.relative_to(PKG)}: {text.count(chr(10))} lines")
        if m == ROUTE_TABLE:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{m.relative_to(PKG)}:{node.name}: {n} lines")
    assert not big, big


def test_the_layout_rule_sees_a_wrong_import(tmp_path):
    """The checker itself: a module of competition that imports learn is caught."""
    global PKG
    fake = tmp_path / "fkd"
    (fake / "competition").mkdir(parents=True)
    (fake / "competition" / "bad.py").write_text("from ..learn.models import create_model\n")
    (fake / "learn").mkdir()
    old, PKG = PKG, fake
    try:
        assert imported_parts(fake / "competition" / "bad.py") == {"learn"}
        assert part_of(fake / "competition" / "bad.py") == "competition"
    finally:
        PKG = old


def test_every_flag_says_what_it_does():
    """`fkd COMMAND --help` explains every argument (a thin face still says what each flag does)."""
    import argparse

    from fkd.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"fkd {name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
              if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not silent, silent
