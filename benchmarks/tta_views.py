"""Which extra TTA views pay: finished runs' models predict their fold-0 faces again through other view sets.

For each run, every model that held fold 0 out (the fold model, and refit models with `refit_on=fold`) predicts
those faces plainly, mirrored, and through each view set: shifts by +-1.5 px and zooms by 1 +- 0.05 (fkd's
`tta_shift`, `tta_scale`), then those with turns by +-D degrees added (`tta_rotate=D`), pooled as fkd pools them
(one mean over the views, one weight). The flip constant and the views' weight are fitted out of fold on fold 0's
faces, as `fkd train` fits them. With `--nested DIR` (a folder `benchmarks/nested.py make` wrote, the runs trained
on it) the runs' models also predict its test faces, the flip constant and weight from fold 0: scored on faces no
run saw, nothing fitted there.

    $ python benchmarks/tta_views.py runs/nest-f8 runs/nest-cur --nested competition/data/nest42 --rotate 10,14,18
    $ python benchmarks/tta_views.py runs/default-regnetx_002-... --rotate 14

docs/ablations.md (tenth session: turned views) has the table this made.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from common import bench_data
from nested import outer_split

from fkd.competition.data import load_data
from fkd.competition.keypoints import fit_tta_flip_const, tta_average, view_matrices, view_weight
from fkd.competition.metric import rmse_masked
from fkd.device import select_device
from fkd.learn.cv import training_data
from fkd.learn.models import load_fold_model, predict_images, predict_views
from fkd.learn.runfiles import checkpoints, load_run, read_folds


def predictions(model, images, source, dev, amp, sets: dict) -> dict:
    """plain, mirrored and each view set's (plain, mirrored) means for one model."""
    out = {"plain": predict_images(model, images, source, dev, amp),
           "mirrored": predict_images(model, np.ascontiguousarray(images[:, :, ::-1]), source, dev, amp)}
    for name, mats in sets.items():
        out[name] = predict_views(model, images, source, dev, amp, mats)
    return out


def mean_of(preds: list[dict]) -> dict:
    """The models' average, as the submission averages them (TTA is linear, so averaging first is the same)."""
    return {k: (np.mean([p[k] for p in preds], 0) if not isinstance(preds[0][k], tuple)
                else tuple(np.mean([p[k][i] for p in preds], 0) for i in (0, 1))) for k in preds[0]}


def scores(p: dict, y: np.ndarray, c: float, weights: dict) -> dict:
    """RMSE of the flip alone and of each view set mixed in at its weight."""
    flip = tta_average(p["plain"], p["mirrored"], c)
    out = {"flip": rmse_masked(flip, y)}
    for name, w in weights.items():
        out[name] = rmse_masked((1 - w) * flip + w * tta_average(*p[name], c), y)
    return out


def held_out_faces(nested_dir: str, data_dir: str | None, split_seed: int):
    """(the nested folder's data, its test faces' true labels): the faces `benchmarks/nested.py make` held out of
    the competition at data_dir (default ytf15), checked to be fold 0 of it at split_seed."""
    src, _ = bench_data(data_dir)
    _, te, full = outer_split(src, split_seed)
    nested = load_data(nested_dir)
    if not np.array_equal(nested.test_images, full.images[te]):
        sys.exit(f"{nested_dir}: its test faces are not fold 0 of {src} at split {split_seed}")
    return nested, full.keypoints[te]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="finished runs (folders)")
    ap.add_argument("--rotate", default="14", help="comma-separated turns in degrees to try with shift + zoom")
    ap.add_argument("--nested", help="the nested folder the runs trained on: score its test faces too")
    ap.add_argument("--data-dir", help="with --nested: the competition it was made from (default: ytf15)")
    ap.add_argument("--split-seed", type=int, default=42)
    a = ap.parse_intermixed_args()
    sets = {"shift+zoom": view_matrices(1.5, 0.05)}
    sets.update({f"+turn {d:g}": view_matrices(1.5, 0.05, d) for d in map(float, a.rotate.split(","))})
    held = held_out_faces(a.nested, a.data_dir, a.split_seed) if a.nested else None
    dev, amp = select_device("auto", "auto")
    for run in map(Path, a.runs):
        cfg, _ = load_run(run)
        cfg = dataclasses.replace(cfg, data_dir=a.nested or cfg.data_dir)
        data, folds = training_data(cfg), read_folds(run)
        va = np.flatnonzero(folds == 0)
        y = data.keypoints[va]
        oof, test = [], []
        for ck in checkpoints(run):
            model = load_fold_model(cfg, ck, dev)
            if ck.parent.name.startswith("fold") or cfg.refit_on == "fold":   # it held fold 0's faces out
                oof.append(predictions(model, data.images[va], data.source[va], dev, amp, sets))
            if held:
                test.append(predictions(model, held[0].test_images, held[0].test_source, dev, amp, sets))
        p = mean_of(oof)
        c = fit_tta_flip_const(tta_average(p["plain"], p["mirrored"], cfg.flip_const), y, cfg.flip_const)
        flip = tta_average(p["plain"], p["mirrored"], c)
        weights = {k: view_weight(flip, tta_average(*p[k], c), y) for k in sets}
        row = scores(p, y, c, weights)
        print(f"{run.name}: fold 0 ({len(va)} faces, {len(oof)} model(s)), flip constant {c:.2f}: "
              + ", ".join(f"{k} {v:.4f}" + (f" (w {weights[k]:.2f})" if k in weights else "") for k, v in row.items()),
              flush=True)
        if held:
            row = scores(mean_of(test), held[1], c, weights)
            print(f"{run.name}: held-out test ({len(held[1])} faces, {len(test)} model(s), fold 0's constant and "
                  "weights): " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
