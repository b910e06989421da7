"""A trained run -> test predictions: every fold's best checkpoint averaged, with flip TTA; then a submission.

    $ fkd predict runs/default-resnet18-1a2b3c4d          # writes submissions/<UTC time>-<run>.csv + .json

Writing the CSV, its sidecar and ledger row is fkd/infer/submission.py's job.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..competition.data import CompetitionData, load_data, test_hash
from ..competition.keypoints import tta_average
from ..config import Config
from ..device import select_device
from ..errors import FkdError
from ..learn.models import load_fold_model, predict_images, predict_views
from ..learn.runfiles import checkpoints, load_run, read_cv, tta_constant, tta_views
from .submission import submission_frame, write_submission


def ensemble_predict(cfg: Config, ckpts: list[Path], data: CompetitionData, tta: bool,
                     tta_const: float | None = None, views: tuple[list, float] = ([], 0.0)) -> np.ndarray:
    """Average every model of the submission over the test images -> (M, 30) pixels; with TTA each is the flip
    average, mixed with the extra views' at their out-of-fold weight where the run fitted one."""
    dev, amp = select_device(cfg.device, cfg.amp)
    c, (mats, w) = tta_const or cfg.flip_const, views
    preds = []
    for ck in ckpts:
        model = load_fold_model(cfg, ck, dev)
        p = predict_images(model, data.test_images, data.test_source, dev, amp, tta=tta, flip_const=c,
                           channels_last=cfg.channels_last)
        if tta and w > 0:
            p = (1 - w) * p + w * tta_average(*predict_views(model, data.test_images, data.test_source, dev, amp,
                                                             mats, cfg.channels_last), c)
        preds.append(p)
    return np.mean(preds, 0)


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
    cv = read_cv(run_dir)
    tta_const, views = tta_constant(cfg, cv), tta_views(cfg, cv)
    sub = submission_frame(ensemble_predict(cfg, ckpts, data, tta, tta_const, views), data)
    info = {"run_dir": str(run_dir.resolve()), "config": cfg.to_dict(), "tta_flip_const": tta_const if tta else None,
            "tta_views_weight": views[1] if tta else None,
            "folds": [c.parent.name for c in ckpts], "models": [c.parent.name for c in ckpts],
            "cv_estimates": (cv.get("submission") or {}).get("cv_estimates")}
    return write_submission(sub, run_dir.name, data, info, cv.get("cv_rmse_tta" if tta else "cv_rmse_no_tta"), tta,
                            out_dir)
