"""The official `kaggle` client, aimed and wrapped: endpoint, credentials, timeouts, retries, one-line errors.

One setting chooses the API endpoint: the environment variable FKD_KAGGLE_ENDPOINT (unset = kaggle.com).
Point it at `fkd serve` (e.g. http://127.0.0.1:8765) and the same official client talks to the local server.
Credentials are found the way the client finds them (KAGGLE_API_TOKEN, KAGGLE_USERNAME + KAGGLE_KEY,
~/.kaggle/kaggle.json, ...); fkd never prints or stores them. The client is imported lazily, here only.

    >>> api = get_api()                                   # doctest: +SKIP
    >>> with explained(api):                              # doctest: +SKIP
    ...     files = call(api.competition_list_files, COMP.slug)
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import time
from pathlib import Path

from ..competition import COMP, COMPETITION_FILE
from ..errors import FkdError

ENDPOINT_ENV = "FKD_KAGGLE_ENDPOINT"
RULES_URL = f"{COMP.url}/rules"
UPLOAD_TIMEOUT_S = 600.0   # how long `fkd upload` / `make submit` wait for a submission's score by default


def endpoint() -> str | None:
    """The API endpoint fkd talks to: FKD_KAGGLE_ENDPOINT; else, when KAGGLE_API_ENVIRONMENT=LOCALHOST is set
    for the plain `kaggle` CLI, the same server it talks to (http://localhost, port 80); else None: kaggle.com."""
    ep = (os.environ.get(ENDPOINT_ENV) or "").rstrip("/")
    if not ep and os.environ.get("KAGGLE_API_ENVIRONMENT", "").upper() == "LOCALHOST":
        ep = "http://localhost"
    return ep or None


def where() -> str:
    return endpoint() or "kaggle.com"


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


@contextlib.contextmanager
def explained(api=None, file: str | Path | None = None):
    """Client calls inside it: any failure leaves as one FkdError line with the fix (explain); FkdError passes."""
    try:
        yield
    except FkdError:
        raise
    except Exception as e:  # noqa: BLE001 - every client or network failure is explained, none is swallowed
        raise explain(e, file, api=api) from None


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
