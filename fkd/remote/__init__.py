"""Kaggle's GPUs as fkd's second machine: a run becomes a kernel, pushed once, polled, its outputs brought back.

    kernel.py   the script that runs in the kernel (standard library only until it unpacks fkd)
    build.py    config -> kernel folder (kernel-metadata.json + that script with the config and fkd's code)
    run.py      push exactly once, poll, fetch and check the outputs, the kernel's submission written here

    $ make submit REMOTE=kaggle            # fkd submit --remote kaggle; fkd train --remote kaggle
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

ACCELERATORS = ("NvidiaTeslaT4", "NvidiaL4", "NvidiaTeslaA100", "NvidiaH100", "NvidiaRtxPro6000")
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"          # Kaggle's default GPU session: two T4s


@dataclass(frozen=True)
class Remote:
    """Train in a Kaggle kernel instead of here: on which accelerator, the checkpoints brought back or not."""

    accelerator: str = DEFAULT_ACCELERATOR
    checkpoints: bool = False

    @staticmethod
    def add_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--remote", choices=["kaggle"], help="train in a Kaggle kernel on its GPUs (pushed once, "
                                                            "polled, its outputs brought back into runs/<name>/)")
        p.add_argument("--accelerator", choices=ACCELERATORS, default=DEFAULT_ACCELERATOR,
                       help="the kernel's accelerator (default: two T4s)")
        p.add_argument("--checkpoints", action="store_true", help="with --remote: bring the checkpoints back too")

    @classmethod
    def from_args(cls, a) -> "Remote | None":
        """--remote kaggle: where and how the kernel trains; None: here."""
        return cls(a.accelerator, a.checkpoints) if getattr(a, "remote", None) else None
