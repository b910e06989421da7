"""The submissions ledger: one SQLite row per submission file (a kill cannot corrupt it: SQLite journals).

Columns: file, time, run, CV RMSE, local score (where a solution.csv exists), and the Kaggle side: upload
uid (in the description), status (pending / submitted / COMPLETE / ERROR), ref, public and private score.

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
    updated TEXT
)"""

COLUMNS = ["id", "file", "created", "run", "cv_rmse", "tta", "local_rmse", "local_public", "local_private",
           "competition", "uid", "description", "status", "ref", "public_score", "private_score", "error",
           "updated"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def connect(path: Path | None = None) -> sqlite3.Connection:
    path = Path(path or LEDGER)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    con.execute(SCHEMA)
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


def best_first(items: list[dict]) -> list[dict]:
    def key(r):
        for k in ("private_score", "public_score", "local_rmse", "cv_rmse"):
            if r.get(k) is not None:
                return (0, float(r[k]))
        return (1, 0.0)
    return sorted(items, key=key)


def scatter(items: list[dict], out: Path = Path("submissions") / "cv-vs-leaderboard.png") -> Path | None:
    """CV RMSE against public and private score: does CV predict the board?"""
    pts = [r for r in items if r.get("cv_rmse") is not None and r.get("public_score") is not None]
    if not pts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save

    fig, ax = plt.subplots(figsize=(5, 4.5))
    cv = [r["cv_rmse"] for r in pts]
    ax.scatter(cv, [r["public_score"] for r in pts], label="public", marker="o")
    priv = [(r["cv_rmse"], r["private_score"]) for r in pts if r.get("private_score") is not None]
    if priv:
        ax.scatter(*zip(*priv), label="private", marker="x")
    lo, hi = min(cv + [r["public_score"] for r in pts]), max(cv + [r["public_score"] for r in pts])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax.set_xlabel("CV RMSE (out of fold)"), ax.set_ylabel("leaderboard RMSE"), ax.legend(), ax.grid(alpha=0.3)
    ax.set_title("does CV predict the leaderboard?")
    fig.tight_layout()
    return save(fig, out)


def format_table(items: list[dict]) -> str:
    if not items:
        return "no submissions yet: run `fkd predict RUN_DIR` or `make submit`"
    head = f"{'file':<44} {'run':<28} {'CV':>7} {'local':>7} {'public':>7} {'private':>7}  status"
    lines = [head, "-" * len(head)]
    f = lambda v: f"{v:7.4f}" if v is not None else f"{'-':>7}"  # noqa: E731
    for r in items:
        lines.append(f"{Path(r['file']).name[:44]:<44} {(r['run'] or '')[:28]:<28} {f(r['cv_rmse'])} "
                     f"{f(r['local_rmse'])} {f(r['public_score'])} {f(r['private_score'])}  {r['status'] or 'local'}"
                     + (f" ({r['error']})" if r.get("error") else ""))
    return "\n".join(lines)
