"""Does a CV gain come from faces like the training faces? Two runs' out-of-fold RMSE by how alike each
validation face is to its nearest training face.

    $ python benchmarks/similar_faces.py runs/RUN_A runs/RUN_B --data-dir competition/data/offline-ytf15

Folds of random rows put frames of one person (ytf15: video frames) on both sides of a split, and the test set
holds new people only; a gain made on the validation faces most like a training face may be that memory. Each
validation face's likeness is the largest correlation between its 24x24 thumbnail (mean removed) and those of
the training faces of its own fold; the table splits the faces into quarters of that likeness and gives both
runs' RMSE with flip TTA (each run's fitted constant) and the difference B - A. The test faces' likeness to
the whole training set is printed for comparison. Both runs must share data and folds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fkd.competition.data import load_data  # noqa: E402
from fkd.competition.metric import rmse_masked as rmse  # noqa: E402
from fkd.learn import runfiles  # noqa: E402


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, 96, 96) uint8 -> (N, 576) unit vectors of the mean-removed 24x24 thumbnails."""
    x = images.astype(np.float32).reshape(len(images), 24, 4, 24, 4).mean((2, 4)).reshape(len(images), -1)
    x -= x.mean(1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-6)


def likeness(x: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each face's largest correlation with a training face of its own fold."""
    out = np.zeros(len(x), np.float32)
    for k in np.unique(folds):
        va, tr = folds == k, folds != k
        out[va] = (x[va] @ x[tr].T).max(1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--data-dir", default="competition/data/offline-ytf15")
    args = ap.parse_args(argv)
    a, b = Path(args.run_a), Path(args.run_b)
    folds = pd.read_csv(a / "folds.csv")["fold"].to_numpy()
    if not np.array_equal(folds, pd.read_csv(b / "folds.csv")["fold"].to_numpy()):
        sys.exit(f"{b}/folds.csv: not the folds of {a}; compare runs made on one split (--set split_seed=...)")
    data = load_data(args.data_dir)
    x = thumbnails(data.images)
    near = likeness(x, folds)
    pa, pb = runfiles.read_oof(a, tta=True), runfiles.read_oof(b, tta=True)
    y = data.keypoints
    print(f"A = {a.name}\nB = {b.name}\n")
    print("| likeness to the nearest training face (quarter) | faces | A | B | B - A |")
    print("|---|---|---|---|---|")
    edges = np.quantile(near, [0, 0.25, 0.5, 0.75, 1])
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (near >= lo) & ((near < hi) if i < 3 else (near <= hi))
        ra, rb = rmse(pa[sel], y[sel]), rmse(pb[sel], y[sel])
        print(f"| {lo:.2f} – {hi:.2f} | {sel.sum()} | {ra:.3f} | {rb:.3f} | {rb - ra:+.3f} |")
    print(f"| all | {len(y)} | {rmse(pa, y):.3f} | {rmse(pb, y):.3f} | {rmse(pb, y) - rmse(pa, y):+.3f} |")
    if data.test_images is not None and len(data.test_images):
        t = (thumbnails(data.test_images) @ x.T).max(1)
        print(f"\nlikeness quartiles: validation faces {np.quantile(near, [0.25, 0.5, 0.75]).round(3).tolist()}, "
              f"test faces to all training faces {np.quantile(t, [0.25, 0.5, 0.75]).round(3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
