"""K-fold cross-validation: `run_cv(cfg)` trains every fold (skipping finished ones) and scores out of fold.

    $ fkd train --data-dir competition/data/practice --preset quick
    >>> cv = run_cv(make_config(preset="quick", data_dir="..."))   # doctest: +SKIP
    >>> cv["cv_rmse"]

A run folder is made once per config and data (runs/<name>/); one made with another config or other data is
refused, never silently reused. CV is pooled over the validation rows of the folds trained; TTA un-flips with a
constant fitted out of fold in closed form (fkd.competition.keypoints.fit_tta_flip_const).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__, atomic
from ..competition.data import CompetitionData, load_training_data, resolve_duplicates, test_hash
from ..competition.folds import Groups, duplicate_groups, face_embeddings, make_folds, near_twin_share, save_folds
from ..competition.keypoints import fit_tta_flip_const, tta_average, view_weight
from ..competition.metric import bootstrap_se, breakdown, mean_baseline, pooled, rmse_masked
from ..config import Config, training_fields
from ..errors import FkdError
from . import runfiles
from .budget import plan_budget, retime_refits
from .loop import train_fold
from .parallel import train_side_by_side, workers_for
from .refit import train_refit, what_is_submitted


def training_data(cfg: Config) -> CompetitionData:
    """The training rows a run of cfg trains on: its limit_train sample, its dup_labels policy. Every reader of a
    run's out-of-fold arrays loads them so, and its rows line up."""
    return resolve_duplicates(load_training_data(cfg.data_dir, cfg.limit_train, cfg.fold_seed()), cfg.dup_labels)


@dataclass
class Split:
    """A run's folds; with folds_by=groups the near-duplicate groups they keep whole and the face embeddings."""

    folds: np.ndarray               # (N,) fold of each row
    groups: Groups | None = None
    emb: np.ndarray | None = None   # (N, D) eye-aligned band-passed faces (fkd.competition.folds)

    def twin_share(self, z: float, which=None) -> float | None:
        """Validation faces with a near-twin (likeness standing out by > z) in their own fold's training rows."""
        return None if self.emb is None else near_twin_share(self.emb, self.folds, z, which)


def split(cfg: Config, data: CompetitionData) -> Split:
    """The folds of cfg on these rows: dealt by rows, or by near-duplicate groups (the default). The faces are
    embedded either way, so that a row-fold run too says how many of its validation faces have a twin."""
    emb = face_embeddings(data.images, data.keypoints)
    if cfg.folds_by == "rows":
        return Split(make_folds(data.source, cfg.folds, cfg.fold_seed()), None, emb)
    groups = duplicate_groups(data.images, data.keypoints, cfg.group_z, emb=emb)
    return Split(make_folds(data.source, cfg.folds, cfg.fold_seed(), groups.group), groups, emb)


def prepare_run(cfg: Config, data: CompetitionData) -> tuple[Path, Split]:
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
                                    "fkd_version": __version__})
    s = split(cfg, data)
    saved = runfiles.read_folds(run_dir)
    if saved is not None and not np.array_equal(saved, s.folds):
        raise FkdError(f"{run_dir}: its folds.csv differs from the folds this fkd makes for the same config (the "
                       "grouping changed); finish it with the fkd that began it, or delete that folder")
    save_folds(run_dir / "folds.csv", s.folds, data.source, s.groups.group if s.groups is not None else None)
    return run_dir, s


def collect_oof(run_dir: Path, n_rows: int, which: list[int], refits: int = 0):
    """(plain, mirrored, views) out-of-fold arrays (N, 30) over the folds in `which` (NaN rows elsewhere); views:
    the extra TTA views' (plain, mirrored), or None unless every model predicted them. refits: that many refit
    models held the fold's faces out too (refit_on=fold); a face's predictions are then their average with the
    fold model's, as the submission averages them."""
    dirs = [run_dir / f"fold{k}" for k in which] + [run_dir / f"refit{i}" for i in range(refits)]
    sums, count = np.zeros((4, n_rows, 30), np.float64), np.zeros(n_rows)
    have_views = True
    for d in dirs:
        f = runfiles.read_fold_predictions(d)
        sums[0, f["idx"]] += f["plain"]
        sums[1, f["idx"]] += f["mirrored"]
        if "views" in f:
            sums[2, f["idx"]] += f["views"]
            sums[3, f["idx"]] += f["views_mirrored"]
        have_views = have_views and "views" in f
        count[f["idx"]] += 1
    with np.errstate(invalid="ignore"):
        plain, mirrored, vp, vm = (sums / count[None, :, None]).astype(np.float32)
    return plain, mirrored, ((vp, vm) if have_views else None)


def run_cv(cfg: Config, report: Callable[[int, float], None] | None = None, progress: bool = True) -> dict:
    """Train every fold (skipping finished ones), then score the out-of-fold predictions; writes cv.json."""
    data = training_data(cfg)
    print(f"training {cfg.run_name()} on {cfg.data_dir}: {cfg.model}/{cfg.head}, {cfg.models_line()}",
          flush=True)   # announced once the data has loaded: a bad folder is one error line, nothing before it
    if cfg.teacher:  # a teacher on other data or another split is refused here, before any timing or training
        from .teacher import check_teacher
        check_teacher(cfg, data, split(cfg, data).folds)
    plan = None
    if cfg.budget_min > 0:
        cfg, plan = plan_budget(cfg, data)
    run_dir, s = prepare_run(cfg, data)
    folds = s.folds
    atomic.sweep(run_dir)  # killed writers' temps, also in fold folders this invocation does not train
    which = cfg.trained_folds()
    t0 = time.time()
    todo = [k for k in which if not (run_dir / f"fold{k}" / "result.json").is_file()]
    workers = workers_for(cfg)
    if workers > 1 and len(todo) > 1 and report is None:       # several GPUs: the folds side by side
        train_side_by_side(cfg, run_dir, todo, workers)
    results = [train_fold(cfg, data, folds, k, run_dir, report=report if k == which[0] else None, progress=progress)
               for k in which]
    cv = score_oof(cfg, data, folds, run_dir, which, results)
    unfinished = any(not (run_dir / f"refit{i}" / "result.json").is_file() for i in range(cfg.refit))
    teach, pseudo = refit_teaching(cfg, data, run_dir, which, cv) if unfinished else (None, None)
    if unfinished and plan is not None and cfg.refit:   # the minutes left, at the speed the folds trained
        cfg = retime_refits(cfg, data, plan, results)
        runfiles.save_run_config(cfg, run_dir, runfiles.read_run_meta(run_dir) | {"config": cfg.to_dict()})
    rcfg = dataclasses.replace(cfg, epochs=cfg.refit_epochs or cfg.epochs)
    refits = [train_refit(rcfg, data, i, run_dir, folds, teach=teach, pseudo=pseudo, progress=progress)
              for i in range(cfg.refit)]
    if cfg.refit and cfg.refit_on == "fold":   # every model held these faces out: score the submission's average
        alone = {k: cv[k] for k in ("cv_rmse", "cv_rmse_no_tta", "cv_rmse_tta")}
        cv = score_oof(cfg, data, folds, run_dir, which, results, refits=cfg.refit)
        cv["fold_model_alone"] = alone
    cv.update(refit_results=refits, submission=what_is_submitted(cfg, cv))
    cv["cv_se"] = cv_standard_error(cv, data, folds, which, s, run_dir)
    cv.update(folds_by=cfg.folds_by, near_twin_share=s.twin_share(cfg.group_z, which),
              groups=None if s.groups is None else {"n": int(s.groups.group.max() + 1),
                                                    "largest": int(s.groups.sizes.max()),
                                                    "z": cfg.group_z},
              wall_seconds=round(time.time() - t0, 1))
    atomic.write_json(run_dir / "cv.json", cv)
    atomic.write_text(run_dir / "cv.txt", format_cv(cv))
    return cv


def cv_standard_error(cv: dict, data: CompetitionData, folds: np.ndarray, which: list[int], s: Split,
                      run_dir: Path) -> float:
    """The CV's standard error over the faces it scored, drawn again by near-duplicate group (each row its own group
    where folds are dealt by rows): fold 0 alone scores a quarter or an eighth of the faces, and how hard those
    people are moves it by more than most decisions are worth."""
    sel = np.isin(folds, which)
    pred = runfiles.read_oof(run_dir, cv["tta"])[sel]
    groups = s.groups.group[sel] if s.groups is not None else np.arange(sel.sum())
    return bootstrap_se(pred, data.keypoints[sel], groups)


def refit_teaching(cfg: Config, data: CompetitionData, run_dir: Path, which: list[int], cv: dict) -> tuple:
    """What the run's fold models teach its refit models (fkd/learn/teacher.py): labels for the values rows lack
    (refit_teacher > 0) and the labelled test faces (refit_pseudo); None for each that is off."""
    if not (cfg.refit_teacher or cfg.refit_pseudo):
        return None, None
    from ..device import select_device
    from .teacher import fold_model_labels, fold_model_pseudo

    dev, amp = select_device(cfg.device, cfg.amp)
    c = cv["tta_flip_const"]
    return (fold_model_labels(cfg, data, run_dir, which, c, dev, amp) if cfg.refit_teacher else None,
            fold_model_pseudo(cfg, data, run_dir, which, c, dev, amp) if cfg.refit_pseudo else None)


def score_oof(cfg: Config, data: CompetitionData, folds: np.ndarray, run_dir: Path, which: list[int],
              results: list[dict], refits: int = 0) -> dict:
    """The CV figures of the trained folds' out-of-fold predictions (averaged with `refits` refit models' where
    they held the fold out), without and with TTA (the flip constant fitted out of fold unless the config fixes
    one; the extra views' weight fitted out of fold); writes oof.npz."""
    plain, mirrored, views = collect_oof(run_dir, len(folds), which, refits)
    sel = np.isin(folds, which)
    y, src = data.keypoints[sel], data.source[sel]
    no_tta = breakdown(plain[sel], y, src, folds[sel])
    c_tta = cfg.tta_flip_const or fit_tta_flip_const(tta_average(plain, mirrored, cfg.flip_const)[sel], y,
                                                     cfg.flip_const)
    oof_tta = tta_average(plain, mirrored, c_tta)
    flip_only, w = rmse_masked(oof_tta[sel], y), 0.0
    if views is not None:                          # more views: shifted/zoomed/turned, weighted out of fold
        views_tta = tta_average(*views, c_tta)
        w = view_weight(oof_tta[sel], views_tta[sel], y)
        oof_tta = (1 - w) * oof_tta + w * views_tta
    tta = breakdown(oof_tta[sel], y, src, folds[sel])
    chosen = tta if cfg.tta else no_tta
    runfiles.write_oof(run_dir, plain, oof_tta)
    return {"run": run_dir.name, "cv_rmse": chosen["rmse"], "cv_rmse_no_tta": no_tta["rmse"],
            "tta_flip_const": c_tta, "flip_const": cfg.flip_const, "cv_rmse_tta": tta["rmse"], "tta": cfg.tta,
            "cv_rmse_flip_only": flip_only, "tta_views_weight": w,
            "rmse_full": chosen["rmse_full"], "rmse_common": chosen["rmse_common"],
            "per_keypoint": chosen["per_keypoint"], "per_fold": chosen["per_fold"], "fold_mean": chosen["fold_mean"],
            "fold_std": chosen["fold_std"], "folds_trained": which, "folds": cfg.folds, "fold_results": results,
            "train_seconds": round(sum(r["seconds"] for r in results), 1),
            "mean_keypoint_rmse": mean_baseline(data.keypoints, data.source, folds, which),
            "data_hash": data.data_hash,
            "tta_flip_const_scan": {c: pooled([(r["tta_flip_const_scan"][c], r["n_val"]) for r in results])
                                    for c in results[0]["tta_flip_const_scan"]}}


def format_cv(cv: dict) -> str:
    se = f" +- {cv['cv_se']:.3f} (standard error over its faces)" if cv.get("cv_se") else ""
    lines = [f"run {cv['run']}",
             f"CV RMSE {cv['cv_rmse']:.4f}{se}  (TTA {'on' if cv['tta'] else 'off'}; "
             f"without TTA {cv['cv_rmse_no_tta']:.4f}, "
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
    lines.insert(4, folds_line(cv))
    if cv.get("tta_views_weight"):
        lines.insert(5, f"TTA: the flip alone {cv['cv_rmse_flip_only']:.4f}; with the extra views (shifted, zoomed, "
                        f"turned; weight {cv['tta_views_weight']:.2f}, fitted out of fold) {cv['cv_rmse_tta']:.4f}")
    if cv.get("submission"):
        lines.insert(5, f"submission averages {', '.join(cv['submission']['models'])}; this CV is "
                        f"{cv['submission']['cv_estimates']}")
    if cv.get("fold_model_alone"):
        a = cv["fold_model_alone"]
        lines.insert(6, f"the fold model alone: {a['cv_rmse']:.4f} (without TTA {a['cv_rmse_no_tta']:.4f})")
    for k, v in cv["per_keypoint"].items():
        lines.append(f"  {k:<26} {v:.4f}")
    return "\n".join(lines)


def folds_line(cv: dict) -> str:
    """How the run's folds were made and what leaks through them (runs from before grouped folds: rows)."""
    share = cv.get("near_twin_share")
    leak = "" if share is None else f"; {share:.1%} of validation faces have a near-twin in their training folds"
    g = cv.get("groups")
    if cv.get("folds_by", "rows") == "groups" and g:
        return (f"folds: by near-duplicate groups ({g['n']} groups, largest {g['largest']} faces, "
                f"twins: likeness > {g['z']} std. deviations above both faces' own){leak}")
    return f"folds: by rows{leak}" + (" (the CV flatters: --set folds_by=groups)" if share and share > 0.02 else "")
