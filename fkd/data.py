"""Competition files -> arrays: validated, cached, with annotation sources and folds.

Reads a competition folder in any form Kaggle gives it: the bundle `facial-keypoints-detection.zip`, the
nested `training.zip` / `test.zip`, or plain CSVs (CRLF or LF, UTF-8 with or without BOM).

    >>> d = load_data("competition/data")                 # doctest: +SKIP
    >>> d.images.shape, d.keypoints.shape, d.source.mean() # (N, 96, 96) uint8, (N, 30) float32 NaN=missing
"""
from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from . import atomic
from .competition import COMP
from .errors import FkdError

PARSER_VERSION = 3
FULL, COMMON = 1, 0  # annotation sources: fully labelled / the 8 common columns only
COMMON_MASK = np.array(COMP.common_mask)  # (30,)


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


# ----------------------------------------------------------------------------------------- file access
def cache_dir() -> Path:
    return Path(os.environ.get("FKD_CACHE_DIR", Path(COMP.data_dir) / ".cache"))


def unsafe_zip_member(name: str) -> bool:
    """An absolute path, a drive letter or a '..' part: extracting it could write outside the folder (zip slip)."""
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def _check_zip(zf: zipfile.ZipFile, where: str) -> None:
    for name in zf.namelist():
        if unsafe_zip_member(name):
            raise FkdError(f"{where}: refusing unsafe zip member {name!r} (absolute path or '..'); "
                           "re-download the file")


def _open_zip(data: bytes | Path, where: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FkdError(f"{where}: not a readable zip ({e}); the file is truncated or corrupt, "
                       "re-download it (fkd download)") from None
    _check_zip(zf, where)
    return zf


def _read_member(zf: zipfile.ZipFile, member: str, where: str) -> bytes:
    try:
        return zf.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise FkdError(f"{where}: member {member} is corrupt ({e}); re-download the file") from None


def _find_member(zf: zipfile.ZipFile, filename: str) -> str | None:
    for name in zf.namelist():
        if PurePosixPath(name).name == filename:
            return name
    return None


def locate(data_dir: Path, filename: str, required: bool = True) -> tuple[bytes, list[Path], str] | None:
    """Find `filename` (e.g. training.csv) as a plain file, in `<stem>.zip`, or inside the bundle zip.

    Returns (bytes, source files on disk, human-readable location), or None when absent and not required.
    """
    data_dir = Path(data_dir)
    stem = Path(filename).stem
    plain, nested, bundle = data_dir / filename, data_dir / f"{stem}.zip", data_dir / COMP.files["bundle"]
    if plain.is_file():
        return plain.read_bytes(), [plain], str(plain)
    if nested.is_file():
        zf = _open_zip(nested, str(nested))
        member = _find_member(zf, filename)
        if member is None:
            raise FkdError(f"{nested}: no {filename} inside; re-download it (fkd download)")
        return _read_member(zf, member, str(nested)), [nested], f"{nested}:{member}"
    if bundle.is_file():
        zf = _open_zip(bundle, str(bundle))
        member = _find_member(zf, filename)
        if member is not None:
            return _read_member(zf, member, str(bundle)), [bundle], f"{bundle}:{member}"
        inner = _find_member(zf, f"{stem}.zip")
        if inner is not None:
            where = f"{bundle}:{inner}"
            izf = _open_zip(_read_member(zf, inner, str(bundle)), where)
            m = _find_member(izf, filename)
            if m is None:
                raise FkdError(f"{where}: no {filename} inside; re-download the bundle (fkd download)")
            return _read_member(izf, m, where), [bundle], f"{where}:{m}"
    if not required:
        return None
    if not data_dir.is_dir():
        raise FkdError(f"{data_dir}: no such folder; run `fkd download` or `fkd practice --out {data_dir}`")
    raise FkdError(f"{data_dir}: {filename} not found (nor {stem}.zip nor {COMP.files['bundle']}); "
                   "download the competition files with `fkd download`")


def read_csv(raw: bytes, where: str, expected: list[str]) -> pd.DataFrame:
    """Parse CSV bytes as strings and check the header against `expected` (order-free)."""
    if not raw.strip():
        raise FkdError(f"{where}: file is empty; re-download it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FkdError(f"{where}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise FkdError(f"{where}: not a valid CSV ({str(e).strip().splitlines()[-1]})") from None
    got = [str(c) for c in df.columns]
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    if missing or extra:
        hint = ""
        if extra and missing:
            close = difflib.get_close_matches(extra[0], missing, n=1)
            hint = f" ({extra[0]!r} looks like a misspelt {close[0]!r})" if close else ""
        raise FkdError(f"{where}: header mismatch: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                       f"unexpected {extra[:4]}{hint}; the header must be {','.join(expected[:3])},...")
    if df.empty:
        raise FkdError(f"{where}: header but no rows; re-download it")
    return df[expected]


def _line(i: int) -> int:
    """CSV line number (1 = header) of data row i."""
    return int(i) + 2


def to_numbers(df: pd.DataFrame, cols: list[str], where: str) -> np.ndarray:
    """String columns -> float array; a non-numeric cell is an error naming its line and column."""
    out = np.empty((len(df), len(cols)), np.float64)
    for j, c in enumerate(cols):
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna().to_numpy() & df[c].notna().to_numpy()
        bad |= ~np.isfinite(num.to_numpy(np.float64)) & num.notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FkdError(f"{where}: line {_line(i)}, column {c}: {df[c].iloc[i]!r} is not a number; "
                           "fix or remove that row")
        out[:, j] = num.to_numpy(np.float64)
    return out


def read_image_csv(raw: bytes, where: str, label_cols: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV whose last column is `Image`: the other columns as strings, the images as (N, 96, 96) uint8.

    Fast path (the Kaggle files): numba finds each line's last comma and parses the pixels in place; pandas
    reads only the short label prefix. Quoted or reordered files go through pandas whole, same checks.
    """
    from .pixels import BAD_CHAR, BAD_COUNT, BAD_RANGE, line_bounds, parse_rows

    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    hend = raw.find(b"\n")
    header = raw[: hend if hend >= 0 else len(raw)].rstrip(b"\r")
    buf = np.frombuffer(raw, np.uint8)
    if hend >= 0 and b'"' not in raw and header.split(b",")[-1] == b"Image":
        starts, ends, commas = line_bounds(buf, hend + 1)
        if (commas < starts).any():
            i = int(np.flatnonzero(commas < starts)[0])
            raise FkdError(f"{where}: line {_line(i)}: fewer fields than the header; fix or remove that row")
        prefix = b"\n".join([header.rsplit(b",", 1)[0] if b"," in header else b""]
                             + [raw[s:c] for s, c in zip(starts.tolist(), commas.tolist())])
        df = read_csv(prefix, where, label_cols)
        if len(df) != len(starts):
            raise FkdError(f"{where}: {len(df)} rows of labels for {len(starts)} images; the file is malformed")
        pix_starts = commas + 1
    else:
        df = read_csv(raw, where, label_cols + ["Image"])
        if df["Image"].isna().any():
            i = int(np.flatnonzero(df["Image"].isna().to_numpy())[0])
            raise FkdError(f"{where}: line {_line(i)}: Image is empty; it must hold {COMP.n_pixels} pixel values")
        joined = ("\n".join(df["Image"].tolist()) + "\n").encode("utf-8")
        buf = np.frombuffer(joined, np.uint8)
        pix_starts, ends, _ = line_bounds(buf, 0)
        if len(pix_starts) != len(df):
            raise FkdError(f"{where}: an Image cell is empty or spans lines; each row needs {COMP.n_pixels} pixels")
        df = df[label_cols]
    n = len(pix_starts)
    images = np.empty((n, COMP.n_pixels), np.uint8)
    err = np.zeros((n, 2), np.int64)
    parse_rows(buf, pix_starts, ends, images, err)
    bad = np.flatnonzero(err[:, 0])
    if bad.size:
        i = int(bad[0])
        code, detail = err[i]
        msg = {BAD_CHAR: "Image holds a non-numeric character (pixels must be integers 0-255 separated by spaces)",
               BAD_COUNT: f"Image has {detail} values, expected {COMP.n_pixels} (96x96)",
               BAD_RANGE: f"pixel value {detail} is outside 0-255"}[int(code)]
        raise FkdError(f"{where}: line {_line(i)}: {msg}; fix or remove that row")
    return df, images.reshape(n, COMP.image_size, COMP.image_size)


def row_source(keypoints: np.ndarray) -> np.ndarray:
    """FULL for rows with any label beyond the 8 common columns, else COMMON."""
    return np.where(np.isfinite(keypoints[:, ~COMMON_MASK]).any(1), FULL, COMMON).astype(np.int8)


# ------------------------------------------------------------------------------------------ parsing
def _parse_training(raw: bytes, where: str):
    df, images = read_image_csv(raw, where, COMP.columns)
    kp = to_numbers(df, COMP.columns, where)
    outside = np.isfinite(kp) & ((kp < 0) | (kp > COMP.image_size))
    if outside.any():
        i, j = map(int, np.argwhere(outside)[0])
        raise FkdError(f"{where}: line {_line(i)}, column {COMP.columns[j]}: {kp[i, j]} is outside the image "
                       f"(0-{COMP.image_size}); fix or remove that row")
    if not np.isfinite(kp).any(1).all():
        i = int(np.flatnonzero(~np.isfinite(kp).any(1))[0])
        raise FkdError(f"{where}: line {_line(i)}: no keypoint labelled; remove that row")
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
        raise FkdError(f"{where}: line {_line(i)}: duplicate ImageId {ids[i]}; each image must appear once")
    return images, ids


def _parse_lookup(raw: bytes, where: str, test_ids: np.ndarray) -> pd.DataFrame:
    df = read_csv(raw, where, ["RowId", "ImageId", "FeatureName", "Location"])
    nums = to_numbers(df, ["RowId", "ImageId"], where)
    lk = pd.DataFrame({"RowId": nums[:, 0].astype(np.int64), "ImageId": nums[:, 1].astype(np.int64),
                       "FeatureName": df["FeatureName"].astype(str)})
    dup = lk["RowId"].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise FkdError(f"{where}: line {_line(i)}: duplicate RowId {lk.RowId[i]}")
    col = {c: j for j, c in enumerate(COMP.columns)}
    lk["col"] = lk["FeatureName"].map(col)
    if lk["col"].isna().any():
        i = int(np.flatnonzero(lk["col"].isna().to_numpy())[0])
        close = difflib.get_close_matches(lk.FeatureName[i], COMP.columns, n=1)
        raise FkdError(f"{where}: line {_line(i)}: unknown FeatureName {lk.FeatureName[i]!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else "") + "; fix the lookup table")
    pos = {int(v): i for i, v in enumerate(test_ids)}
    lk["img"] = lk["ImageId"].map(pos)
    if lk["img"].isna().any():
        i = int(np.flatnonzero(lk["img"].isna().to_numpy())[0])
        raise FkdError(f"{where}: line {_line(i)}: ImageId {lk.ImageId[i]} is not in the test set; "
                       "the lookup table and test.csv do not belong together")
    if lk.duplicated(["ImageId", "col"]).any():
        i = int(np.flatnonzero(lk.duplicated(["ImageId", "col"]).to_numpy())[0])
        raise FkdError(f"{where}: line {_line(i)}: ImageId {lk.ImageId[i]} asks for {lk.FeatureName[i]} twice")
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


# -------------------------------------------------------------------------------------------- folds
def make_folds(source: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Deterministic K-fold ids (N,), stratified by annotation source: each source is dealt round-robin."""
    if k < 2:
        raise FkdError(f"folds must be at least 2, got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(source), np.int64)
    for s in np.unique(source):
        idx = np.flatnonzero(source == s)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def save_folds(path: Path, fold: np.ndarray, source: np.ndarray) -> Path:
    df = pd.DataFrame({"row": np.arange(len(fold)), "source": source, "fold": fold})
    return atomic.write_text(path, df.to_csv(index=False))


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


def preview(d: CompetitionData, out: Path, n: int = 16, seed: int = 0) -> Path:
    """PNG grid of training faces with their keypoints (full source in green, common-only in orange)."""
    from .plots import face_grid

    idx = np.sort(np.random.default_rng(seed).choice(len(d.images), size=min(n, len(d.images)), replace=False))
    src = ["full" if d.source[i] == FULL else "common" for i in idx]
    colours = ["lime" if s == "full" else "orange" for s in src]
    return face_grid(d.images[idx], [(d.keypoints[idx], colours, "o")],
                     [f"row {i} ({s})" for i, s in zip(idx, src)], out)
