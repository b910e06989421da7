"""The routes of `fkd serve`: HTTP plumbing and one method per Kaggle API call the official client makes.

POST `/api/v1/<service>/<method>` (and `/v1/...`) with a JSON body; GET for the files (the data bundle, a data
file, a leaderboard zip, a submitted file: what the RPCs redirect to); PUT for an upload's file; `/health` says
who the server is (its destination name and the test set it scores). Every bad request gets a 4xx, none a crash.
"""
from __future__ import annotations

import base64
import email.utils
import json
import os
import re
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

from ...competition import COMP
from .catalogue import list_competitions, page
from .kernel_routes import KernelRoutes
from .state import CompetitionState
from .store import iso

MAX_UPLOAD = 64 * 1024 * 1024
MAX_JSON = 1024 * 1024

# what a user who has not accepted the rules is refused: the data and submitting (listing is allowed)
RULES_GATED = {"DownloadDataFiles", "DownloadDataFile", "StartSubmissionUpload", "CreateSubmission"}
# methods whose request names no competition (or that look one up): exempt from the slug check
NO_COMPETITION = {"GetSubmission", "ListCompetitions", "DownloadSubmission", "ListTeamPublicSubmissions"}



class Handler(KernelRoutes, BaseHTTPRequestHandler):
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
        if m and (upload := self.state.store.upload_path(m.group(1))) is not None:
            return self._file(upload)
        if path in ("/", "/health"):
            return self._json(200, self.state.describe())
        if self._kernel_get(path):
            return
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
        if len(body) > 1 and self.command == "GET" and self.state.store.fault("reset"):
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
        if self.state.store.fault("put"):
            return self._error(500, "injected fault: upload storage unavailable")
        code = self.state.store.put_upload(m.group(1), data)
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
        if self.state.store.fault("down"):
            return self._error(503, "injected fault: service unavailable")
        if self.state.store.fault("ratelimit"):
            return self._send(429, json.dumps({"code": 429, "message": "Too many requests: slow down"}).encode(),
                              headers={"Retry-After": "1"})
        if service == "security.OAuthService" and method == "IntrospectToken":
            user = self.state.token_user(str(req.get("token", "")))
            return self._json(200, {"active": bool(user), "username": user or ""})
        team = self._team()
        if team is None or self.state.store.fault("auth"):
            return self._error(401, "Unauthorized: check your Kaggle API credentials")
        if service == "kernels.KernelsApiService":
            return self._dispatch(getattr(self, f"_kapi_{method}", None), method, req, team)
        if service != "competitions.CompetitionApiService":
            return self._error(404, f"no such service: {service}")
        comp = req.get("competitionName")
        if method not in NO_COMPETITION and comp != COMP.slug:
            # as Kaggle: an unknown slug and a competition whose rules the user has not accepted look the same
            return self._error(403, f"Permission 'competitions.participate' was denied: competition {comp!r}")
        if method in RULES_GATED and self.state.store.fault("rules"):
            return self._error(403, "You must accept this competition's rules before you'll be able to submit")
        return self._dispatch(getattr(self, f"_api_{method}", None), method, req, team)

    def _dispatch(self, handler, method: str, req: dict, team: str):
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
        files = [{"name": p.name, "totalBytes": p.stat().st_size, "creationDate": iso(p.stat().st_mtime)}
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
        token = self.state.store.start_upload(str(req.get("fileName", "submission.csv")), n)
        self._json(200, {"token": token, "createUrl": f"{self._base()}/upload/{token}"})

    def _api_CreateSubmission(self, req, team):
        code, obj = self.state.create(team, str(req.get("blobFileTokens", "")),
                                      str(req.get("submissionDescription", "")))
        if code == 200 and self.state.store.fault("create-lost"):
            self.close_connection = True   # accepted, then the reply is lost
            self.connection.shutdown(2)
            return
        self._json(code, obj)

    def _api_ListSubmissions(self, req, team):
        chunk, nxt = page(self.state.store.list_submissions(team), req, default_size=20, max_size=1000)
        self._json(200, {"submissions": chunk, "nextPageToken": nxt})

    def _api_GetSubmission(self, req, team):
        s = self.state.store.get_submission(team, int(req.get("ref") or 0))
        if s is None:
            return self._error(404, "no such submission")
        self._json(200, s)

    def _api_GetLeaderboard(self, req, team):
        board = self.state.store.leaderboard(private=bool(req.get("overridePublic")))
        chunk, nxt = page(board, req, default_size=20, max_size=1000)
        self._json(200, {"submissions": chunk, "nextPageToken": nxt})

    def _api_DownloadLeaderboard(self, req, team):
        self.state.leaderboard_zip()
        self._send(302, b"", headers={"Location": f"{self._base()}/files/leaderboard/"
                                                  f"{COMP.slug}-publicleaderboard.zip"})

    def _api_ListCompetitions(self, req, team):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        chunk, nxt = list_competitions(self.state.competitions(team), req, now)
        self._json(200, {"competitions": chunk, "nextPageToken": nxt})

    def _api_GetSubmissionLimits(self, req, team):
        self._json(200, self.state.store.limits(team, self.state.daily_limit))

    def _api_DownloadSubmission(self, req, team):
        found = self.state.store.submission_file(team, int(req.get("submissionId") or 0))
        if found is None:
            return self._error(404, "no such submission")
        token, name = found
        self._send(302, b"", headers={"Location": f"{self._base()}/files/submissions/{token}/{name}"})

    def _api_ListTeamPublicSubmissions(self, req, team):
        self._json(200, {"submissions": self.state.store.team_public_submissions(int(req.get("teamId") or 0))})

    def _api_ListCompetitionPages(self, req, team):
        name = req.get("pageName")
        pages = [{"name": n, "content": text, "isPublished": True, "postTitle": n.replace("-", " ").title(),
                  "mimeType": "text/markdown"} for n, text in COMP.pages if not name or n == name]
        self._json(200, {"pages": pages})
