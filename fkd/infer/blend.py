"""`fkd blend RUN RUN ...`: a weighted average of finished runs, weights fitted on their out-of-fold predictions.

    $ fkd blend runs/default-resnet18-1a2b3c4d runs/best-resnet34-5e6f7a8b

Weights are non-negative least squares (scipy's NNLS) on the labelled OOF values, one weight set per annotation
source (the two sources are labelled differently, so a run may be better on one), per keypoint or one for all
(`--per`), or none: `--per equal` is the plain average, which beats fitted weights where few faces are out of
fold (ytf15, fold 0 only, two runs: weights fitted on half of its 589 faces swung between 0.49 and 0.66 and scored
the other half worse than the plain average).
The blend's CV is cross-fitted: the weights applied to fold k were fitted on the other folds, so the figure is
as honest as a single run's CV. Runs that trained the same folds of one split (e.g. fold 0 + refit models, as the
presets do) blend on those folds' validation faces; with one fold trained its faces are cross-fitted in two halves
of their near-duplicate groups (weights fitted on one half score the other). The test predictions (each run's
models averaged, with its TTA) are combined with the weights fitted on all rows and written through the lookup
table like any submission (CSV + sidecar + ledger row, scored locally when a solution.csv exists). A config's
`blend` (members, below) trains one run a backbone and submits them through here, averaged equally.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..competition import COMP
from ..competition.data import test_hash
from ..competition.metric import rmse
from ..config import Config, blend_models, replace
from ..errors import FkdError
from ..learn.cv import training_data
from ..learn.runfiles import checkpoints, load_run, read_cv, read_folds, read_oof, tta_constant, tta_views

PER = ("source", "keypoint", "global", "equal")


def _groups(per: str, source: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, row mask (N,), column mask (30,)) of each group that gets its own weights."""
    rows_all, cols_all = np.ones(len(source), bool), np.ones(2 * len(COMP.keypoints), bool)
    if per in ("global", "equal"):
        return [("all", rows_all, cols_all)]
    if per == "source":
        return [(f"source{s}", source == s, cols_all) for s in np.unique(source)]
    out = []
    for j, k in enumerate(COMP.keypoints):
        cols = np.zeros_like(cols_all)
        cols[2 * j:2 * j + 2] = True
        out.append((k, rows_all, cols))
    return out


def fit_weights(preds: np.ndarray, target: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """NNLS weights (R,) for preds (R, N, 30) against target (N, 30) on the labelled values of a group."""
    from scipy.optimize import nnls

    t = target[rows][:, cols]
    m = np.isfinite(t) & np.all(np.isfinite(preds[:, rows][:, :, cols]), 0)
    if not m.any():
        return np.full(len(preds), 1.0 / len(preds))
    a = np.stack([p[rows][:, cols][m] for p in preds], 1).astype(np.float64)
    w, _ = nnls(a, t[m].astype(np.float64))
    return w if w.sum() > 0 else np.full(len(preds), 1.0 / len(preds))


def apply_weights(preds: np.ndarray, weights: dict, groups) -> np.ndarray:
    out = np.full(preds.shape[1:], np.nan, np.float64)
    for name, rows, cols in groups:
        blended = np.tensordot(weights[name], preds[:, rows][:, :, cols], axes=1)
        sub = out[rows]
        sub[:, cols] = blended
        out[rows] = sub
    return out


def members(cfg: Config) -> list[Config]:
    """The runs a config trains: itself, or with `blend` one run per backbone (its own model first), each with an
    equal share of the budget and no blend of its own; named <name>-<model> where the config has a name."""
    models = blend_models(cfg)
    if len(models) == 1:
        return [cfg]
    return [replace(cfg, model=m, blend="", budget_min=cfg.budget_min / len(models),
                    name=f"{cfg.name}-{m}" if cfg.name else "") for m in models]


def scored_folds(runs) -> list[int]:
    """The folds every run trained (the same ones, of one split), or a one-line error naming the fix."""
    trained = {tuple(sorted(cv.get("folds_trained", []))) for *_, cv in runs}
    if len(trained) != 1 or not next(iter(trained)):
        raise FkdError("the runs trained different folds (" + "; ".join(
            f"{d.name}: {cv.get('folds_trained')}" for d, *_, cv in runs) + "); blend runs that trained the same "
            "folds (--set train_folds=...) of the same split")
    trained = list(next(iter(trained)))
    if len(trained) < runs[0][1].folds:   # only those folds' faces are out of fold: every run needs the same split
        first = read_folds(runs[0][0])
        for d, *_ in runs[1:]:
            other = read_folds(d)
            if first is None or other is None or not np.array_equal(first, other):
                raise FkdError(f"{d}: its folds differ from {runs[0][0].name}'s; runs that trained only folds "
                               f"{trained} blend on one split (the same data, folds_by, split_seed)")
    return trained


def cross_fit_parts(run_dir: Path, folds: np.ndarray, trained: list[int]) -> list[np.ndarray]:
    """Row masks the blend's CV scores with weights fitted on the rest: each trained fold, or, with one fold
    trained, two halves of its near-duplicate groups (twins stay on one side), drawn with a fixed seed."""
    if len(trained) > 1:
        return [folds == k for k in trained]
    import pandas as pd

    f = pd.read_csv(Path(run_dir) / "folds.csv")
    group = f["group"].to_numpy() if "group" in f else np.full(len(f), -1)
    group = np.where(group < 0, group.max(initial=0) + 1 + np.arange(len(group)), group)  # row folds: a row each
    half = np.random.default_rng(0).random(group.max() + 1) < 0.5
    va = folds == trained[0]
    return [va & half[group], va & ~half[group]]


def blend(run_dirs: list[str], per: str = "source", out_dir: str | Path = "submissions",
          data_dir: str | None = None, trained_on: str | None = None) -> dict:
    """The runs blended into a submission (CSV, sidecar, ledger row); `trained_on` says where the runs trained
    (the Kaggle kernels, for the sidecar and ledger) where not here."""
    from .submission import submission_frame, write_submission

    if len(run_dirs) < 2:
        raise FkdError("fkd blend needs at least two runs")
    if per not in PER:
        raise FkdError(f"--per must be one of {', '.join(PER)}")
    runs = []
    for d in map(Path, run_dirs):
        cfg, meta = load_run(d)
        cv = read_cv(d, required=True)
        runs.append((d, cfg, meta, cv))
    trained = scored_folds(runs)
    rows = {(m.get("data_hash"), c.limit_train, c.limit_train and c.fold_seed(), c.dup_labels) for _, c, m, _ in runs}
    if len(rows) != 1:
        raise FkdError("the runs were trained on different data (or other limit_train samples); blend runs of one "
                       "competition folder and the same rows only")
    d0, cfg0, meta0, _ = runs[0]
    data = training_data(replace(cfg0, data_dir=data_dir or meta0.get("data_dir") or cfg0.data_dir))
    if data_dir and meta0.get("data_hash") and data.data_hash != meta0["data_hash"]:
        raise FkdError(f"{data.data_dir}: its training data differs from the one the runs were trained on; "
                       "blend with the runs' own data folder")
    folds = read_folds(d0)                           # the first run's folds: the weights of fold k never saw it
    # each run's OOF predictions, TTA as that run predicts (un-flipped with its fitted constant)
    oof = np.stack([read_oof(d, c.tta) for d, c, _, _ in runs])  # (R, N, 30)
    scored = np.isin(folds, trained)                 # the rows every run predicted out of fold
    y = np.where(scored[:, None], data.keypoints, np.nan)
    groups = [(name, rows & scored, cols) for name, rows, cols in _groups(per, data.source)]
    singles = {d.name: rmse((o - y)[np.isfinite(y)]) for (d, *_), o in zip(runs, oof)}

    # cross-fitted CV: each part blended with weights fitted on the others (the trained folds, or two halves of
    # the one trained fold's near-duplicate groups)
    fit = (lambda rows, cols: np.full(len(runs), 1.0 / len(runs))) if per == "equal" else \
        (lambda rows, cols: fit_weights(oof, y, rows, cols))
    crossed = np.full(y.shape, np.nan)
    for va in cross_fit_parts(d0, folds, trained):
        w = {name: fit(rows & ~va, cols) for name, rows, cols in groups}
        crossed[va] = apply_weights(oof, w, groups)[va]
    cv_blend = rmse((crossed - y)[np.isfinite(y)])
    weights = {name: fit(rows, cols) for name, rows, cols in groups}
    in_sample = rmse((apply_weights(oof, weights, groups) - y)[np.isfinite(y)])

    pred = apply_weights(test_predictions(runs, data), weights, _groups(per, data.test_source))
    sub = submission_frame(pred, data)
    info = {"runs": [str(d.resolve()) for d, *_ in runs], "per": per,
            "models": [f"{d.name}/{c.parent.name}" for d, *_ in runs for c in checkpoints(d)],
            "cv_estimates": estimate(runs, trained, per),
            "trained_on": trained_on,
            "weights": {k: [round(float(x), 4) for x in v] for k, v in weights.items()},
            "cv_rmse_in_sample": in_sample, "cv_single": singles, "folds_trained": trained,
            "faces_scored": int(scored.sum())}
    return write_submission(sub, blend_name([d for d, *_ in runs]), data, info, cv_blend, True, out_dir)


def test_predictions(runs, data) -> np.ndarray:
    """(R, M, 30): each run's models averaged on the test faces, with that run's TTA."""
    from .predict import ensemble_predict

    out = []
    for d, cfg, meta, cv in runs:
        if meta.get("test_hash") and meta["test_hash"] != test_hash(data):
            raise FkdError(f"{d}: trained beside another test set")
        out.append(ensemble_predict(cfg, checkpoints(d), data, cfg.tta, tta_constant(cfg, cv), tta_views(cfg, cv)))
    return np.stack(out)


def blend_name(run_dirs) -> str:
    """The name a blend of these runs has in submissions/ and the ledger: blend-<n>runs-<hash of their names>."""
    names = sorted(Path(d).name for d in run_dirs)
    return f"blend-{len(names)}runs-" + hashlib.sha1("|".join(names).encode()).hexdigest()[:8]


def estimate(runs, trained: list[int], per: str) -> str:
    """Which CV estimates the blend's submission, in words a sidecar can carry."""
    refits = sum(c.refit for _, c, *_ in runs)
    how = "averaged equally" if per == "equal" else f"blended with weights per {per} (cross-fitted)"
    what = (f"the out-of-fold error of the {len(runs)} runs' fold {', '.join(map(str, trained))} models {how}")
    if refits and all(c.refit_on == "fold" for _, c, *_ in runs if c.refit):   # every model held the fold out
        return (f"the {len(runs)} runs' models (fold {', '.join(map(str, trained))} and their {refits} refit models, "
                f"which held the same faces out) {how}: the submission itself, scored on faces none of them saw")
    if refits:
        return (f"{what}: a slightly pessimistic estimate of the submission, which also averages their {refits} "
                "refit models, trained on every row")
    return what


def format_blend(info: dict) -> str:
    lines = [f"blend of {len(info['runs'])} runs, weights per {info['per']}:"]
    if "faces_scored" in info:
        lines.append(f"  out of fold: folds {', '.join(map(str, info['folds_trained']))}, "
                     f"{info['faces_scored']} faces")
    for name, cv in info["cv_single"].items():
        lines.append(f"  {name:44s} CV {cv:.4f}")
    for g, w in info["weights"].items():
        lines.append(f"  weights {g:20s} " + "  ".join(f"{x:.3f}" for x in w))
    how = ("equal weights: nothing fitted, nothing to cross-fit" if info["per"] == "equal"
           else f"cross-fitted weights; in-sample {info['cv_rmse_in_sample']:.4f}")
    lines.append(f"blend CV {info['cv_rmse']:.4f} ({how})")
    if "local_score" in info:
        s = info["local_score"]
        lines.append(f"local test score {s['all']['rmse']:.4f} (public {s['public']:.4f}, private {s['private']:.4f})")
    lines.append(f"wrote {info['file']} (+ .json sidecar); upload it with `fkd upload {info['file']}`")
    return "\n".join(lines)
