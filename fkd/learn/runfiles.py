"""A run folder's files: each has one writer and one reader here, with named fields instead of magic indices.

    runs/<name>/
      config.yaml            the resolved Config as saved, + fingerprint, data_hash, test_hash, data_dir, fkd_version
      folds.csv              row, source, fold, group (the near-duplicate group of the row; -1: row folds)
      fold<k>/last.pt        model, optimizer, scheduler, EMA state after the last epoch (gone once the fold ends)
      fold<k>/best.pt        the best epoch's weights (EMA weights when EMA is on)
      fold<k>/metrics.csv    a row per epoch; loss.png its curve
      fold<k>/val_pred.npz   this fold's validation rows: idx (n,), plain (n, 30), mirrored (n, 30) = predictions of
                             the mirrored faces, not yet un-flipped (TTA with any constant is made from the two)
      fold<k>/result.json    best epoch, validation RMSE with and without TTA, seconds
      refit<i>/model.pt      a model trained on every row (--set refit=N): its last epoch's weights (EMA's where
                             on); metrics.csv, loss.png and result.json beside it; last.pt while it trains
      oof.npz                every training row out of fold: plain (N, 30), tta (N, 30) un-flipped with the run's
                             fitted TTA constant; NaN rows where a fold is not trained
      cv.json, cv.txt        the CV figures

    >>> cfg, meta = load_run("runs/default-resnet18-1a2b3c4d")   # doctest: +SKIP
    >>> oof = read_oof("runs/default-resnet18-1a2b3c4d", tta=True)  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import yaml

from .. import atomic
from ..config import Config, config_from_dict, save_config
from ..errors import FkdError


# ------------------------------------------------------------------------------------------ config
def save_run_config(cfg: Config, run_dir: Path, meta: dict) -> Path:
    return save_config(cfg, Path(run_dir) / "config.yaml", meta)


def read_run_meta(run_dir: str | Path) -> dict:
    """config.yaml as written: {"config": {...}, "fingerprint": ..., "data_hash": ..., ...}."""
    f = Path(run_dir) / "config.yaml"
    if not f.is_file():
        raise FkdError(f"{run_dir}: not a run folder (no config.yaml); train one with `fkd train`")
    return yaml.safe_load(f.read_text()) or {}


def load_run(run_dir: str | Path) -> tuple[Config, dict]:
    """The run's Config exactly as it was saved (preset and all), and the rest of config.yaml."""
    meta = read_run_meta(run_dir)
    return config_from_dict(meta.get("config") or {}, where=str(Path(run_dir) / "config.yaml")), meta


def read_cv(run_dir: str | Path, required: bool = False) -> dict:
    f = Path(run_dir) / "cv.json"
    if not f.is_file():
        if required:
            raise FkdError(f"{run_dir}: no cv.json; finish its training first (`fkd train`)")
        return {}
    return json.loads(f.read_text())


def tta_constant(cfg: Config, cv: dict) -> float:
    """TTA un-flips with the constant fitted out of fold (cv.json), unless the config fixes one."""
    return cfg.tta_flip_const or cv.get("tta_flip_const") or cfg.flip_const


def tta_views(cfg: Config, cv: dict) -> tuple[list, float]:
    """The extra TTA views and their weight fitted out of fold (cv.json); ([], 0) where the run has none."""
    from ..competition.keypoints import views_of

    w = cv.get("tta_views_weight") or 0.0
    return (views_of(cfg), w) if w > 0 else ([], 0.0)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The weights the submission averages: every finished fold's best.pt and refit model's model.pt (each with
    its result.json)."""
    run_dir = Path(run_dir)
    done = [c for c in sorted(run_dir.glob("fold*/best.pt")) + sorted(run_dir.glob("refit*/model.pt"))
            if (c.parent / "result.json").is_file()]
    if not done:
        raise FkdError(f"{run_dir}: no finished fold checkpoints (fold*/best.pt with result.json); "
                       "train first with `fkd train`")
    return done


def read_folds(run_dir: str | Path) -> np.ndarray | None:
    """The fold of every row from folds.csv (row, source, fold, group), or None where the run has none yet."""
    f = Path(run_dir) / "folds.csv"
    if not f.is_file():
        return None
    import pandas as pd

    return pd.read_csv(f)["fold"].to_numpy()


# ------------------------------------------------------------------------------ checkpoints, curves
def save_checkpoint(obj: dict, path: Path) -> None:
    """best.pt / last.pt, written then renamed: a kill never leaves half a checkpoint under its name."""
    import torch

    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def write_metrics(history: list[dict], path: Path) -> Path:
    """metrics.csv: a row per epoch (epoch, train_rmse, val_rmse, lr, seconds)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    return atomic.write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------- out-of-fold predictions
def write_fold_predictions(fold_dir: Path, idx: np.ndarray, plain: np.ndarray, mirrored: np.ndarray,
                           views: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """val_pred.npz; with `views` the extra TTA views' mean (plain, mirrored) too."""
    path = Path(fold_dir) / "val_pred.npz"
    extra = {"views": views[0], "views_mirrored": views[1]} if views is not None else {}
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, idx=idx, plain=plain, mirrored=mirrored, **extra)
    return path


def read_fold_predictions(fold_dir: Path) -> dict:
    """{"idx": (n,), "plain": (n, 30), "mirrored": (n, 30)} of a finished fold (+ "views", "views_mirrored"
    where the fold predicted the extra TTA views)."""
    with np.load(Path(fold_dir) / "val_pred.npz") as z:
        return {k: z[k] for k in ("idx", "plain", "mirrored", "views", "views_mirrored") if k in z}


def write_oof(run_dir: Path, plain: np.ndarray, tta: np.ndarray) -> Path:
    path = Path(run_dir) / "oof.npz"
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, plain=plain, tta=tta)
    return path


def read_oof(run_dir: str | Path, tta: bool) -> np.ndarray:
    """(N, 30) out-of-fold predictions of every training row, with flip TTA (fitted constant) or without."""
    f = Path(run_dir) / "oof.npz"
    if not f.is_file():
        raise FkdError(f"{run_dir}: no oof.npz; finish the run with `fkd train` first")
    with np.load(f) as z:
        return z["tta" if tta else "plain"]
