"""The cores shared between the fkd processes training on this machine: a folder of one file per trainer.

torch offers `set_num_threads` but nothing that knows of other processes: two runs on 2 cores each taking both
ran ~10x slower (oversubscribed). A CPU trainer registers here and takes its share, re-checked every few steps.

    >>> register_trainer(); share_cores_now()      # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

import torch

from . import atomic

# one file per fkd process of this user training right now (per user: another user's folder is not writable)
TRAINERS = Path(tempfile.gettempdir()) / f"fkd-trainers-{os.getuid() if hasattr(os, 'getuid') else 0}"


def register_trainer() -> None:
    """Say that this process trains (until it exits), so that other fkd processes share the cores with it."""
    me = TRAINERS / f"{atomic.HOST}-{os.getpid()}"
    try:
        TRAINERS.mkdir(parents=True, exist_ok=True)
        if not me.exists():
            me.touch()
            atexit.register(me.unlink, missing_ok=True)
    except OSError as e:   # an unwritable temp folder costs the sharing, never the run; it is said once
        import sys
        print(f"note: cannot register this trainer in {TRAINERS} ({e.strerror}); it will not share the cores with "
              "other fkd runs", file=sys.stderr, flush=True)


def fair_threads(requested: int = 0) -> int:
    """torch threads for this process: `requested` if set, else this machine's cores split evenly between the
    fkd processes training on it now. Two fkd runs on 2 cores then take one core each instead of both taking
    both (oversubscribed, each ran about 10x slower). Trainers call it every SHARE_EVERY steps (share_cores_now), so
    a finished neighbour's core comes back and a new one gets its share within seconds."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    live = 0
    for f in TRAINERS.glob(f"{atomic.HOST}-*") if TRAINERS.is_dir() else []:
        try:
            pid = int(f.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if atomic.alive(pid):
            live += 1
        else:
            f.unlink(missing_ok=True)   # a killed trainer's file
    return max(1, cores // max(1, live))


SHARE_EVERY = 8   # training steps between looks at how many fkd runs share this CPU's cores


def share_cores_now() -> None:
    """Take this process's fair share of the cores (fair_threads) if it changed: a run that starts beside this one
    gets its core within a few steps instead of both oversubscribing the CPU (~4x slower) until an epoch ends."""
    n = fair_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
