"""Competition files -> arrays: validated, cached, with annotation sources.

Reads a competition folder in any form Kaggle gives it: the bundle `facial-keypoints-detection.zip`, the
nested `training.zip` / `test.zip`, or plain CSVs (CRLF or LF, UTF-8 with or without BOM).

    >>> d = load_data("competition/data")                 # doctest: +SKIP
    >>> d.images.shape, d.keypoints.shape, d.source.mean() # (N, 96, 96) uint8, (N, 30) float32 NaN=missing
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import FkdError
from .files import csv_line, locate, read_csv, read_image_csv, to_numbers
from .spec import COMMON_MASK, COMP, FULL, row_source

PARSER_VERSION = 3


@dataclass
class CompetitionData:
    data_dir: Path
    images: np.ndarray        # (N, 96, 96) uint8
    keypoints: np.ndarray     # (N, 30) float32, NaN where missing
    source: np.ndarray        # (N,) int8: FULL or COMMON
    test_images: np.ndarray   # (M, 96, 96) uint8
    test_ids: np.ndarray      # (M,) int64 ImageId
    test_source: np.ndarray   # (M,) int8, from what the lookup table asks for
    lookup: pd.DataFrame      # RowId, ImageId, FeatureName, col (0..29), img (row in test arrays)
    data_hash: str            # content hash of the parsed arrays: same data, same hash, wherever it lies
    sample_rowids: np.ndarray | None = None  # SampleSubmission.csv RowIds in file order (None if absent)

    @property
    def solution_path(self) -> Path | None:
        p = self.data_dir / "solution.csv"
        return p if p.exists() else None


def cache_dir() -> Path:
    return Path(os.environ.get("FKD_CACHE_DIR", Path(COMP.data_dir) / ".cache"))


# ------------------------------------------------------------------------------------------ parsing
def _parse_training(raw: bytes, where: str):
    df, images = read_image_csv(raw, where, COMP.columns)
    kp = to_numbers(df, COMP.columns, where)
    outside = np.isfinite(kp) & ((kp < 0) | (kp > COMP.image_size))
    if outside.any():
        i, j = map(int, np.argwhere(outside)[0])
        raise FkdError(f"{where}: line {csv_line(i)}, column {COMP.columns[j]}: {kp[i, j]} is outside the image "
                       f"(0-{COMP.image_size}); fix or remove that row")
    if not np.isfinite(kp).any(1).all():
        i = int(np.flatnonzero(~np.isfinite(kp).any(1))[0])
        raise FkdError(f"{where}: line {csv_line(i)}: no keypoint labelled; remove that row")
    return images, kp.astype(np.float32)


def _parse_test(raw: bytes, where: str):
    df, images = read_image_csv(raw, where, ["ImageId"])
    ids = to_numbers(df, ["ImageId"], where)[:, 0]
    if (ids != np.round(ids)).any():
        raise FkdError(f"{where}: ImageId must be integers")
    ids = ids.astype(np.int64)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise FkdError(f"{where}: line {csv_line(i)}: duplicate ImageId {ids[i]}; each image must appear once")
    return images, ids


def _parse_lookup(raw: bytes, where: str, test_ids: np.ndarray) -> pd.DataFrame:
    df = read_csv(raw, where, ["RowId", "ImageId", "FeatureName", "Location"])
    nums = to_numbers(df, ["RowId", "ImageId"], where)
    lk = pd.DataFrame({"RowId": nums[:, 0].astype(np.int64), "ImageId": nums[:, 1].astype(np.int64),
                       "FeatureName": df["FeatureName"].astype(str)})
    dup = lk["RowId"].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise FkdError(f"{where}: line {csv_line(i)}: duplicate RowId {lk.RowId[i]}")
    col = {c: j for j, c in enumerate(COMP.columns)}
    lk["col"] = lk["FeatureName"].map(col)
    if lk["col"].isna().any():
        i = int(np.flatnonzero(lk["col"].isna().to_numpy())[0])
        close = difflib.get_close_matches(lk.FeatureName[i], COMP.columns, n=1)
        raise FkdError(f"{where}: line {csv_line(i)}: unknown FeatureName {lk.FeatureName[i]!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else "") + "; fix the lookup table")
    pos = {int(v): i for i, v in enumerate(test_ids)}
    lk["img"] = lk["ImageId"].map(pos)
    if lk["img"].isna().any():
        i = int(np.flatnonzero(lk["img"].isna().to_numpy())[0])
        raise FkdError(f"{where}: line {csv_line(i)}: ImageId {lk.ImageId[i]} is not in the test set; "
                       "the lookup table and test.csv do not belong together")
    if lk.duplicated(["ImageId", "col"]).any():
        i = int(np.flatnonzero(lk.duplicated(["ImageId", "col"]).to_numpy())[0])
        raise FkdError(f"{where}: line {csv_line(i)}: ImageId {lk.ImageId[i]} asks for {lk.FeatureName[i]} twice")
    lk["col"] = lk["col"].astype(np.int64)
    lk["img"] = lk["img"].astype(np.int64)
    return lk


def lookup_source(lookup: pd.DataFrame, n_test: int) -> np.ndarray:
    """(M,) FULL for test images whose lookup rows ask for any feature beyond the common 8."""
    beyond = ~COMMON_MASK[lookup["col"].to_numpy()]
    src = np.zeros(n_test, np.int8)
    src[lookup["img"].to_numpy()[beyond]] = FULL
    return src


def _parse_sample(raw: bytes, where: str, lookup: pd.DataFrame) -> np.ndarray:
    df = read_csv(raw, where, ["RowId", "Location"])
    ids = to_numbers(df, ["RowId"], where)[:, 0].astype(np.int64)
    if len(ids) != len(lookup) or set(ids) != set(lookup.RowId):
        raise FkdError(f"{where}: {len(ids)} RowIds that do not match the lookup table's {len(lookup)}; "
                       "the two files do not belong together")
    return ids


# -------------------------------------------------------------------------------------------- load
def _fingerprint(paths: list[Path]) -> list:
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _candidate_files(data_dir: Path) -> list[Path]:
    names = ["training.csv", "training.zip", "test.csv", "test.zip", COMP.files["lookup"],
             COMP.files["sample"], COMP.files["bundle"]]
    return [data_dir / n for n in names if (data_dir / n).is_file()]


def load_data(data_dir: str | os.PathLike, use_cache: bool = True) -> CompetitionData:
    """Load, validate and cache a competition folder. Raises FkdError with one clear line on bad input."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FkdError(f"{data_dir}: no such folder; run `fkd download` or `fkd practice --out {data_dir}`")
    key = {"parser": PARSER_VERSION, "files": _fingerprint(_candidate_files(data_dir))}
    key_json = json.dumps(key, sort_keys=True)
    cache = cache_dir() / f"{hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]}.npz"
    if use_cache and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key_json:
                    return _from_arrays(data_dir, dict(z))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable cache: parse again and overwrite it

    raw, _, where = locate(data_dir, COMP.files["training"])
    images, kp = _parse_training(raw, where)
    raw, _, where = locate(data_dir, COMP.files["test"])
    test_images, test_ids = _parse_test(raw, where)
    raw, _, where = locate(data_dir, COMP.files["lookup"])
    lk = _parse_lookup(raw, where, test_ids)
    found = locate(data_dir, COMP.files["sample"], required=False)
    sample = _parse_sample(found[0], found[2], lk) if found else np.zeros(0, np.int64)
    arrays = dict(images=images, keypoints=kp, test_images=test_images, test_ids=test_ids,
                  lk_rowid=lk.RowId.to_numpy(), lk_imageid=lk.ImageId.to_numpy(), lk_col=lk.col.to_numpy(),
                  lk_img=lk.img.to_numpy(), sample=sample, has_sample=np.array(found is not None),
                  key=np.array(key_json))
    h = hashlib.sha1()
    for name in ("images", "keypoints", "test_images", "test_ids", "lk_rowid", "lk_col", "lk_img"):
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    arrays["content_hash"] = np.array(h.hexdigest()[:16])
    if use_cache:
        try:
            with atomic.atomic_path(cache, suffix=".npz") as tmp:
                np.savez(tmp, **arrays)
        except OSError:
            pass  # a read-only cache dir only costs speed
    return _from_arrays(data_dir, arrays)


def _from_arrays(data_dir: Path, a: dict) -> CompetitionData:
    lk = pd.DataFrame({"RowId": a["lk_rowid"], "ImageId": a["lk_imageid"],
                       "FeatureName": np.array(COMP.columns)[a["lk_col"]], "col": a["lk_col"], "img": a["lk_img"]})
    return CompetitionData(
        data_dir=data_dir, images=a["images"], keypoints=a["keypoints"], source=row_source(a["keypoints"]),
        test_images=a["test_images"], test_ids=a["test_ids"],
        test_source=lookup_source(lk, len(a["test_ids"])), lookup=lk, data_hash=str(a["content_hash"]),
        sample_rowids=a["sample"] if bool(a["has_sample"]) else None,
    )


def load_training_data(data_dir: str | os.PathLike, limit_train: int = 0, seed: int = 0) -> CompetitionData:
    """load_data, keeping (limit_train > 0) a seeded random sample of limit_train training rows in file order.

    Every reader of a run's out-of-fold arrays loads the data this way with the run's limit_train and seed,
    so its rows line up with the arrays. data_hash stays the folder's (limit_train is in the run's config).
    """
    data = load_data(data_dir)
    if limit_train and limit_train < len(data.images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(data.images))[:limit_train])
        data.images, data.keypoints, data.source = data.images[keep], data.keypoints[keep], data.source[keep]
    return data


def test_hash(data: CompetitionData) -> str:
    """Content hash of the test images and their ids: a run's predictions belong to exactly this test set."""
    h = hashlib.sha1(data.test_images.tobytes())
    h.update(data.test_ids.tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ summary
def summary(d: CompetitionData) -> str:
    per_img = d.lookup.groupby("img").size()
    hist = per_img.value_counts().sort_index(ascending=False)
    counts = np.isfinite(d.keypoints).sum(0)
    lines = [
        f"data folder      {d.data_dir}",
        f"training rows    {len(d.images):,}",
        f"fully labelled   {int((d.source == FULL).sum()):,} rows (any label beyond the common 8); "
        f"complete rows {int(np.isfinite(d.keypoints).all(1).sum()):,}",
        f"test images      {len(d.test_ids):,} ({int((d.test_source == FULL).sum()):,} from the fully labelled source)",
        f"lookup rows      {len(d.lookup):,}",
        "values asked per test image: " + ", ".join(f"{k} -> {v:,}" for k, v in hist.items()),
        "labels per column:",
    ]
    for j in range(0, 30, 2):
        lines.append(f"  {COMP.columns[j][:-2]:<26} {counts[j]:>6,}")
    return "\n".join(lines)


def resolve_duplicates(data: CompetitionData, policy: str) -> CompetitionData:
    """Identical training images whose labels disagree: `keep` them all (default; they share a fold anyway),
    `average` each set's labels per annotation source into its first row, or `drop` the set. Agreeing copies
    are always kept. The rows follow the file's order; `fkd data` lists the sets."""
    from .folds import exact_duplicates, labels_disagree

    if policy == "keep":
        return data
    conflicting = [s for s in exact_duplicates(data.images) if labels_disagree(data.keypoints, s)]
    gone = []
    for rows in conflicting:
        if policy == "drop":
            gone += list(rows)
            continue
        for src in np.unique(data.source[rows]):             # the sources label differently: never mixed
            same = rows[data.source[rows] == src]
            with np.errstate(all="ignore"):
                data.keypoints[same[0]] = np.nanmean(data.keypoints[same], 0)
            gone += list(same[1:])
    keep = np.setdiff1d(np.arange(len(data.images)), gone)
    data.images, data.keypoints, data.source = data.images[keep], data.keypoints[keep], data.source[keep]
    return data
