"""A run folder's files: each has one writer and one reader here, with named fields instead of magic indices.

    runs/<name>/
      config.yaml            the resolved Config as saved, + fingerprint, data_hash, test_hash, data_dir, fkd_version
      folds.csv              row, source, fold
      fold<k>/last.pt        model, optimizer, scheduler, EMA state after the last epoch (gone once the fold ends)
      fold<k>/best.pt        the best epoch's weights (EMA weights when EMA is on)
      fold<k>/metrics.csv    a row per epoch; loss.png its curve
      fold<k>/val_pred.npz   this fold's validation rows: idx (n,), plain (n, 30), mirrored (n, 30) = predictions of
                             the mirrored faces, not yet un-flipped (TTA with any constant is made from the two)
      fold<k>/result.json    best epoch, validation RMSE with and without TTA, seconds
      oof.npz                every training row out of fold: plain (N, 30), tta (N, 30) un-flipped with the run's
                             fitted TTA constant; NaN rows where a fold is not trained
      cv.json, cv.txt        the CV figures

    >>> cfg, meta = load_run("runs/default-resnet18-1a2b3c4d")   # doctest: +SKIP
    >>> oof = read_oof("runs/default-resnet18-1a2b3c4d", tta=True)  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from . import atomic
from .config import Config, config_from_dict, save_config
from .errors import FkdError


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


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The best.pt of every finished fold (one with result.json)."""
    done = [c for c in sorted(Path(run_dir).glob("fold*/best.pt")) if (c.parent / "result.json").is_file()]
    if not done:
        raise FkdError(f"{run_dir}: no finished fold checkpoints (fold*/best.pt with result.json); "
                       "train first with `fkd train`")
    return done


def run_table(runs_dir: str | Path = "runs") -> list[dict]:
    """One row per run folder: what it trained, how long, its CV without and with TTA, when, whether submitted;
    finished runs best first (CV with TTA), unfinished ones after them."""
    import time

    from . import ledger

    sent = {}
    for r in ledger.rows():
        if r.get("status") in ("COMPLETE", "submitted", "pending") and r.get("run"):
            best = sent.get(r["run"])
            if best is None or (r.get("public_score") or 1e9) < (best.get("public_score") or 1e9):
                sent[r["run"]] = r
    out = []
    for d in sorted(p for p in Path(runs_dir).glob("*") if (p / "config.yaml").is_file()):
        try:
            cfg, _ = load_run(d)
        except FkdError:
            continue                                  # a folder made by another fkd version: not listed
        cv = read_cv(d)
        done = sorted(int(p.parent.name[4:]) for p in d.glob("fold*/result.json"))
        s = sent.get(d.name) or {}
        out.append({"run": d.name, "model": cfg.model, "head": cfg.head, "epochs": cfg.epochs, "folds": cfg.folds,
                    "folds_done": len(done), "minutes": (cv.get("train_seconds") or 0) / 60 or None,
                    "cv": cv.get("cv_rmse_no_tta"), "cv_tta": cv.get("cv_rmse_tta"),
                    "date": time.strftime("%Y-%m-%d %H:%M", time.localtime((d / "config.yaml").stat().st_mtime)),
                    "submitted": s.get("destination") or ("yes" if s else ""), "public": s.get("public_score")})
    return sorted(out, key=lambda r: (r["cv_tta"] is None, r["cv_tta"] or 0.0))


def format_run_table(rows: list[dict]) -> str:
    if not rows:
        return "no runs yet: `fkd train` or `make submit`"
    f = lambda v: f"{v:7.4f}" if v is not None else f"{'-':>7}"  # noqa: E731
    head = (f"{'run':<40} {'model':<16} {'head':<8} {'epochs':>6} {'folds':>5} {'min':>6} {'CV':>7} {'CV+TTA':>7} "
            f"{'date':<16} submitted (public)")
    lines = [head, "-" * len(head)]
    for r in rows:
        folds = f"{r['folds_done']}/{r['folds']}"
        minutes = f"{r['minutes']:.1f}" if r["minutes"] else "-"
        sub = f"{r['submitted']} ({r['public']:.4f})" if r["public"] is not None else r["submitted"]
        lines.append(f"{r['run'][:40]:<40} {r['model'][:16]:<16} {r['head'][:8]:<8} {r['epochs']:>6} {folds:>5} "
                     f"{minutes:>6} {f(r['cv'])} {f(r['cv_tta'])} {r['date']:<16} {sub}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- out-of-fold predictions
def write_fold_predictions(fold_dir: Path, idx: np.ndarray, plain: np.ndarray, mirrored: np.ndarray) -> Path:
    path = Path(fold_dir) / "val_pred.npz"
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, idx=idx, plain=plain, mirrored=mirrored)
    return path


def read_fold_predictions(fold_dir: Path) -> dict:
    """{"idx": (n,), "plain": (n, 30), "mirrored": (n, 30)} of a finished fold."""
    with np.load(Path(fold_dir) / "val_pred.npz") as z:
        return {k: z[k] for k in ("idx", "plain", "mirrored")}


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
