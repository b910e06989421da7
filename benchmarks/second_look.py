"""A second look: each face turned upright by the first prediction, predicted again, and mapped back. Does it pay?

The first prediction is fkd's own (flip plus the view set shifted, zoomed and turned by `--rotate`, mixed at the
weight fitted on fold 0). From it each face gets a warp of its own: the least-squares similarity (Umeyama) or the
turn alone (about the points' centre) that lays its four commonly labelled points (eye centres, nose tip, bottom
lip: the only ones both annotation sources label, so the only outputs trustworthy on every face) onto their mean
over the run's training rows. Every model predicts the warped face and its mirror image (flip TTA, fold 0's
constant), the prediction is mapped back, and mixed with the first at a weight fitted on fold 0's faces in closed
form. `--passes 2` warps again from the mixed prediction. Scored on fold 0's faces (where the weight was fitted)
and, with a nested folder, on its held-out faces (nothing fitted there).

    $ python benchmarks/second_look.py runs/nest-f8 --nested competition/data/nest42

docs/ablations.md (fourteenth session) has the table this made.
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

from tta_views import held_out_faces, mean_of, predictions

from fkd.competition import COMP
from fkd.competition.keypoints import fit_tta_flip_const, tta_average, unview, view_matrices, view_weight
from fkd.competition.metric import rmse_masked
from fkd.device import select_device
from fkd.learn.cv import training_data
from fkd.learn.models import load_fold_model, predict_images
from fkd.learn.runfiles import checkpoints, load_run, read_folds

COMMON_POINTS = [COMP.keypoints.index(k) for k in
                 ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")]


def upright(points: np.ndarray, mean: np.ndarray, turn_only: bool) -> np.ndarray:
    """2x3 affine m with mean ~ m @ points (least squares: Umeyama's similarity), or with turn_only the same turn
    about the points' centre, neither scaled nor moved."""
    ps, pm = points.mean(0), mean.mean(0)
    a, b = points - ps, mean - pm
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    turn = u @ np.diag([1.0, d]) @ vt
    scale = 1.0 if turn_only else (s[0] + d * s[1]) / (a ** 2).sum()
    m = scale * turn
    return np.hstack([m, ((ps if turn_only else pm) - m @ ps)[:, None]]).astype(np.float32)


def look_again(models, images, source, first, mean, turn_only, c, dev, amp) -> np.ndarray:
    """Each face warped upright by its first prediction, predicted with flip TTA by every model, mapped back."""
    import cv2

    mats = [upright(p.reshape(-1, 2)[COMMON_POINTS], mean[COMMON_POINTS], turn_only) for p in first]
    warped = np.stack([cv2.warpAffine(f, m, f.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                       for f, m in zip(images, mats)])
    p = np.mean([predict_images(m, warped, source, dev, amp, tta=True, flip_const=c) for m in models], 0)
    return np.concatenate([unview(p[i:i + 1], m) for i, m in enumerate(mats)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="finished runs (folders)")
    ap.add_argument("--nested", help="the nested folder the runs trained on: score its test faces too")
    ap.add_argument("--data-dir", help="with --nested: the competition it was made from (default: ytf15)")
    ap.add_argument("--split-seed", type=int, default=42)
    ap.add_argument("--rotate", type=float, default=14.0, help="the first prediction's turned views (degrees)")
    ap.add_argument("--passes", type=int, default=1)
    a = ap.parse_args()
    views = {"views": view_matrices(1.5, 0.05, a.rotate)}
    held = None
    if a.nested:
        nested, labels = held_out_faces(a.nested, a.data_dir, a.split_seed)
        held = (nested.test_images, nested.test_source, labels)
    dev, amp = select_device("auto", "auto")
    for run in map(Path, a.runs):
        cfg, _ = load_run(run)
        cfg = dataclasses.replace(cfg, data_dir=a.nested or cfg.data_dir)
        data, folds = training_data(cfg), read_folds(run)
        va, tr = np.flatnonzero(folds == 0), np.flatnonzero(folds != 0)
        mean = np.nanmean(data.keypoints[tr], 0).reshape(-1, 2)
        all_models = [(load_fold_model(cfg, ck, dev), ck.parent.name.startswith("fold") or cfg.refit_on == "fold")
                      for ck in checkpoints(run)]
        sets = {"fold 0": (data.images[va], data.source[va], data.keypoints[va],
                           [m for m, held_out in all_models if held_out])}
        if held:
            sets["held out"] = (*held, [m for m, _ in all_models])
        p = {k: mean_of([predictions(m, x, s, dev, amp, views) for m in ms]) for k, (x, s, _, ms) in sets.items()}
        y0 = sets["fold 0"][2]
        c = fit_tta_flip_const(tta_average(p["fold 0"]["plain"], p["fold 0"]["mirrored"], cfg.flip_const), y0,
                               cfg.flip_const)
        w = view_weight(tta_average(p["fold 0"]["plain"], p["fold 0"]["mirrored"], c),
                        tta_average(*p["fold 0"]["views"], c), y0)
        first = {k: (1 - w) * tta_average(v["plain"], v["mirrored"], c) + w * tta_average(*v["views"], c)
                 for k, v in p.items()}
        print(f"{run.name}: flip constant {c:.2f}, views' weight {w:.2f}; first look "
              + ", ".join(f"{k} {rmse_masked(first[k], sets[k][2]):.4f}" for k in sets), flush=True)
        for turn_only in (False, True):
            now = dict(first)
            for n in range(1, a.passes + 1):
                again = {k: look_again(ms, x, s, now[k], mean, turn_only, c, dev, amp)
                         for k, (x, s, _, ms) in sets.items()}
                w2 = view_weight(first["fold 0"], again["fold 0"], y0)
                now = {k: (1 - w2) * first[k] + w2 * again[k] for k in sets}
                print(f"  {'turn only' if turn_only else 'similarity'}, pass {n}: alone "
                      + ", ".join(f"{k} {rmse_masked(again[k], sets[k][2]):.4f}" for k in sets)
                      + f"; mixed at {w2:.2f} " + ", ".join(f"{k} {rmse_masked(now[k], sets[k][2]):.4f}" for k in sets),
                      flush=True)


if __name__ == "__main__":
    main()
