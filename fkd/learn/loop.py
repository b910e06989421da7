"""One fold's training, top to bottom: `train_fold(cfg, data, folds, fold, run_dir)` and `train_one_epoch`.

    $ fkd train --data-dir competition/data/practice --preset quick --fold 0
    >>> result = train_fold(cfg, data, folds, fold=0, run_dir=Path("runs/x"))   # doctest: +SKIP

A fold: set up the device, build model, optimiser, scheduler and EMA, resume from last.pt if a killed run left
one, train epoch by epoch (validate, keep the best weights, save last.pt), then finish: out-of-fold predictions
with and without the mirrored faces, the curve, result.json. Every epoch's randomness is seeded from
(seed, fold, epoch) and last.pt holds the whole state after each epoch, so in deterministic mode a killed and
resumed run ends exactly as an uninterrupted one. The run folder's files are fkd/learn/runfiles.py's.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import atomic
from ..competition.data import CompetitionData
from ..competition.keypoints import tta_average, views_of
from ..competition.metric import rmse_masked, source_means
from ..config import Config
from ..cores import SHARE_EVERY, register_trainer, share_cores_now
from ..device import autocast, default_workers, select_device, to_input
from ..errors import FkdError
from ..plots import loss_curve
from . import runfiles
from .augment import Augmenter
from .curves import Curves
from .dataset import FaceDataset, epoch_loader, epoch_seed
from .models import create_from_config, predict_images, predict_views, ready
from .optim import make_optimizer
from .schedules import make_scheduler

# TTA flip constants scored out of fold for cv.txt (the fitted one, in closed form, is what TTA uses); the
# range covers ytf15's fitted optimum (97.5) and the pixel-centre and pixel-edge conventions (95, 96)
FLIP_SCAN = (95.0, 95.5, 96.0, 96.5, 97.0, 97.5, 98.0, 98.5)
POSTFIX_EVERY = 20   # steps between progress-bar updates (each one reads the running error back from the device)


@dataclass
class FoldState:
    """What one fold trains and where it stands: saved whole in last.pt after every epoch."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    ema: object | None
    swa: object | None = None       # the average of the epochs' end weights over the schedule's last part
    start: int = 0                  # the next epoch to train
    best: float = float("inf")
    best_epoch: int = -1
    bad: int = 0                    # epochs since the best (early stopping)
    history: list[dict] = field(default_factory=list)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and kept: SWA's once it averages, else the EMA's where EMA is on."""
        if self.swa is not None and int(self.swa.n_averaged) > 0:
            return self.swa.module
        return self.ema.module if self.ema is not None else self.model

    def swa_step(self, cfg: Config, epoch: int) -> None:
        """SWA: over the last cfg.swa of the epochs, each epoch's end weights (the EMA's where on) join the average
        (weights and BN statistics alike, so no extra pass over the data)."""
        if self.swa is not None and epoch >= cfg.epochs * (1 - cfg.swa):
            self.swa.update_parameters(self.ema.module if self.ema is not None else self.model)


@dataclass(frozen=True)
class FoldContext:
    """What one fold's epochs read: the config, the data and this fold's rows, where it writes, how it runs."""

    cfg: Config
    data: CompetitionData
    fold: int
    tr: np.ndarray                  # training rows
    va: np.ndarray                  # validation rows
    fdir: Path
    dev: torch.device
    amp: torch.dtype | None
    progress: bool


def setup_device(cfg: Config) -> tuple[torch.device, torch.dtype | None, bool]:
    """The device and autocast dtype; whether this process shares the CPU's cores with other fkd trainers."""
    dev, amp = select_device(cfg.device, cfg.amp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    share = dev.type == "cpu" and not cfg.threads and not cfg.deterministic   # a fixed count keeps bits equal
    if share:
        register_trainer()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    return dev, amp, share


def build_fold_state(cfg: Config, data: CompetitionData, tr: np.ndarray, fold: int, dev: torch.device,
                     n_rows: int | None = None) -> FoldState:
    """Model (starting at the training rows' mean keypoints), optimiser, scheduler over the whole run (n_rows a
    epoch: the training rows, or more with pseudo rows), EMA."""
    torch.manual_seed(epoch_seed(cfg, fold, -1))
    model = create_from_config(cfg)
    model.init_output(torch.from_numpy(source_means(data.keypoints[tr], data.source[tr])))
    model = ready(model, cfg, dev)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, cfg.epochs * max(1, (n_rows or len(tr)) // cfg.batch_size))
    ema = None
    if cfg.ema > 0:
        # timm's EMA of weights and BN buffers with a decay warmup (1 - (1 + step)^-2/3, capped at cfg.ema): a
        # plain EMA keeps decay^steps of the first weights (0.99^224 = 10 % for 8 short epochs), which ruined it
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)
    swa = torch.optim.swa_utils.AveragedModel(model, use_buffers=True) if cfg.swa > 0 else None
    return FoldState(model, opt, sched, ema, swa)


def resume(state: FoldState, last: Path, cfg: Config, dev: torch.device, fold: int) -> None:
    """Continue where a killed run stopped: last.pt's weights, optimiser, scheduler, EMA and progress."""
    if not last.is_file():
        return
    try:
        ck = torch.load(last, map_location=dev, weights_only=False)
    except Exception as e:  # noqa: BLE001 - a corrupt checkpoint is reported, not loaded
        raise FkdError(f"{last}: unreadable checkpoint ({type(e).__name__}); delete it to restart the fold") from None
    if ck["fingerprint"] != cfg.fingerprint():
        raise FkdError(f"{last}: made with a different config; use another run name or delete {last.parent.parent}")
    state.model.load_state_dict(ck["model"])
    state.opt.load_state_dict(ck["opt"])
    state.sched.load_state_dict(ck["sched"])
    if state.ema is not None:
        state.ema.load_state_dict(ck["ema"])
    if state.swa is not None:
        state.swa.load_state_dict(ck["swa"])
    state.start = ck["epoch"] + 1
    state.best, state.best_epoch, state.bad, state.history = ck["best"], ck["best_epoch"], ck["bad"], ck["history"]
    print(f"fold {fold}: resuming after epoch {ck['epoch'] + 1}/{cfg.epochs}", flush=True)


def save_last(state: FoldState, epoch: int, cfg: Config, path: Path) -> None:
    runfiles.save_checkpoint({"model": state.model.state_dict(), "opt": state.opt.state_dict(),
                              "sched": state.sched.state_dict(),
                              "ema": state.ema.state_dict() if state.ema is not None else None, "epoch": epoch,
                              "swa": state.swa.state_dict() if state.swa is not None else None,
                              "best": state.best, "best_epoch": state.best_epoch, "bad": state.bad,
                              "history": state.history, "fingerprint": cfg.fingerprint()}, path)


def fold_dataset(cfg: Config, data: CompetitionData, folds: np.ndarray | None, fold: int | None, tr: np.ndarray,
                 dev, amp, teach: np.ndarray | None = None, pseudo: tuple | None = None) -> FaceDataset:
    """The training faces of a fold (fold None: a refit model, every row) with their augmentation; teacher labels
    when cfg.teacher names a run (or given: a refit's from its run's fold models), and with pseudo=1 the test faces
    the teacher labelled (or given: a refit's, labelled by its run's fold models) (fkd/learn/teacher.py)."""
    from . import teacher

    images, kp, src = data.images[tr], data.keypoints[tr], data.source[tr]
    who = f"fold {fold}" if fold is not None else "refit"
    weight, by = 0.0, ""
    if teach is not None:
        weight, by = cfg.refit_teacher, "this run's fold models"
    elif cfg.teacher and cfg.teacher_weight > 0 and fold is not None:
        teach, weight, by = teacher.teacher_labels(cfg, data, folds, fold, dev, amp), cfg.teacher_weight, cfg.teacher
    if by:
        print(f"{who}: {np.isfinite(teach).sum() // 2} teacher-labelled keypoints from {by} (weight {weight:g})",
              flush=True)
    if pseudo is not None or cfg.pseudo:
        pi, pk, ps = pseudo if pseudo is not None else teacher.pseudo_rows(cfg, data, fold, dev, amp, folds)
        images, kp, src = np.concatenate([images, pi]), np.concatenate([kp, pk]), np.concatenate([src, ps])
        teach = None if teach is None else np.concatenate([teach, np.full(pk.shape, np.nan, np.float32)])
        faces = "test faces" if cfg.pseudo_faces == "test" else "of its validation faces (unlabelled: pseudo_faces=val)"
        by, how = ("this run's fold models", "refit_pseudo=1") if pseudo is not None else (cfg.teacher, "pseudo=1")
        print(f"{who}: {len(pi)} {faces} labelled by {by} join its {len(tr)} training faces ({how})", flush=True)
    return FaceDataset(images, kp, src, Augmenter.of(cfg, epoch=0), teach, weight)


def train_epochs(state: FoldState, ds: FaceDataset, cfg: Config, dev, amp, share, key: int, label: str,
                 progress: bool):
    """Each epoch left in a model's schedule, trained: yields (epoch, train stats, start time) for the caller to
    finish. Its randomness is seeded from (seed, key, epoch), key a fold's number or a refit model's."""
    workers = 0 if cfg.deterministic else (default_workers(dev) if cfg.workers < 0 else cfg.workers)
    for epoch in range(state.start, cfg.epochs):
        t0, seed = time.time(), epoch_seed(cfg, key, epoch)
        torch.manual_seed(seed)
        ds.aug = Augmenter.of(cfg, epoch)
        loader = epoch_loader(ds, cfg, dev, seed, workers)
        stats = train_one_epoch(state.model, loader, state.opt, state.sched, state.ema, dev, amp, cfg,
                                desc=f"{label} epoch {epoch + 1}/{cfg.epochs}", progress=progress,
                                step=epoch * len(loader), share_cores=share)
        state.swa_step(cfg, epoch)
        yield epoch, stats, t0


def train_fold(cfg: Config, data: CompetitionData, folds: np.ndarray, fold: int, run_dir: Path,
               report: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """Train one fold; returns its result (best epoch, validation RMSE with/without TTA) and writes fold<k>/.

    `report(epoch, val_rmse)` is called after each epoch (Optuna pruning raises from it).
    """
    fdir = run_dir / f"fold{fold}"
    if (fdir / "result.json").is_file():
        return json.loads((fdir / "result.json").read_text())
    fdir.mkdir(parents=True, exist_ok=True)
    dev, amp, share = setup_device(cfg)
    ctx = FoldContext(cfg, data, fold, np.flatnonzero(folds != fold), np.flatnonzero(folds == fold), fdir, dev, amp,
                      progress)
    ds = fold_dataset(cfg, data, folds, fold, ctx.tr, dev, amp)
    state = build_fold_state(cfg, data, ctx.tr, fold, dev, len(ds))
    resume(state, fdir / "last.pt", cfg, dev, fold)
    curves = Curves(fdir)            # TensorBoard: `make board`
    for epoch, stats, t0 in train_epochs(state, ds, cfg, dev, amp, share, fold, f"fold {fold}", progress):
        val = end_epoch(state, ctx, epoch, stats, time.time() - t0)
        curves.epoch(epoch + 1, state.history[-1])
        if report is not None:
            report(epoch, val)
        if cfg.patience and state.bad >= cfg.patience:
            print(f"fold {fold}: early stop after {epoch + 1} epochs (best {state.best:.4f} at {state.best_epoch + 1})")
            break
    curves.close()
    return finish_fold(state, ctx, f"{run_dir.name} fold {fold}")


def end_epoch(state: FoldState, ctx: FoldContext, epoch: int, stats: dict, seconds: float) -> float:
    """Validate, keep the best weights (best.pt), log the epoch, save the whole state (last.pt); the RMSE."""
    cfg, va = ctx.cfg, ctx.va
    pred = predict_images(state.eval_model, ctx.data.images[va], ctx.data.source[va], ctx.dev, ctx.amp,
                          channels_last=cfg.channels_last)
    val = rmse_masked(pred, ctx.data.keypoints[va])
    if not np.isfinite(val):
        raise FkdError(f"fold {ctx.fold}: validation RMSE is not finite after epoch {epoch + 1}: training diverged; "
                       "lower lr (--set lr=...) or turn on grad_clip")
    if isinstance(state.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.sched.step(val)
    improved = val < state.best
    if improved:
        state.best, state.best_epoch, state.bad = val, epoch, 0
    else:
        state.bad += 1
    if improved or cfg.fold_weights == "last":     # best.pt: the weights the fold keeps (its best or its last epoch)
        runfiles.save_checkpoint({"model": state.eval_model.state_dict(), "epoch": epoch, "val_rmse": val,
                                  "config": cfg.to_dict(), "fingerprint": cfg.fingerprint()}, ctx.fdir / "best.pt")
    state.history.append({"epoch": epoch + 1, "train_rmse": round(stats["train_rmse"], 5), "val_rmse": round(val, 5),
                          "lr": state.opt.param_groups[0]["lr"], "seconds": round(seconds, 2)})
    save_last(state, epoch, cfg, ctx.fdir / "last.pt")
    runfiles.write_metrics(state.history, ctx.fdir / "metrics.csv")
    if ctx.progress:
        h = state.history[-1]
        print(f"fold {ctx.fold} epoch {epoch + 1:>3}/{cfg.epochs}  train {h['train_rmse']:.3f}  "
              f"val {val:.4f}{' *' if improved else ''}  {h['seconds']:.1f}s", flush=True)
    return val


def finish_fold(state: FoldState, ctx: FoldContext, title: str) -> dict:
    """Out-of-fold predictions of the best weights, plain and of the mirrored faces; the curve; result.json."""
    cfg, fdir = ctx.cfg, ctx.fdir
    model = state.eval_model
    model.load_state_dict(torch.load(fdir / "best.pt", map_location=ctx.dev, weights_only=False)["model"])
    val_y = ctx.data.keypoints[ctx.va]
    oof, mirrored, views = predict_held_out(model, cfg, ctx.data, ctx.va, ctx.dev, ctx.amp, fdir)
    # the TTA flip constant, measured out of fold: which c un-flips this model's mirrored predictions best
    scan = {str(c): rmse_masked(tta_average(oof, mirrored, c), val_y) for c in FLIP_SCAN}
    loss_curve(state.history, fdir / "loss.png", title)
    kept = state.best_epoch if cfg.fold_weights == "best" else len(state.history) - 1
    result = {"fold": ctx.fold, "best_epoch": state.best_epoch + 1, "kept_epoch": kept + 1,
              "epochs_run": len(state.history),
              "val_rmse": rmse_masked(oof, val_y),
              "val_rmse_tta": rmse_masked(tta_average(oof, mirrored, cfg.flip_const), val_y),
              "seconds": round(sum(h["seconds"] for h in state.history), 1), "n_train": len(ctx.tr),
              "n_val": len(ctx.va), "tta_flip_const_scan": scan}
    atomic.write_json(fdir / "result.json", result)
    (fdir / "last.pt").unlink(missing_ok=True)  # the fold is finished: best.pt and result.json are what remain
    return result


def predict_held_out(model, cfg: Config, data: CompetitionData, rows: np.ndarray, dev, amp, out_dir: Path) -> tuple:
    """A model's predictions of the faces it never trained on: (plain, of the mirrored faces, the extra TTA views'
    (plain, mirrored) or None), written to out_dir/val_pred.npz, where run_cv scores them out of fold."""
    x, s = data.images[rows], data.source[rows]
    plain = predict_images(model, x, s, dev, amp, channels_last=cfg.channels_last)
    mirrored = predict_images(model, np.ascontiguousarray(x[:, :, ::-1]), s, dev, amp, channels_last=cfg.channels_last)
    mats = views_of(cfg)
    views = predict_views(model, x, s, dev, amp, mats, cfg.channels_last) if mats else None
    runfiles.write_fold_predictions(out_dir, rows, plain, mirrored, views)
    return plain, mirrored, views


def train_one_epoch(model, loader, opt, sched, ema, dev, amp, cfg: Config, desc: str = "",
                    progress: bool = True, step: int = 0, share_cores: bool = False) -> dict:
    """One pass over the loader; per-batch LR schedules step here. Returns train RMSE (px) and images seen.
    With share_cores the torch thread count follows the fkd runs training on this CPU: at the epoch's first step
    and every SHARE_EVERY steps.

    No step waits for the device: the running error is summed on the device and read back only for the
    progress bar every POSTFIX_EVERY steps and once at the end. The phases are marked for torch.profiler
    (benchmarks/epoch_profile.py); the marks cost nothing when no profiler runs.
    """
    from torch.profiler import record_function
    from tqdm.auto import tqdm

    model.train()
    sum_sq = torch.zeros((), device=dev, dtype=torch.float64)
    n_val = torch.zeros((), device=dev, dtype=torch.int64)
    n_img = 0
    per_step = not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    teacher_weight = getattr(loader.dataset, "teacher_weight", 0.0)   # FaceDataset's: a fold's or a refit's own
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    batches = iter(bar)
    while True:
        with record_function("data: load + augment"):
            batch = next(batches, None)
        if batch is None:
            break
        imgs, kp, src, *teach = batch
        if share_cores and (step % SHARE_EVERY == 0 or n_img == 0):   # every SHARE_EVERY steps and each epoch's first
            share_cores_now()
        with record_function("data: to device"):
            x = to_input(imgs, dev, cfg.channels_last)
            kp, src = kp.to(dev, non_blocking=True), src.to(dev, non_blocking=True)
            teach = teach[0].to(dev, non_blocking=True) if teach else None
        with record_function("forward + loss"), autocast(dev, amp):
            out = model(x, src, kp, teacher=teach, teacher_weight=teacher_weight)
        with record_function("backward"):
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
        with record_function("optimizer"):
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if per_step and sched is not None:
                sched.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
        with record_function("metrics"), torch.no_grad():
            m = torch.isfinite(kp)
            # torch.where, not a boolean index: indexing by a mask waits for the device to count it
            sum_sq += torch.where(m, (out["preds"].float() - torch.nan_to_num(kp)) ** 2, 0.0).sum()
            n_val += m.sum()
        n_img += len(imgs)
        if progress and step % POSTFIX_EVERY == 0:
            bar.set_postfix(rmse=f"{math.sqrt(sum_sq.item() / max(n_val.item(), 1)):.3f}",
                            lr=f"{opt.param_groups[0]['lr']:.2e}")
    bar.close()
    return {"train_rmse": math.sqrt(sum_sq.item() / max(n_val.item(), 1)), "images": n_img}
