"""The local Kaggle server under abuse: malformed requests, unknown routes, oversized and truncated uploads,
stalled and many concurrent clients, all on loopback. Used by tests/test_reliability.py and `make reliability`.

`abuse(srv, seed)` throws the requests at a running `fkd serve` (fkd.kaggle.server) and returns the tallies; the
caller checks that every request got an answer (4xx for the bad ones, 503 when over the client limit), the server kept
serving, no handler crashed (`srv.errors == 0`) and the submission history is intact.
"""
from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
from collections import Counter

AUTH = "Basic " + base64.b64encode(b"alice:secret-key").decode()
API = "/api/v1/competitions.CompetitionApiService/"
SLUG = "facial-keypoints-detection"


def raw(port: int, data: bytes, shut_write: bool = False, timeout: float = 10.0) -> int | None:
    """Send raw bytes, read the answer's status code (None: closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close early on an oversized request: read what it said
            pass
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
    parts = buf.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None, length: int | None = None) -> bytes:
    h = {"Host": "127.0.0.1", "Content-Length": str(len(body) if length is None else length), "Connection": "close"}
    h.update(headers or {})
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body


def api(method: str, obj, auth: bool = True, raw_body: bytes | None = None) -> bytes:
    body = raw_body if raw_body is not None else json.dumps(obj).encode()
    return request("POST", API + method, body, {"Authorization": AUTH} if auth else {})


def listen_overflows() -> int | None:
    """Linux's count of connections dropped because a listen queue was full (this network namespace), or None
    where /proc/net/netstat is not there. A rise during the burst means clients sat in SYN retries (up to tens
    of seconds) instead of being accepted and answered: the server's backlog is too short."""
    try:
        lines = open("/proc/net/netstat").read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:]))
            return int(row["ListenOverflows"]) if "ListenOverflows" in row else None
    return None


def bad_requests(rng: random.Random) -> list[tuple[str, bytes, dict]]:
    """(name, raw request, options) for every kind of malformed request; all must get a 4xx."""
    c = {"competitionName": SLUG}
    cases = [
        ("json_garbage", api("ListSubmissions", None, raw_body=b"{not json"), {}),
        ("json_array", api("ListSubmissions", None, raw_body=b"[1, 2, 3]"), {}),
        ("json_deep", api("ListSubmissions", None, raw_body=b"[" * 200_000 + b"]" * 200_000), {}),
        ("json_not_utf8", api("ListSubmissions", None, raw_body=b'{"a": "\xff\xfe"}'), {}),
        ("json_wrong_types", api("GetSubmission", {"ref": "drop table"}, ), {}),
        ("json_huge_int", api("ListSubmissions", {**c, "pageSize": 10 ** 400}), {}),
        ("json_wrong_competition", api("ListSubmissions", {"competitionName": "titanic"}), {}),
        ("no_auth", api("ListSubmissions", c, auth=False), {}),
        ("bad_auth", request("POST", API + "ListSubmissions", b"{}", {"Authorization": "Basic %%%"}), {}),
        ("unknown_method", api("DeleteEverything", c), {}),
        ("unknown_service", request("POST", "/api/v1/admin.RootService/Shell", b"{}", {"Authorization": AUTH}), {}),
        ("unknown_get", request("GET", "/api/v1/../../etc/passwd"), {}),
        ("solution_download", request("GET", "/files/data/solution.csv"), {}),
        ("traversal_download", request("GET", "/files/data/..%2F..%2Fsolution.csv"), {}),
        ("unknown_put", request("PUT", "/upload/../../x", b"abc"), {}),
        ("put_unknown_token", request("PUT", "/upload/deadbeef", b"RowId,Location\n"), {}),
        ("delete", request("DELETE", "/api/v1/x"), {}),
        ("bad_content_length", request("POST", API + "ListSubmissions", b"{}", {"Authorization": AUTH}, length=-5), {}),
        ("text_content_length", request("POST", API + "ListSubmissions", b"{}", {"Content-Length": "lots"}), {}),
        ("oversized_json", request("POST", API + "ListSubmissions", b"{", {"Authorization": AUTH},
                                   length=50 * 1024 * 1024), {}),
        ("oversized_upload", request("PUT", "/upload/deadbeef", b"RowId", length=10 ** 10), {}),
        ("oversized_start", api("StartSubmissionUpload", {**c, "fileName": "x.csv", "contentLength": 10 ** 12}), {}),
        ("truncated_json", request("POST", API + "ListSubmissions", b'{"compet', {"Authorization": AUTH}, length=4000),
         {"shut_write": True}),
        ("truncated_upload", request("PUT", "/upload/deadbeef", b"RowId,Loc", length=100_000), {"shut_write": True}),
        ("garbage_line", b"\x00\x01\x02 garbage\r\n\r\n", {}),
        ("http_0_9", b"GET /\r\n\r\n", {}),
        ("huge_header", b"GET /health HTTP/1.1\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n", {}),
        ("many_headers", b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", {}),
        ("random_bytes", bytes(rng.getrandbits(8) for _ in range(2000)) + b"\r\n\r\n", {}),
    ]
    return cases


def abuse(srv, seed: int = 0, clients: int = 120, stalled: int = 4) -> dict:
    """Throw everything at `srv` (an fkd.kaggle.server.BoundedServer); return the tallies and what was wrong."""
    port = srv.server_address[1]
    rng = random.Random(seed)
    tally, wrong = Counter(), []

    def note(name: str, code: int | None, ok: set[int]):
        tally["thrown"] += 1
        tally["answered"] += code is not None
        if code not in ok:
            wrong.append(f"{name}: answered {code}, expected " + ("a 4xx" if len(ok) > 10 else f"one of {sorted(ok)}"))

    before = json.dumps(srv.state.store.list_submissions("alice"), sort_keys=True)
    for name, data, opt in bad_requests(rng):
        note(name, raw(port, data, **opt), set(range(400, 500)))

    # a used upload token cannot be overwritten: a real submission first, then a PUT to its token
    tok = srv.state.store.start_upload("ok.csv", 10)
    srv.state.store.put_upload(tok, (srv.state.dir / "solution.csv").read_bytes())
    code, _ = srv.state.create("abuser", tok, "abuse")
    note("create_ok", code, {200})
    note("put_after_submit", raw(port, request("PUT", f"/upload/{tok}", b"RowId,Location\n1,0\n")), {409})
    note("create_twice", raw(port, api("CreateSubmission", {"competitionName": SLUG, "blobFileTokens": tok})), {409})

    # stalled clients (connect, send half a request, say nothing more) are dropped after the client timeout
    socks = []
    for _ in range(stalled):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)

    # many concurrent clients: every one gets an answer, 200 or 503 (over the limit), none hangs
    codes: list[int | None] = [None] * clients
    health = request("GET", "/health")

    def one(i: int):
        codes[i] = raw(port, health if i % 2 else api("ListSubmissions", {"competitionName": SLUG}), timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    overflows = listen_overflows()
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tally["concurrent_seconds"] = round(time.monotonic() - t0, 2)
    if overflows is not None:
        tally["listen_overflows"] = listen_overflows() - overflows
        if tally["listen_overflows"]:
            wrong.append(f"the listen queue overflowed {tally['listen_overflows']} times during the burst "
                         f"(clients left in SYN retries instead of an answer)")
    for i, c in enumerate(codes):
        note(f"concurrent_{i}", c, {200, 503})
    tally["concurrent_503"] = sum(c == 503 for c in codes)

    t0 = time.monotonic()
    for s in socks:
        try:
            got = s.recv(100)  # b"" once the server drops the connection, or a 408/400 answer
        except OSError:
            got = b""
        tally["thrown"] += 1
        tally["answered"] += 1
        if got and not got.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")):
            wrong.append(f"stalled client got {got[:30]!r}")
        s.close()
    tally["stalled_dropped_after_s"] = round(time.monotonic() - t0, 1)

    note("alive_after", raw(port, health), {200})
    after = json.dumps(srv.state.store.list_submissions("alice"), sort_keys=True)
    if after != before:
        wrong.append("alice's submissions changed during the abuse")
    integrity = srv.state.store.db.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        wrong.append(f"server database: {integrity}")
    if srv.errors:
        wrong.append(f"{srv.errors} requests crashed their handler")
    if srv.server_address[0] != "127.0.0.1":
        wrong.append(f"bound to {srv.server_address[0]}, not loopback")
    tally["handler_crashes"] = srv.errors
    tally["lost"] = len(wrong)
    return {"tally": dict(tally), "wrong": wrong}
