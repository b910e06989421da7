"""Processes fkd starts end with it: on Ctrl-C, on SIGTERM (as a supervisor or `kill` sends it), on a normal exit.

`spawn` starts a child and keeps it in a list; `main` turns SIGTERM into an orderly exit whose cleanup
terminates every child still running (SIGTERM, then SIGKILL after a grace period). Ctrl-C reaches the children
of a terminal's foreground group by itself; SIGTERM reaches only the process it is sent to, which is why the
children of `fkd dashboard` (optuna-dashboard) and of `fkd tune --workers N` kept running before.

    >>> p = spawn(["optuna-dashboard", url])        # doctest: +SKIP   ends when this process ends
"""
from __future__ import annotations

import atexit
import signal
import subprocess

GRACE_S = 5.0
_children: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    """subprocess.Popen(cmd, **kw), terminated when this process ends."""
    p = subprocess.Popen(cmd, **kw)
    _children.append(p)
    return p


def end_children() -> None:
    """Terminate every child still running; kill those that outlive the grace period."""
    for p in _children:
        if p.poll() is None:
            p.terminate()
    for p in _children:
        try:
            p.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _children.clear()


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)      # unwinds like Ctrl-C does: finally blocks and atexit run


def install() -> None:
    """SIGTERM ends this process in an orderly way, taking its children with it."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(end_children)
