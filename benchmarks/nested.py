"""A nested benchmark: decide between two ways of training a submission on people neither of them trains on.

`make` splits a competition's training file by fkd's own grouped fold 0 (4 folds, the default's split seed and
twin threshold): the other three quarters become a training file, fold 0's faces a test file with solution.csv,
in Kaggle's layout, so `fkd train` / `fkd predict` run on it unchanged. `score` scores every model of finished
runs on that test file, alone and averaged (the run's TTA: flip + views at its out-of-fold weight), next to the
run's own CV estimate: what each design submits, and how far its CV is from it.

    $ python benchmarks/nested.py make --data-dir ../shared/benchmarks/ytf15 --out competition/data/nest42
    $ fkd train --data-dir competition/data/nest42 --preset default --set budget_min=0 --set epochs=88 --set name=A
    $ python benchmarks/nested.py score --data-dir ../shared/benchmarks/ytf15 --out competition/data/nest42 runs/A

docs/ablations.md (ninth session: `refit_on=fold`) has the table this made.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from common import bench_data

from fkd.competition.data import load_data
from fkd.competition.metric import rmse_masked
from fkd.competition.practice import _write_files
from fkd.config import make_config
from fkd.infer.predict import ensemble_predict
from fkd.learn.cv import split, training_data
from fkd.learn.runfiles import checkpoints, load_run, read_cv, tta_constant, tta_views


def outer_split(data_dir: Path, split_seed: int):
    """(training rows, held-out rows, the training data): the held-out rows are grouped fold 0 of 4."""
    cfg = make_config(preset="default", data_dir=str(data_dir), overrides=["folds=4", f"split_seed={split_seed}"])
    data = training_data(cfg)
    folds = split(cfg, data).folds
    return np.flatnonzero(folds != 0), np.flatnonzero(folds == 0), data


def make(data_dir: Path, out: Path, split_seed: int) -> None:
    tr, te, data = outer_split(data_dir, split_seed)
    written, n = _write_files(out, data.images[tr], data.keypoints[tr], data.images[te], data.keypoints[te])
    print(f"{out}: {len(tr)} training faces, {len(te)} test faces (grouped fold 0 of 4 of {data_dir}, split "
          f"{split_seed}), {n} lookup rows; wrote {', '.join(p.name for p in written)}")


def score(data_dir: Path, out: Path, split_seed: int, runs: list[str]) -> None:
    _, te, data = outer_split(data_dir, split_seed)
    nested = load_data(out)
    if not np.array_equal(nested.test_images, data.images[te]):
        sys.exit(f"{out}: its test faces are not fold 0 of {data_dir} at split {split_seed}; make it again")
    y = data.keypoints[te]
    for run in runs:
        cfg, _ = load_run(run)
        cv = read_cv(run)
        c, views = tta_constant(cfg, cv), tta_views(cfg, cv)
        preds = {ck.parent.name: ensemble_predict(cfg, [ck], nested, True, c, views) for ck in checkpoints(run)}
        row = {k: round(rmse_masked(p, y), 4) for k, p in preds.items()}
        row["average"] = round(rmse_masked(np.mean(list(preds.values()), 0), y), 4)
        row["cv_estimate"] = round(cv["cv_rmse"], 4)
        row["gap"] = round(row["average"] - cv["cv_rmse"], 4)
        print(Path(run).name, json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["make", "score"])
    ap.add_argument("runs", nargs="*", help="score: finished runs trained on --out")
    ap.add_argument("--data-dir", help="the competition folder (default: ytf15 beside the checkout)")
    ap.add_argument("--out", required=True, help="the nested competition folder")
    ap.add_argument("--split-seed", type=int, default=42)
    a = ap.parse_intermixed_args()
    data_dir, _ = bench_data(a.data_dir)
    if a.what == "make":
        make(data_dir, Path(a.out), a.split_seed)
    else:
        score(data_dir, Path(a.out), a.split_seed, a.runs)


if __name__ == "__main__":
    main()
