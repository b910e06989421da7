"""The malformed-input corpus: damaged competition folders and submission files, each with the one-line error
fkd must give, plus valid variants fkd must accept.

    python tests/corpus.py OUT_DIR      # writes OUT_DIR/<case>/ and OUT_DIR/cases.json (makes its own practice data)

Every case starts from a clean practice competition (fkd makes it) and damages one thing. `tests/test_corpus.py`
runs each through the CLI (`fkd data --data-dir`, `fkd score`) and `make reliability` counts them.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Case:
    name: str
    kind: str          # "data": a competition folder; "submission": a CSV scored against the folder's solution
    path: str          # the folder (data) or the CSV (submission)
    expect: str        # a piece of the one-line error; "" = must be accepted
    data_dir: str = "" # submissions: the competition folder they are scored against

    @property
    def valid(self) -> bool:
        return not self.expect


def unzip_to_csv(d: Path, stem: str) -> bytes:
    """Replace d/<stem>.zip by d/<stem>.csv (Kaggle accepts either form); the CSV bytes."""
    with zipfile.ZipFile(d / f"{stem}.zip") as zf:
        raw = zf.read(f"{stem}.csv")
    (d / f"{stem}.zip").unlink()
    (d / f"{stem}.csv").write_bytes(raw)
    return raw


def _rewrite(stem: str, fn: Callable[[str], str]):
    def damage(d: Path):
        raw = unzip_to_csv(d, stem).decode()
        (d / f"{stem}.csv").write_text(fn(raw))
    return damage


def _line(i: int, fn: Callable[[str], str]) -> Callable[[str], str]:
    def edit(raw: str) -> str:
        lines = raw.split("\n")
        lines[i] = fn(lines[i])
        return "\n".join(lines)
    return edit


def _set_pixel(value: str) -> Callable[[str], str]:
    def edit(line: str) -> str:
        head, img = line.rsplit(",", 1)
        px = img.split(" ")
        px[5] = value
        return head + "," + " ".join(px)
    return edit


def _first_field(value: str) -> Callable[[str], str]:
    return lambda ln: value + "," + ln.split(",", 1)[1]


def _zip_slip(d: Path):
    with zipfile.ZipFile(d / "test.zip", "w") as zf:
        zf.writestr("../../evil/test.csv", "ImageId,Image\n")


def _zip_without_member(d: Path):
    with zipfile.ZipFile(d / "training.zip", "w") as zf:
        zf.writestr("other.csv", "x")


def _drop_first_column(raw: str) -> str:
    return "\n".join(ln.split(",", 1)[1] if ln else ln for ln in raw.split("\n"))


def _add_column(raw: str) -> str:
    return "\n".join(("extra," + ln if i == 0 else "1," + ln) if ln else ln for i, ln in enumerate(raw.split("\n")))


def _latin1_header(d: Path):
    raw = unzip_to_csv(d, "training")
    head, rest = raw.split(b"\n", 1)
    (d / "training.csv").write_bytes(head.replace(b"nose_tip_x", b"nose_tip_x\xe9") + b"\n" + rest)


def _utf16(stem: str):
    def damage(d: Path):
        raw = unzip_to_csv(d, stem)
        (d / f"{stem}.csv").write_bytes(raw.decode().encode("utf-16"))
    return damage


def _edit_lookup(fn: Callable[[str], str], line: int = 1):
    def damage(d: Path):
        p = d / "IdLookupTable.csv"
        lines = p.read_text().split("\n")
        lines[line] = fn(lines[line])
        p.write_text("\n".join(lines))
    return damage


def _lookup_text(fn: Callable[[str], str]):
    def damage(d: Path):
        p = d / "IdLookupTable.csv"
        p.write_text(fn(p.read_text()))
    return damage


def _crlf(d: Path):
    for stem in ("training", "test"):
        raw = unzip_to_csv(d, stem)
        (d / f"{stem}.csv").write_bytes(raw.replace(b"\n", b"\r\n"))


def _bom(d: Path):
    raw = unzip_to_csv(d, "training")
    (d / "training.csv").write_bytes(b"\xef\xbb\xbf" + raw)


def _plain(d: Path):
    unzip_to_csv(d, "training")
    unzip_to_csv(d, "test")


def _bundle(d: Path):
    """The competition's one-file download: <slug>.zip holding training.zip, test.zip and the CSVs."""
    files = [p for p in d.iterdir() if p.is_file()]
    with zipfile.ZipFile(d / "facial-keypoints-detection.zip", "w") as zf:
        for p in files:
            zf.write(p, p.name)
            p.unlink()


# name -> (damage, expected piece of the one-line error; "" = valid variant)
DATA_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_training": (lambda d: (d / "training.zip").unlink(), "training.csv not found"),
    "missing_test": (lambda d: (d / "test.zip").unlink(), "test.csv not found"),
    "missing_lookup": (lambda d: (d / "IdLookupTable.csv").unlink(), "IdLookupTable.csv not found"),
    "truncated_zip": (lambda d: (d / "training.zip").write_bytes((d / "training.zip").read_bytes()[:5000]),
                      "not a readable zip"),
    "empty_zip_file": (lambda d: (d / "test.zip").write_bytes(b""), "not a readable zip"),
    "garbage_zip": (lambda d: (d / "training.zip").write_bytes(b"PK\x03\x04broken"), "not a readable zip"),
    "zip_without_member": (_zip_without_member, "no training.csv inside"),
    "zip_slip": (_zip_slip, "unsafe zip member"),
    "empty_training": (_rewrite("training", lambda r: ""), "file is empty"),
    "header_only": (_rewrite("training", lambda r: r.split("\n")[0] + "\n"), "header but no rows"),
    "misspelt_column": (_rewrite("training", lambda r: r.replace("nose_tip_x", "nose_tipx", 1)),
                        "misspelt 'nose_tip_x'"),
    "missing_column": (_rewrite("training", _drop_first_column), "header mismatch"),
    "extra_column": (_rewrite("training", _add_column), "header mismatch"),
    "short_image": (_rewrite("training", _line(3, lambda ln: ln.rsplit(" ", 1)[0])), "line 4: Image has 9215 values"),
    "long_image": (_rewrite("training", _line(3, lambda ln: ln + " 7")), "line 4: Image has 9217 values"),
    "test_short_image": (_rewrite("test", _line(2, lambda ln: ln.rsplit(" ", 1)[0])), "line 3: Image has 9215 values"),
    "pixel_256": (_rewrite("training", _line(2, _set_pixel("256"))), "line 3: pixel value 256 is outside 0-255"),
    "pixel_negative": (_rewrite("training", _line(2, _set_pixel("-4"))), "line 3: Image holds a non-numeric character"),
    "pixel_text": (_rewrite("training", _line(5, _set_pixel("abc"))), "line 6: Image holds a non-numeric character"),
    "label_text": (_rewrite("training", _line(2, _first_field("oops"))),
                   "line 3, column left_eye_center_x: 'oops' is not a number"),
    "label_outside": (_rewrite("training", _line(2, _first_field("120.5"))), "outside the image"),
    "label_negative": (_rewrite("training", _line(2, _first_field("-3"))), "outside the image"),
    "latin1": (_latin1_header, "not UTF-8"),
    "utf16_test": (_utf16("test"), "not UTF-8"),
    "duplicate_imageid": (_rewrite("test", _line(2, _first_field("1"))), "duplicate ImageId 1"),
    "lookup_unknown_image": (_edit_lookup(lambda ln: ln.replace(",1,", ",999,", 1)),
                             "ImageId 999 is not in the test set"),
    "lookup_unknown_feature": (_edit_lookup(lambda ln: ln.replace("left_eye_center_x", "left_eye_centre_x")),
                               "unknown FeatureName 'left_eye_centre_x'"),
    "lookup_bad_header": (_lookup_text(lambda t: t.replace("FeatureName", "Feature", 1)), "IdLookupTable.csv"),
    "lookup_empty": (_lookup_text(lambda t: ""), "IdLookupTable.csv"),
    "not_a_folder": (lambda d: shutil.rmtree(d), "no such folder"),
    # valid variants
    "ok_plain_csv": (_plain, ""),
    "ok_crlf": (_crlf, ""),
    "ok_bom": (_bom, ""),
    "ok_bundle_zip": (_bundle, ""),
}


def _sub(fn: Callable[[list[str]], list[str]]):
    """A submission made from the solution (header + rows), then edited as lines."""
    def make(solution: Path, out: Path):
        lines = solution.read_text().strip("\n").split("\n")
        out.write_text("\n".join(fn(lines)) + "\n")
    return make


def _sub_bytes(fn: Callable[[bytes], bytes]):
    def make(solution: Path, out: Path):
        out.write_bytes(fn(solution.read_bytes()))
    return make


def _shuffled(lines: list[str]) -> list[str]:
    rows = lines[1:]
    random.Random(0).shuffle(rows)
    return [lines[0]] + rows


def _set_loc(i: int, value: str):
    def edit(lines):
        lines = list(lines)
        lines[i] = lines[i].split(",")[0] + "," + value
        return lines
    return edit


SUBMISSION_CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "sub_empty": (_sub_bytes(lambda b: b""), "file is empty"),
    "sub_header_only": (_sub(lambda ls: ls[:1]), "RowIds missing"),
    "sub_wrong_header": (_sub(lambda ls: ["Id,Location"] + ls[1:]), "expected 'RowId,Location'"),
    "sub_extra_column": (_sub(lambda ls: [ln + ",1" for ln in ls]), "expected 'RowId,Location'"),
    "sub_missing_rows": (_sub(lambda ls: ls[:-5]), "RowIds missing"),
    "sub_extra_rows": (_sub(lambda ls: ls + ["999999,40.0"]), "RowIds not in the solution"),
    "sub_duplicate_rowid": (_sub(lambda ls: ls[:3] + [ls[2]] + ls[4:]), "appears twice"),
    "sub_nan": (_sub(_set_loc(4, "nan")), "line 5"),
    "sub_empty_value": (_sub(_set_loc(4, "")), "line 5"),
    "sub_text_value": (_sub(_set_loc(6, "abc")), "line 7: Location 'abc' is not a number"),
    "sub_rowid_text": (_sub(lambda ls: ls[:2] + ["x1," + ls[2].split(",")[1]] + ls[3:]), "line 3: RowId"),
    "sub_utf16": (_sub_bytes(lambda b: b.decode().encode("utf-16")), "not UTF-8"),
    # valid variants
    "ok_sub_shuffled": (_sub(_shuffled), ""),
    "ok_sub_crlf": (_sub_bytes(lambda b: b.replace(b"\n", b"\r\n")), ""),
}


def build_corpus(clean: Path, out: Path) -> list[Case]:
    """Write every case under out/ from the clean competition folder `clean` (which has solution.csv)."""
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, (damage, expect) in DATA_CASES.items():
        d = out / name
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(clean, d)
        (d / "solution.csv").unlink(missing_ok=True)  # the folder is what a Kaggler downloads
        damage(d)
        cases.append(Case(name, "data", str(d), expect))
    base = out / "_scoring"
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(clean, base)
    for name, (make, expect) in SUBMISSION_CASES.items():
        p = out / f"{name}.csv"
        make(clean / "solution.csv", p)
        cases.append(Case(name, "submission", str(p), expect, data_dir=str(base)))
    (out / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


def cli_args(case: Case) -> list[str]:
    if case.kind == "data":
        return ["data", "--data-dir", case.path, "--out", str(Path(case.path).with_suffix(".preview.png"))]
    return ["score", case.path, "--solution", str(Path(case.data_dir) / "solution.csv")]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/corpus.py OUT_DIR")
    from fkd.competition.practice import make_practice

    out = Path(sys.argv[1])
    clean = out / "_clean"
    make_practice(clean, seed=7, n_train=120, n_test=20)
    cases = build_corpus(clean, out)
    bad = sum(not c.valid for c in cases)
    print(f"{len(cases)} cases ({bad} malformed, {len(cases) - bad} valid variants) in {out}")
