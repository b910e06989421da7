"""`fkd download`: the competition files through the official client, verified and safely extracted.

    $ fkd download                       # competition files into competition/data/, skipped when present and intact
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path, PurePosixPath

from .. import atomic
from ..competition import COMP
from ..competition.files import unsafe_zip_member
from ..errors import FkdError
from .client import call, explain, get_api, where

REQUIRED = ("training.csv", "test.csv", COMP.files["lookup"], COMP.files["sample"])
MARKER = ".fkd-download.json"   # sizes, where it came from and its test set: an intact download is not repeated


def safe_extract(zf: zipfile.ZipFile, dest: Path, where: str) -> list[Path]:
    """Extract a zip's files flat into dest, refusing absolute or '..' members; nested zips are opened too."""
    out = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if unsafe_zip_member(info.filename):
            raise FkdError(f"{where}: refusing unsafe zip member {info.filename!r}; the download is not trusted")
        if info.is_dir():
            continue
        data = zf.read(info)
        if p.suffix == ".zip":
            out += safe_extract(zipfile.ZipFile(io.BytesIO(data)), dest, f"{where}:{p.name}")
        else:
            out.append(atomic.write_bytes(dest / p.name, data))
    return out


def _intact(dest: Path) -> bool:
    marker = dest / MARKER
    if not marker.is_file():
        return False
    sizes = json.loads(marker.read_text()).get("sizes", {})
    return all((dest / n).is_file() and (dest / n).stat().st_size == sizes.get(n) for n in REQUIRED)


def download(dest: str | Path | None = None, force: bool = False) -> list[Path]:
    """Competition files into `dest` (default competition/data): verified, safely extracted, skipped if intact."""
    from ..competition.data import load_data, test_hash
    from .destination import destination

    dest = Path(dest or COMP.data_dir)
    if not force and _intact(dest):
        print(f"{dest}: competition files already present and intact; skipping the download")
        return [dest / n for n in REQUIRED]
    # the bundle is fetched into dest/.partial/: a broken-off download never lies under a name fkd reads, and
    # the next `fkd download` resumes it (the client checks its .kaggle-partial marker and asks for the rest
    # with a Range request; within one call it retries a dropped connection the same way)
    partial = dest / ".partial"
    bundle, listed = _fetch_bundle(partial, force)
    files = _extract_verified(bundle, listed, dest)
    bundle.unlink()
    for p in partial.iterdir():   # the client's resume marker
        p.unlink()
    partial.rmdir()
    atomic.write_json(dest / MARKER, {"sizes": {n: (dest / n).stat().st_size for n in REQUIRED}, "from": where(),
                                      "destination": destination().name, "test_hash": test_hash(load_data(dest)),
                                      "time": time.time()})
    return files


def _fetch_bundle(partial: Path, force: bool) -> tuple[Path, dict]:
    """The competition zip into partial/ (resumed where a broken-off download left a part) and the file list."""
    import requests

    api = get_api()
    partial.mkdir(parents=True, exist_ok=True)
    if force:
        for p in partial.iterdir():
            p.unlink()
    try:
        listed = {f.name: f.total_bytes for f in call(api.competition_list_files, COMP.slug).files}
        call(api.competition_download_files, COMP.slug, path=str(partial), force=False, quiet=False)
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as e:
        if any(partial.iterdir()):
            raise FkdError(f"the download from {where()} kept breaking off ({type(e).__name__}); the part received "
                           f"is kept in {partial} and `fkd download` resumes it") from None
        raise explain(e, api=api) from None
    except Exception as e:  # noqa: BLE001 - explained in one line, never swallowed
        raise explain(e, api=api) from None
    bundle = partial / f"{COMP.slug}.zip"
    if not bundle.is_file():
        raise FkdError(f"{bundle}: the download produced no file; retry `fkd download`")
    return bundle, listed


def _extract_verified(bundle: Path, listed: dict, dest: Path) -> list[Path]:
    """Check the zip (CRCs, sizes against Kaggle's list), extract it into dest, check every file is there."""
    try:
        with zipfile.ZipFile(bundle) as zf:
            bad = zf.testzip()
            if bad:
                raise FkdError(f"{bundle}: member {bad} fails its CRC check; retry `fkd download --force`")
            members = {PurePosixPath(i.filename).name: i.file_size for i in zf.infolist()}
            for name, size in listed.items():
                if name in members and size and members[name] != size:
                    raise FkdError(f"{bundle}: {name} is {members[name]} bytes, Kaggle lists {size}; "
                                   "retry `fkd download --force`")
            files = safe_extract(zf, dest, str(bundle))
    except zipfile.BadZipFile as e:
        raise FkdError(f"{bundle}: not a readable zip ({e}); retry `fkd download --force`") from None
    missing = [n for n in REQUIRED if not (dest / n).is_file()]
    if missing:
        raise FkdError(f"{bundle}: missing {', '.join(missing)} after extraction; retry `fkd download --force`")
    return files
