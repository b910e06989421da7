"""Kaggle's kernels on the local server: a pushed kernel really runs, in a subprocess on this machine.

Each version gets a folder of its own under the server's state: input/ (the competition's files, mounted where
Kaggle mounts them: input/competitions/<slug>/, zipped as in the download; `mount="flat"` puts them extracted
in input/<slug>/, the other layout fkd's kernel script must cope with), working/ (what the kernel leaves: its
outputs) and log.txt. The script runs with FKD_KERNEL_INPUT and FKD_KERNEL_WORKING naming those folders, no
Kaggle credential and no proxy-less network in its environment, its cores shared with other fkd trainers;
status goes QUEUED -> RUNNING -> COMPLETE or ERROR (or CANCEL_ACKNOWLEDGED). GPU time is counted against a
weekly quota (30 h), as `kaggle quota` shows it.

Faults (`fkd serve --fail KIND[:N]`): kernel-error (the version fails), kernel-queued (it never starts),
kernel-cancel (cancelled once it runs), quota (no GPU hours left), and `reset`, which breaks an output download
off half way as it does the data files'.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

from ... import atomic
from ...children import spawn
from .store import iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (owner TEXT NOT NULL, slug TEXT NOT NULL, meta TEXT NOT NULL, created TEXT,
  PRIMARY KEY (owner, slug));
CREATE TABLE IF NOT EXISTS kernel_versions (owner TEXT NOT NULL, slug TEXT NOT NULL, version INTEGER NOT NULL,
  status TEXT NOT NULL, failure TEXT, source TEXT, gpu INTEGER, created TEXT, started REAL, ended REAL,
  PRIMARY KEY (owner, slug, version));
"""
WEEKLY_GPU_S = 30 * 3600
QUEUE_S = 0.3                 # seconds a version waits QUEUED before it starts
DROP_ENV = ("KAGGLE_", "FKD_KAGGLE_", "AWS_", "GOOGLE_", "HF_TOKEN", "GITHUB_TOKEN")


class Kernels:
    """The kernels of the served competition's users: versions, their runs, their outputs, the GPU quota."""

    def __init__(self, state, mount: str = "competitions"):
        self.state, self.store, self.mount = state, state.store, mount
        self.root = state.state_dir.resolve() / "kernels"
        with self.store.lock:
            self.store.db.executescript(SCHEMA)
            self.store.db.commit()
        for owner, slug, version in self.store.query(
                "SELECT owner, slug, version FROM kernel_versions WHERE status IN ('QUEUED', 'RUNNING')"):
            self._finish(owner, slug, version, "ERROR", "the server restarted while the kernel ran")

    # -------------------------------------------------------------------------------------- versions
    def folder(self, owner: str, slug: str, version: int) -> Path:
        return self.root / owner / slug / f"v{version}"

    def meta(self, owner: str, slug: str) -> dict | None:
        r = self.store.query("SELECT meta FROM kernels WHERE owner = ? AND slug = ?", (owner, slug))
        return json.loads(r[0][0]) if r else None

    def versions(self, owner: str, slug: str) -> list[dict]:
        cols = ("version", "status", "failure", "source", "gpu", "created", "started", "ended")
        rows = self.store.query(f"SELECT {', '.join(cols)} FROM kernel_versions WHERE owner = ? AND slug = ? "
                                "ORDER BY version", (owner, slug))
        return [dict(zip(cols, r)) for r in rows]

    def version(self, owner: str, slug: str, label: str = "") -> dict | None:
        """A version by its label ('v3'; empty: the latest)."""
        vs = self.versions(owner, slug)
        if not vs:
            return None
        if not label:
            return vs[-1]
        n = int(label[1:]) if label.startswith("v") and label[1:].isdigit() else -1
        return next((v for v in vs if v["version"] == n), None)

    def save(self, owner: str, slug: str, meta: dict, source: str, gpu: bool) -> int:
        """A new version of owner/slug (the kernel made if new), queued to run; its number."""
        with self.store.lock:
            if self.meta(owner, slug) is None:
                self.store.write("INSERT INTO kernels VALUES (?, ?, ?, ?)", (owner, slug, json.dumps(meta), iso()))
            else:
                self.store.write("UPDATE kernels SET meta = ? WHERE owner = ? AND slug = ?",
                                 (json.dumps(meta), owner, slug))
            n = 1 + max([v["version"] for v in self.versions(owner, slug)], default=0)
            self.store.write("INSERT INTO kernel_versions (owner, slug, version, status, source, gpu, created) "
                             "VALUES (?, ?, ?, 'QUEUED', ?, ?, ?)", (owner, slug, n, source, int(gpu), iso()))
        folder = self.folder(owner, slug, n)
        atomic.write_text(folder / meta.get("code_file", "script.py"), source)
        if not self.store.fault("kernel-queued"):
            threading.Thread(target=self._run, args=(owner, slug, n, meta), daemon=True).start()
        return n

    def delete(self, owner: str, slug: str) -> bool:
        if self.meta(owner, slug) is None:
            return False
        self.store.write("DELETE FROM kernels WHERE owner = ? AND slug = ?", (owner, slug))
        self.store.write("DELETE FROM kernel_versions WHERE owner = ? AND slug = ?", (owner, slug))
        shutil.rmtree(self.root / owner / slug, ignore_errors=True)
        return True

    def list(self, owner: str | None, search: str = "") -> list[tuple[str, str, dict]]:
        rows = self.store.query("SELECT owner, slug, meta FROM kernels ORDER BY created DESC")
        return [(o, s, json.loads(m)) for o, s, m in rows
                if (owner is None or o == owner) and search.lower() in s.lower()]

    # -------------------------------------------------------------------------------------- running
    def _mount_input(self, folder: Path) -> Path:
        """The competition's files where Kaggle mounts them, as `mount` says."""
        from ...competition import COMP

        inp = folder / "input"
        if self.mount == "flat":          # extracted, at /kaggle/input/<slug>/
            dest = inp / COMP.slug
            dest.mkdir(parents=True, exist_ok=True)
            for f in self.state.files:
                if f.suffix == ".zip":
                    with zipfile.ZipFile(f) as zf:
                        for name in zf.namelist():
                            atomic.write_bytes(dest / Path(name).name, zf.read(name))
                else:
                    shutil.copy2(f, dest / f.name)
        else:                             # as the download has them, at /kaggle/input/competitions/<slug>/
            dest = inp / "competitions" / COMP.slug
            dest.mkdir(parents=True, exist_ok=True)
            for f in self.state.files:
                shutil.copy2(f, dest / f.name)
        return inp

    def _env(self, folder: Path, inp: Path) -> dict:
        """The kernel's environment: this machine's, less every credential; its /kaggle paths; no network."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(DROP_ENV) and "TOKEN" not in k}
        env.update(FKD_KERNEL_INPUT=str(inp), FKD_KERNEL_WORKING=str(folder / "working"), HF_HUB_OFFLINE="1",
                   NO_ALBUMENTATIONS_UPDATE="1", HOME=str(folder), HTTP_PROXY="http://127.0.0.1:9",
                   HTTPS_PROXY="http://127.0.0.1:9", PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1")
        return env

    def _run(self, owner: str, slug: str, n: int, meta: dict) -> None:
        time.sleep(QUEUE_S)
        folder = self.folder(owner, slug, n)
        inp = self._mount_input(folder)
        if self.store.fault("kernel-error"):
            inp = folder / "nothing-mounted"              # the script finds no competition: a real failure
            inp.mkdir(exist_ok=True)
        (folder / "working").mkdir(exist_ok=True)
        self.store.write("UPDATE kernel_versions SET status = 'RUNNING', started = ? WHERE owner = ? AND slug = ? "
                         "AND version = ?", (time.time(), owner, slug, n))
        with open(folder / "log.txt", "wb") as log:
            p = spawn([sys.executable, "-u", str(folder / meta.get("code_file", "script.py"))], cwd=folder / "working",
                      env=self._env(folder, inp), stdout=log, stderr=log)
            if self.store.fault("kernel-cancel"):
                time.sleep(1.0)
                p.terminate()
                p.wait()
                return self._finish(owner, slug, n, "CANCEL_ACKNOWLEDGED", "cancelled by the user")
            rc = p.wait()
        tail = self.log_text(owner, slug, n).strip().splitlines()
        self._finish(owner, slug, n, "COMPLETE" if rc == 0 else "ERROR",
                     None if rc == 0 else (tail[-1] if tail else f"exit code {rc}"))

    def _finish(self, owner: str, slug: str, n: int, status: str, failure: str | None) -> None:
        self.store.write("UPDATE kernel_versions SET status = ?, failure = ?, ended = ? WHERE owner = ? AND slug = ? "
                         "AND version = ?", (status, failure, time.time(), owner, slug, n))

    # -------------------------------------------------------------------------------------- outputs
    def log_text(self, owner: str, slug: str, n: int) -> str:
        f = self.folder(owner, slug, n) / "log.txt"
        return f.read_text(errors="replace") if f.is_file() else ""

    def log_events(self, owner: str, slug: str, n: int) -> list[dict]:
        """The log as Kaggle keeps it: a list of {stream_name, time, data} events."""
        return [{"stream_name": "stdout", "time": 0.0, "data": line}
                for line in self.log_text(owner, slug, n).splitlines(keepends=True)]

    def outputs(self, owner: str, slug: str, n: int) -> list[str]:
        work = self.folder(owner, slug, n) / "working"
        return sorted(str(p.relative_to(work)) for p in work.rglob("*")
                      if p.is_file() and "fkd-work" not in p.relative_to(work).parts)

    def output_path(self, owner: str, slug: str, n: int, name: str) -> Path | None:
        work = (self.folder(owner, slug, n) / "working").resolve()
        p = (work / name).resolve()
        return p if p.is_file() and work in p.parents and name in self.outputs(owner, slug, n) else None

    def gpu_seconds(self, owner: str) -> float:
        rows = self.store.query("SELECT started, ended FROM kernel_versions WHERE owner = ? AND gpu = 1 AND "
                                "started IS NOT NULL", (owner,))
        now = time.time()
        return sum((e or now) - s for s, e in rows)

    def quota(self, owner: str) -> dict:
        """GetAcceleratorQuotaStatistics: durations as Kaggle writes them ("123.5s")."""
        used = WEEKLY_GPU_S if self.store.fault_armed("quota") else self.gpu_seconds(owner)
        refresh = iso(time.time() + 7 * 86400)
        q = {"timeUsed": f"{used:.1f}s", "timeReserved": "0s", "totalTimeAllowed": f"{WEEKLY_GPU_S}s",
             "minimumTimeAllowed": "0s", "isPayToScaleEnabled": False, "hasEverRun": used > 0}
        return {"quotaRefreshTime": refresh, "gpuQuota": q,
                "tpuQuota": {**q, "timeUsed": "0s", "totalTimeAllowed": f"{20 * 3600}s", "hasEverRun": False}}
