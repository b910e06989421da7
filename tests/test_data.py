"""The data layer: every form Kaggle gives, the cache, folds, and each bad input refused in one line."""
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fkd.competition import COMP
from fkd.data import COMMON, FULL, load_data, make_folds
from fkd.errors import FkdError


def unzip_to_csv(d: Path, name: str) -> bytes:
    raw = zipfile.ZipFile(d / f"{name}.zip").read(f"{name}.csv")
    (d / f"{name}.zip").unlink()
    (d / f"{name}.csv").write_bytes(raw)
    return raw


def test_loads_practice_arrays(practice_dir):
    d = load_data(practice_dir)
    assert d.images.shape == (600, 96, 96) and d.images.dtype == np.uint8
    assert d.keypoints.shape == (600, 30) and d.keypoints.dtype == np.float32
    assert d.test_images.shape == (80, 96, 96)
    # fully labelled rows are listed first; the rest carry only the 8 common columns
    assert (d.source[:180] == FULL).all() and (d.source[180:] == COMMON).all()
    common = np.array(COMP.common_mask)
    assert np.isnan(d.keypoints[180:][:, ~common]).all()
    assert set(d.lookup.columns) >= {"RowId", "ImageId", "FeatureName", "col", "img"}
    assert (d.test_source[:24] == FULL).all() and (d.test_source[24:] == COMMON).all()


def test_pixels_match_a_plain_parse(practice_dir):
    raw = zipfile.ZipFile(practice_dir / "training.zip").read("training.csv").decode()
    first = raw.splitlines()[1].rsplit(",", 1)[1]
    d = load_data(practice_dir)
    assert np.array_equal(d.images[0].ravel(), np.array(first.split(), dtype=np.uint8))


@pytest.mark.parametrize("form", ["plain", "nested", "bundle", "bundle_nested", "crlf", "bom"])
def test_every_kaggle_form_loads_the_same(practice_dir, tmp_path, form):
    ref = load_data(practice_dir, use_cache=False)
    d = tmp_path / form
    d.mkdir()
    files = {p.name: p.read_bytes() for p in practice_dir.iterdir()}
    if form == "nested":
        for n, b in files.items():
            (d / n).write_bytes(b)
    elif form in ("plain", "crlf", "bom"):
        for n, b in files.items():
            if n.endswith(".zip"):
                n, b = n.replace(".zip", ".csv"), zipfile.ZipFile(io.BytesIO(b)).read(n.replace(".zip", ".csv"))
            if form == "crlf":
                b = b.replace(b"\n", b"\r\n")
            if form == "bom":
                b = b"\xef\xbb\xbf" + b
            (d / n).write_bytes(b)
    else:
        with zipfile.ZipFile(d / COMP.files["bundle"], "w") as zf:
            for n, b in files.items():
                if n == "solution.csv":
                    continue
                if form == "bundle" and n.endswith(".zip"):
                    n, b = n.replace(".zip", ".csv"), zipfile.ZipFile(io.BytesIO(b)).read(n.replace(".zip", ".csv"))
                zf.writestr(n, b)
    got = load_data(d, use_cache=False)
    assert np.array_equal(got.images, ref.images)
    assert np.array_equal(got.keypoints, ref.keypoints, equal_nan=True)
    assert np.array_equal(got.test_images, ref.test_images)
    assert got.lookup.equals(ref.lookup)


def test_cache_is_used_and_invalidated(practice_copy):
    t = time.perf_counter()
    a = load_data(practice_copy)
    first = time.perf_counter() - t
    cache_files = list(Path(os.environ["FKD_CACHE_DIR"]).glob("*.npz"))
    assert len(cache_files) == 1
    b = load_data(practice_copy)
    assert np.array_equal(a.images, b.images)
    # a changed file is re-read: drop the last test image from the lookup table
    lk = practice_copy / COMP.files["lookup"]
    lines = lk.read_text().splitlines()
    keep = [ln for ln in lines if not ln.split(",")[1] == "80"]
    lk.write_text("\n".join(keep) + "\n")
    (practice_copy / COMP.files["sample"]).write_text(
        "RowId,Location\n" + "".join(f"{ln.split(',')[0]},0\n" for ln in keep[1:]))
    c = load_data(practice_copy)
    assert len(c.lookup) == len(keep) - 1 < len(a.lookup)
    assert first > 0


def test_folds_are_deterministic_and_stratified():
    src = np.r_[np.ones(30, np.int8), np.zeros(70, np.int8)]
    f1, f2 = make_folds(src, 5, seed=3), make_folds(src, 5, seed=3)
    assert np.array_equal(f1, f2) and not np.array_equal(f1, make_folds(src, 5, seed=4))
    for k in range(5):
        assert (src[f1 == k] == 1).sum() == 6 and (src[f1 == k] == 0).sum() == 14


# ------------------------------------------------------------------------------------ bad inputs
def _rewrite_training(d: Path, fn) -> None:
    raw = unzip_to_csv(d, "training").decode()
    (d / "training.csv").write_text(fn(raw))


def _rewrite_test(d: Path, fn) -> None:
    raw = unzip_to_csv(d, "test").decode()
    (d / "test.csv").write_text(fn(raw))


def _line(raw: str, i: int, fn) -> str:
    lines = raw.split("\n")
    lines[i] = fn(lines[i])
    return "\n".join(lines)


def _set_pixel(line: str, value: str) -> str:
    head, img = line.rsplit(",", 1)
    px = img.split(" ")
    px[5] = value
    return head + "," + " ".join(px)


BAD = {
    "missing_training": (lambda d: (d / "training.zip").unlink(), "training.csv not found"),
    "missing_test": (lambda d: (d / "test.zip").unlink(), "test.csv not found"),
    "missing_lookup": (lambda d: (d / "IdLookupTable.csv").unlink(), "IdLookupTable.csv not found"),
    "truncated_zip": (lambda d: (d / "training.zip").write_bytes((d / "training.zip").read_bytes()[:5000]),
                      "not a readable zip"),
    "empty_zip_file": (lambda d: (d / "test.zip").write_bytes(b""), "not a readable zip"),
    "zip_without_member": (lambda d: zipfile.ZipFile(d / "training.zip", "w").writestr("other.csv", "x"),
                           "no training.csv inside"),
    "zip_slip": (lambda d: _zip_slip(d), "unsafe zip member"),
    "empty_training": (lambda d: _rewrite_training(d, lambda r: ""), "file is empty"),
    "header_only": (lambda d: _rewrite_training(d, lambda r: r.split("\n")[0] + "\n"), "header but no rows"),
    "misspelt_column": (lambda d: _rewrite_training(d, lambda r: r.replace("nose_tip_x", "nose_tipx", 1)),
                        "misspelt 'nose_tip_x'"),
    "missing_column": (lambda d: _rewrite_training(d, lambda r: _drop_first_column(r)), "header mismatch"),
    "extra_column": (lambda d: _rewrite_training(d, lambda r: _add_column(r)), "header mismatch"),
    "short_image": (lambda d: _rewrite_training(d, lambda r: _line(r, 3, lambda ln: ln.rsplit(" ", 1)[0])),
                    "line 4: Image has 9215 values"),
    "pixel_256": (lambda d: _rewrite_training(d, lambda r: _line(r, 2, lambda ln: _set_pixel(ln, "256"))),
                  "line 3: pixel value 256 is outside 0-255"),
    "pixel_negative": (lambda d: _rewrite_training(d, lambda r: _line(r, 2, lambda ln: _set_pixel(ln, "-4"))),
                       "line 3: Image holds a non-numeric character"),
    "pixel_text": (lambda d: _rewrite_training(d, lambda r: _line(r, 5, lambda ln: _set_pixel(ln, "abc"))),
                   "line 6: Image holds a non-numeric character"),
    "label_text": (lambda d: _rewrite_training(d, lambda r: _line(r, 2, lambda ln: "oops," + ln.split(",", 1)[1])),
                   "line 3, column left_eye_center_x: 'oops' is not a number"),
    "label_outside": (lambda d: _rewrite_training(d, lambda r: _line(r, 2, lambda ln: "120.5," + ln.split(",", 1)[1])),
                      "outside the image"),
    "latin1": (lambda d: _rewrite_training_bytes(d), "not UTF-8"),
    "duplicate_imageid": (lambda d: _rewrite_test(d, lambda r: _line(r, 2, lambda ln: "1," + ln.split(",", 1)[1])),
                          "duplicate ImageId 1"),
    "lookup_unknown_image": (lambda d: _edit_lookup(d, lambda ln: ln.replace(",1,", ",999,", 1)),
                             "ImageId 999 is not in the test set"),
    "lookup_unknown_feature": (lambda d: _edit_lookup(d, lambda ln: ln.replace("left_eye_center_x", "left_eye_centre_x")),
                               "unknown FeatureName 'left_eye_centre_x'"),
    "not_a_folder": (lambda d: None, "no such folder"),
}


def _zip_slip(d: Path):
    with zipfile.ZipFile(d / "test.zip", "w") as zf:
        zf.writestr("../../evil/test.csv", "ImageId,Image\n")


def _drop_first_column(raw: str) -> str:
    return "\n".join(ln.split(",", 1)[1] if ln else ln for ln in raw.split("\n"))


def _add_column(raw: str) -> str:
    return "\n".join(("extra," + ln if i == 0 else "1," + ln) if ln else ln for i, ln in enumerate(raw.split("\n")))


def _rewrite_training_bytes(d: Path):
    raw = unzip_to_csv(d, "training")
    head, rest = raw.split(b"\n", 1)
    (d / "training.csv").write_bytes(head.replace(b"nose_tip_x", b"nose_tip_x\xe9") + b"\n" + rest)


def _edit_lookup(d: Path, fn):
    p = d / "IdLookupTable.csv"
    lines = p.read_text().split("\n")
    lines[1] = fn(lines[1])
    p.write_text("\n".join(lines))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_line(practice_copy, tmp_path, case):
    damage, expected = BAD[case]
    target = practice_copy if case != "not_a_folder" else tmp_path / "nowhere"
    damage(practice_copy)
    with pytest.raises(FkdError) as e:
        load_data(target)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert not list(Path(os.environ["FKD_CACHE_DIR"]).glob("*.npz")), "nothing cached from bad input"


def test_cli_bad_input_exit_2_no_traceback(practice_copy):
    (practice_copy / "training.zip").write_bytes(b"PK\x03\x04broken")
    r = subprocess.run([sys.executable, "-m", "fkd", "data", "--data-dir", str(practice_copy)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "training.zip" in r.stderr and "re-download" in r.stderr


def test_cli_data_summary_and_preview(practice_dir, tmp_path):
    out = tmp_path / "p.png"
    r = subprocess.run([sys.executable, "-m", "fkd", "data", "--data-dir", str(practice_dir), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "training rows    600" in r.stdout and "lookup rows" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
