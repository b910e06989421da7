"""The Kaggle side, on the official `kaggle` client: download, upload (exactly once), poll, leaderboard.

One setting chooses the API endpoint: the environment variable FKD_KAGGLE_ENDPOINT (unset = kaggle.com).
Point it at `fkd serve` (e.g. http://127.0.0.1:8765) and the same official client talks to the local server.
Credentials are found the way the client finds them (KAGGLE_API_TOKEN, KAGGLE_USERNAME + KAGGLE_KEY,
~/.kaggle/kaggle.json, ...); fkd never prints or stores them. The client is imported lazily, here only.

    $ fkd download                       # competition files into competition/data/, verified and extracted
    $ fkd upload submissions/x.csv       # submit, wait for the score, record it in the ledger
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import atomic, ledger
from .competition import COMP, COMPETITION_FILE
from .data import unsafe_zip_member
from .errors import FkdError

ENDPOINT_ENV = "FKD_KAGGLE_ENDPOINT"
UPLOAD_FAILED = "Could not submit to competition"
RULES_URL = f"{COMP.url}/rules"


def endpoint() -> str | None:
    """The API endpoint fkd talks to: FKD_KAGGLE_ENDPOINT; else, when KAGGLE_API_ENVIRONMENT=LOCALHOST is set
    for the plain `kaggle` CLI, the same server it talks to (http://localhost, port 80); else None: kaggle.com."""
    ep = (os.environ.get(ENDPOINT_ENV) or "").rstrip("/")
    if not ep and os.environ.get("KAGGLE_API_ENVIRONMENT", "").upper() == "LOCALHOST":
        ep = "http://localhost"
    return ep or None


def where() -> str:
    return endpoint() or "kaggle.com"


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
        info = requests.get(f"{ep}/health", timeout=request_timeout()).json()
    except (requests.RequestException, ValueError):
        info = {}
    if isinstance(info, dict) and info.get("server") == "fkd serve" and info.get("destination"):
        return Destination(str(info["destination"]), ep, info.get("test_hash"))
    return Destination(ep, ep, _downloaded_test_hash(ep))


def offline_destination(comp_dir: str | Path) -> Destination:
    """The destination `make submit OFFLINE=1` uses for a competition folder, without starting its server."""
    from .data import load_data, test_hash
    from .server import served_identity

    return Destination(served_identity(comp_dir), None, test_hash(load_data(comp_dir)))


def _config_dir() -> Path:
    d = os.environ.get("KAGGLE_CONFIG_DIR")
    return Path(d) if d else Path.home() / ".kaggle"


def credentials_source() -> str | None:
    """Where the client will find credentials (a description, never the values), or None."""
    tok = os.environ.get("KAGGLE_API_TOKEN")
    if tok:
        return "KAGGLE_API_TOKEN (a file)" if Path(tok).exists() else "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):   # the client reads these from ~/.kaggle only (kagglesdk
        p = Path.home() / ".kaggle" / name             # kaggle_env.py), whatever KAGGLE_CONFIG_DIR says
        if p.is_file() and p.read_text().strip():
            return str(p)
    d = _config_dir()
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if (d / "kaggle.json").is_file():
        return str(d / "kaggle.json")
    if (d / "credentials.json").is_file():
        return str(d / "credentials.json")
    return None


def warn_permissions() -> str | None:
    p = _config_dir() / "kaggle.json"
    if p.is_file() and p.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        msg = f"warning: {p} is readable by other users; run `chmod 600 {p}`"
        print(msg, file=sys.stderr)
        return msg
    return None


NO_CREDENTIALS = ("no Kaggle credentials found: create an API token at https://www.kaggle.com/settings "
                  "(Account -> API) and save it as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME "
                  "and KAGGLE_KEY; `make submit OFFLINE=1` runs everything against the local server instead")


TIMEOUT_ENV = "FKD_KAGGLE_TIMEOUT"


def request_timeout() -> tuple[float, float]:
    """(connect, read) seconds for every HTTP request of the client: FKD_KAGGLE_TIMEOUT (read, default 120)."""
    try:
        read = float(os.environ.get(TIMEOUT_ENV) or 120)
    except ValueError:
        raise FkdError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds") from None
    return (min(30.0, read), read)


def _install_timeouts() -> None:
    """The official client sends its requests without a timeout, so a stalled server would hang fkd forever.
    Give every request of this process that has none the (connect, read) timeout of request_timeout()."""
    from requests.adapters import HTTPAdapter

    if getattr(HTTPAdapter.send, "_fkd_timeout", False):
        return
    original = HTTPAdapter.send

    def send(self, request, stream=False, timeout=None, **kw):
        return original(self, request, stream=stream, timeout=request_timeout() if timeout is None else timeout, **kw)

    send._fkd_timeout = True
    HTTPAdapter.send = send


_reported: set = set()


def get_api():
    """An authenticated official KaggleApi aimed at endpoint(). Raises FkdError without credentials."""
    source = credentials_source()
    if source is None:
        raise FkdError(NO_CREDENTIALS)
    if (source, where()) not in _reported:   # which credentials, never their value; once per process
        _reported.add((source, where()))
        print(f"kaggle: credentials from {source}, talking to {where()}", file=sys.stderr, flush=True)
    warn_permissions()
    _install_timeouts()
    with contextlib.redirect_stdout(io.StringIO()):  # `import kaggle` authenticates and prints help
        from kaggle.api.kaggle_api_extended import KaggleApi
        from kagglesdk import KaggleClient, KaggleEnv

    class FkdKaggleApi(KaggleApi):
        """The official client; only the endpoint differs when FKD_KAGGLE_ENDPOINT is set."""

        def build_kaggle_client(self):
            ep = endpoint()
            client = KaggleClient(env=KaggleEnv.LOCAL if ep else KaggleEnv.PROD,
                                  username=self.config_values.get(self.CONFIG_NAME_USER),
                                  password=self.config_values.get(self.CONFIG_NAME_KEY),
                                  api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                                  response_processor=self.get_response_processor())
            if ep:
                client.http_client()._endpoint = ep  # LOCAL env: requests go to {ep}/api/v1/...
            return client

    api = FkdKaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise FkdError(NO_CREDENTIALS) from None
    except Exception as e:  # noqa: BLE001
        raise explain(e) from None
    return api


MAX_TRIES = 4          # attempts of an idempotent call (list, download, poll) through rate limits and 5xx
MAX_WAIT = 60.0        # seconds: the longest Retry-After fkd honours before it gives up with one line


def _daily_limit(e) -> bool:
    """A refusal for the day: never retried. Kaggle's daily-limit refusal is a 4xx whose message says 'daily'
    (assumed: its status code is not documented); a 429 with Retry-After is a rate limit instead."""
    return "daily" in str(e).lower() or "allowance" in str(e).lower()


def call(fn, *args, idempotent: bool = True, **kw):
    """Run one client call. Idempotent ones (list, download, poll) are retried with a bounded backoff on a
    429 that carries Retry-After (honoured up to MAX_WAIT s) and on 502/503/504; a daily-limit refusal and
    every non-idempotent call (creating a submission) are never retried. A connection dropped in the middle of
    a download is the client's to resume (it retries with a Range request); one refused outright is an error."""
    import requests

    for attempt in range(1, MAX_TRIES + 1):
        try:
            return fn(*args, **kw)
        except requests.HTTPError as e:
            r = e.response
            code = r.status_code if r is not None else None
            after = r.headers.get("Retry-After") if r is not None else None
            if not idempotent or attempt == MAX_TRIES or _daily_limit(e):
                raise
            if code == 429 and after and after.strip().isdigit() and float(after) <= MAX_WAIT:
                wait = float(after)
            elif code in (502, 503, 504):
                wait = 2.0 ** (attempt - 1)
            else:
                raise
        print(f"{where()} answered {code}; retrying in {wait:.0f}s ({attempt}/{MAX_TRIES - 1})", file=sys.stderr,
              flush=True)
        time.sleep(wait)


def known_slugs(api) -> list[str]:
    """Competition slugs the server lists (ListCompetitions names no competition, so it works for any slug)."""
    with api.build_kaggle_client() as k:
        from kagglesdk.competitions.types.competition_api_service import ApiListCompetitionsRequest
        from kagglesdk.competitions.types.competition_enums import CompetitionListTab

        req = ApiListCompetitionsRequest()
        req.group = CompetitionListTab.COMPETITION_LIST_TAB_EVERYTHING
        req.search = COMP.slug.split("-")[0]
        req.page_size = 100
        found = k.competitions.competition_api_client.list_competitions(req).competitions or []
        if not any(c.ref.rstrip("/").rsplit("/", 1)[-1] == COMP.slug for c in found):
            req.search = ""                                     # a misspelt slug: its neighbours, for a suggestion
            found = k.competitions.competition_api_client.list_competitions(req).competitions or []
    return [c.ref.rstrip("/").rsplit("/", 1)[-1] for c in found]


def explain_403(api, keep: str = "") -> FkdError:
    """Kaggle answers a misspelt slug and unaccepted rules with the same 403: tell them apart by listing."""
    import difflib

    try:
        slugs = known_slugs(api)
    except Exception:  # noqa: BLE001 - the listing is only a hint; the plain 403 message still applies
        slugs = []
    if slugs and COMP.slug not in slugs:
        near = difflib.get_close_matches(COMP.slug, slugs, n=1)
        return FkdError(f"{where()} knows no competition {COMP.slug!r}" + (f" (did you mean {near[0]!r}?)" if near
                        else "") + f"; fix the slug in {COMPETITION_FILE}{keep}")
    return FkdError(f"{where()} answered 403 for competition {COMP.slug!r}: accept its rules on the website "
                    f"({RULES_URL}; only the website can){keep}")


def explain(e: BaseException, file: str | Path | None = None, api=None) -> FkdError:
    """Turn a client/network exception into one line with the fix (never echoing credentials)."""
    import requests

    keep = f"; the CSV is kept at {file} (retry with `fkd upload --pending`)" if file else ""
    if isinstance(e, FkdError):
        return e
    if isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else None
        msg = str(e).split("\n")[0][:200]
        if code == 401:
            return FkdError(f"{where()} answered 401 Unauthorized: the credentials from {credentials_source()} are "
                            f"wrong or expired; create a new API token at https://www.kaggle.com/settings{keep}")
        if code == 403:
            if api is not None:
                return explain_403(api, keep)
            return FkdError(f"{where()} answered 403 for competition {COMP.slug!r}: accept its rules on the website "
                            f"({RULES_URL}; only the website can), or check the competition slug{keep}")
        if _daily_limit(e):
            return FkdError(f"daily submission limit reached ({COMP.daily_submissions} a day, resets at 00:00 UTC)"
                            f"{keep}")
        if code == 429:
            after = e.response.headers.get("Retry-After") if e.response is not None else None
            return FkdError(f"{where()} is rate limiting fkd (429{', Retry-After ' + after + 's' if after else ''}) "
                            f"and still was after {MAX_TRIES} tries; wait a minute and rerun{keep}")
        return FkdError(f"{where()} answered {code}: {msg}{keep}")
    if isinstance(e, requests.Timeout) or "timed out" in str(e):
        return FkdError(f"{where()} did not answer within {request_timeout()[1]:.0f}s (set {TIMEOUT_ENV} to wait "
                        f"longer){keep}")
    if isinstance(e, requests.ConnectionError):
        return FkdError(f"cannot reach {where()} (network down or server not running){keep}")
    return FkdError(f"Kaggle client failed: {type(e).__name__}: {str(e)[:200]}{keep}")


# --------------------------------------------------------------------------------------- download
REQUIRED = ("training.csv", "test.csv", COMP.files["lookup"], COMP.files["sample"])


def _safe_extract(zf: zipfile.ZipFile, dest: Path, where: str) -> list[Path]:
    """Extract a zip's files flat into dest, refusing absolute or '..' members; nested zips are opened too."""
    out = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if unsafe_zip_member(info.filename):
            raise FkdError(f"{where}: refusing unsafe zip member {info.filename!r}; the download is not trusted")
        if info.is_dir():
            continue
        data = zf.read(info)
        if p.suffix == ".zip":
            out += _safe_extract(zipfile.ZipFile(io.BytesIO(data)), dest, f"{where}:{p.name}")
        else:
            out.append(atomic.write_bytes(dest / p.name, data))
    return out


def _intact(dest: Path) -> bool:
    marker = dest / ".fkd-download.json"
    if not marker.is_file():
        return False
    sizes = json.loads(marker.read_text()).get("sizes", {})
    return all((dest / n).is_file() and (dest / n).stat().st_size == sizes.get(n) for n in REQUIRED)


def download(dest: str | Path | None = None, force: bool = False) -> list[Path]:
    """Competition files into `dest` (default competition/data): verified, safely extracted, skipped if intact."""
    dest = Path(dest or COMP.data_dir)
    if not force and _intact(dest):
        print(f"{dest}: competition files already present and intact; skipping the download")
        return [dest / n for n in REQUIRED]
    api = get_api()
    # the bundle is fetched into dest/.partial/: a broken-off download never lies under a name fkd reads, and
    # the next `fkd download` resumes it (the client checks its .kaggle-partial marker and asks for the rest
    # with a Range request; within one call it retries a dropped connection the same way)
    partial = dest / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    if force:
        for p in partial.iterdir():
            p.unlink()
    try:
        listed = {f.name: f.total_bytes for f in call(api.competition_list_files, COMP.slug).files}
        call(api.competition_download_files, COMP.slug, path=str(partial), force=False, quiet=False)
    except Exception as e:  # noqa: BLE001
        import requests

        if isinstance(e, (requests.exceptions.ChunkedEncodingError, requests.ConnectionError)) and any(partial.iterdir()):
            raise FkdError(f"the download from {where()} kept breaking off ({type(e).__name__}); the part received "
                           f"is kept in {partial} and `fkd download` resumes it") from None
        raise explain(e, api=api) from None
    bundle = partial / f"{COMP.slug}.zip"
    if not bundle.is_file():
        raise FkdError(f"{bundle}: the download produced no file; retry `fkd download`")
    try:
        with zipfile.ZipFile(bundle) as zf:
            bad = zf.testzip()
            if bad:
                raise FkdError(f"{bundle}: member {bad} fails its CRC check; retry `fkd download --force`")
            members = {PurePosixPath(i.filename).name: i.file_size for i in zf.infolist()}
            for name, size in listed.items():
                if name in members and size and members[name] != size:
                    raise FkdError(f"{bundle}: {name} is {members[name]} bytes, Kaggle lists {size}; "
                                   "retry `fkd download --force`")
            files = _safe_extract(zf, dest, str(bundle))
    except zipfile.BadZipFile as e:
        raise FkdError(f"{bundle}: not a readable zip ({e}); retry `fkd download --force`") from None
    missing = [n for n in REQUIRED if not (dest / n).is_file()]
    if missing:
        raise FkdError(f"{bundle}: missing {', '.join(missing)} after extraction; retry `fkd download --force`")
    bundle.unlink()
    for p in partial.iterdir():   # the client's resume marker
        p.unlink()
    partial.rmdir()
    from .data import load_data, test_hash

    there = destination()
    atomic.write_json(dest / ".fkd-download.json", {"sizes": {n: (dest / n).stat().st_size for n in REQUIRED},
                                                    "from": where(), "destination": there.name,
                                                    "test_hash": test_hash(load_data(dest)), "time": time.time()})
    return files


# ---------------------------------------------------------------------------------------- upload
def _allowance(api) -> dict | None:
    """GetSubmissionLimits before an upload; None where the server does not answer it (the upload then
    finds out itself, as the plain client does)."""
    import requests
    from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionLimitsRequest

    try:
        with api.build_kaggle_client() as k:
            req = ApiGetSubmissionLimitsRequest()
            req.competition_name = COMP.slug
            lim = call(k.competitions.competition_api_client.get_submission_limits, req)
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code in (401, 403):
            raise
        return None
    return {"num_today": lim.num_today, "num_total": lim.num_total, "num_allowed_now": lim.num_allowed_now}


def _submissions(api) -> list:
    """The newest 100 submissions (the client returns one page; five a day makes that three weeks)."""
    return [s for s in (call(api.competition_submissions, COMP.slug, page_size=100) or []) if s is not None]


def _find_uid(api, uid: str):
    for s in _submissions(api):
        if s is not None and uid in (s.description or ""):
            return s
    return None


def _poll(api, ref, timeout: float, file: Path):
    delay, t0 = 1.0, time.time()
    while True:
        s = next((x for x in _submissions(api) if str(x.ref) == str(ref)), None)
        status = s.status.name if s is not None else "PENDING"
        if status in ("COMPLETE", "ERROR"):
            return s
        if time.time() - t0 > timeout:
            raise FkdError(f"submission {ref} still {status} after {timeout:.0f}s; the CSV is kept at {file}; "
                           "`fkd scores` shows it once Kaggle has scored it (`fkd upload --pending` polls again)")
        time.sleep(delay)
        delay = min(delay * 1.6, 15.0)


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


def upload(file: str | Path, timeout: float = 600.0, there: Destination | None = None) -> dict:
    """Submit `file` exactly once to `there` (default: the destination in use), wait for its score, record
    everything in the ledger."""
    file = Path(file)
    if not file.is_file():
        raise FkdError(f"{file}: no such submission file")
    from .metric import read_submission
    read_submission(file)                                  # refuse a malformed CSV before spending a slot
    row = ledger.get(file) or {}
    if row.get("status") in ("COMPLETE",):
        print(f"{file.name} was already submitted to {row.get('destination') or ledger.UNKNOWN} (ref {row['ref']}); "
              "not submitting it twice")
        return row
    there = check_destination(file, row, there or destination())   # callers that know it save a request
    uid = row.get("uid") or uuid.uuid4().hex[:12]
    cv = row.get("cv_rmse")
    desc = f"fkd run={row.get('run') or file.stem} cv={'%.4f' % cv if cv is not None else 'na'} uid={uid}"
    ledger.record(file, uid=uid, description=desc, competition=COMP.slug, destination=there.name,
                  endpoint=there.endpoint or "https://www.kaggle.com",
                  status=row.get("status") if row.get("status") == "submitted" else "pending", error=None)
    api = get_api()
    try:
        found = _find_uid(api, uid)                        # an earlier attempt may have landed
        if found is not None:
            ref = found.ref
            print(f"{file.name}: found on {where()} already (ref {ref}); not submitting twice")
        else:
            left = _allowance(api)
            if left is not None and left["num_allowed_now"] <= 0:
                raise FkdError(f"daily submission limit reached on {where()} ({left['num_today']} of "
                               f"{COMP.daily_submissions} a day used, resets at 00:00 UTC); nothing sent, the CSV is "
                               f"kept at {file} (retry with `fkd upload --pending`)")
            if left is not None:
                print(f"{where()}: {left['num_allowed_now']} submission(s) left today; this upload uses one",
                      flush=True)
            res = None
            try:
                res = api.competition_submit(str(file), desc, COMP.slug, quiet=True)
            except Exception as e:  # noqa: BLE001 - the reply may be lost after Kaggle accepted the file
                found = _find_uid(api, uid)
                if found is None:
                    raise e
            if res is not None and (res.message or "").startswith(UPLOAD_FAILED):
                raise FkdError(f"the upload of {file} failed ({UPLOAD_FAILED}); the CSV is kept, retry with "
                               "`fkd upload --pending`")
            ref = found.ref if found is not None else res.ref
        ledger.record(file, ref=str(ref), status="submitted")
        print(f"submitted {file.name} to {where()} (ref {ref}); waiting for the score...", flush=True)
        s = _poll(api, ref, timeout, file)
    except FkdError as e:
        ledger.record(file, error=str(e)[:300])
        raise
    except Exception as e:  # noqa: BLE001
        err = explain(e, file, api=api)
        ledger.record(file, error=str(err)[:300])
        raise err from None
    status = s.status.name
    pub = float(s.public_score) if status == "COMPLETE" and s.public_score else None
    priv = float(s.private_score) if status == "COMPLETE" and s.private_score else None
    ledger.record(file, status=status, public_score=pub, private_score=priv,
                  error=(s.error_description or None) if status == "ERROR" else None)
    if status == "ERROR":
        raise FkdError(f"{where()} scored {file.name} as ERROR: {s.error_description or 'no reason given'}; "
                       "the CSV is kept")
    return ledger.get(file)


def upload_pending(timeout: float = 600.0) -> list[dict]:
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
    import re

    api = get_api()
    try:
        subs = _submissions(api)
    except Exception as e:  # noqa: BLE001
        raise explain(e, api=api) from None
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


def leaderboard(private: bool = False, max_rows: int = 10_000) -> list[dict]:
    """The whole board (every page, up to max_rows), best first: team, team id, score, date."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    api = get_api()
    out, token = [], ""
    try:
        with api.build_kaggle_client() as k:
            while len(out) < max_rows:
                req = ApiGetLeaderboardRequest()
                req.competition_name = COMP.slug
                req.override_public = private
                req.page_size = 200
                req.page_token = token
                res = call(k.competitions.competition_api_client.get_leaderboard, req)
                out += [{"team": s.team_name, "team_id": s.team_id, "score": float(s.score),
                         "date": str(s.submission_date or "")} for s in res.submissions if s.score]
                token = res.next_page_token
                if not token or not res.submissions:
                    break
    except Exception as e:  # noqa: BLE001
        raise explain(e, api=api) from None
    return out


def download_leaderboard(out_dir: str | Path) -> Path:
    """The full public board as Kaggle's DownloadLeaderboard gives it, unzipped into out_dir; returns the CSV."""
    api = get_api()
    out_dir = Path(out_dir)
    tmp = out_dir / ".partial"
    try:
        call(api.competition_leaderboard_download, COMP.slug, str(tmp), quiet=True)
    except Exception as e:  # noqa: BLE001
        raise explain(e, api=api) from None
    zpath = tmp / f"{COMP.slug}.zip"
    try:
        with zipfile.ZipFile(zpath) as zf:
            written = _safe_extract(zf, out_dir, str(zpath))
    except zipfile.BadZipFile as e:
        raise FkdError(f"{zpath}: not a readable zip ({e}); retry `fkd leaderboard --download`") from None
    zpath.unlink()
    csvs = [p for p in written if p.suffix == ".csv"]
    if not csvs:
        raise FkdError(f"{zpath}: no leaderboard CSV inside; retry `fkd leaderboard --download`")
    return csvs[0]


def submission_limits() -> dict:
    """Today's allowance as the server counts it: num_today, num_total, num_allowed_now."""
    api = get_api()
    try:
        left = _allowance(api)
    except Exception as e:  # noqa: BLE001
        raise explain(e, api=api) from None
    if left is None:
        raise FkdError(f"{where()} does not say how many submissions are left today")
    return left
