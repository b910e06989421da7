"""A trained run -> a Kaggle submission: fold ensemble, flip TTA, written through IdLookupTable.csv.

    $ fkd predict runs/default-resnet18-1a2b3c4d          # writes submissions/<UTC time>-<run>.csv + .json

The CSV is written to a temp file and renamed, so a kill never leaves a partial file; a sidecar JSON holds
the run, its resolved config, CV RMSE, TTA on/off, data hash, git commit and fkd version; the ledger
(submissions/ledger.sqlite) gets a row, with the local score when the data folder has a solution.csv.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from . import atomic, ledger
from .competition import COMP, ROOT
from .config import Config, make_config
from .data import CompetitionData, load_data, test_hash
from .errors import FkdError
from .infer import predict_images, select_device


def load_run(run_dir: str | Path) -> tuple[Config, dict]:
    run_dir = Path(run_dir)
    f = run_dir / "config.yaml"
    if not f.is_file():
        raise FkdError(f"{run_dir}: not a run folder (no config.yaml); train one with `fkd train`")
    meta = yaml.safe_load(f.read_text()) or {}
    return make_config(overrides=meta.get("config") or {}), meta


def checkpoints(run_dir: Path) -> list[Path]:
    ck = sorted(run_dir.glob("fold*/best.pt"))
    done = [c for c in ck if (c.parent / "result.json").is_file()]
    if not done:
        raise FkdError(f"{run_dir}: no finished fold checkpoints (fold*/best.pt with result.json); "
                       "train first with `fkd train`")
    return done


def ensemble_predict(cfg: Config, ckpts: list[Path], data: CompetitionData, tta: bool,
                     tta_const: float | None = None) -> np.ndarray:
    """Average every fold's best checkpoint over the test images -> (M, 30) pixels."""
    from .train import build

    dev, amp = select_device(cfg.device, cfg.amp)
    preds = []
    for ck in ckpts:
        model = build(cfg).to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        try:
            state = torch.load(ck, map_location=dev, weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise FkdError(f"{ck}: unreadable checkpoint ({type(e).__name__}); retrain that fold") from None
        model.load_state_dict(state["model"])
        preds.append(predict_images(model, data.test_images, data.test_source, dev, amp, tta=tta,
                                    flip_const=tta_const or cfg.flip_const, channels_last=cfg.channels_last))
    return np.mean(preds, 0)


def submission_frame(pred: np.ndarray, data: CompetitionData) -> pd.DataFrame:
    """(M, 30) predictions -> RowId,Location in the lookup table's order, clipped to the image, never NaN."""
    lk = data.lookup
    values = pred[lk["img"].to_numpy(), lk["col"].to_numpy()].astype(np.float64)
    if not np.isfinite(values).all():
        raise FkdError("the model predicted NaN or inf for some test images; the run is broken, retrain it")
    values = np.clip(values, 0.0, float(COMP.image_size))
    sub = pd.DataFrame({"RowId": lk["RowId"].to_numpy(), "Location": values})
    if data.sample_rowids is not None:
        if len(sub) != len(data.sample_rowids) or not np.array_equal(np.sort(sub.RowId), np.sort(data.sample_rowids)):
            raise FkdError(f"{data.data_dir}: the submission's RowIds do not match {COMP.files['sample']}")
    return sub


def write_csv(sub: pd.DataFrame, path: Path) -> Path:
    text = "RowId,Location\n" + "".join(f"{r},{v:.6f}\n" for r, v in zip(sub.RowId.tolist(), sub.Location.tolist()))
    return atomic.write_text(path, text)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def tta_constant(cfg: Config, cv: dict) -> float:
    """TTA un-flips with the constant fitted out of fold (cv.json), unless the config fixes one."""
    return cfg.tta_flip_const or cv.get("tta_flip_const") or cfg.flip_const


def local_scores(csv: Path, data: CompetitionData) -> dict:
    """Overall, public and private RMSE of a written submission against the folder's solution.csv."""
    from .metric import read_lookup_sources, read_submission, score

    lk = data.data_dir / COMP.files["lookup"]
    lookup = read_lookup_sources(lk if lk.is_file() else data.solution_path.parent / COMP.files["lookup"])
    sub, sol = read_submission(csv), read_submission(data.solution_path)
    return {"all": score(sub, sol, lookup, where=str(csv)),
            "public": score(sub, sol, lookup, "public", str(csv))["rmse"],
            "private": score(sub, sol, lookup, "private", str(csv))["rmse"]}


def write_submission(sub: pd.DataFrame, name: str, data: CompetitionData, info: dict, cv_rmse: float | None,
                     tta: bool, out_dir: str | Path = "submissions") -> dict:
    """<out_dir>/<UTC time>-<name>.csv written atomically, its ledger row, its local score (where the folder has
    a solution.csv) and its sidecar JSON (`info` + provenance); returns the sidecar's content."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(out_dir) / f"{stamp}-{name}.csv"
    n = 1
    while out.exists():
        out = Path(out_dir) / f"{stamp}-{name}-{n}.csv"
        n += 1
    write_csv(sub, out)
    info = {**info, "file": str(out), "run": name, "cv_rmse": cv_rmse, "tta": tta,
            "data_dir": str(Path(data.data_dir).resolve()), "data_hash": data.data_hash, "test_hash": test_hash(data),
            "git_commit": git_commit(), "fkd_version": __import__("fkd").__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": len(sub)}
    ledger.record(out, run=name, cv_rmse=cv_rmse, tta=int(tta), competition=COMP.slug, status="local")
    if data.solution_path is not None:
        s = info["local_score"] = local_scores(out, data)
        ledger.record(out, local_rmse=s["all"]["rmse"], local_public=s["public"], local_private=s["private"])
    atomic.write_json(out.with_suffix(".json"), info)
    return info


def predict_run(run_dir: str | Path, tta: bool | None = None, data_dir: str | None = None,
                out_dir: str | Path = "submissions") -> dict:
    """Write the submission of a run; returns its paths, figures and local score (if a solution exists)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FkdError(f"{run_dir}: no such run folder; list them with `ls runs/`")
    cfg, meta = load_run(run_dir)
    ckpts = checkpoints(run_dir)
    tta = cfg.tta if tta is None else tta
    data = load_data(data_dir or meta.get("data_dir") or cfg.data_dir)
    if meta.get("test_hash") and meta["test_hash"] != test_hash(data):
        raise FkdError(f"{data.data_dir}: its test set differs from the one run {run_dir.name} was trained beside; "
                       "predict with the run's own data folder (--data-dir)")
    cv_file = run_dir / "cv.json"
    cv = json.loads(cv_file.read_text()) if cv_file.is_file() else {}
    tta_const = tta_constant(cfg, cv)
    sub = submission_frame(ensemble_predict(cfg, ckpts, data, tta, tta_const), data)
    info = {"run_dir": str(run_dir.resolve()), "config": cfg.to_dict(), "tta_flip_const": tta_const if tta else None,
            "folds": [c.parent.name for c in ckpts]}
    return write_submission(sub, run_dir.name, data, info, cv.get("cv_rmse_tta" if tta else "cv_rmse_no_tta"), tta,
                            out_dir)
