"""The data layer: every form Kaggle gives, the cache, folds, the CLI on bad input (the full corpus: test_corpus.py)."""
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fkd.competition import COMMON, COMP, FULL
from fkd.competition.data import load_data
from fkd.competition.folds import make_folds


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


def test_cache_is_used_and_invalidated(practice_copy, monkeypatch):
    import fkd.competition.data

    a = load_data(practice_copy)
    cache_files = list(Path(os.environ["FKD_CACHE_DIR"]).glob("*.npz"))
    assert len(cache_files) == 1

    def no_parse(*_):
        raise AssertionError("parsed again although the cache holds this folder")

    with monkeypatch.context() as m:                 # the second load must come from the cache alone
        m.setattr(fkd.competition.data, "_parse_training", no_parse)
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


def test_folds_are_deterministic_and_stratified():
    src = np.r_[np.ones(30, np.int8), np.zeros(70, np.int8)]
    f1, f2 = make_folds(src, 5, seed=3), make_folds(src, 5, seed=3)
    assert np.array_equal(f1, f2) and not np.array_equal(f1, make_folds(src, 5, seed=4))
    for k in range(5):
        assert (src[f1 == k] == 1).sum() == 6 and (src[f1 == k] == 0).sum() == 14


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


def test_a_failing_command_announces_nothing_first(tmp_path):
    """`fkd train --data-dir /nonexistent` says one line naming the folder, and nothing before it."""
    r = subprocess.run([sys.executable, "-m", "fkd", "train", "--data-dir", str(tmp_path / "nonexistent"),
                        "--preset", "quick"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and "nonexistent: no such folder" in r.stderr
