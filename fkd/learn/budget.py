"""The time budget: `--set budget_min=N` trains as many epochs as fit N minutes on this machine, decided once;
`--set epochs_max=E` caps them, and the minutes past the cap buy more refit models of E epochs.

    >>> cfg = resolve_budget(cfg, data)      # doctest: +SKIP   cfg.epochs: what fits; written into config.yaml
"""
from __future__ import annotations

import dataclasses
import io
import time

import torch

from ..competition.data import CompetitionData
from ..competition.keypoints import views_of
from ..config import Config
from ..device import select_device
from . import runfiles
from .augment import Augmenter
from .dataset import FaceDataset
from .loop import train_one_epoch
from .models import create_from_config, predict_images, ready
from .optim import make_optimizer


def resolve_budget(cfg: Config, data: CompetitionData) -> Config:
    """cfg with the epochs that fit cfg.budget_min minutes on this machine (plan_budget without its plan)."""
    return plan_budget(cfg, data)[0]


def plan_budget(cfg: Config, data: CompetitionData) -> tuple[Config, dict | None]:
    """cfg with the epochs that fit cfg.budget_min minutes on this machine, decided once per run, and the plan
    (the probe's figures, when the minutes began) that retime_refits needs, or None for a run that began before.

    A run that exists already keeps the epochs its config.yaml recorded (a resumed or extended run never
    re-times). Otherwise a few training steps after warm-up and a validation pass are timed here, and every
    fold gets the same epochs: folds x epochs x (train + validation + checkpoint) + out-of-fold and test
    prediction + the time this probe took must stay under the budget less a 10 % margin. The epochs are
    resolved before any scheduler exists (onecycle fixes its length) and written into config.yaml, so
    `--set budget_min=0 --set epochs=N` reproduces the run anywhere. With epochs_max, a budget that buys more keeps
    that many and trains more refit models of that length (models_for); config.yaml records them too.
    """
    if (cfg.run_dir() / "config.yaml").is_file():
        saved, _ = runfiles.load_run(cfg.run_dir())
        # the refit models a capped budget added (or more asked for now); none where none are asked for (a worker
        # that trains some of the folds, fkd/learn/parallel.py)
        refit = max(cfg.refit, saved.refit) if cfg.refit else 0
        print(f"budget {cfg.budget_min:g} min: {saved.epochs} epochs a model, {refit} refit model(s), as resolved "
              f"when {cfg.run_name()} began (config.yaml)", flush=True)
        return dataclasses.replace(cfg, epochs=saved.epochs, refit=refit, refit_epochs=saved.refit_epochs), None
    t_start = time.time()
    s = probe_speed(cfg, data)
    epochs, refit, fold_epoch_s, bought = models_for(cfg, data, s, spent_s=time.time() - t_start)
    folds = len(cfg.trained_folds())
    refits = f" + {refit} refit model(s) on {cfg.refit_rows()}" if refit else ""
    capped = (f"; it buys {bought}, the cap epochs_max={epochs}: the minutes past it buy {refit - cfg.refit} more "
              "refit model(s) of that length, the rest is left unspent" if bought > epochs else "")
    print(f"budget {cfg.budget_min:g} min: {epochs} epochs a model x {folds} fold(s){refits} (measured here: "
          f"{1 / s['train_img_s']:.0f} training img/s, {1 / s['eval_img_s']:.0f} prediction img/s, "
          f"{fold_epoch_s:.1f} s a fold epoch; 10 % margin{capped})", flush=True)
    return dataclasses.replace(cfg, epochs=epochs, refit=refit), {"probe": s, "started": t_start}


def retime_refits(cfg: Config, data: CompetitionData, plan: dict | None, results: list[dict]) -> Config:
    """cfg with the refit models' epochs (refit_epochs) that the minutes left buy, timed on the trained folds.

    The probe times a few seconds of training, and this machine's speed drifts by a quarter over minutes (ytf15,
    the default: a probe read 229 training img/s, the fold then trained at ~270, and `make submit` ended after 23
    of its 29 minutes). Once the folds are trained their own seconds are the best measure there is, so the
    refit models get what is left of the budget at that speed: more epochs, or fewer where the folds ran slower
    than planned, but never under half the planned ones (a model of a few epochs would spoil the average more than a
    late minute costs), at most epochs_max. Only in the process that probed (a resumed run keeps what config.yaml
    recorded); the CV is unchanged by it (refit_on=fold: it scores the refit models as trained)."""
    if plan is None or not cfg.refit or not results:
        return cfg
    per_img = sum(r["seconds"] for r in results) / sum(r["epochs_run"] * r["n_train"] for r in results)
    n_refit, probe = refit_faces(cfg, data), plan["probe"]
    refit_epoch_s = n_refit * per_img + probe["checkpoint_s"]
    held_out = cfg.refit if cfg.refit_on == "fold" else 0       # what prediction is left (as epochs_for counts it)
    fixed = prediction_s(cfg, data, probe["eval_img_s"], held_out)
    left = cfg.budget_min * 60 * 0.9 - (time.time() - plan["started"]) - fixed
    epochs = max(1, cfg.epochs // 2, int(left // (cfg.refit * refit_epoch_s)))
    epochs = min(epochs, cfg.epochs_max) if cfg.epochs_max else epochs
    planned = n_refit * probe["train_img_s"] + probe["checkpoint_s"]
    print(f"budget {cfg.budget_min:g} min: the trained folds ran at {1 / per_img:.0f} training img/s (the probe: "
          f"{1 / probe['train_img_s']:.0f}), so the {cfg.refit} refit model(s) get {epochs} epochs, "
          f"{refit_epoch_s:.1f} s each (planned: {cfg.epochs} at {planned:.1f} s), for the {left / 60:.1f} min "
          "left (config.yaml)", flush=True)
    return dataclasses.replace(cfg, refit_epochs=epochs)


def models_for(cfg: Config, data: CompetitionData, s: dict, spent_s: float = 0.0) -> tuple[int, int, float, int]:
    """(epochs a model, refit models, seconds of a fold epoch, the epochs before any cap) that cfg.budget_min
    minutes buy at probe figures s.
    Past cfg.epochs_max epochs a longer schedule stopped paying (its last epochs overfit, and a second model of the
    capped length beat one of twice the length out of fold: docs/ablations.md), so a budget that buys more keeps
    the cap and spends what it has left on more refit models of that length, up to refit_max in all (a run without
    refit models, e.g. a full k-fold CV or a tuning trial, gets none: the rest is left unspent)."""
    epochs, fold_epoch_s = epochs_for(cfg, data, s, spent_s)
    if not cfg.epochs_max or epochs <= cfg.epochs_max:
        return epochs, cfg.refit, fold_epoch_s, epochs
    refit = cfg.refit
    while 0 < refit < cfg.refit_max and epochs_for(dataclasses.replace(cfg, refit=refit + 1), data, s,
                                               spent_s)[0] >= cfg.epochs_max:
        refit += 1
    return cfg.epochs_max, refit, fold_epoch_s, epochs


def epochs_for(cfg: Config, data: CompetitionData, s: dict, spent_s: float = 0.0) -> tuple[int, float]:
    """The epochs a model that cfg.budget_min minutes buy at probe figures s (seconds an image, training and
    prediction; seconds a checkpoint), after spent_s already gone, and the seconds of one fold epoch."""
    folds = len(cfg.trained_folds())
    n_val = len(data.images) / cfg.folds
    n = len(data.images) + (0 if not cfg.pseudo else n_val if cfg.pseudo_faces == "val"
                            else len(data.test_images))     # pseudo rows train too
    n_train = n - n_val
    fold_epoch_s = n_train * s["train_img_s"] + n_val * s["eval_img_s"] + s["checkpoint_s"]
    refit_epoch_s = refit_faces(cfg, data) * s["train_img_s"] + s["checkpoint_s"]  # (refit_pseudo keeps the steps)
    held_out = folds + (cfg.refit if cfg.refit_on == "fold" else 0)   # models that predict the fold's faces once
    fixed = prediction_s(cfg, data, s["eval_img_s"], held_out)
    if cfg.refit_pseudo and cfg.refit:   # the fold models label the test faces for the refits, with flip TTA
        fixed += folds * 2 * len(data.test_images) * s["eval_img_s"]
    if cfg.teacher:  # each fold's teacher labels: its training rows predicted with flip TTA (a like-sized model)
        fixed += folds * 2 * n_train * s["eval_img_s"]
    left = cfg.budget_min * 60 * 0.9 - fixed - spent_s
    return max(1, int(left // (folds * fold_epoch_s + cfg.refit * refit_epoch_s))), fold_epoch_s


def refit_faces(cfg: Config, data: CompetitionData) -> float:
    """The faces a refit model trains on an epoch: every training row, less fold 0's with refit_on=fold, plus the
    test faces with pseudo labels."""
    held = len(data.images) / cfg.folds if cfg.refit_on == "fold" else 0
    return len(data.images) - held + (len(data.test_images) if cfg.pseudo else 0)


def prediction_s(cfg: Config, data: CompetitionData, eval_img_s: float, held_out: int) -> float:
    """Seconds of prediction after training: `held_out` models predict the fold's faces, plain and mirrored, then
    every model of the submission predicts the test faces with flip TTA; each face in every extra TTA view too."""
    views = 1 + len(views_of(cfg))
    faces = held_out * 2 * len(data.images) / cfg.folds + (len(cfg.trained_folds()) + cfg.refit) * 2 * len(
        data.test_images)
    return faces * views * eval_img_s


PROBE_WARMUP, PROBE_WINDOWS, PROBE_STEPS = 2, 4, 5   # steps before timing; timed windows of steps (fastest kept)
PROBE_PREDICT = 3                                     # timed prediction passes over the same faces (fastest kept)


def fastest(fn, times: int) -> float:
    """The fastest of `times` timed calls of fn (seconds): a busy machine only ever slows a window, so the
    fastest one is the closest to what the run will see once the neighbour is gone."""
    best = float("inf")
    for _ in range(times):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def probe_speed(cfg: Config, data: CompetitionData, windows: int = PROBE_WINDOWS, steps: int = PROBE_STEPS,
                warmup: int = PROBE_WARMUP) -> dict:
    """Seconds per training image (augmentation, step, optimizer), per predicted image, and per checkpoint,
    timed after warm-up on this machine with the run's own model, batch size and loader: `windows` windows of
    `steps` training steps each, the fastest kept (one short window decided the whole run before, and a probe
    beside a finishing job measured half the speed the run then had)."""
    dev, amp = select_device(cfg.device, cfg.amp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    bs = cfg.batch_size
    n = min(len(data.images), bs * steps)
    model = ready(create_from_config(cfg), cfg, dev)
    opt = make_optimizer(cfg, model)
    ds = FaceDataset(data.images[:n], data.keypoints[:n], data.source[:n],
                     Augmenter.of(cfg))
    loader = torch.utils.data.DataLoader(ds, batch_size=bs)

    def window():
        train_one_epoch(model, loader, opt, None, None, dev, amp, cfg, progress=False)

    fastest(window, max(1, warmup * bs // max(n, 1)))            # warm-up: allocator, kernels, caches
    train_s = fastest(window, windows) / max(n, 1)
    k = min(len(data.images), 256)
    faces, source = data.images[:k], data.source[:k]
    eval_s = fastest(lambda: predict_images(model, faces, source, dev, amp, channels_last=cfg.channels_last),
                     1 + PROBE_PREDICT) / k
    checkpoint_s = fastest(lambda: torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, io.BytesIO()), 2)
    return {"train_img_s": train_s, "eval_img_s": eval_s, "checkpoint_s": checkpoint_s}
