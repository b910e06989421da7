"""The local server's memory, in SQLite (a restart loses nothing): uploads, submissions, injected faults.

    >>> store = Store(Path("state/server.sqlite"))          # doctest: +SKIP
    >>> token = store.start_upload("sub.csv", 1234)          # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from ... import atomic

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
  ref INTEGER PRIMARY KEY AUTOINCREMENT, team TEXT NOT NULL, file_name TEXT, token TEXT, description TEXT,
  date TEXT NOT NULL, day TEXT NOT NULL, status TEXT NOT NULL, public_score REAL, private_score REAL,
  error TEXT, total_bytes INTEGER, reference INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS uploads (token TEXT PRIMARY KEY, file_name TEXT, content_length INTEGER,
  path TEXT, created TEXT, used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS faults (kind TEXT PRIMARY KEY, remaining INTEGER);
"""


def iso(t: float | None = None) -> str:
    """A time as Kaggle writes it: 2026-11-30T20:35:41.123Z."""
    return dt.datetime.fromtimestamp(t or time.time(), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


class Store:
    """One SQLite file shared by the server's threads under one lock."""

    def __init__(self, path: Path):
        self.dir = Path(path).parent
        (self.dir / "uploads").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self.db.executescript(SCHEMA)
        self.db.commit()

    def query(self, sql: str, args: tuple = (), rows: bool = False) -> list:
        """Rows of a SELECT (sqlite3.Row objects with rows=True, else tuples)."""
        with self.lock:
            self.db.row_factory = sqlite3.Row if rows else None
            try:
                return self.db.execute(sql, args).fetchall()
            finally:
                self.db.row_factory = None

    def write(self, sql: str, args: tuple = ()) -> int:
        """Run one change and commit it; the new row's id."""
        with self.lock:
            cur = self.db.execute(sql, args)
            self.db.commit()
            return cur.lastrowid

    # ---------------------------------------------------------------------------------------- faults
    def fault(self, kind: str) -> bool:
        """Consume one injected fault of this kind, if any is set."""
        with self.lock:
            r = self.db.execute("SELECT remaining FROM faults WHERE kind = ?", (kind,)).fetchone()
            if not r or r[0] == 0:
                return False
            if r[0] > 0:
                self.write("UPDATE faults SET remaining = remaining - 1 WHERE kind = ?", (kind,))
            return True

    def set_fault(self, kind: str, remaining: int = -1) -> None:
        self.write("INSERT OR REPLACE INTO faults VALUES (?, ?)", (kind, remaining))

    def fault_armed(self, kind: str) -> bool:
        """Whether a fault is armed, without consuming it."""
        r = self.query("SELECT remaining FROM faults WHERE kind = ?", (kind,))
        return bool(r) and r[0][0] != 0

    # --------------------------------------------------------------------------------------- uploads
    def start_upload(self, file_name: str, content_length: int) -> str:
        token = secrets.token_hex(12)
        self.write("INSERT INTO uploads (token, file_name, content_length, created) VALUES (?,?,?,?)",
                   (token, file_name, content_length, iso()))
        return token

    def put_upload(self, token: str, data: bytes) -> int:
        """The file of an upload token: 200, 404 (unknown token) or 409 (already submitted: its file stays)."""
        with self.lock:
            row = self.db.execute("SELECT content_length, used FROM uploads WHERE token = ?", (token,)).fetchone()
            if row is None:
                return 404
            if row[1]:
                return 409
            path = atomic.write_bytes(self.dir / "uploads" / f"{token}.csv", data)
            self.write("UPDATE uploads SET path = ? WHERE token = ?", (str(path), token))
        return 200

    def upload_path(self, token: str) -> Path | None:
        r = self.query("SELECT path FROM uploads WHERE token = ? AND used = 1", (token,))
        return Path(r[0][0]) if r and r[0][0] else None

    # ----------------------------------------------------------------------------------- submissions
    def submit(self, team: str, token: str, description: str, daily_limit: int) -> tuple[int, dict]:
        """CreateSubmission: (200, {ref}) or the refusal (unknown token, used token, daily limit)."""
        with self.lock:
            up = self.db.execute("SELECT path, file_name, used FROM uploads WHERE token = ?", (token,)).fetchone()
            if up is None or up[0] is None:
                return 400, {"code": 400, "message": "Unknown or incomplete upload token; upload the file first"}
            if up[2]:
                return 409, {"code": 409, "message": "This upload was already submitted"}
            if self.used_today(team) >= daily_limit:
                return 429, {"code": 429, "message": f"Your team has used its daily Submission allowance "
                                                     f"({daily_limit}) today, please try again tomorrow UTC"}
            ref = self.write("INSERT INTO submissions (team, file_name, token, description, date, day, status, "
                             "total_bytes) VALUES (?,?,?,?,?,?,'PENDING',?)",
                             (team, up[1], token, description, iso(), today(), Path(up[0]).stat().st_size))
            self.write("UPDATE uploads SET used = 1 WHERE token = ?", (token,))
        return 200, {"ref": ref}

    def add_reference(self, team: str, public: float, private: float) -> None:
        """A benchmark entry of the board (Kaggle shows the sample submission's score, and so on)."""
        self.write("INSERT INTO submissions (team, file_name, description, date, day, status, public_score, "
                   "private_score, reference) VALUES (?,?,?,?,?,?,?,?,1)",
                   (team, "benchmark.csv", team, iso(), "", "COMPLETE", public, private))

    def set_score(self, ref: int, status: str, public: float | None, private: float | None, error: str | None):
        self.write("UPDATE submissions SET status=?, public_score=?, private_score=?, error=? WHERE ref=?",
                   (status, public, private, error, ref))

    def used_today(self, team: str) -> int:
        return self.query("SELECT COUNT(*) FROM submissions WHERE team = ? AND day = ? AND reference = 0",
                          (team, today()))[0][0]

    @staticmethod
    def as_kaggle(r: sqlite3.Row) -> dict:
        """A submission as ListSubmissions / GetSubmission answer it (scores as strings)."""
        d = {"ref": r["ref"], "fileName": r["file_name"], "date": r["date"], "description": r["description"] or "",
             "status": r["status"], "totalBytes": r["total_bytes"] or 0, "teamName": r["team"],
             "submittedBy": r["team"], "errorDescription": r["error"] or ""}
        if r["status"] == "COMPLETE":
            d["publicScore"], d["privateScore"] = repr(r["public_score"]), repr(r["private_score"])
        return d

    def list_submissions(self, team: str) -> list[dict]:
        return [self.as_kaggle(r) for r in self.query(
            "SELECT * FROM submissions WHERE team = ? AND reference = 0 ORDER BY ref DESC", (team,), rows=True)]

    def get_submission(self, team: str, ref: int) -> dict | None:
        r = self.query("SELECT * FROM submissions WHERE ref = ? AND team = ?", (ref, team), rows=True)
        return self.as_kaggle(r[0]) if r else None

    def pending(self) -> list[int]:
        return [ref for (ref,) in self.query("SELECT ref FROM submissions WHERE status = 'PENDING'")]

    def upload_of(self, ref: int) -> Path | None:
        r = self.query("SELECT u.path FROM submissions s JOIN uploads u ON s.token = u.token WHERE s.ref = ?", (ref,))
        return Path(r[0][0]) if r and r[0][0] else None

    def submission_file(self, team: str, ref: int) -> tuple[str, str] | None:
        """(upload token, file name) of one of this team's submissions, for DownloadSubmission."""
        r = self.query("SELECT s.token, s.file_name FROM submissions s JOIN uploads u ON s.token = u.token "
                       "WHERE s.ref = ? AND s.team = ? AND u.path IS NOT NULL", (ref, team))
        return (r[0][0], r[0][1]) if r else None

    # ------------------------------------------------------------------------------------ the board
    def team_ids(self) -> dict[str, int]:
        """Stable team ids: teams numbered in the order of their first submission (benchmarks first)."""
        return {t: i + 1 for i, (t,) in enumerate(self.query(
            "SELECT team FROM submissions GROUP BY team ORDER BY MIN(ref)"))}

    def leaderboard(self, private: bool = False) -> list[dict]:
        """Each team's best scored submission, best first (Kaggle keeps the best for a lower-is-better metric)."""
        col = "private_score" if private else "public_score"
        ids = self.team_ids()
        rows = self.query(f"SELECT team, MIN({col}), MAX(date) FROM submissions WHERE status = 'COMPLETE' "
                          f"GROUP BY team ORDER BY MIN({col}), MIN(ref)")
        return [{"teamId": ids[t], "teamName": t, "submissionDate": d, "score": repr(s)} for t, s, d in rows]

    def limits(self, team: str, daily_limit: int) -> dict:
        """GetSubmissionLimits: what this team used today (UTC) and in total, and what it may still submit."""
        today_n, total = self.query("SELECT SUM(day = ?), COUNT(*) FROM submissions WHERE team = ? AND reference = 0",
                                    (today(), team))[0]
        today_n = int(today_n or 0)
        return {"numToday": today_n, "numTotal": int(total or 0), "numAllowedNow": max(0, daily_limit - today_n),
                "limitedByTotal": False}

    def team_public_submissions(self, team_id: int) -> list[dict]:
        """ListTeamPublicSubmissions: the one submission a team has on the public board (its best)."""
        team = {i: t for t, i in self.team_ids().items()}.get(team_id)
        if team is None:
            return []
        r = self.query("SELECT ref, date, public_score FROM submissions WHERE team = ? AND status = 'COMPLETE' "
                       "ORDER BY public_score, ref LIMIT 1", (team,))
        return [{"id": r[0][0], "dateSubmitted": r[0][1], "publicScore": repr(r[0][2])}] if r else []

    def entrants(self) -> int:
        return self.query("SELECT COUNT(DISTINCT team) FROM submissions WHERE reference = 0")[0][0]
