"""Competition files as bytes and strings: a file found plain, zipped or inside the bundle; the one CSV decoder.

Every CSV fkd reads (training, test, lookup, sample, a submission, a solution) goes through `decode_csv`: UTF-8
with or without BOM, CRLF or LF, every cell a string, one clear line naming the file when it is not a CSV.

    >>> decode_csv(b"RowId,Location\r\n1,2.5\r\n", "x.csv").to_dict("list")
    {'RowId': ['1'], 'Location': ['2.5']}
"""
from __future__ import annotations

import difflib
import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import FkdError
from .spec import COMP


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


def decode_csv(raw: bytes, where: str, empty: str = "re-download it") -> pd.DataFrame:
    """CSV bytes -> a DataFrame of strings (empty cells NaN); `empty` is the fix named for an empty file."""
    if not raw.strip():
        raise FkdError(f"{where}: file is empty; {empty}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FkdError(f"{where}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise FkdError(f"{where}: not a valid CSV ({str(e).strip().splitlines()[-1]})") from None


def read_csv(raw: bytes, where: str, expected: list[str]) -> pd.DataFrame:
    """Decode CSV bytes and check the header against `expected` (order-free); the columns in that order."""
    df = decode_csv(raw, where)
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


def csv_line(i: int) -> int:
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
            raise FkdError(f"{where}: line {csv_line(i)}, column {c}: {df[c].iloc[i]!r} is not a number; "
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
            raise FkdError(f"{where}: line {csv_line(i)}: fewer fields than the header; fix or remove that row")
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
            raise FkdError(f"{where}: line {csv_line(i)}: Image is empty; it must hold {COMP.n_pixels} pixel values")
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
        raise FkdError(f"{where}: line {csv_line(i)}: {msg}; fix or remove that row")
    return df, images.reshape(n, COMP.image_size, COMP.image_size)
