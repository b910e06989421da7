"""`fkd serve`: a local competition server that speaks Kaggle's HTTP API to the real, official `kaggle` client.

    $ fkd serve competition/data/practice --port 8765
    $ FKD_KAGGLE_ENDPOINT=http://127.0.0.1:8765 fkd download && fkd upload submissions/x.csv

It serves one competition folder (Kaggle layout + solution.csv) on 127.0.0.1 with every route behind the
participant-side `kaggle competitions` commands: ListCompetitions (search, group, category, sort, pages),
list/download data files, the three-step submission upload (StartSubmissionUpload, a PUT of the file,
CreateSubmission), list/get/download submissions, submission limits, the leaderboard (paged, and as a zip), a
team's public submission, the competition's pages, and token introspection. Five submissions a day. No torch
here: the server needs numpy and pandas only.

    state.py      the served competition: files, scoring, the board      catalogue.py  ListCompetitions, paging
    store.py      SQLite: uploads, submissions, faults                    routes.py     the HTTP routes

Fault injection for tests (`--fail KIND[:N]`, N = how many requests fail, default all): `auth` (401),
`rules` (403 rules not accepted), `put` (the upload PUT fails with 500), `create-lost` (CreateSubmission is
accepted and then the connection drops before the reply), `down` (every API call answers 503), `ratelimit`
(429 with Retry-After: 1), `reset` (a file download breaks off half way through its body).
"""
from __future__ import annotations

import hashlib
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from ...competition import COMP
from .routes import Handler
from .state import CompetitionState, served_identity

DEFAULT_PORT = 8765
MAX_CLIENTS = 32        # connections served at once; more get 503 at once instead of a thread each
CLIENT_TIMEOUT = 20.0   # seconds a connection may sit idle (a slow or stalled client) before it is dropped
LISTEN_BACKLOG = 512    # connections the kernel holds until accepted; socketserver's 5 overflows under a burst
                        # (Linux then drops handshakes, and a client waits out SYN/data retries of many seconds)


def default_state_dir(comp_dir: Path) -> Path:
    tag = hashlib.sha1(str(comp_dir.resolve()).encode()).hexdigest()[:10]
    return Path(COMP.data_dir) / ".server" / f"{comp_dir.resolve().name}-{tag}"


def make_server(comp_dir: str | Path, port: int = DEFAULT_PORT, state_dir: str | Path | None = None,
                max_clients: int = MAX_CLIENTS, client_timeout: float = CLIENT_TIMEOUT, **kw) -> "BoundedServer":
    """Build (not start) the server bound to 127.0.0.1; port 0 picks a free one."""
    comp_dir = Path(comp_dir)
    state = CompetitionState(comp_dir, Path(state_dir or default_state_dir(comp_dir)), **kw)
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
                pass   # the client is gone already: nothing to tell it
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
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


__all__ = ["DEFAULT_PORT", "BoundedServer", "CompetitionState", "make_server", "serve_in_thread", "served_identity"]
