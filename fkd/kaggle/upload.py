"""`fkd upload`: a submission sent exactly once, its score waited for, everything in the ledger.

    $ fkd upload submissions/x.csv       # submit, wait for the score, record it in the ledger
    $ fkd upload --pending               # settle what an interrupted upload left, at the destination in use

Exactly once: a unique id goes into the description before anything is sent, and the submission list is
searched for it before every attempt (CreateSubmission's reply may be lost after Kaggle accepted the file).
"""
from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path

from ..competition import COMP
from ..errors import FkdError
from . import ledger
from .client import ENDPOINT_ENV, UPLOAD_TIMEOUT_S, call, explained, get_api, where
from .destination import Destination, destination

UPLOAD_FAILED = "Could not submit to competition"   # what competition_submit returns when the file's PUT failed
POLL_FIRST_S, POLL_MAX_S, POLL_GROWTH = 1.0, 15.0, 1.6


def allowance(api) -> dict | None:
    """GetSubmissionLimits before an upload; None (said on stderr) where the server does not answer it: the
    upload then finds out itself, as the plain client does. 401 and 403 are errors."""
    import requests
    from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionLimitsRequest

    try:
        with api.build_kaggle_client() as k:
            req = ApiGetSubmissionLimitsRequest()
            req.competition_name = COMP.slug
            lim = call(k.competitions.competition_api_client.get_submission_limits, req)
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else None
        if code in (401, 403):
            raise
        print(f"note: {where()} did not say how many submissions are left today ({code}); uploading without "
              "knowing", file=sys.stderr, flush=True)
        return None
    return {"num_today": lim.num_today, "num_total": lim.num_total, "num_allowed_now": lim.num_allowed_now}


def submissions(api) -> list:
    """The newest 100 submissions (the client returns one page; five a day makes that three weeks)."""
    return [s for s in (call(api.competition_submissions, COMP.slug, page_size=100) or []) if s is not None]


def _find_uid(api, uid: str):
    return next((s for s in submissions(api) if uid in (s.description or "")), None)


def _poll(api, ref, timeout: float, file: Path):
    delay, t0 = POLL_FIRST_S, time.time()
    while True:
        s = next((x for x in submissions(api) if str(x.ref) == str(ref)), None)
        status = s.status.name if s is not None else "PENDING"
        if status in ("COMPLETE", "ERROR"):
            return s
        if time.time() - t0 > timeout:
            raise FkdError(f"submission {ref} still {status} after {timeout:.0f}s; the CSV is kept at {file}; "
                           "`fkd scores` shows it once Kaggle has scored it (`fkd upload --pending` polls again)")
        time.sleep(delay)
        delay = min(delay * POLL_GROWTH, POLL_MAX_S)


def _made_from(file: Path, row: dict) -> str | None:
    """The test set a submission was predicted from: its ledger row, else its sidecar JSON."""
    if row.get("test_hash"):
        return row["test_hash"]
    side = file.with_suffix(".json")
    try:
        return json.loads(side.read_text()).get("test_hash") if side.is_file() else None
    except (OSError, ValueError):
        return None


def check_destination(file: Path, row: dict, there: Destination) -> Destination:
    """`there` (the destination in use), once it is clear the file belongs there: not already sent elsewhere and
    not predicted from another test set. Raises FkdError (one line) otherwise; nothing is sent."""
    sent_to = row.get("destination")
    if sent_to and sent_to != there.name and row.get("status") in ("pending", "submitted"):
        raise FkdError(f"{file.name} was sent to {sent_to}, not {there.name}: settle it there "
                       f"({'unset ' + ENDPOINT_ENV if sent_to == ledger.KAGGLE else 'aim ' + ENDPOINT_ENV + ' at it'})")
    made = _made_from(file, row)
    if made and there.test_hash and made != there.test_hash:
        raise FkdError(f"{file}: predicted from other data (test set {made}) than {there.name} scores "
                       f"(test set {there.test_hash}); not sent. Predict from the data downloaded from {there.name}")
    return there


def upload(file: str | Path, timeout: float = UPLOAD_TIMEOUT_S, there: Destination | None = None) -> dict:
    """Submit `file` exactly once to `there` (default: the destination in use), wait for its score, record
    everything in the ledger."""
    from ..competition.metric import read_submission

    file = Path(file)
    if not file.is_file():
        raise FkdError(f"{file}: no such submission file")
    read_submission(file)                                  # refuse a malformed CSV before spending a slot
    row = ledger.get(file) or {}
    if row.get("status") == "COMPLETE":
        print(f"{file.name} was already submitted to {row.get('destination') or ledger.UNKNOWN} (ref {row['ref']}); "
              "not submitting it twice")
        return row
    if there is None:                                       # callers that know it save a request
        try:
            there = destination()
        except FkdError as e:   # a server that never answered has no name: nothing is pending anywhere
            raise FkdError(f"{e}; nothing was sent, the CSV is kept at {file}") from None
    check_destination(file, row, there)
    uid = row.get("uid") or uuid.uuid4().hex[:12]
    cv = row.get("cv_rmse")
    desc = f"fkd run={row.get('run') or file.stem} cv={'%.4f' % cv if cv is not None else 'na'} uid={uid}"
    ledger.record(file, uid=uid, description=desc, competition=COMP.slug, destination=there.name,
                  endpoint=there.endpoint or "https://www.kaggle.com",
                  status=row.get("status") if row.get("status") == "submitted" else "pending", error=None)
    api = get_api()
    try:
        with explained(api, file):
            ref = _send_once(api, file, uid, desc)
            ledger.record(file, ref=str(ref), status="submitted")
            print(f"submitted {file.name} to {where()} (ref {ref}); waiting for the score...", flush=True)
            s = _poll(api, ref, timeout, file)
    except FkdError as e:
        ledger.record(file, error=str(e)[:300])
        raise
    return _record_score(file, s)


def _send_once(api, file: Path, uid: str, desc: str) -> str:
    """The submission's ref: found by its uid if an earlier attempt landed, else sent now (allowance first)."""
    found = _find_uid(api, uid)
    if found is not None:
        print(f"{file.name}: found on {where()} already (ref {found.ref}); not submitting twice")
        return found.ref
    left = allowance(api)
    if left is not None and left["num_allowed_now"] <= 0:
        raise FkdError(f"daily submission limit reached on {where()} ({left['num_today']} of "
                       f"{COMP.daily_submissions} a day used, resets at 00:00 UTC); nothing sent, the CSV is "
                       f"kept at {file} (retry with `fkd upload --pending`)")
    if left is not None:
        print(f"{where()}: {left['num_allowed_now']} submission(s) left today; this upload uses one", flush=True)
    try:
        res = api.competition_submit(str(file), desc, COMP.slug, quiet=True)
    except Exception:
        found = _find_uid(api, uid)
        if found is None:
            raise
        return found.ref
    if (res.message or "").startswith(UPLOAD_FAILED):
        raise FkdError(f"the upload of {file} failed ({UPLOAD_FAILED}); the CSV is kept, retry with "
                       "`fkd upload --pending`")
    return res.ref


def _record_score(file: Path, s) -> dict:
    status = s.status.name
    pub = float(s.public_score) if status == "COMPLETE" and s.public_score else None
    priv = float(s.private_score) if status == "COMPLETE" and s.private_score else None
    ledger.record(file, status=status, public_score=pub, private_score=priv,
                  error=(s.error_description or None) if status == "ERROR" else None)
    if status == "ERROR":
        raise FkdError(f"{where()} scored {file.name} as ERROR: {s.error_description or 'no reason given'}; "
                       "the CSV is kept")
    return ledger.get(file)


def upload_pending(timeout: float = UPLOAD_TIMEOUT_S) -> list[dict]:
    """Settle the ledger's unfinished uploads that belong to the destination in use; say why others wait."""
    there = destination()
    out = []
    for r in ledger.rows(where="WHERE status IN ('pending', 'submitted')"):
        name = Path(r["file"]).name
        if r.get("destination") != there.name:
            print(f"skipped {name}: " + (f"sent to {r['destination']}, not {there.name}" if r.get("destination") else
                                         "its destination is unknown (recorded before fkd kept destinations); "
                                         f"`fkd upload {r['file']}` sends it to {there.name} after checking its data"))
            continue
        out.append(upload(r["file"], timeout=timeout, there=there))
    return out


def sync_ledger() -> int:
    """Merge the competition's submission list into the ledger (matched by the uid in the description)."""
    api = get_api()
    with explained(api):
        subs = submissions(api)
    by_uid = {r["uid"]: r for r in ledger.rows() if r.get("uid")}
    n = 0
    for s in subs:
        m = re.search(r"uid=([0-9a-f]+)", s.description or "")
        if not m or m.group(1) not in by_uid:
            continue
        status = s.status.name
        ledger.record(by_uid[m.group(1)]["file"], ref=str(s.ref), status=status,
                      public_score=float(s.public_score) if status == "COMPLETE" and s.public_score else None,
                      private_score=float(s.private_score) if status == "COMPLETE" and s.private_score else None,
                      error=(s.error_description or None) if status == "ERROR" else None)
        n += 1
    return n


def submission_limits() -> dict:
    """Today's allowance as the server counts it: num_today, num_total, num_allowed_now."""
    api = get_api()
    with explained(api):
        left = allowance(api)
    if left is None:
        raise FkdError(f"{where()} does not say how many submissions are left today")
    return left
