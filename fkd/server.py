"""A local competition server that speaks Kaggle's HTTP API to the real, official `kaggle` client.

    $ fkd serve competition/data/practice --port 8765
    $ FKD_KAGGLE_ENDPOINT=http://127.0.0.1:8765 fkd download && fkd upload submissions/x.csv

It serves one competition folder (Kaggle layout + solution.csv) on 127.0.0.1 with every route behind the
participant-side `kaggle competitions` commands (`/api/v1/<service>/<method>` and `/v1/...`): ListCompetitions
(search, group, category, sort, pages), list/download data files, the three-step submission upload
(StartSubmissionUpload, a PUT of the file, CreateSubmission), list/get/download submissions, submission
limits, the leaderboard (paged, and as a zip), a team's public submission, the competition's pages, and token
introspection. Uploads are scored like Kaggle scores them: RMSE on a fixed seeded public half of the
test images and on the private rest (fkd.metric, the same split `fkd score --subset` uses); a malformed file
becomes status ERROR with its reason. Five submissions a day. State lives in SQLite, so a restart loses
nothing. No torch here: the server only needs numpy and pandas.

Fault injection for tests (`--fail KIND[:N]`, N = how many requests fail, default all): `auth` (401),
`rules` (403 rules not accepted), `put` (the upload PUT fails with 500), `create-lost` (CreateSubmission is
accepted and then the connection drops before the reply), `down` (every API call answers 503), `ratelimit`
(429 with Retry-After: 1), `reset` (a file download breaks off half way through its body).
"""
from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from .competition import COMP
from .errors import FkdError

MAX_UPLOAD = 64 * 1024 * 1024
MAX_JSON = 1024 * 1024
MAX_CLIENTS = 32        # connections served at once; more get 503 at once instead of a thread each
CLIENT_TIMEOUT = 20.0   # seconds a connection may sit idle (a slow or stalled client) before it is dropped
LISTEN_BACKLOG = 512    # connections the kernel holds until accepted; socketserver's 5 overflows under a burst
                        # (Linux then drops handshakes, and a client waits out SYN/data retries of many seconds)
DATA_FILES = ("training.zip", "training.csv", "test.zip", "test.csv", COMP.files["lookup"], COMP.files["sample"])

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
  ref INTEGER PRIMARY KEY AUTOINCREMENT, team TEXT NOT NULL, file_name TEXT, token TEXT, description TEXT,
  date TEXT NOT NULL, day TEXT NOT NULL, status TEXT NOT NULL, public_score REAL, private_score REAL,
  error TEXT, total_bytes INTEGER, reference INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS uploads (token TEXT PRIMARY KEY, file_name TEXT, content_length INTEGER,
  path TEXT, created TEXT, used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS faults (kind TEXT PRIMARY KEY, remaining INTEGER);
"""


# What ListCompetitions lists beside the served competition, so that search, filters, sorting and paging have
# something to work on and a misspelt slug has neighbours. Only the served competition accepts requests.
OTHER_COMPETITIONS = [
    {"ref": f"https://www.kaggle.com/competitions/{slug}", "title": title,
     "url": f"https://www.kaggle.com/competitions/{slug}", "category": cat, "reward": reward, "deadline": deadline,
     "teamCount": teams, "segment": seg, "dateCreated": created, "enabledDate": created, "evaluationMetric": metric,
     "hostName": "", "maxDailySubmissions": daily, "submissionsDisabled": False}
    for slug, title, cat, reward, deadline, teams, seg, created, metric, daily in [
        ("titanic", "Titanic - Machine Learning from Disaster", "Getting Started", "Knowledge",
         "2030-01-01T23:59:00Z", 15000, "HOST_SEGMENT_GETTING_STARTED", "2012-09-28T00:00:00Z", "Accuracy", 10),
        ("digit-recognizer", "Digit Recognizer", "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 1500,
         "HOST_SEGMENT_GETTING_STARTED", "2012-07-25T00:00:00Z", "Accuracy", 5),
        ("house-prices-advanced-regression-techniques", "House Prices - Advanced Regression Techniques",
         "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 4500, "HOST_SEGMENT_GETTING_STARTED",
         "2016-08-30T00:00:00Z", "RMSE of log prices", 10),
        ("spaceship-titanic", "Spaceship Titanic", "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 2000,
         "HOST_SEGMENT_GETTING_STARTED", "2022-02-11T00:00:00Z", "Accuracy", 10),
        ("playground-series-s5e11", "Predicting Loan Payback", "Playground", "Swag", "2025-11-30T23:59:00Z", 3800,
         "HOST_SEGMENT_PLAYGROUND", "2025-11-01T00:00:00Z", "ROC AUC", 5),
        ("leaf-classification", "Leaf Classification", "Playground", "Knowledge", "2017-02-28T23:59:00Z", 1595,
         "HOST_SEGMENT_PLAYGROUND", "2016-08-30T00:00:00Z", "Multi-class log loss", 5),
    ]
]
SEGMENTS = {"HOST_SEGMENT_FEATURED", "HOST_SEGMENT_GETTING_STARTED", "HOST_SEGMENT_MASTERS", "HOST_SEGMENT_PLAYGROUND",
            "HOST_SEGMENT_RECRUITMENT", "HOST_SEGMENT_RESEARCH", "HOST_SEGMENT_COMMUNITY", "HOST_SEGMENT_ANALYTICS"}


def list_competitions(catalogue: list[dict], req: dict, now: str) -> tuple[list[dict], str]:
    """ListCompetitions over a catalogue: search, group, category, sort, then a page (page or pageToken)."""
    q = str(req.get("search") or "").lower()
    out = [c for c in catalogue if not q or q in c["ref"].rsplit("/", 1)[-1].lower() or q in c["title"].lower()]
    group = req.get("group") or "COMPETITION_LIST_TAB_GENERAL"
    if group == "COMPETITION_LIST_TAB_GENERAL":
        out = [c for c in out if c["deadline"] > now]                    # active competitions
    elif group == "COMPETITION_LIST_TAB_ENTERED":
        out = [c for c in out if c.get("userHasEntered")]
    elif group != "COMPETITION_LIST_TAB_EVERYTHING":
        out = []                                                         # hosted, community, unlaunched: none here
    cat = req.get("category") or "HOST_SEGMENT_UNSPECIFIED"
    if cat in SEGMENTS:
        out = [c for c in out if c["segment"] == cat]
    elif cat != "HOST_SEGMENT_UNSPECIFIED":
        raise ValueError(f"unknown category {cat}")
    sort = req.get("sortBy") or "COMPETITION_SORT_BY_BEST"
    keys = {"COMPETITION_SORT_BY_EARLIEST_DEADLINE": (lambda c: c["deadline"], False),
            "COMPETITION_SORT_BY_LATEST_DEADLINE": (lambda c: c["deadline"], True),
            "COMPETITION_SORT_BY_NUMBER_OF_TEAMS": (lambda c: c["teamCount"], True),
            "COMPETITION_SORT_BY_RECENTLY_CREATED": (lambda c: c["dateCreated"], True),
            "COMPETITION_SORT_BY_PRIZE": (lambda c: c["reward"] in ("Knowledge", "Swag"), False)}
    if sort in keys:
        key, rev = keys[sort]
        out = sorted(out, key=key, reverse=rev)
    size = int(req.get("pageSize") or 20)
    if not 1 <= size <= 100:
        raise ValueError("pageSize must be between 1 and 100")
    token = str(req.get("pageToken") or "")
    start = int(token) if token.isdigit() else max(0, int(req.get("page") or 1) - 1) * size
    nxt = str(start + size) if start + size < len(out) else ""
    return [{k: v for k, v in c.items() if k != "segment"} for c in out[start:start + size]], nxt


def served_identity(comp_dir: str | Path) -> str:
    """The stable name of what a local server serves: 'fkd serve <folder>@<content hash>', the hash over its data
    files and solution.csv. The same folder gives the same name on any port, after any restart, on any machine;
    the ledger records it as the destination of every upload to that server."""
    comp_dir = Path(comp_dir)
    h = hashlib.sha1()
    for name in (*DATA_FILES, "solution.csv"):
        p = comp_dir / name
        if p.is_file():
            h.update(name.encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return f"fkd serve {comp_dir.resolve().name}@{h.hexdigest()[:10]}"


def _iso(t: float | None = None) -> str:
    return dt.datetime.fromtimestamp(t or time.time(), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class CompetitionState:
    """The server's competition: files, solution, scoring and the SQLite-backed submission history."""

    def __init__(self, comp_dir: Path, state_dir: Path, users: dict[str, str] | None = None, daily_limit: int = COMP.daily_submissions,
                 score_delay: float = 0.5):
        self.dir = Path(comp_dir)
        if not (self.dir / "solution.csv").is_file():
            raise FkdError(f"{self.dir}: no solution.csv; the local server needs one to score uploads "
                           "(make one with `fkd practice`)")
        self.state_dir = Path(state_dir)
        (self.state_dir / "uploads").mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.daily_limit, self.score_delay = daily_limit, score_delay
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.state_dir / "server.sqlite", check_same_thread=False, timeout=30)
        self.db.executescript(SCHEMA)
        self.db.commit()
        from .metric import read_lookup_sources, read_submission

        self.solution = read_submission(self.dir / "solution.csv")
        self.lookup = read_lookup_sources(self.dir / COMP.files["lookup"])
        self.files = [self.dir / n for n in DATA_FILES if (self.dir / n).is_file()]
        self.identity = served_identity(self.dir)
        self._test_hash: str | None = None
        self._seed_leaderboard()
        for (ref,) in self.db.execute("SELECT ref FROM submissions WHERE status = 'PENDING'").fetchall():
            self._score(ref)  # scored after a restart

    # -------------------------------------------------------------------------------- data files
    def bundle(self) -> Path:
        """The competition zip as Kaggle serves it (data files only; never solution.csv), built once."""
        key = hashlib.sha1(json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files])
                           .encode()).hexdigest()[:12]
        path = self.state_dir / f"{COMP.slug}-{key}.zip"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for p in self.files:
                    zf.write(p, p.name)
            os.replace(tmp, path)
        return path

    def test_hash(self) -> str:
        """Content hash of the test set it scores (fkd.data.test_hash): a submission predicted from other data
        is recognised by the client before it is sent."""
        with self.lock:
            if self._test_hash is None:
                from .data import load_data, test_hash
                self._test_hash = test_hash(load_data(self.dir))
            return self._test_hash

    def describe(self) -> dict:
        return {"competition": COMP.slug, "status": "ok", "server": "fkd serve", "destination": self.identity,
                "test_hash": self.test_hash()}

    # ---------------------------------------------------------------------------------- scoring
    def _seed_leaderboard(self) -> None:
        """Reference entries, as Kaggle shows benchmarks: the all-zero sample submission, the mean keypoints."""
        with self.lock:
            if self.db.execute("SELECT COUNT(*) FROM submissions WHERE reference = 1").fetchone()[0]:
                return
            zeros = self.solution.assign(Location=0.0)
            from .data import locate, read_csv, to_numbers

            raw, _, where = locate(self.dir, COMP.files["training"])
            head = b"\n".join(line.rsplit(b",", 1)[0] for line in raw.split(b"\n") if line.strip())
            labels = to_numbers(read_csv(head, where, COMP.columns), COMP.columns, where)
            means = dict(zip(COMP.columns, np.nanmean(labels, 0)))
            feat = pd.read_csv(self.dir / COMP.files["lookup"]).set_index("RowId").FeatureName
            mean_sub = self.solution.assign(Location=self.solution.RowId.map(feat).map(means).fillna(48.0))
            for team, sub in (("Sample Submission Benchmark", zeros), ("Mean Keypoints Benchmark", mean_sub)):
                pub, priv = self._rmse(sub)
                self.db.execute("INSERT INTO submissions (team, file_name, description, date, day, status, "
                                "public_score, private_score, reference) VALUES (?,?,?,?,?,?,?,?,1)",
                                (team, "benchmark.csv", team, _iso(), "", "COMPLETE", pub, priv))
            self.db.commit()

    def _rmse(self, sub: pd.DataFrame) -> tuple[float, float]:
        from .metric import score
        return (score(sub, self.solution, self.lookup, subset="public")["rmse"],
                score(sub, self.solution, self.lookup, subset="private")["rmse"])

    def _score(self, ref: int) -> None:
        from .metric import read_submission

        row = self.db.execute("SELECT u.path FROM submissions s JOIN uploads u ON s.token = u.token "
                              "WHERE s.ref = ?", (ref,)).fetchone()
        try:
            if row is None:
                raise FkdError("the uploaded file was not found")
            pub, priv = self._rmse(read_submission(Path(row[0]), where="submission"))
            upd = ("COMPLETE", pub, priv, None)
        except FkdError as e:
            upd = ("ERROR", None, None, str(e))
        except Exception as e:  # noqa: BLE001 - any failure to score is the submission's ERROR, never a crash
            upd = ("ERROR", None, None, f"could not score the file ({type(e).__name__})")
        with self.lock:
            self.db.execute("UPDATE submissions SET status=?, public_score=?, private_score=?, error=? WHERE ref=?",
                            (*upd, ref))
            self.db.commit()

    # ------------------------------------------------------------------------------- submissions
    def token_user(self, token: str) -> str | None:
        """The user behind an API token: any non-empty token is a user of its own (a local server trusts)."""
        return f"token-{token[:6]}" if token else None

    def fault(self, kind: str) -> bool:
        """Consume one injected fault of this kind, if any is set."""
        with self.lock:
            r = self.db.execute("SELECT remaining FROM faults WHERE kind = ?", (kind,)).fetchone()
            if not r or r[0] == 0:
                return False
            if r[0] > 0:
                self.db.execute("UPDATE faults SET remaining = remaining - 1 WHERE kind = ?", (kind,))
                self.db.commit()
            return True

    def set_fault(self, kind: str, remaining: int = -1) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO faults VALUES (?, ?)", (kind, remaining))
            self.db.commit()

    def start_upload(self, file_name: str, content_length: int) -> str:
        token = secrets.token_hex(12)
        with self.lock:
            self.db.execute("INSERT INTO uploads (token, file_name, content_length, created) VALUES (?,?,?,?)",
                            (token, file_name, content_length, _iso()))
            self.db.commit()
        return token

    def put_upload(self, token: str, data: bytes) -> int:
        with self.lock:
            row = self.db.execute("SELECT content_length, used FROM uploads WHERE token = ?", (token,)).fetchone()
            if row is None:
                return 404
            if row[1]:
                return 409  # already submitted: its file is what was scored and stays so
            path = self.state_dir / "uploads" / f"{token}.csv"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self.db.execute("UPDATE uploads SET path = ? WHERE token = ?", (str(path), token))
            self.db.commit()
        return 200

    def create(self, team: str, token: str, description: str) -> tuple[int, dict]:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        with self.lock:
            up = self.db.execute("SELECT path, file_name, used FROM uploads WHERE token = ?", (token,)).fetchone()
            if up is None or up[0] is None:
                return 400, {"code": 400, "message": "Unknown or incomplete upload token; upload the file first"}
            if up[2]:
                return 409, {"code": 409, "message": "This upload was already submitted"}
            used = self.db.execute("SELECT COUNT(*) FROM submissions WHERE team = ? AND day = ? AND reference = 0",
                                   (team, day)).fetchone()[0]
            if used >= self.daily_limit:
                return 429, {"code": 429, "message": f"Your team has used its daily Submission allowance "
                                                     f"({self.daily_limit}) today, please try again tomorrow UTC"}
            cur = self.db.execute(
                "INSERT INTO submissions (team, file_name, token, description, date, day, status, total_bytes) "
                "VALUES (?,?,?,?,?,?,'PENDING',?)",
                (team, up[1], token, description, _iso(), day, Path(up[0]).stat().st_size))
            self.db.execute("UPDATE uploads SET used = 1 WHERE token = ?", (token,))
            self.db.commit()
            ref = cur.lastrowid
        t = threading.Timer(self.score_delay, self._score, args=(ref,))
        t.daemon = True
        t.start()
        return 200, {"message": "Successfully submitted to Facial Keypoints Detection", "ref": ref}

    def submission_dict(self, r: sqlite3.Row) -> dict:
        d = {"ref": r["ref"], "fileName": r["file_name"], "date": r["date"], "description": r["description"] or "",
             "status": r["status"], "totalBytes": r["total_bytes"] or 0, "teamName": r["team"],
             "submittedBy": r["team"], "errorDescription": r["error"] or ""}
        if r["status"] == "COMPLETE":
            d["publicScore"], d["privateScore"] = repr(r["public_score"]), repr(r["private_score"])
        return d

    def list_submissions(self, team: str) -> list[dict]:
        with self.lock:
            self.db.row_factory = sqlite3.Row
            rows = self.db.execute("SELECT * FROM submissions WHERE team = ? AND reference = 0 ORDER BY ref DESC",
                                   (team,)).fetchall()
            self.db.row_factory = None
        return [self.submission_dict(r) for r in rows]

    def get_submission(self, team: str, ref: int) -> dict | None:
        with self.lock:
            self.db.row_factory = sqlite3.Row
            r = self.db.execute("SELECT * FROM submissions WHERE ref = ? AND team = ?", (ref, team)).fetchone()
            self.db.row_factory = None
        return self.submission_dict(r) if r else None

    def team_ids(self) -> dict[str, int]:
        """Stable team ids: teams numbered in the order of their first submission (benchmarks first)."""
        with self.lock:
            rows = self.db.execute("SELECT team FROM submissions GROUP BY team ORDER BY MIN(ref)").fetchall()
        return {t: i + 1 for i, (t,) in enumerate(rows)}

    def leaderboard(self, private: bool = False) -> list[dict]:
        """Each team's best scored submission, best first (Kaggle keeps the best for a lower-is-better metric)."""
        col = "private_score" if private else "public_score"
        ids = self.team_ids()
        with self.lock:
            rows = self.db.execute(f"SELECT team, MIN({col}), MAX(date) FROM submissions WHERE status = 'COMPLETE' "
                                   f"GROUP BY team ORDER BY MIN({col}), MIN(ref)").fetchall()
        return [{"teamId": ids[t], "teamName": t, "submissionDate": d, "score": repr(s)} for t, s, d in rows]

    def leaderboard_zip(self, private: bool = False) -> Path:
        """The board as Kaggle's DownloadLeaderboard gives it: a zip holding <slug>-publicleaderboard.csv."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["TeamId", "TeamName", "SubmissionDate", "Score"])
        for r in self.leaderboard(private):
            w.writerow([r["teamId"], r["teamName"], r["submissionDate"], r["score"]])
        side = "private" if private else "public"
        path = self.state_dir / f"{COMP.slug}-{side}leaderboard.zip"
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{COMP.slug}-{side}leaderboard.csv", buf.getvalue())
        os.replace(tmp, path)
        return path

    def limits(self, team: str) -> dict:
        """GetSubmissionLimits: what this team used today (UTC) and in total, and what it may still submit."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        with self.lock:
            today, total = self.db.execute(
                "SELECT SUM(day = ?), COUNT(*) FROM submissions WHERE team = ? AND reference = 0",
                (day, team)).fetchone()
        today = int(today or 0)
        return {"numToday": today, "numTotal": int(total or 0), "numAllowedNow": max(0, self.daily_limit - today),
                "limitedByTotal": False}

    def team_public_submissions(self, team_id: int) -> list[dict]:
        """ListTeamPublicSubmissions: the one submission a team has on the public board (its best)."""
        team = {i: t for t, i in self.team_ids().items()}.get(team_id)
        if team is None:
            return []
        with self.lock:
            r = self.db.execute("SELECT ref, date, public_score FROM submissions WHERE team = ? AND status = 'COMPLETE' "
                                "ORDER BY public_score, ref LIMIT 1", (team,)).fetchone()
        return [{"id": r[0], "dateSubmitted": r[1], "publicScore": repr(r[2])}] if r else []

    def submission_file(self, team: str, ref: int) -> tuple[str, str] | None:
        """(upload token, file name) of one of this team's submissions, for DownloadSubmission."""
        with self.lock:
            r = self.db.execute("SELECT s.token, s.file_name FROM submissions s JOIN uploads u ON s.token = u.token "
                                "WHERE s.ref = ? AND s.team = ? AND u.path IS NOT NULL", (ref, team)).fetchone()
        return (r[0], r[1]) if r else None

    def upload_path(self, token: str) -> Path | None:
        with self.lock:
            r = self.db.execute("SELECT path FROM uploads WHERE token = ? AND used = 1", (token,)).fetchone()
        return Path(r[0]) if r and r[0] else None

    def rules_accepted(self) -> bool:
        """Whether the 'rules' fault is armed (a peek: it is consumed only by a submission)."""
        with self.lock:
            r = self.db.execute("SELECT remaining FROM faults WHERE kind = 'rules'").fetchone()
        return not r or r[0] == 0

    def competitions(self, team: str) -> list[dict]:
        """The catalogue ListCompetitions searches: the served competition, then a few others (listed only)."""
        board = [r["teamName"] for r in self.leaderboard()]
        with self.lock:
            teams = self.db.execute("SELECT COUNT(DISTINCT team) FROM submissions WHERE reference = 0").fetchone()[0]
        ours = {"ref": f"https://www.kaggle.com/competitions/{COMP.slug}", "title": COMP.title,
                "url": f"https://www.kaggle.com/competitions/{COMP.slug}", "category": COMP.category,
                "reward": COMP.reward, "deadline": COMP.deadline, "teamCount": int(teams),
                "userHasEntered": self.rules_accepted(), "maxDailySubmissions": self.daily_limit,
                "evaluationMetric": "RMSE", "hostName": "", "segment": "HOST_SEGMENT_GETTING_STARTED",
                "dateCreated": "2013-05-07T00:00:00Z", "enabledDate": "2013-05-07T00:00:00Z",
                "submissionsDisabled": False}
        if team in board:
            ours["userRank"] = board.index(team) + 1
        return [ours] + [dict(c, userHasEntered=False) for c in OTHER_COMPETITIONS]


# methods whose request names no competition (or that look one up): exempt from the slug check
# what a user who has not accepted the rules is refused: the data and submitting (listing is allowed)
RULES_GATED = {"DownloadDataFiles", "DownloadDataFile", "StartSubmissionUpload", "CreateSubmission"}
NO_COMPETITION = {"GetSubmission", "ListCompetitions", "DownloadSubmission", "ListTeamPublicSubmissions"}


def _page(items: list, req: dict, default_size: int, max_size: int) -> tuple[list, str]:
    """One page of a list: pageToken is the offset of the next page as a string (Kaggle's are opaque)."""
    size = int(req.get("pageSize") or default_size)
    if not 1 <= size <= max_size:
        raise ValueError(f"pageSize must be between 1 and {max_size}")
    token = str(req.get("pageToken") or "")
    start = int(token) if token.isdigit() else 0
    return items[start:start + size], (str(start + size) if start + size < len(items) else "")


class Handler(BaseHTTPRequestHandler):
    """One request of the official client. The competition is `self.server.state`; the idle timeout is the
    server's `client_timeout`."""

    protocol_version = "HTTP/1.1"
    server_version = "fkd-local-kaggle/1"
    default_request_version = "HTTP/1.0"  # so that an error about a garbled request line has a status line

    @property
    def state(self) -> CompetitionState:
        return self.server.state

    def setup(self):
        self.timeout = self.server.client_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def parse_request(self):
        if len(str(self.raw_requestline, "iso-8859-1").split()) == 2:  # HTTP/0.9: no status line to answer on
            self.command, self.close_connection, self.request_version = None, True, "HTTP/1.0"
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(400, "Bad request line: expected METHOD PATH HTTP/1.1")
            return False
        return super().parse_request()

    def log_message(self, fmt, *args):  # quiet: one line per request only with FKD_SERVER_LOG=1
        if os.environ.get("FKD_SERVER_LOG"):
            super().log_message(fmt, *args)

    # --------------------------------------------------------------------------- helpers
    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json", headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: dict):
        self._send(code, json.dumps(obj).encode())

    def _error(self, code: int, message: str):
        self._json(code, {"code": code, "message": message})

    def _team(self) -> str | None:
        """The user behind the request: HTTP Basic (username:key) or a Bearer token."""
        import base64

        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:  # noqa: BLE001 - malformed header is simply unauthenticated
                return None
            if not user or not key or (self.state.users and self.state.users.get(user) != key):
                return None
            return user
        if auth.startswith("Bearer "):
            return self.state.token_user(auth[7:])
        return None

    def _body(self) -> bytes | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(400, "bad Content-Length")
            return None
        limit = MAX_UPLOAD if self.command == "PUT" else MAX_JSON
        if n < 0 or n > limit:
            self._error(413, f"request body too large (limit {limit} bytes)")
            self.close_connection = True
            return None
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            self._error(400, "truncated request body")
            self.close_connection = True
            return None
        return data

    # ---------------------------------------------------------------------------- routes
    def do_GET(self):
        path = unquote(self.path.split("?")[0])
        if path == f"/files/bundle/{COMP.slug}.zip":
            return self._file(self.state.bundle())
        m = re.fullmatch(r"/files/data/([A-Za-z0-9_.-]+)", path)
        if m and m.group(1) in {p.name for p in self.state.files}:
            return self._file(self.state.dir / m.group(1))
        m = re.fullmatch(rf"/files/leaderboard/{re.escape(COMP.slug)}-(public|private)leaderboard\.zip", path)
        if m:
            return self._file(self.state.leaderboard_zip(private=m.group(1) == "private"))
        m = re.fullmatch(r"/files/submissions/([0-9a-f]{24})/[^/]+", path)   # the token signs the URL
        if m and (upload := self.state.upload_path(m.group(1))) is not None:
            return self._file(upload)
        if path in ("/", "/health"):
            return self._json(200, self.state.describe())
        self._error(404, f"no such route: GET {path}")

    do_HEAD = do_GET

    def _not_allowed(self):
        self._body()  # drain what the client sent so the answer reaches it
        self._error(405, f"method {self.command} not allowed")

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _file(self, p: Path):
        st = p.stat()
        size = st.st_size
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        headers = {"Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True), "Accept-Ranges": "bytes",
                   "ETag": etag}
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range not in (etag, headers["Last-Modified"]):
            rng = None   # the file changed since the client's partial: send it whole (RFC 9110 If-Range)
        start, end = 0, size - 1
        if rng:
            start = int(rng.group(1))
            end = int(rng.group(2)) if rng.group(2) else size - 1
            if start >= size:
                return self._send(416, b"", headers={"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        with open(p, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        ctype = "application/zip" if p.suffix == ".zip" else "text/csv"
        if len(body) > 1 and self.command == "GET" and self.state.fault("reset"):
            # a connection reset half way through the body, as a flaky network or proxy does it
            self.send_response(206 if rng else 200)
            for k, v in {"Content-Type": ctype, "Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send(206 if rng else 200, body, ctype, headers)

    def do_PUT(self):
        m = re.fullmatch(r"/upload/([0-9a-f]+)", self.path.split("?")[0])
        if not m:
            return self._error(404, f"no such route: PUT {self.path}")
        data = self._body()
        if data is None:
            return
        if self.state.fault("put"):
            return self._error(500, "injected fault: upload storage unavailable")
        code = self.state.put_upload(m.group(1), data)
        msg = {404: "unknown upload token", 409: "this upload was already submitted"}.get(code)
        return self._json(code, {"code": code, "message": msg} if msg else {})

    def do_POST(self):
        m = re.fullmatch(r"(?:/api)?/v1/([A-Za-z.]+)/([A-Za-z]+)", self.path.split("?")[0])
        body = self._body()
        if body is None:
            return
        if not m:
            return self._error(404, f"no such route: POST {self.path}")
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError
        except (ValueError, RecursionError):
            return self._error(400, "request body is not a JSON object")
        service, method = m.groups()
        if self.state.fault("down"):
            return self._error(503, "injected fault: service unavailable")
        if self.state.fault("ratelimit"):
            return self._send(429, json.dumps({"code": 429, "message": "Too many requests: slow down"}).encode(),
                              headers={"Retry-After": "1"})
        if service == "security.OAuthService" and method == "IntrospectToken":
            user = self.state.token_user(str(req.get("token", "")))
            return self._json(200, {"active": bool(user), "username": user or ""})
        team = self._team()
        if team is None or self.state.fault("auth"):
            return self._error(401, "Unauthorized: check your Kaggle API credentials")
        if service != "competitions.CompetitionApiService":
            return self._error(404, f"no such service: {service}")
        comp = req.get("competitionName")
        if method not in NO_COMPETITION and comp != COMP.slug:
            # as Kaggle: an unknown slug and a competition whose rules the user has not accepted look the same
            return self._error(403, f"Permission 'competitions.participate' was denied: competition {comp!r}")
        if method in RULES_GATED and self.state.fault("rules"):
            return self._error(403, "You must accept this competition's rules before you'll be able to submit")
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(404, f"no such method: {method}")
        try:
            return handler(req, team)
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            return self._error(400, f"bad request: {e}" if isinstance(e, ValueError) and str(e)
                               else f"bad request: {type(e).__name__}")

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def _api_ListDataFiles(self, req, team):
        files = [{"name": p.name, "totalBytes": p.stat().st_size, "creationDate": _iso(p.stat().st_mtime)}
                 for p in self.state.files]
        self._json(200, {"files": files, "nextPageToken": ""})

    def _api_DownloadDataFiles(self, req, team):
        self.state.bundle()
        self._send(302, b"", headers={"Location": f"{self._base()}/files/bundle/{COMP.slug}.zip"})

    def _api_DownloadDataFile(self, req, team):
        name = str(req.get("fileName", ""))
        if name not in {p.name for p in self.state.files}:
            return self._error(404, f"no such file: {name}")
        self._send(302, b"", headers={"Location": f"{self._base()}/files/data/{name}"})

    def _api_StartSubmissionUpload(self, req, team):
        n = int(req.get("contentLength") or 0)
        if n > MAX_UPLOAD:
            return self._error(413, f"submission file too large (limit {MAX_UPLOAD} bytes)")
        token = self.state.start_upload(str(req.get("fileName", "submission.csv")), n)
        self._json(200, {"token": token, "createUrl": f"{self._base()}/upload/{token}"})

    def _api_CreateSubmission(self, req, team):
        code, obj = self.state.create(team, str(req.get("blobFileTokens", "")), str(req.get("submissionDescription", "")))
        if code == 200 and self.state.fault("create-lost"):
            self.close_connection = True   # accepted, then the reply is lost
            self.connection.shutdown(2)
            return
        self._json(code, obj)

    def _api_ListSubmissions(self, req, team):
        chunk, nxt = _page(self.state.list_submissions(team), req, default_size=20, max_size=1000)
        self._json(200, {"submissions": chunk, "nextPageToken": nxt})

    def _api_GetSubmission(self, req, team):
        s = self.state.get_submission(team, int(req.get("ref") or 0))
        if s is None:
            return self._error(404, "no such submission")
        self._json(200, s)

    def _api_GetLeaderboard(self, req, team):
        board = self.state.leaderboard(private=bool(req.get("overridePublic")))
        chunk, nxt = _page(board, req, default_size=20, max_size=1000)
        self._json(200, {"submissions": chunk, "nextPageToken": nxt})

    def _api_DownloadLeaderboard(self, req, team):
        self.state.leaderboard_zip()
        self._send(302, b"", headers={"Location": f"{self._base()}/files/leaderboard/{COMP.slug}-publicleaderboard.zip"})

    def _api_ListCompetitions(self, req, team):
        import datetime as _dt

        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        chunk, nxt = list_competitions(self.state.competitions(team), req, now)
        self._json(200, {"competitions": chunk, "nextPageToken": nxt})

    def _api_GetSubmissionLimits(self, req, team):
        self._json(200, self.state.limits(team))

    def _api_DownloadSubmission(self, req, team):
        found = self.state.submission_file(team, int(req.get("submissionId") or 0))
        if found is None:
            return self._error(404, "no such submission")
        token, name = found
        self._send(302, b"", headers={"Location": f"{self._base()}/files/submissions/{token}/{name}"})

    def _api_ListTeamPublicSubmissions(self, req, team):
        self._json(200, {"submissions": self.state.team_public_submissions(int(req.get("teamId") or 0))})

    def _api_ListCompetitionPages(self, req, team):
        name = req.get("pageName")
        pages = [{"name": n, "content": text, "isPublished": True, "postTitle": n.replace("-", " ").title(),
                  "mimeType": "text/markdown"} for n, text in COMP.pages if not name or n == name]
        self._json(200, {"pages": pages})


def make_server(comp_dir: str | Path, port: int = 8765, state_dir: str | Path | None = None,
                max_clients: int = MAX_CLIENTS, client_timeout: float = CLIENT_TIMEOUT, **kw):
    """Build (not start) the server bound to 127.0.0.1; port 0 picks a free one."""
    comp_dir = Path(comp_dir)
    if state_dir is None:
        tag = hashlib.sha1(str(comp_dir.resolve()).encode()).hexdigest()[:10]
        state_dir = Path(COMP.data_dir) / ".server" / f"{comp_dir.resolve().name}-{tag}"
    state = CompetitionState(comp_dir, Path(state_dir), **kw)
    srv = BoundedServer(("127.0.0.1", port), Handler, max_clients=max_clients)
    srv.state, srv.client_timeout = state, client_timeout
    return srv


class BoundedServer(ThreadingHTTPServer):
    """Loopback only, at most MAX_CLIENTS connections at once (the rest get a 503 and are closed), a listen
    backlog deep enough that a burst is accepted and answered rather than left in SYN retries, idle
    connections dropped after CLIENT_TIMEOUT; `errors` counts requests whose handler crashed (the abuse tests
    require 0)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, *a, max_clients: int = MAX_CLIENTS, **kw):
        super().__init__(*a, **kw)
        self.slots = threading.BoundedSemaphore(max_clients)
        self.errors = 0
        self.refused = 0

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 45\r\n\r\n"
                                b'{"code": 503, "message": "too many clients"}\n')
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away or stalled: not the server's fault
        self.errors += 1
        super().handle_error(request, client_address)


def serve_in_thread(comp_dir, port: int = 0, **kw):
    """Start a server in a daemon thread (tests, `make submit` offline); returns (server, endpoint URL)."""
    srv = make_server(comp_dir, port, **kw)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"
