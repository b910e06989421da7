"""Where uploads go and scores come from: kaggle.com, a local `fkd serve` (named by what it serves), another URL.

    >>> there = destination()          # doctest: +SKIP   the one FKD_KAGGLE_ENDPOINT names, else kaggle.com
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..competition import COMP, PRACTICE_DIR
from . import ledger
from .client import credentials_source, endpoint, explain, request_timeout


@dataclass(frozen=True)
class Destination:
    """Where uploads go and scores come from. name: 'kaggle.com', 'fkd serve <folder>@<hash>' (a local rehearsal
    server, named by what it serves, whatever its port), or another endpoint's URL; test_hash: the test set it
    scores against, where known (a local server says; for kaggle.com, the data downloaded from it)."""

    name: str
    endpoint: str | None
    test_hash: str | None

    @property
    def local(self) -> bool:
        return ledger.is_local(self.name)


def _downloaded_test_hash(name: str) -> str | None:
    """The test set of the competition data downloaded from destination `name` (its download marker)."""
    root = Path(COMP.data_dir)
    for marker in [root / ".fkd-download.json", *sorted(root.glob("*/.fkd-download.json"))]:
        try:
            m = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if m.get("destination") == name and m.get("test_hash"):
            return m["test_hash"]
    return None


def destination() -> Destination:
    """The destination in use: the server FKD_KAGGLE_ENDPOINT names (asked who it is), else kaggle.com."""
    ep = endpoint()
    if ep is None:
        return Destination(ledger.KAGGLE, None, _downloaded_test_hash(ledger.KAGGLE))
    import requests

    try:
        r = requests.get(f"{ep}/health", timeout=request_timeout())
    except requests.RequestException as e:
        # its name cannot be known without an answer: nothing is recorded or sent under a guessed one
        raise explain(e) from None
    try:
        info = r.json() if r.ok else {}
    except ValueError:
        info = {}
    if isinstance(info, dict) and info.get("server") == "fkd serve" and info.get("destination"):
        return Destination(str(info["destination"]), ep, info.get("test_hash"))
    return Destination(ep, ep, _downloaded_test_hash(ep))   # another server: named by its URL


def offline_destination(comp_dir: str | Path) -> Destination:
    """The destination `make submit OFFLINE=1` uses for a competition folder, without starting its server."""
    from ..competition.data import load_data, test_hash
    from .server import served_identity

    return Destination(served_identity(comp_dir), None, test_hash(load_data(comp_dir)))


def destination_in_use(data_dir: str | None) -> Destination | None:
    """kaggle.com or the server FKD_KAGGLE_ENDPOINT names when online; offline, the local server that
    `make submit OFFLINE=1` would start for data_dir (default: the practice competition); None if unknown."""
    if endpoint() or (credentials_source() and not data_dir):
        return destination()
    d = Path(data_dir) if data_dir else PRACTICE_DIR
    return offline_destination(d) if (d / "solution.csv").is_file() else None
