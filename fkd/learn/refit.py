"""Refit: models trained on every training row after the folds, with the same recipe and epochs.

A fold model learns from (K-1)/K of the rows; its out-of-fold error is what CV measures. Once CV has said how
good the recipe is, a model trained on all rows learns from a third more faces (at K = 4), and the minutes K
fold models would take buy one model K x (K-1)/K times the epochs: schedule length was the strongest lever
measured here. `--set refit=N` trains N such models (seeds of their own) into refit<i>/; the submission
averages them with the trained folds' models. A refit model has no validation rows: it keeps its last epoch
(EMA weights where EMA is on), so nothing about it is chosen on faces it is scored on.

`--set refit_on=fold` (the default preset) trains the refit models on the one trained fold's training rows
instead, each with a seed of its own: every model of the submission is then out of fold on that fold's faces,
and the CV is the submission's own average scored there, where a fold model alone is a pessimistic estimate of
an average that includes models of every row. At 8 folds the two models learn from 7/8 of the rows each, as
many faces in all as a 4-fold model (3/4) and a model of every row.

    $ fkd train --preset default --set refit=1            # the folds, then one model on every row
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .. import atomic
from ..competition.data import CompetitionData
from ..competition.metric import rmse_masked
from ..config import Config
from ..plots import loss_curve
from . import runfiles
from .curves import Curves
from .loop import build_fold_state, fold_dataset, predict_held_out, resume, save_last, setup_device, train_epochs

SEED_OFFSET = 1000     # refit i draws its randomness as fold SEED_OFFSET + i would: never a fold's own seeds


def refit_rows(cfg: Config, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, held-out rows) of a refit model: every row and none (refit_on=all), or the trained fold's
    training rows and its validation faces (refit_on=fold)."""
    if cfg.refit_on == "all":
        return np.arange(len(folds)), None
    k = cfg.trained_folds()[0]
    return np.flatnonzero(folds != k), np.flatnonzero(folds == k)


def train_refit(cfg: Config, data: CompetitionData, i: int, run_dir: Path, folds: np.ndarray,
                teach: np.ndarray | None = None, progress: bool = True, pseudo: tuple | None = None) -> dict:
    """Train refit model i on every training row (or, refit_on=fold, on the trained fold's training rows, then
    predict its held-out faces); writes refit<i>/ (model.pt, metrics.csv, loss.png, result.json, val_pred.npz).
    teach: (N, 30) labels from the run's fold models for the values rows have none for (refit_teacher > 0);
    pseudo: the test faces (images, labels, source) the run's fold models labelled (refit_pseudo=1)."""
    rdir = run_dir / f"refit{i}"
    if (rdir / "result.json").is_file():
        return json.loads((rdir / "result.json").read_text())
    rdir.mkdir(parents=True, exist_ok=True)
    dev, amp, share = setup_device(cfg)
    rows, held_out = refit_rows(cfg, folds)
    seed_fold = SEED_OFFSET + i
    if teach is not None:    # labels for every row; this model trains on `rows` of them
        teach = teach[rows]
    ds = fold_dataset(cfg, data, None, None, rows, dev, amp, teach=teach, pseudo=pseudo)
    if pseudo is not None:   # the test faces take a refit's steps, not more time: its epochs shrink to keep them
        cfg = dataclasses.replace(cfg, epochs=max(1, round(cfg.epochs * len(rows) / len(ds))))
        print(f"refit {i}: {cfg.epochs} epochs of {len(ds)} faces (the steps of the run's epochs over its "
              f"{len(rows)} rows)", flush=True)
    state = build_fold_state(cfg, data, rows, seed_fold, dev, len(ds))
    resume(state, rdir / "last.pt", cfg, dev, seed_fold)
    curves = Curves(rdir)            # TensorBoard: `make board`
    for epoch, stats, t0 in train_epochs(state, ds, cfg, dev, amp, share, seed_fold, f"refit {i}", progress):
        state.history.append({"epoch": epoch + 1, "train_rmse": round(stats["train_rmse"], 5),
                              "lr": state.opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)})
        save_last(state, epoch, cfg, rdir / "last.pt")
        runfiles.write_metrics(state.history, rdir / "metrics.csv")
        curves.epoch(epoch + 1, state.history[-1])
        if progress:
            h = state.history[-1]
            print(f"refit {i} epoch {epoch + 1:>3}/{cfg.epochs}  train {h['train_rmse']:.3f}  {h['seconds']:.1f}s",
                  flush=True)
    curves.close()
    runfiles.save_checkpoint({"model": state.eval_model.state_dict(), "epoch": cfg.epochs - 1,
                              "config": cfg.to_dict(), "fingerprint": cfg.fingerprint()}, rdir / "model.pt")
    loss_curve(state.history, rdir / "loss.png", f"{run_dir.name} refit {i} ({cfg.refit_rows()})")
    result = {"refit": i, "epochs_run": len(state.history), "n_train": len(ds),
              "seconds": round(sum(h["seconds"] for h in state.history), 1)}
    if held_out is not None:   # its predictions of the faces it never saw: run_cv averages them with the fold's
        plain, _, _ = predict_held_out(state.eval_model, cfg, data, held_out, dev, amp, rdir)
        result.update(n_val=len(held_out), val_rmse=rmse_masked(plain, data.keypoints[held_out]))
    atomic.write_json(rdir / "result.json", result)
    (rdir / "last.pt").unlink(missing_ok=True)
    return result


def what_is_submitted(cfg: Config, cv: dict) -> dict:
    """The models a run's submission averages and which CV estimates them, in words a sidecar can carry."""
    folds = cv.get("folds_trained", [])
    models = [f"fold{k}" for k in folds] + [f"refit{i}" for i in range(cfg.refit)]
    share = f"{(cfg.folds - 1) / cfg.folds:.0%}"
    if cfg.refit and cfg.refit_on == "fold":
        held = f"{1 / cfg.folds:.1%}".replace(".0%", "%")
        estimate = (f"the submission itself: its {len(models)} models averaged, each trained on fold {folds[0]}'s "
                    f"training rows ({(cfg.folds - 1) / cfg.folds:.1%} of them, seeds of their own), scored on the "
                    f"{held} of the faces (fold {folds[0]}'s near-duplicate groups) none of them saw")
    elif cfg.refit:
        models_ = f"the fold model{'s' if len(folds) > 1 else ''}"
        taught = (f", taught by {models_} where rows lack labels" if cfg.refit_teacher else "")
        taught += (f", self-trained on the test faces {models_} labelled (the same steps, fewer epochs)"
                   if cfg.refit_pseudo else "")
        estimate = (f"the out-of-fold error of fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))} "
                    f"(models of the same recipe and epochs trained on {share} of the rows): a slightly pessimistic "
                    f"estimate of an average of {len(models)} models, {cfg.refit} of them trained on every "
                    f"row{taught}")
    else:
        estimate = (f"the out-of-fold error of the {len(folds)} fold model(s) (each trained on {share} of the rows); "
                    "the submission averages them, which is usually a little better than one")
    return {"models": models, "cv_estimates": estimate}
