"""K-fold training: `train_fold(cfg, fold)` and `run_cv(cfg)`, resumable, honest CV RMSE.

    $ fkd train --data-dir competition/data/practice --preset quick
    >>> result = run_cv(make_config(preset="quick", data_dir="..."))   # doctest: +SKIP
    >>> result["cv_rmse"]

The run folder's files are described, written and read in fkd/runfiles.py. Every epoch's randomness (shuffle, augmentation, dropout) is
seeded from (seed, fold, epoch), and last.pt holds model, optimizer, scheduler and EMA state after each
epoch, so a killed run resumes where it stopped and, in deterministic mode, ends as an uninterrupted one.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import atomic, runfiles
from .augment import Augmenter
from .config import Config, training_fields
from .data import COMMON, FULL, CompetitionData, load_training_data, make_folds, save_folds, test_hash
from .device import autocast, default_workers, fair_threads, register_trainer, select_device, to_input
from .errors import FkdError
from .keypoints import flip_keypoints
from .metric import breakdown, rmse_masked
from .plots import save
from .models import create_from_config, predict_images
from .schedules import make_scheduler

# TTA flip constants scored out of fold for cv.txt (the fitted one, in closed form, is what TTA uses); the
# range covers ytf15's fitted optimum (97.5) and the pixel-centre and pixel-edge conventions (95, 96)
FLIP_SCAN = (95.0, 95.5, 96.0, 96.5, 97.0, 97.5, 98.0, 98.5)


POSTFIX_EVERY = 20   # steps between progress-bar updates (each one reads the running error back from the device)


# ------------------------------------------------------------------------------------------ data
class FaceDataset(torch.utils.data.Dataset):
    """Training faces with per-sample seeded augmentation; yields uint8 image, keypoints (NaN = masked), source,
    and with teacher labels (N, 30) given, the sample's teacher labels moved by the same augmentation."""

    def __init__(self, images, keypoints, source, aug: Augmenter | None, teacher: np.ndarray | None = None):
        self.images, self.kp, self.source, self.aug, self.teacher = images, keypoints, source, aug, teacher
        self.epoch_seed = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img, kp = self.images[i], self.kp[i]
        if self.teacher is not None:   # teacher labels (fkd/teacher.py) move with the face: one transform for both
            kp = np.stack([kp, self.teacher[i]])
        if self.aug is not None:
            img, kp = self.aug(img, kp, seed=self.epoch_seed * 1_000_003 + i)
        item = torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(kp.astype(np.float32)), int(self.source[i])
        if self.teacher is not None:
            return item[0], item[1][0], item[2], item[1][1]
        return item


def _worker_init(_):
    import cv2
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def epoch_seed(cfg: Config, fold: int, epoch: int) -> int:
    return (cfg.seed * 1_000_003 + fold * 10_007 + epoch) % (2**31)


# --------------------------------------------------------------------------------------- one fold
def _save_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [h["train_rmse"] for h in history], label="train RMSE (augmented, px)")
    ax.plot(ep, [h["val_rmse"] for h in history], label="validation RMSE (px)")
    ax.set_xlabel("epoch"), ax.set_ylabel("RMSE (px)"), ax.set_title(title), ax.grid(alpha=0.3), ax.legend()
    ax.set_yscale("log")
    fig.tight_layout()
    save(fig, path)


def _write_metrics(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    atomic.write_text(path, buf.getvalue())


def _save_torch(obj, path: Path) -> None:
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


SHARE_EVERY = 8   # training steps between looks at how many fkd runs share this CPU's cores


def share_cores_now() -> None:
    """Take this process's fair share of the cores (device.fair_threads) if it changed: a run that starts beside
    this one gets its core within a few steps instead of both oversubscribing the CPU (~4x slower) until this
    one's epoch ends."""
    n = fair_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


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
            out = model(x, src, kp, teacher=teach, teacher_weight=cfg.teacher_weight)
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


def train_fold(cfg: Config, data: CompetitionData, folds: np.ndarray, fold: int, run_dir: Path,
               report: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """Train one fold; returns its result (best epoch, validation RMSE with/without TTA) and writes fold<k>/.

    `report(epoch, val_rmse)` is called after each epoch (Optuna pruning raises from it).
    """

    fdir = run_dir / f"fold{fold}"
    done = fdir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    fdir.mkdir(parents=True, exist_ok=True)
    dev, amp = select_device(cfg.device, cfg.amp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    share_cores = dev.type == "cpu" and not cfg.threads and not cfg.deterministic  # a fixed count keeps bits equal
    if share_cores:
        register_trainer()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True

    tr, va = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    torch.manual_seed(epoch_seed(cfg, fold, -1))
    model = create_from_config(cfg)
    model.init_output(torch.from_numpy(source_means(data.keypoints[tr], data.source[tr])))
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = opt_cls([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                  lr=cfg.lr)
    steps_per_epoch = max(1, len(tr) // cfg.batch_size)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps_per_epoch)
    ema = None
    if cfg.ema > 0:
        # timm's EMA of weights and BN buffers with a decay warmup (1 - (1 + step)^-2/3, capped at cfg.ema): a
        # plain EMA keeps decay^steps of the first weights (0.99^224 = 10 % for 8 short epochs), which ruined it
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)

    start, best, best_epoch, bad, history = 0, float("inf"), -1, 0, []
    last = fdir / "last.pt"
    if last.is_file():  # resume
        try:
            ck = torch.load(last, map_location=dev, weights_only=False)
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint is reported, not loaded
            raise FkdError(f"{last}: unreadable checkpoint ({type(e).__name__}); delete it to restart the fold") from None
        if ck["fingerprint"] != cfg.fingerprint():
            raise FkdError(f"{last}: made with a different config; use another run name or delete {run_dir}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        start, best, best_epoch, bad, history = ck["epoch"] + 1, ck["best"], ck["best_epoch"], ck["bad"], ck["history"]
        print(f"fold {fold}: resuming after epoch {ck['epoch'] + 1}/{cfg.epochs}", flush=True)

    teach = None
    if cfg.teacher:
        from .teacher import teacher_labels
        teach = teacher_labels(cfg, data, folds, fold, dev, amp)
        print(f"fold {fold}: {np.isfinite(teach).sum() // 2} teacher-labelled keypoints from {cfg.teacher} "
              f"(weight {cfg.teacher_weight:g})", flush=True)
    ds = FaceDataset(data.images[tr], data.keypoints[tr], data.source[tr],
                     Augmenter(cfg.aug, cfg.flip_p, cfg.flip_const), teach)
    workers = default_workers(dev) if cfg.workers < 0 else cfg.workers
    if cfg.deterministic:
        workers = 0
    val_x, val_y, val_s = data.images[va], data.keypoints[va], data.source[va]
    eval_model = ema.module if ema is not None else model

    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        es = epoch_seed(cfg, fold, epoch)
        torch.manual_seed(es)
        ds.epoch_seed = es
        loader = torch.utils.data.DataLoader(
            ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(tr) >= cfg.batch_size,
            num_workers=workers, worker_init_fn=_worker_init if workers else None,
            generator=torch.Generator().manual_seed(es), pin_memory=dev.type == "cuda",
            persistent_workers=False)
        stats = train_one_epoch(model, loader, opt, sched, ema, dev, amp, cfg,
                                desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", progress=progress,
                                step=epoch * len(loader), share_cores=share_cores)
        pred = predict_images(eval_model, val_x, val_s, dev, amp, channels_last=cfg.channels_last)
        val = rmse_masked(pred, val_y)
        if not np.isfinite(val):
            raise FkdError(f"fold {fold}: validation RMSE is not finite after epoch {epoch + 1}: training diverged; "
                           "lower lr (--set lr=...) or turn on grad_clip")
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val)
        improved = val < best
        if improved:
            best, best_epoch, bad = val, epoch, 0
            _save_torch({"model": eval_model.state_dict(), "epoch": epoch, "val_rmse": val,
                         "config": cfg.to_dict(), "fingerprint": cfg.fingerprint()}, fdir / "best.pt")
        else:
            bad += 1
        history.append({"epoch": epoch + 1, "train_rmse": round(stats["train_rmse"], 5),
                        "val_rmse": round(val, 5), "lr": opt.param_groups[0]["lr"],
                        "seconds": round(time.time() - t0, 2)})
        _save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                     "ema": ema.state_dict() if ema is not None else None, "epoch": epoch, "best": best,
                     "best_epoch": best_epoch, "bad": bad, "history": history,
                     "fingerprint": cfg.fingerprint()}, last)
        _write_metrics(history, fdir / "metrics.csv")
        if progress:
            print(f"fold {fold} epoch {epoch + 1:>3}/{cfg.epochs}  train {history[-1]['train_rmse']:.3f}  "
                  f"val {val:.4f}{' *' if improved else ''}  {history[-1]['seconds']:.1f}s", flush=True)
        if report is not None:
            report(epoch, val)
        if cfg.patience and bad >= cfg.patience:
            print(f"fold {fold}: early stop after {epoch + 1} epochs (best {best:.4f} at {best_epoch + 1})")
            break

    # out-of-fold predictions with the best weights, with and without flip TTA
    eval_model.load_state_dict(torch.load(fdir / "best.pt", map_location=dev, weights_only=False)["model"])
    oof = predict_images(eval_model, val_x, val_s, dev, amp, channels_last=cfg.channels_last)
    mirrored = predict_images(eval_model, np.ascontiguousarray(val_x[:, :, ::-1]), val_s, dev, amp,
                              channels_last=cfg.channels_last)   # predictions of the mirrored faces
    oof_tta = tta_average(oof, mirrored, cfg.flip_const)
    # the TTA flip constant, measured out of fold: which c un-flips this model's mirrored predictions best
    scan = {str(c): rmse_masked(tta_average(oof, mirrored, c), val_y) for c in FLIP_SCAN}
    runfiles.write_fold_predictions(fdir, va, oof, mirrored)
    _save_curve(history, fdir / "loss.png", f"{run_dir.name} fold {fold}")
    result = {"fold": fold, "best_epoch": best_epoch + 1, "epochs_run": len(history),
              "val_rmse": rmse_masked(oof, val_y), "val_rmse_tta": rmse_masked(oof_tta, val_y),
              "seconds": round(sum(h["seconds"] for h in history), 1), "n_train": len(tr), "n_val": len(va),
              "tta_flip_const_scan": scan}
    atomic.write_json(done, result)
    last.unlink(missing_ok=True)  # the fold is finished: best.pt and result.json are what remain
    return result


# -------------------------------------------------------------------------------------------- CV
def prepare_run(cfg: Config, data: CompetitionData) -> tuple[Path, np.ndarray]:
    """Create or re-open runs/<name>/: refuse a run dir made with another config or other data."""
    run_dir = cfg.run_dir()
    if (run_dir / "config.yaml").is_file():
        old = runfiles.read_run_meta(run_dir)
        if old.get("fingerprint") != cfg.fingerprint():
            changed = sorted(k for k, v in training_fields(cfg).items()
                             if (old.get("config") or {}).get(k, v) != v)
            raise FkdError(f"{run_dir}: made with a different config (changed: {', '.join(changed) or '?'}); "
                           "pick another --set name=... or delete that folder")
        if old.get("data_hash") != data.data_hash:
            raise FkdError(f"{run_dir}: made from other data ({old.get('data_dir')}); "
                           "pick another --set name=... or delete that folder")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        runfiles.save_run_config(cfg, run_dir, {"fingerprint": cfg.fingerprint(), "data_hash": data.data_hash,
                                    "test_hash": test_hash(data),
                                    "data_dir": str(Path(cfg.data_dir).resolve()),
                                    "fkd_version": __import__("fkd").__version__})
    folds = make_folds(data.source, cfg.folds, cfg.fold_seed())
    save_folds(run_dir / "folds.csv", folds, data.source)
    return run_dir, folds


def resolve_budget(cfg: Config, data: CompetitionData) -> Config:
    """cfg with the epochs that fit cfg.budget_min minutes on this machine, decided once per run.

    A run that exists already keeps the epochs its config.yaml recorded (a resumed or extended run never
    re-times). Otherwise a few training steps after warm-up and a validation pass are timed here, and every
    fold gets the same epochs: folds x epochs x (train + validation + checkpoint) + out-of-fold and test
    prediction + the time this probe took must stay under the budget less a 10 % margin. The epochs are
    resolved before any scheduler exists (onecycle fixes its length) and written into config.yaml, so
    `--set budget_min=0 --set epochs=N` reproduces the run anywhere.
    """
    if (cfg.run_dir() / "config.yaml").is_file():
        saved, _ = runfiles.load_run(cfg.run_dir())
        print(f"budget {cfg.budget_min:g} min: {saved.epochs} epochs a fold, as resolved when {cfg.run_name()} "
              "began (config.yaml)", flush=True)
        return dataclasses.replace(cfg, epochs=saved.epochs)
    t_start = time.time()
    s = probe_speed(cfg, data)
    folds = len(cfg.train_folds or range(cfg.folds))
    n_val = len(data.images) / cfg.folds
    n_train = len(data.images) - n_val
    epoch_s = n_train * s["train_img_s"] + n_val * s["eval_img_s"] + s["checkpoint_s"]
    # after training: each fold predicts its validation rows twice (plain, mirrored), then the fold ensemble
    # predicts the test set with TTA
    fixed = folds * 2 * n_val * s["eval_img_s"] + folds * 2 * len(data.test_images) * s["eval_img_s"]
    if cfg.teacher:  # each fold's teacher labels: its training rows predicted with flip TTA (a like-sized model)
        fixed += folds * 2 * n_train * s["eval_img_s"]
    left = cfg.budget_min * 60 * 0.9 - fixed - (time.time() - t_start)
    epochs = max(1, int(left // (folds * epoch_s)))
    print(f"budget {cfg.budget_min:g} min: {epochs} epochs a fold x {folds} folds (measured here: "
          f"{1 / s['train_img_s']:.0f} training img/s, {1 / s['eval_img_s']:.0f} prediction img/s, "
          f"{epoch_s:.1f} s an epoch; 10 % margin)", flush=True)
    return dataclasses.replace(cfg, epochs=epochs)


def probe_speed(cfg: Config, data: CompetitionData, steps: int = 6, warmup: int = 2) -> dict:
    """Seconds per training image (augmentation, step, optimizer), per predicted image, and per checkpoint,
    timed after warm-up on this machine with the run's own model, batch size and loader."""
    dev, amp = select_device(cfg.device, cfg.amp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    bs = cfg.batch_size
    n = min(len(data.images), bs * (steps + warmup))
    model = create_from_config(cfg).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ds = FaceDataset(data.images[:n], data.keypoints[:n], data.source[:n], Augmenter(cfg.aug, cfg.flip_p, cfg.flip_const))
    first = torch.utils.data.Subset(ds, range(min(n, bs * warmup)))
    rest = torch.utils.data.Subset(ds, range(min(n, bs * warmup), n)) if n > bs * warmup else first
    train_one_epoch(model, torch.utils.data.DataLoader(first, batch_size=bs), opt, None, None, dev, amp, cfg,
                    progress=False)
    t = time.perf_counter()
    done = train_one_epoch(model, torch.utils.data.DataLoader(rest, batch_size=bs), opt, None, None, dev, amp, cfg,
                           progress=False)["images"]
    train_s = (time.perf_counter() - t) / max(done, 1)
    k = min(len(data.images), 256)
    predict_images(model, data.images[:k], data.source[:k], dev, amp, channels_last=cfg.channels_last)
    t = time.perf_counter()
    predict_images(model, data.images[:k], data.source[:k], dev, amp, channels_last=cfg.channels_last)
    eval_s = (time.perf_counter() - t) / k
    t = time.perf_counter()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, io.BytesIO())
    return {"train_img_s": train_s, "eval_img_s": eval_s, "checkpoint_s": time.perf_counter() - t}


def collect_oof(run_dir: Path, n_rows: int, which: list[int], tta_const: float | None = None):
    """(plain, mirrored) out-of-fold arrays (N, 30) over the folds in `which` (NaN rows elsewhere)."""
    plain, mirrored = np.full((2, n_rows, 30), np.nan, np.float32)
    for k in which:
        f = runfiles.read_fold_predictions(run_dir / f"fold{k}")
        plain[f["idx"]], mirrored[f["idx"]] = f["plain"], f["mirrored"]
    return plain, mirrored


def tta_average(plain: np.ndarray, mirrored: np.ndarray, flip_const: float) -> np.ndarray:
    """Flip TTA: the mean of a prediction and the un-flipped prediction of the mirrored face."""
    return (plain + flip_keypoints(mirrored, flip_const)) / 2


def run_cv(cfg: Config, report: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """Train every fold (skipping finished ones), then score the out-of-fold predictions; writes cv.json."""
    data = load_training_data(cfg.data_dir, cfg.limit_train, cfg.fold_seed())
    if cfg.teacher:  # a teacher on other data or another split is refused here, before any timing or training
        from .teacher import check_teacher
        check_teacher(cfg, data, make_folds(data.source, cfg.folds, cfg.fold_seed()))
    if cfg.budget_min > 0:
        cfg = resolve_budget(cfg, data)
    run_dir, folds = prepare_run(cfg, data)
    atomic.sweep(run_dir)  # killed writers' temps, also in fold folders this invocation does not train
    which = list(cfg.train_folds) or list(range(cfg.folds))
    t0 = time.time()
    results = []
    for k in which:
        results.append(train_fold(cfg, data, folds, k, run_dir, report=report if k == which[0] else None,
                                  progress=progress))
    plain, mirrored = collect_oof(run_dir, len(folds), which)
    sel = np.isin(folds, which)
    no_tta = breakdown(plain[sel], data.keypoints[sel], data.source[sel], folds[sel])
    c_tta = cfg.tta_flip_const or fit_tta_flip_const(tta_average(plain, mirrored, cfg.flip_const)[sel],
                                                     data.keypoints[sel], cfg.flip_const)
    oof_tta = tta_average(plain, mirrored, c_tta)
    tta = breakdown(oof_tta[sel], data.keypoints[sel], data.source[sel], folds[sel])
    chosen = tta if cfg.tta else no_tta
    cv = {"run": run_dir.name, "cv_rmse": chosen["rmse"], "cv_rmse_no_tta": no_tta["rmse"],
          "tta_flip_const": c_tta, "flip_const": cfg.flip_const,
          "cv_rmse_tta": tta["rmse"], "tta": cfg.tta, "rmse_full": chosen["rmse_full"],
          "rmse_common": chosen["rmse_common"], "per_keypoint": chosen["per_keypoint"],
          "per_fold": chosen["per_fold"], "fold_mean": chosen["fold_mean"], "fold_std": chosen["fold_std"],
          "folds_trained": which, "folds": cfg.folds, "fold_results": results,
          "train_seconds": round(sum(r["seconds"] for r in results), 1), "wall_seconds": round(time.time() - t0, 1),
          "mean_keypoint_rmse": mean_baseline(data, folds, which), "data_hash": data.data_hash,
          "tta_flip_const_scan": {c: pooled([(r["tta_flip_const_scan"][c], r["n_val"]) for r in results])
                                  for c in results[0]["tta_flip_const_scan"]}}
    runfiles.write_oof(run_dir, plain, oof_tta)
    atomic.write_json(run_dir / "cv.json", cv)
    atomic.write_text(run_dir / "cv.txt", format_cv(cv))
    return cv


def source_means(keypoints: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(2, 30) mean keypoints of each source (rows COMMON, FULL); gaps filled from all rows, then the centre."""
    import warnings

    out = np.empty((2, 30), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are filled below
        overall = np.nan_to_num(np.nanmean(keypoints, 0), nan=48.0) if len(keypoints) else np.full(30, 48.0)
        for s in (COMMON, FULL):
            rows = keypoints[source == s]
            m = np.nanmean(rows, 0) if len(rows) else overall
            out[s] = np.where(np.isfinite(m), m, overall)
    return out


def fit_tta_flip_const(tta_pred: np.ndarray, target: np.ndarray, c_used: float) -> float:
    """The TTA flip constant that minimises out-of-fold RMSE, in closed form.

    TTA(c) = (p + c - p_mirrored) / 2 in x, so TTA(c) = TTA(c_used) + (c - c_used) / 2 and the least-squares
    c is c_used + 2 * mean(x_true - TTA_x). It moves only partly with the training constant (ytf15, fold 0:
    training with 96 / 97 / 98 gave 97.42 / 97.63 / 97.71), so it also hints at the data's own convention: when it
    lies far from the training constant, training with a constant nearer to it is worth a try (format_cv says so).
    """
    x_t, x_p = target[..., 0::2], tta_pred[..., 0::2]
    m = np.isfinite(x_t) & np.isfinite(x_p)
    if not m.any():
        return float(c_used)
    return float(np.clip(c_used + 2 * np.mean(x_t[m] - x_p[m]), c_used - 3, c_used + 3))


def pooled(rmse_and_n: list[tuple[float, int]]) -> float:
    """Fold RMSEs pooled by fold size (sqrt of the size-weighted mean square)."""
    return float(np.sqrt(sum(r * r * n for r, n in rmse_and_n) / sum(n for _, n in rmse_and_n)))


def mean_baseline(data: CompetitionData, folds: np.ndarray, which: list[int]) -> float:
    """CV RMSE of predicting each fold with the training folds' mean keypoints (per source)."""
    errs = []
    for k in which:
        tr, va = folds != k, folds == k
        pred = source_means(data.keypoints[tr], data.source[tr])[data.source[va]]
        t = data.keypoints[va]
        errs.append((pred - t)[np.isfinite(t)])
    e = np.concatenate(errs)
    return float(np.sqrt(np.mean(e ** 2)))


def format_cv(cv: dict) -> str:
    lines = [f"run {cv['run']}",
             f"CV RMSE {cv['cv_rmse']:.4f}  (TTA {'on' if cv['tta'] else 'off'}; without TTA {cv['cv_rmse_no_tta']:.4f}, "
             f"with {cv['cv_rmse_tta']:.4f}; mean-keypoint baseline {cv['mean_keypoint_rmse']:.4f})",
             f"per source: full {cv['rmse_full']:.4f}  common {cv['rmse_common']:.4f}",
             "per fold: " + "  ".join(f"{v:.4f}" for v in cv["per_fold"])
             + f"   mean {cv['fold_mean']:.4f} +- {cv['fold_std']:.4f}",
             f"TTA flip constant {cv.get('tta_flip_const', 0):.3f} (fitted out of fold; training flips with "
             f"{cv.get('flip_const', 0)}); scan: " + "  ".join(f"c={c}: {v:.4f}" for c, v in
                                                            cv.get("tta_flip_const_scan", {}).items()),
             "per keypoint:"]
    c_fit, c_train = cv.get("tta_flip_const", 0), cv.get("flip_const", 0)
    if c_fit and abs(c_fit - c_train) > 0.5:
        lines.insert(-1, f"hint: the fitted TTA constant {c_fit:.2f} is far from the training flip constant "
                         f"{c_train}; this data may follow another convention: try --set flip_const={c_fit:.1f} "
                         "and compare the CV")
    for k, v in cv["per_keypoint"].items():
        lines.append(f"  {k:<26} {v:.4f}")
    return "\n".join(lines)
