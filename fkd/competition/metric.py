"""Kaggle's metric for this competition, and the public/private split the local server uses.

RMSE over the submission's rows, matched to the solution by RowId. Reported overall and per annotation
source (images whose lookup rows ask for any feature beyond the common 8 = the fully labelled source).

    $ fkd score submissions/x.csv --solution competition/data/practice/solution.csv --json
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FkdError
from .files import decode_csv, read_csv, to_numbers
from .spec import COMMON, COMMON_MASK, COMP, FULL


def public_mask(image_ids: np.ndarray) -> np.ndarray:
    """True for the images on the public leaderboard: a fixed, seeded split of the sorted unique ImageIds."""
    ids = np.unique(image_ids)
    rng = np.random.default_rng(COMP.split_seed)
    public = ids[rng.permutation(len(ids))[: int(round(len(ids) * COMP.public_fraction))]]
    return np.isin(image_ids, public)


def read_submission(path: str | Path | bytes, where: str | None = None) -> pd.DataFrame:
    """A `RowId,Location` CSV -> DataFrame (RowId int64, Location float64), every value checked."""
    where = where or str(path)
    try:
        raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    except FileNotFoundError:
        raise FkdError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise FkdError(f"{where}: is a folder, expected a CSV file") from None
    df = decode_csv(raw, where, empty="a submission needs the header RowId,Location and one row per RowId")
    if [str(c).strip() for c in df.columns] != ["RowId", "Location"]:
        raise FkdError(f"{where}: header is {','.join(map(str, df.columns))!r}, expected 'RowId,Location'")
    df.columns = ["RowId", "Location"]
    out = pd.DataFrame({"RowId": pd.to_numeric(df.RowId, errors="coerce"),
                        "Location": pd.to_numeric(df.Location, errors="coerce")})
    for col in ("RowId", "Location"):
        bad = out[col].isna() | ~np.isfinite(out[col].to_numpy(np.float64))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise FkdError(f"{where}: line {i + 2}: {col} {df[col].iloc[i]!r} is not a number"
                           + ("" if col == "RowId" else "; every row needs a finite Location"))
    if (out.RowId != np.round(out.RowId)).any():
        raise FkdError(f"{where}: RowId must be integers")
    out["RowId"] = out.RowId.astype(np.int64)
    dup = out.RowId.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise FkdError(f"{where}: line {i + 2}: RowId {out.RowId[i]} appears twice")
    return out


def read_lookup_sources(lookup_path: str | Path) -> pd.DataFrame:
    """RowId -> ImageId and the image's source (1 = fully labelled) from IdLookupTable.csv."""
    p = Path(lookup_path)
    if not p.is_file():
        raise FkdError(f"{p}: lookup table not found; pass --lookup IdLookupTable.csv")
    df = read_csv(p.read_bytes(), str(p), ["RowId", "ImageId", "FeatureName", "Location"])
    nums = to_numbers(df, ["RowId", "ImageId"], str(p)).astype(np.int64)
    col = {c: j for j, c in enumerate(COMP.columns)}
    beyond = df.FeatureName.map(lambda f: f in col and not COMMON_MASK[col[f]]).to_numpy(bool)
    lk = pd.DataFrame({"RowId": nums[:, 0], "ImageId": nums[:, 1], "beyond": beyond})
    full_images = set(lk.ImageId[lk.beyond])
    lk["full"] = lk.ImageId.isin(full_images)
    return lk[["RowId", "ImageId", "full"]]


def rmse(x: np.ndarray) -> float:
    """Root mean square of a flat array of errors (NaN when empty)."""
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else float("nan")


def rmse_masked(pred: np.ndarray, target: np.ndarray) -> float:
    """Kaggle's RMSE over the labelled (image, feature) pairs of (N, 30) arrays (NaN target = unlabelled)."""
    m = np.isfinite(target)
    return rmse((pred[m] - target[m]).astype(np.float64))


def per_keypoint(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE of each keypoint (its x and y together) over its labelled rows."""
    return {k: rmse_masked(pred[:, 2 * j:2 * j + 2], target[:, 2 * j:2 * j + 2]) for j, k in enumerate(COMP.keypoints)}


def breakdown(pred: np.ndarray, target: np.ndarray, source: np.ndarray, fold: np.ndarray | None = None) -> dict:
    """Out-of-fold RMSE overall, per annotation source, per keypoint and (with `fold`) per fold."""
    out = {"rmse": rmse_masked(pred, target),
           "rmse_full": rmse_masked(pred[source == FULL], target[source == FULL]),
           "rmse_common": rmse_masked(pred[source == COMMON], target[source == COMMON]),
           "per_keypoint": per_keypoint(pred, target)}
    if fold is not None:
        per = [rmse_masked(pred[fold == f], target[fold == f]) for f in np.unique(fold)]
        out["per_fold"] = per
        out["fold_mean"], out["fold_std"] = float(np.mean(per)), float(np.std(per))
    return out


def score(submission: pd.DataFrame, solution: pd.DataFrame, lookup: pd.DataFrame,
          subset: str | None = None, where: str = "submission") -> dict:
    """RMSE of `submission` against `solution` (both RowId, Location); lookup gives ImageId and source."""
    sub_ids, sol_ids = set(submission.RowId), set(solution.RowId)
    missing, extra = sol_ids - sub_ids, sub_ids - sol_ids
    if missing:
        raise FkdError(f"{where}: {len(missing)} RowIds missing (e.g. {min(missing)}); "
                       f"write one row for each of the {len(sol_ids)} lookup rows")
    if extra:
        raise FkdError(f"{where}: {len(extra)} RowIds not in the solution (e.g. {min(extra)}); "
                       "write exactly the lookup table's RowIds")
    m = solution.merge(submission, on="RowId", suffixes=("_true", "_pred")).merge(lookup, on="RowId", how="left")
    if m.ImageId.isna().any():
        raise FkdError("the lookup table does not cover every solution RowId; they do not belong together")
    if subset:
        if subset not in ("public", "private"):
            raise FkdError(f"--subset must be public or private, not {subset!r}")
        pub = public_mask(m.ImageId.to_numpy(np.int64))
        m = m[pub if subset == "public" else ~pub]
    err = (m.Location_pred - m.Location_true).to_numpy(np.float64)
    full = m.full.to_numpy(bool)
    return {"rmse": rmse(err), "rmse_full": rmse(err[full]), "rmse_common": rmse(err[~full]),
            "rows": int(len(err)), "subset": subset or "all"}


def score_files(submission_path, solution_path, lookup_path=None, subset: str | None = None) -> dict:
    solution_path = Path(solution_path)
    lookup_path = Path(lookup_path) if lookup_path else solution_path.parent / COMP.files["lookup"]
    sub = read_submission(submission_path)
    sol = read_submission(solution_path)
    return score(sub, sol, read_lookup_sources(lookup_path), subset=subset, where=str(submission_path))


# ------------------------------------------------------------------------------- CV helpers
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


def pooled(rmse_and_n: list[tuple[float, int]]) -> float:
    """Fold RMSEs pooled by fold size (sqrt of the size-weighted mean square)."""
    return float(np.sqrt(sum(r * r * n for r, n in rmse_and_n) / sum(n for _, n in rmse_and_n)))


def mean_baseline(keypoints: np.ndarray, source: np.ndarray, folds: np.ndarray, which: list[int]) -> float:
    """CV RMSE of predicting each fold with the training folds' mean keypoints (per source)."""
    errs = []
    for k in which:
        tr, va = folds != k, folds == k
        pred = source_means(keypoints[tr], source[tr])[source[va]]
        t = keypoints[va]
        errs.append((pred - t)[np.isfinite(t)])
    e = np.concatenate(errs)
    return float(np.sqrt(np.mean(e ** 2)))


def bootstrap_se(pred: np.ndarray, target: np.ndarray, groups: np.ndarray, n: int = 2000, seed: int = 0) -> float:
    """The standard error of rmse_masked(pred, target) over faces drawn again with replacement, a near-duplicate
    group at a time (its faces share an error: drawing them alone would understate it): how far the same models
    could score on other faces like these. The faces are (N, 30) rows; groups (N,) their group ids."""
    m = np.isfinite(target)
    sq = np.where(m, (pred - np.where(m, target, 0.0)) ** 2, 0.0).sum(1)
    _, g = np.unique(groups, return_inverse=True)
    g_sq, g_n = np.bincount(g, sq), np.bincount(g, m.sum(1))                  # per group: squared error, values
    draws = np.random.default_rng(seed).integers(0, len(g_sq), (n, len(g_sq)))
    return float(np.std(np.sqrt(g_sq[draws].sum(1) / np.maximum(g_n[draws].sum(1), 1)), ddof=1))
