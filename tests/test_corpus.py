"""The malformed-input corpus (tests/corpus.py) through the CLI: each bad case one line naming the file, exit 2,
no traceback, nothing cached or written; each valid variant accepted."""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from corpus import DATA_CASES, SUBMISSION_CASES, Case, build_corpus, cli_args

from fkd.cli import main


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Case]:
    from fkd.competition.practice import make_practice

    root = tmp_path_factory.mktemp("corpus")
    make_practice(root / "_clean", seed=7, n_train=120, n_test=20)
    return {c.name: c for c in build_corpus(root / "_clean", root / "cases")}


def test_corpus_is_big_enough(corpus):
    bad = [c for c in corpus.values() if not c.valid]
    assert len(bad) >= 25 and {c.kind for c in bad} == {"data", "submission"}
    assert len(corpus) - len(bad) >= 4
    assert json.loads((Path(next(iter(corpus.values())).path).parent / "cases.json").read_text())


def _written(case: Case) -> set[Path]:
    """Files written while the case ran: the cache, a preview next to the case, anything new in cwd."""
    cache = Path(os.environ["FKD_CACHE_DIR"])
    out = set(cache.rglob("*")) if cache.exists() else set()
    out |= {p for p in Path.cwd().rglob("*") if p.is_file()}
    preview = Path(case.path).with_suffix(".preview.png")
    return out | ({preview} if preview.exists() else set())


@pytest.mark.parametrize("name", sorted(DATA_CASES) + sorted(SUBMISSION_CASES))
def test_case(corpus, name, capsys):
    case = corpus[name]
    before = _written(case)
    rc = main(cli_args(case))
    err = capsys.readouterr().err
    if case.valid:
        assert rc == 0, err
        return
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert case.expect in err, err
    assert case.path in err, "the error names the file or folder at fault"
    new = _written(case) - before
    assert not new, f"bad input left files behind: {sorted(map(str, new))}"
