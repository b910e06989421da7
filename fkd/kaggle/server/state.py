"""The served competition: its files, its solution, how an upload is scored, the board it keeps.

Uploads are scored like Kaggle scores them: RMSE on a fixed seeded public half of the test images and on the
private rest (fkd.competition.metric, the same split `fkd score --subset` uses); a malformed file becomes status
ERROR with its reason. The submissions, uploads and faults live in SQLite (store.py): a restart loses nothing.

    >>> state = CompetitionState(Path("competition/data/practice"), Path("/tmp/state"))   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ... import atomic
from ...competition import COMP
from ...competition.files import locate, read_csv, to_numbers
from ...competition.metric import read_lookup_sources, read_submission, score
from ...errors import FkdError
from .catalogue import OTHER_COMPETITIONS
from .kernels import Kernels
from .store import Store, iso

DATA_FILES = ("training.zip", "training.csv", "test.zip", "test.csv", COMP.files["lookup"], COMP.files["sample"])
SCORE_DELAY_S = 0.5   # seconds a submission stays PENDING before it is scored (Kaggle takes a while too)
BENCHMARKS = ("Sample Submission Benchmark", "Mean Keypoints Benchmark")


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


class CompetitionState:
    """The server's competition: files, solution, scoring; its history in `store`."""

    def __init__(self, comp_dir: Path, state_dir: Path, users: dict[str, str] | None = None,
                 daily_limit: int = COMP.daily_submissions, score_delay: float = SCORE_DELAY_S,
                 kernel_mount: str = "competitions"):
        self.dir = Path(comp_dir)
        if not (self.dir / "solution.csv").is_file():
            raise FkdError(f"{self.dir}: no solution.csv; the local server needs one to score uploads "
                           "(make one with `fkd practice`)")
        self.state_dir = Path(state_dir)
        self.store = Store(self.state_dir / "server.sqlite")
        self.users = users or {}
        self.daily_limit, self.score_delay = daily_limit, score_delay
        self.lock = threading.RLock()
        self.solution = read_submission(self.dir / "solution.csv")
        self.lookup = read_lookup_sources(self.dir / COMP.files["lookup"])
        self.files = [self.dir / n for n in DATA_FILES if (self.dir / n).is_file()]
        self.identity = served_identity(self.dir)
        self._test_hash: str | None = None
        self._seed_leaderboard()
        self.kernels = Kernels(self, kernel_mount)        # `kaggle kernels ...`: pushed kernels run here
        for ref in self.store.pending():
            self._score(ref)  # scored after a restart

    # -------------------------------------------------------------------------------- data files
    def bundle(self) -> Path:
        """The competition zip as Kaggle serves it (data files only; never solution.csv), built once."""
        key = hashlib.sha1(json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files])
                           .encode()).hexdigest()[:12]
        path = self.state_dir / f"{COMP.slug}-{key}.zip"
        if not path.is_file():
            with atomic.atomic_path(path, suffix=".zip") as tmp, \
                    zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for p in self.files:
                    zf.write(p, p.name)
        return path

    def test_hash(self) -> str:
        """Content hash of the test set it scores (fkd.competition.data.test_hash): a submission predicted from
        other data is recognised by the client before it is sent."""
        with self.lock:
            if self._test_hash is None:
                from ...competition.data import load_data, test_hash
                self._test_hash = test_hash(load_data(self.dir))
            return self._test_hash

    def describe(self) -> dict:
        return {"competition": COMP.slug, "status": "ok", "server": "fkd serve", "destination": self.identity,
                "test_hash": self.test_hash()}

    # ---------------------------------------------------------------------------------- scoring
    def _seed_leaderboard(self) -> None:
        """Reference entries, as Kaggle shows benchmarks: the all-zero sample submission, the mean keypoints."""
        with self.lock:
            if self.store.query("SELECT COUNT(*) FROM submissions WHERE reference = 1")[0][0]:
                return
            raw, _, where = locate(self.dir, COMP.files["training"])
            head = b"\n".join(line.rsplit(b",", 1)[0] for line in raw.split(b"\n") if line.strip())
            labels = to_numbers(read_csv(head, where, COMP.columns), COMP.columns, where)
            means = dict(zip(COMP.columns, np.nanmean(labels, 0)))
            raw, _, where = locate(self.dir, COMP.files["lookup"])
            feat = read_csv(raw, where, ["RowId", "ImageId", "FeatureName", "Location"])
            feat = pd.Series(feat.FeatureName.to_numpy(), index=feat.RowId.astype(np.int64))
            mean_sub = self.solution.assign(Location=self.solution.RowId.map(feat).map(means).fillna(48.0))
            for team, sub in zip(BENCHMARKS, (self.solution.assign(Location=0.0), mean_sub)):
                self.store.add_reference(team, *self._rmse(sub))

    def _rmse(self, sub: pd.DataFrame) -> tuple[float, float]:
        return (score(sub, self.solution, self.lookup, subset="public")["rmse"],
                score(sub, self.solution, self.lookup, subset="private")["rmse"])

    def _score(self, ref: int) -> None:
        path = self.store.upload_of(ref)
        try:
            if path is None:
                raise FkdError("the uploaded file was not found")
            self.store.set_score(ref, "COMPLETE", *self._rmse(read_submission(path, where="submission")), None)
        except FkdError as e:
            self.store.set_score(ref, "ERROR", None, None, str(e))
        except Exception as e:  # noqa: BLE001 - any failure to score is the submission's ERROR, never a crash
            self.store.set_score(ref, "ERROR", None, None, f"could not score the file ({type(e).__name__})")

    # ------------------------------------------------------------------------------- submissions
    def token_user(self, token: str) -> str | None:
        """The user behind an API token: any non-empty token is a user of its own (a local server trusts)."""
        return f"token-{token[:6]}" if token else None

    def create(self, team: str, token: str, description: str) -> tuple[int, dict]:
        """CreateSubmission: recorded PENDING, scored score_delay seconds later."""
        code, obj = self.store.submit(team, token, description, self.daily_limit)
        if code != 200:
            return code, obj
        t = threading.Timer(self.score_delay, self._score, args=(obj["ref"],))
        t.daemon = True
        t.start()
        return 200, {"message": "Successfully submitted to Facial Keypoints Detection", "ref": obj["ref"]}

    def leaderboard_zip(self, private: bool = False) -> Path:
        """The board as Kaggle's DownloadLeaderboard gives it: a zip holding <slug>-publicleaderboard.csv."""
        board = pd.DataFrame(self.store.leaderboard(private), columns=["teamId", "teamName", "submissionDate", "score"])
        board.columns = ["TeamId", "TeamName", "SubmissionDate", "Score"]
        side = "private" if private else "public"
        path = self.state_dir / f"{COMP.slug}-{side}leaderboard.zip"
        with atomic.atomic_path(path, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{COMP.slug}-{side}leaderboard.csv", board.to_csv(index=False, lineterminator="\n"))
        return path

    def rules_accepted(self) -> bool:
        """Whether the 'rules' fault is armed (a peek: it is consumed only by a submission)."""
        return not self.store.fault_armed("rules")

    def competitions(self, team: str) -> list[dict]:
        """The catalogue ListCompetitions searches: the served competition, then a few others (listed only)."""
        board = [r["teamName"] for r in self.store.leaderboard()]
        ours = {"ref": f"https://www.kaggle.com/competitions/{COMP.slug}", "title": COMP.title,
                "url": f"https://www.kaggle.com/competitions/{COMP.slug}", "category": COMP.category,
                "reward": COMP.reward, "deadline": COMP.deadline, "teamCount": int(self.store.entrants()),
                "userHasEntered": self.rules_accepted(), "maxDailySubmissions": self.daily_limit,
                "evaluationMetric": "RMSE", "hostName": "", "segment": "HOST_SEGMENT_GETTING_STARTED",
                "dateCreated": "2013-05-07T00:00:00Z", "enabledDate": "2013-05-07T00:00:00Z",
                "submissionsDisabled": False}
        if team in board:
            ours["userRank"] = board.index(team) + 1
        return [ours] + [dict(c, userHasEntered=False) for c in OTHER_COMPETITIONS]


__all__ = ["CompetitionState", "DATA_FILES", "SCORE_DELAY_S", "served_identity", "iso"]
