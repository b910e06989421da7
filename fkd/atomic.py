"""Write-then-rename helpers: a killed process never leaves a half-written file under the final name."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path

HOST = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:40] or "host"
TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[^.]+\.tmp")
UMASK = os.umask(0o022)     # read once (it can only be read by setting it), then put back
os.umask(UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temp path beside `path`; on success fsync and rename it over `path`, else delete it.

    Temps that killed writers left in the same folder are swept first, so every folder fkd writes into is
    cleaned by its next write; folders a rerun never writes into again (a FAIL tune trial) need `sweep`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent, recursive=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{HOST}-{os.getpid()}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)     # mkstemp makes 0600: give the file the mode a plain open() would
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete temp files that a killed process of this host left behind (its pid is gone); returns them.

    Temps of live processes (another fold training into the same run) and of other hosts are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        m = TEMP.match(p.name)
        if m and m["host"] == HOST and not alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                gone.append(p)
    return gone
