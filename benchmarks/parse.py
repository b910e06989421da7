"""Parse time of a training.csv: fkd vs the reference project's method, alternating runs; and the cached reload.

    $ python benchmarks/parse.py [--data-dir ../shared/benchmarks/ytf15] [--runs 5]

Reference: pandas.read_csv, then per row `np.array(image.split(), dtype=float)` (the seed project's way).
fkd: fkd.competition.data's reader (numba pixel parser + pandas on the label prefix), from the same CSV bytes on disk.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from common import bench_data

from fkd.competition.data import _parse_training, load_data


def timed(fn, *args) -> float:
    """Seconds one call takes."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def reference(path: Path) -> np.ndarray:
    df = pd.read_csv(path)
    return np.vstack(df["Image"].apply(lambda im: np.array(im.split(), dtype=float)).to_list())


def fkd_parse(path: Path) -> np.ndarray:
    return _parse_training(path.read_bytes(), str(path))[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", help="competition folder (default ../shared/benchmarks/ytf15, else practice)")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    d, _ = bench_data(a.data_dir)
    tmp = Path(tempfile.mkdtemp())
    csv = tmp / "training.csv"
    src = d / "training.csv"
    csv.write_bytes(src.read_bytes() if src.is_file() else zipfile.ZipFile(d / "training.zip").read("training.csv"))
    fkd_parse(csv)  # numba compile / cache load outside the timing
    assert np.array_equal(reference(csv).astype(np.uint8), fkd_parse(csv).reshape(len(fkd_parse(csv)), -1))
    ref_t, fkd_t = [], []
    for _ in range(a.runs):  # alternating, so drift of the machine hits both alike
        ref_t.append(timed(reference, csv))
        fkd_t.append(timed(fkd_parse, csv))
    ratios = [r / f for r, f in zip(ref_t, fkd_t)]
    os.environ["FKD_CACHE_DIR"] = str(tmp / "cache")
    load_data(d)  # fill the cache
    cached = []
    for _ in range(a.runs):
        cached.append(timed(load_data, d))
    print(f"training.csv of {d} ({csv.stat().st_size / 1e6:.1f} MB), {a.runs} alternating runs each")
    print(f"  reference (pandas + per-row split)  median {statistics.median(ref_t):.3f}s")
    print(f"  fkd parse                            median {statistics.median(fkd_t):.3f}s")
    print(f"  speed-up  median {statistics.median(ratios):.1f}x  (min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
    print(f"  cached reload of the whole folder    median {statistics.median(cached) * 1000:.1f} ms = "
          f"{statistics.median(ref_t) / statistics.median(cached):.0f}x faster than the reference parse")


if __name__ == "__main__":
    main()
