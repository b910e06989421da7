"""A run's config -> a kernel folder the official client pushes: kernel-metadata.json and one script.

The script is fkd/remote/kernel.py with the resolved config, fkd's own code (its package files, zipped and
base64-encoded: a few hundred kB) and a push id appended. Nothing else goes in: no credential, no token, no
environment variable, no ledger row (tests/test_remote.py reads what is pushed and looks for them).

    >>> folder, push_id = build_kernel(cfg, "alice", "NvidiaTeslaT4", Path("runs/x/kernel"))  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import io
import json
import re
import uuid
import zipfile
from pathlib import Path

from .. import atomic
from ..competition import COMP, ROOT
from ..config import Config
from ..errors import FkdError
from . import ACCELERATORS

SCRIPT = "fkd_kernel.py"
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]$")
# the config fields that say where and how a run went on the user's machine: the kernel sets its own
LOCAL_FIELDS = ("data_dir", "runs_dir", "device", "workers", "threads")


def kernel_slug(cfg: Config) -> str:
    """The kernel's slug, from the run name: lowercase letters, digits and hyphens, 5 to 50 of them."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"fkd-{cfg.run_name()}".lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not SLUG_RE.match(slug):
        raise FkdError(f"run name {cfg.run_name()!r} makes the kernel slug {slug!r}, which Kaggle does not take "
                       "(5-50 lowercase letters, digits, hyphens); pick a shorter run name: --set name=...")
    return slug


def code_zip() -> str:
    """fkd's package and the competition file, zipped and base64-encoded for the script."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((ROOT / "fkd").rglob("*.py")):
            zf.write(p, str(p.relative_to(ROOT)))
        for p in sorted((ROOT / "competition").glob("*.yaml")):
            zf.write(p, str(p.relative_to(ROOT)))
    return base64.b64encode(buf.getvalue()).decode()


def script_text(cfg: Config, push_id: str, checkpoints: bool) -> str:
    """kernel.py's text with this run's values appended (the names it declares empty)."""
    from . import kernel

    config = {k: v for k, v in cfg.to_dict().items() if k not in LOCAL_FIELDS}
    return (Path(kernel.__file__).read_text()
            + "\n\n# ---- this push (fkd/remote/build.py) ----\n"
            + f"CONFIG = json.loads({json.dumps(json.dumps(config))})\n"
            + f"PUSH_ID = {push_id!r}\nSLUG = {COMP.slug!r}\nCHECKPOINTS = {bool(checkpoints)!r}\n"
            + f"CODE = {code_zip()!r}\n\n"
            + 'if __name__ == "__main__":\n    main()\n')


def build_kernel(cfg: Config, owner: str, accelerator: str, out: Path, checkpoints: bool = False) -> tuple[Path, str]:
    """Write the kernel folder (metadata + script) into `out`; returns it and the push id in the script."""
    if accelerator not in ACCELERATORS:
        raise FkdError(f"accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    slug, push_id = kernel_slug(cfg), uuid.uuid4().hex[:16]
    meta = {"id": f"{owner}/{slug}", "title": slug, "code_file": SCRIPT, "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_tpu": False,
            "enable_internet": True, "competition_sources": [COMP.slug], "dataset_sources": [],
            "kernel_sources": [], "model_sources": [], "machine_shape": accelerator,
            "keywords": ["gpu"]}
    atomic.write_text(out / SCRIPT, script_text(cfg, push_id, checkpoints))
    atomic.write_json(out / "kernel-metadata.json", meta)
    return out, push_id
