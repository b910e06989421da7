"""The submissions ledger: one SQLite row per submission file (a kill cannot corrupt it: SQLite journals).

Columns: file, time, run, CV RMSE, local score (where a solution.csv exists), the data it was predicted from
(data_hash, test_hash), where its run trained (trained_on: a Kaggle kernel's ref, version and accelerator; empty:
here), where it was sent (destination: 'kaggle.com', 'fkd serve <folder>@<hash>' for a local
rehearsal server, or another endpoint's URL; endpoint: the URL), and the server's side: upload uid (in the
description), status (pending / submitted / COMPLETE / ERROR), ref, public and private score. A ledger made
before destinations were recorded gains the columns in place; its rows stay 'unknown', never taken for Kaggle.

    $ fkd scores            # the ledger as a table, best first
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

LEDGER = Path("submissions") / "ledger.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    run TEXT,
    cv_rmse REAL,
    tta INTEGER,
    local_rmse REAL,
    local_public REAL,
    local_private REAL,
    competition TEXT,
    uid TEXT,
    description TEXT,
    status TEXT,
    ref TEXT,
    public_score REAL,
    private_score REAL,
    error TEXT,
    updated TEXT,
    destination TEXT,
    endpoint TEXT,
    data_hash TEXT,
    test_hash TEXT,
    trained_on TEXT
)"""

COLUMNS = ["id", "file", "created", "run", "cv_rmse", "tta", "local_rmse", "local_public", "local_private",
           "competition", "uid", "description", "status", "ref", "public_score", "private_score", "error",
           "updated", "destination", "endpoint", "data_hash", "test_hash", "trained_on"]
KAGGLE = "kaggle.com"
UNKNOWN = "unknown"   # how rows from before destinations were recorded show: never assumed to be Kaggle's


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def connect(path: Path | None = None) -> sqlite3.Connection:
    path = Path(path or LEDGER)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    con.execute(SCHEMA)
    have = {r[1] for r in con.execute("PRAGMA table_info(submissions)")}
    for col in (c for c in COLUMNS if c not in have):   # an older ledger: add the new columns in place
        with con:
            con.execute(f"ALTER TABLE submissions ADD COLUMN {col} TEXT")
    return con


def record(file: str | Path, path: Path | None = None, **fields) -> None:
    """Insert or update the row of `file` with the given fields."""
    file = str(Path(file).resolve())
    fields = {k: v for k, v in fields.items() if k in COLUMNS}
    with closing(connect(path)) as con, con:
        con.execute("INSERT OR IGNORE INTO submissions (file, created, updated) VALUES (?, ?, ?)",
                    (file, _now(), _now()))
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            con.execute(f"UPDATE submissions SET {sets}, updated = ? WHERE file = ?",
                        (*fields.values(), _now(), file))


def get(file: str | Path, path: Path | None = None) -> dict | None:
    with closing(connect(path)) as con:
        r = con.execute("SELECT * FROM submissions WHERE file = ?", (str(Path(file).resolve()),)).fetchone()
    return dict(r) if r else None


def rows(path: Path | None = None, where: str = "", args: tuple = ()) -> list[dict]:
    with closing(connect(path)) as con:
        return [dict(r) for r in con.execute(f"SELECT * FROM submissions {where} ORDER BY id", args)]


def is_local(destination: str | None) -> bool:
    return bool(destination) and destination != KAGGLE


def for_destination(items: list[dict], destination: str, test_hash: str | None) -> list[dict]:
    """The rows that belong to one destination: sent there, or made from its data and not sent anywhere yet."""
    return [r for r in items if r.get("destination") == destination
            or (not r.get("destination") and r.get("status") in (None, "local") and test_hash
                and r.get("test_hash") == test_hash)]


def best_per_run(items: list[dict]) -> dict[str, dict]:
    """Each run's best submitted row (lowest public score; a row not yet scored counts last)."""
    best: dict[str, dict] = {}
    for r in items:
        if r.get("status") in ("COMPLETE", "submitted", "pending") and r.get("run"):
            b = best.get(r["run"])
            if b is None or (r.get("public_score") or 1e9) < (b.get("public_score") or 1e9):
                best[r["run"]] = r
    return best


def best_first(items: list[dict]) -> list[dict]:
    def key(r):
        for k in ("private_score", "public_score", "local_rmse", "cv_rmse"):
            if r.get(k) is not None:
                return (0, float(r[k]))
        return (1, 0.0)
    return sorted(items, key=key)


def scatter(items: list[dict], destination: str,
            out: Path = Path("submissions") / "cv-vs-leaderboard.png") -> Path | None:
    """CV RMSE against public and private score of one destination's rows: does CV predict its board?"""
    fig = scatter_figure(items, destination)
    if fig is None:
        return None
    from ..plots import save

    return save(fig, out)


def scatter_figure(items: list[dict], destination: str):
    """The figure of `scatter` (None without a scored row): the destination on a line of its own under the
    question, so that a long name (a local server's folder and hash) is never cut off."""
    items = [r for r in items if r.get("destination") == destination]
    pts = [r for r in items if r.get("cv_rmse") is not None and r.get("public_score") is not None]
    if not pts:
        return None
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    cv = [r["cv_rmse"] for r in pts]
    ax.scatter(cv, [r["public_score"] for r in pts], label="public", marker="o")
    priv = [(r["cv_rmse"], r["private_score"]) for r in pts if r.get("private_score") is not None]
    if priv:
        ax.scatter(*zip(*priv), label="private", marker="x")
    lo, hi = min(cv + [r["public_score"] for r in pts]), max(cv + [r["public_score"] for r in pts])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax.set_xlabel("CV RMSE (out of fold)"), ax.set_ylabel("leaderboard RMSE"), ax.legend(), ax.grid(alpha=0.3)
    where = textwrap.fill(f"{'LOCAL ' if is_local(destination) else ''}{destination}", 60)
    ax.set_title(f"does CV predict the leaderboard?\n{where}", fontsize=8)
    fig.tight_layout()
    return fig


def format_table(items: list[dict]) -> str:
    if not items:
        return "no submissions yet: run `fkd predict RUN_DIR` or `make submit`"
    head = (f"{'file':<44} {'run':<28} {'CV':>7} {'local':>7} {'public':>7} {'private':>7}  {'sent to':<36} "
            "status")
    lines = [head, "-" * len(head)]
    f = lambda v: f"{v:7.4f}" if v is not None else f"{'-':>7}"
    for r in items:
        lines.append(f"{Path(r['file']).name[:44]:<44} {(r['run'] or '')[:28]:<28} {f(r['cv_rmse'])} "
                     f"{f(r['local_rmse'])} {f(r['public_score'])} {f(r['private_score'])}  "
                     f"{where_label(r)[:36]:<36} {r['status'] or 'local'}"
                     + (f" ({r['error']})" if r.get("error") else ""))
    return "\n".join(lines)


def where_label(r: dict) -> str:
    """'kaggle.com', 'LOCAL fkd serve practice@…' (a rehearsal server's scores), '-' (not sent), or 'unknown'."""
    d = r.get("destination")
    if d:
        return f"LOCAL {d}" if is_local(d) else d
    return "-" if r.get("status") in (None, "local") else UNKNOWN
