"""Teacher labels: a finished run fills the values the fully labelled source's outputs have no label for.

On the real data 70 % of the training rows label only the 8 common values (eye centres, nose tip, bottom
lip), so the fully labelled source's 30 outputs (with its own nose-tip and bottom-lip convention) learn from
the other 30 % alone. With `--set teacher=RUN` a finished run (the teacher) predicts the fully labelled
source's 30 values for every training row, with flip TTA; each value a row has no full-source label for
becomes a teacher label, learned by the student's full-source outputs at `teacher_weight` times the loss of
the real labels. Real labels train their own source's outputs exactly as without a teacher.

Nested, or CV is inflated: the student's fold k takes its teacher labels from the teacher's fold-k model,
trained on the other folds' rows only (the student's fold-k training rows), so no fold-k validation row
ever reached the student through its teacher. `check_teacher` refuses a teacher trained on other data or
another split.

    $ fkd train --preset default --set teacher=default-resnet18-59356394-offline-ytf15 --set name=student

With --set refit_teacher=0.5 a run's refit models learn the same kind of labels from the run's own fold models
(`fold_model_labels`), trained just before them: no second run. A refit model is never scored out of fold, so no
nesting is needed; the fold models, and the CV they give, are exactly as without it.

With --set refit_pseudo=1 the run's own fold models label the test faces the same way (`fold_model_pseudo`), and
the refit models train on them beside every row: self-training in one run, the fold models and their CV unchanged.

With --set pseudo=1 the teacher also labels the test faces, which then train the student beside its rows
(`pseudo_rows`; nested the same way). That reads the test images: the competition's rules do not forbid it,
but a submission made so has seen the test faces (unlabelled). --set teacher_weight=0 keeps only that part.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..competition import FULL
from ..competition.data import CompetitionData
from ..config import Config
from ..errors import FkdError
from .models import load_fold_model, predict_images
from .runfiles import checkpoints, load_run, read_cv, tta_constant


def teacher_dir(cfg: Config) -> Path:
    """The teacher's run folder: a run name in runs_dir, or a path."""
    for d in (Path(cfg.runs_dir) / cfg.teacher, Path(cfg.teacher)):
        if (d / "config.yaml").is_file():
            return d
    raise FkdError(f"teacher {cfg.teacher!r}: no run folder with a config.yaml in {cfg.runs_dir}/ or at that path; "
                   "train the teacher first (`fkd train`), or --set teacher= to train without one")


def check_teacher(cfg: Config, data: CompetitionData, folds: np.ndarray) -> Path:
    """The teacher's folder, once it is shown to be nested: same data, same rows in the same folds."""
    tdir = teacher_dir(cfg)
    _, meta = load_run(tdir)
    if meta.get("data_hash") != data.data_hash:
        raise FkdError(f"teacher {tdir}: trained on other data ({meta.get('data_dir')}); a teacher must be a run on "
                       f"this data ({cfg.data_dir}) with the same folds")
    f = tdir / "folds.csv"
    import pandas as pd

    theirs = pd.read_csv(f) if f.is_file() else None
    if theirs is None or len(theirs) != len(folds) or not np.array_equal(theirs["fold"].to_numpy(), folds):
        raise FkdError(f"teacher {tdir}: its folds ({f}) differ from this run's, so its fold-k model may have seen "
                       "fold k's validation rows; train the teacher with the same folds, seed/split_seed and "
                       "limit_train")
    return tdir


def teacher_labels(cfg: Config, data: CompetitionData, folds: np.ndarray, fold: int,
                   dev: torch.device, amp) -> np.ndarray:
    """(n_train, 30) teacher labels for fold `fold`'s training rows (NaN where a real label exists)."""
    tdir = check_teacher(cfg, data, folds)
    ck = tdir / f"fold{fold}" / "best.pt"
    if not (ck.is_file() and (ck.parent / "result.json").is_file()):
        raise FkdError(f"teacher {tdir}: fold {fold} is not finished ({ck}); finish the teacher (`fkd train` on it) "
                       "or train only the folds it has (--set train_folds=...)")
    tcfg, _ = load_run(tdir)
    tr = np.flatnonzero(folds != fold)
    full = np.full(len(tr), FULL, np.int64)
    pred = averaged_tta(tcfg, [ck], data.images[tr], full, tta_constant(tcfg, read_cv(tdir)), dev, amp)
    return fill_missing(data.keypoints[tr], data.source[tr], pred, cfg.source_aware)


def averaged_tta(cfg: Config, ckpts: list[Path], images: np.ndarray, source: np.ndarray, tta_const: float,
                 dev: torch.device, amp) -> np.ndarray:
    """The models saved at ckpts (trained with cfg), averaged: their flip-TTA predictions of the faces."""
    return np.mean([predict_images(load_fold_model(cfg, ck, dev), images, source, dev, amp, tta=True,
                                   flip_const=tta_const, channels_last=cfg.channels_last) for ck in ckpts], 0)


def fold_model_labels(cfg: Config, data: CompetitionData, run_dir: Path, which: list[int], tta_const: float,
                      dev: torch.device, amp) -> np.ndarray:
    """(N, 30) labels for a run's refit models (refit_teacher > 0): its trained fold models, averaged, predict the
    fully labelled source's 30 values of every training row with flip TTA (at the constant fitted out of fold);
    NaN where a real full-source label exists. The values filled are ones no fold model had a label for either."""
    full = np.full(len(data.images), FULL, np.int64)
    pred = averaged_tta(cfg, [run_dir / f"fold{k}" / "best.pt" for k in which], data.images, full, tta_const, dev,
                        amp)
    return fill_missing(data.keypoints, data.source, pred, cfg.source_aware)


def fill_missing(keypoints: np.ndarray, source: np.ndarray, pred: np.ndarray, source_aware: bool) -> np.ndarray:
    """Teacher labels for the full-source outputs: every value without a full-source label, from `pred`.

    With source awareness a common-source row's labels train the common source's outputs, so the full-source
    outputs have none of its 30 values; without it, there is one set of outputs and only its missing values
    are filled."""
    have = np.isfinite(keypoints)
    if source_aware:
        have &= (source == FULL)[:, None]
    return np.where(have, np.nan, pred).astype(np.float32)


def fold_model_pseudo(cfg: Config, data: CompetitionData, run_dir: Path, which: list[int], tta_const: float,
                      dev: torch.device, amp):
    """The test faces as training rows for a run's refit models (refit_pseudo=1), labelled by the run's trained fold
    models (averaged, flip TTA at the constant fitted out of fold) on the values the lookup table asks of each face,
    by the face's own source's outputs. (images, keypoints (M, 30), source)."""
    pred = averaged_tta(cfg, [run_dir / f"fold{k}" / "best.pt" for k in which], data.test_images, data.test_source,
                        tta_const, dev, amp)
    return data.test_images, np.where(lookup_asks(data), pred, np.nan).astype(np.float32), data.test_source


def lookup_asks(data: CompetitionData) -> np.ndarray:
    """(M, 30) True where the lookup table asks for a test face's value (elsewhere a pseudo-label has nothing to
    teach)."""
    asked = np.zeros((len(data.test_images), 30), bool)
    asked[data.lookup["img"].to_numpy(), data.lookup["col"].to_numpy()] = True
    return asked


def pseudo_rows(cfg: Config, data: CompetitionData, fold: int | None, dev: torch.device, amp,
                folds: np.ndarray | None = None):
    """The test faces as training rows, labelled by the teacher (--set pseudo=1: self-training on the unlabelled
    test faces): for the student's fold k, the teacher's fold-k model, which never saw fold k's validation rows;
    for a refit model, every model of the teacher's submission. Each face is labelled on the values the lookup
    table asks of it, by its own source's outputs, with flip TTA. (images, keypoints (M, 30), source).

    With pseudo_faces=val the faces are fold k's own validation faces instead, labelled on the values they have
    labels for (as the lookup table asks a test face for its source's values), the labels themselves unread: the
    student self-trains on the unlabelled faces it is scored on, as a submission does on the test faces, and the
    effect is measured out of fold."""
    tdir = teacher_dir(cfg)
    if cfg.pseudo_faces == "val":
        if fold is None or folds is None:
            raise FkdError("pseudo_faces=val: a refit model has no validation faces; --set refit=0")
        check_teacher(cfg, data, folds)
        va = np.flatnonzero(folds == fold)
        images, source, asked = data.images[va], data.source[va], np.isfinite(data.keypoints[va])
    else:
        images, source, asked = data.test_images, data.test_source, lookup_asks(data)
    tcfg, _ = load_run(tdir)
    ckpts = [tdir / f"fold{fold}" / "best.pt"] if fold is not None else checkpoints(tdir)
    if not all(c.is_file() and (c.parent / "result.json").is_file() for c in ckpts):
        raise FkdError(f"teacher {tdir}: {ckpts[0].parent.name} is not finished; finish the teacher first")
    pred = averaged_tta(tcfg, ckpts, images, source, tta_constant(tcfg, read_cv(tdir)), dev, amp)
    return images, np.where(asked, pred, np.nan).astype(np.float32), source
