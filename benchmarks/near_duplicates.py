"""How near-duplicate faces are found, and why so: the figures behind fkd/competition/folds.py.

On a competition folder with solution.csv whose test people never appear in training (ytf15), every
test-to-training pair is a pair of different people. For each way of comparing faces, the threshold that 1 %
(and 2 %, 0.5 %) of test faces reach against their nearest training face is the false-twin rate; the share of
training faces with a twin above it says how much of the recurrence the method finds. Then the leak of random
row folds against grouped folds, and the time grouping takes (on the data, and on 7,049 faces as Kaggle has).

    $ python benchmarks/near_duplicates.py --data-dir ../shared/benchmarks/ytf15 [--run RUN_DIR]

With --run (a run trained on row folds), its out-of-fold error is split by each validation face's likeness to
its nearest training face: does CV reward remembering people?
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import bench_data

from fkd.competition import COMP
from fkd.competition.data import load_data
from fkd.competition.folds import (
    DOG_SIGMAS,
    align_faces,
    duplicate_groups,
    face_embeddings,
    make_folds,
    near_twin_share,
    nearest_other,
    twin_pairs,
)
from fkd.competition.metric import read_submission, rmse_masked
from fkd.config import Config
from fkd.errors import FkdError


def practice_faces():
    """The practice competition's training faces (every face drawn anew: no twins)."""
    import tempfile

    from fkd.competition.practice import make_practice

    d = Path(tempfile.mkdtemp(prefix="fkd-bench-")) / "practice"
    make_practice(d, seed=0, n_train=2000, n_test=50)
    return load_data(d)


def test_labels(data, solution: Path) -> np.ndarray:
    """(M, 30) the test faces' true keypoints (from solution.csv: only to align them for this measurement)."""
    sol = read_submission(solution)
    lk = data.lookup.merge(sol, on="RowId")
    out = np.full((len(data.test_ids), 30), np.nan, np.float32)
    out[lk.img.to_numpy(), lk.col.to_numpy()] = lk.Location.to_numpy()
    return out


def unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float32)
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def methods(images, keypoints) -> dict[str, np.ndarray]:
    import cv2

    crops = align_faces(images, keypoints)
    grad = np.stack([np.hypot(cv2.Sobel(c, cv2.CV_32F, 1, 0), cv2.Sobel(c, cv2.CV_32F, 0, 1)) for c in crops])
    small = np.stack([cv2.resize(im.astype(np.float32), (24, 24), interpolation=cv2.INTER_AREA) for im in images])
    return {"unaligned 24x24 thumbnail": unit(small), "eye-aligned 48x48 crop": unit(crops),
            "eye-aligned gradient magnitude": unit(grad),
            f"eye-aligned band-pass (DoG {DOG_SIGMAS[0]:g}/{DOG_SIGMAS[1]:g} px, fkd's)": face_embeddings(images,
                                                                                                      keypoints)}


def compare(data, test_kp) -> None:
    """Which embedding: at the likeness that 2 / 1 / 0.5 % of different people (test vs training) reach, how
    many training faces find a twin, and how large the largest group (absolute thresholds)."""
    train, test = methods(data.images, data.keypoints), methods(data.test_images, test_kp)
    print(f"{'embedding (absolute threshold)':<48} {'false rate':>10} {'threshold':>9} {'train faces with a twin':>24} "
          f"{'largest group':>13}")
    for name in train:
        x, t = train[name], test[name]
        nn_test = nearest_other(t, x)                     # different people: test vs training
        nn_train = nearest_other(x, x, exclude=np.eye(len(x), dtype=bool))
        for rate in (0.02, 0.01, 0.005):
            thr = float(np.quantile(nn_test, 1 - rate))
            sizes = np.bincount(_components(len(x), *np.nonzero(np.triu(x @ x.T > thr, 1))))
            print(f"{name:<48} {rate:>10.1%} {thr:>9.3f} {np.mean(nn_train > thr):>24.1%} {sizes.max():>13}")


def _components(n: int, r, c) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)[1]


def twin_rule(data, test_kp, practice) -> None:
    """Absolute likeness against likeness standing out from each face's own background (fkd's z rule): the
    largest group on these faces and on practice faces (all different people), and how unlike their training
    faces the validation faces of grouped folds are, next to the test's new people."""
    x, t = face_embeddings(data.images, data.keypoints), face_embeddings(data.test_images, test_kp)
    px = face_embeddings(practice.images, practice.keypoints)
    test_nn = nearest_other(t, x)
    print(f"test faces (new people): median nearest training-face correlation {np.median(test_nn):.3f}")
    rules = [("absolute", thr, lambda e, v: np.nonzero(np.triu(e @ e.T > v, 1))) for thr in (0.65, 0.69)]
    rules += [("z (fkd)", z, lambda e, v: twin_pairs(e, v)) for z in (3.5, 4.0, 4.5)]
    for name, v, pairs in rules:
        g = _components(len(x), *pairs(x, v))
        pg = _components(len(px), *pairs(px, v))
        try:
            f = make_folds(data.source, 4, 42, g)
        except FkdError as e:
            print(f"  {name:<9} {v:<5}: {e}")
            continue
        nn = np.concatenate([nearest_other(x[f == k], x[f != k]) for k in range(4)])
        print(f"  {name:<9} {v:<5}: largest group {np.bincount(g).max():>4} (practice {np.bincount(pg).max():>4} of "
              f"{len(px)}); grouped folds' validation: median nearest training-face correlation {np.median(nn):.3f}")


def leak(data, z: float, k: int = 4, seed: int = 42) -> None:
    emb = face_embeddings(data.images, data.keypoints)
    raw = unit(align_faces(data.images, data.keypoints))
    g = duplicate_groups(data.images, data.keypoints, z, emb=emb)
    for by, groups in (("rows", None), ("groups", g.group)):
        f = make_folds(data.source, k, seed, groups)
        print(f"folds by {by:<6}: validation faces with a twin in their training folds: "
              f"{near_twin_share(emb, f, z):6.1%} (fkd's rule, z > {z}); with a raw crop correlation > 0.85 (the "
              f"issue's measure, which 11 % of different people reach): {_raw_share(raw, f, 0.85):6.1%}")


def _raw_share(raw, folds, thr) -> float:
    return float(np.mean(np.concatenate([nearest_other(raw[folds == k], raw[folds != k]) > thr
                                         for k in np.unique(folds)])))


def timing(data, z: float) -> None:
    t = time.perf_counter()
    duplicate_groups(data.images, data.keypoints, z)
    own = time.perf_counter() - t
    idx = np.random.default_rng(0).choice(len(data.images), 7049)     # Kaggle's 7,049 training rows
    t = time.perf_counter()
    duplicate_groups(data.images[idx], data.keypoints[idx], z)
    print(f"grouping {len(data.images):,} faces: {own:.2f} s; 7,049 faces: {time.perf_counter() - t:.2f} s")


def oof_by_likeness(data, run: Path) -> None:
    """A run's out-of-fold RMSE by its validation faces' nearest training face (in the run's own folds)."""
    import pandas as pd

    from fkd.learn.runfiles import read_oof

    folds = pd.read_csv(run / "folds.csv")["fold"].to_numpy()
    oof = read_oof(run, tta=True)
    emb = face_embeddings(data.images, data.keypoints)
    nn = np.empty(len(folds), np.float32)
    for k in np.unique(folds):
        nn[folds == k] = nearest_other(emb[folds == k], emb[folds != k])
    for lo, hi in ((-1, 0.5), (0.5, 0.6), (0.6, 0.69), (0.69, 0.8), (0.8, 2)):
        sel = (nn > lo) & (nn <= hi)
        print(f"  nearest training face {lo:>5.2f} .. {hi:<5.2f}: {sel.mean():6.1%} of faces, out-of-fold RMSE "
              f"{rmse_masked(oof[sel], data.keypoints[sel]):.4f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="competition folder with solution.csv (default: ytf15, else the practice one)")
    p.add_argument("--z", type=float, default=Config.group_z, help="the twin threshold to report the leak at")
    p.add_argument("--run", help="a run folder trained on row folds: its out-of-fold error by likeness")
    a = p.parse_args()
    d, _ = bench_data(a.data_dir)
    data = load_data(d)
    print(f"{d}: {len(data.images):,} training faces, {len(data.test_ids):,} test faces ({COMP.slug} layout)")
    if data.solution_path is not None:
        kp = test_labels(data, data.solution_path)
        compare(data, kp)
        twin_rule(data, kp, practice_faces())
    leak(data, a.z)
    timing(data, a.z)
    if a.run:
        oof_by_likeness(data, Path(a.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
