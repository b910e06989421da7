"""Folds side by side, one process per GPU: what `fkd train` (and a Kaggle kernel's two T4s) does on a machine
with several GPUs.

Each worker is `fkd train` on the same run folder with a share of the unfinished folds and one GPU
(CUDA_VISIBLE_DEVICES); the run's config.yaml is already written (the budget resolved once), so every worker
trains exactly the run's recipe and the parent then reads the finished folds. FKD_PARALLEL_FOLDS=N asks for N
workers on any machine (on a CPU they share the cores): how the tests and the offline rehearsal exercise it.

    >>> train_side_by_side(cfg, run_dir, [0, 1, 2, 3], workers=2)     # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..children import spawn
from ..config import Config
from ..errors import FkdError

ENV = "FKD_PARALLEL_FOLDS"


def workers_for(cfg: Config) -> int:
    """How many fold processes this machine runs at once: FKD_PARALLEL_FOLDS, else its CUDA GPUs (1 on a CPU)."""
    if os.environ.get(ENV):
        return max(1, int(os.environ[ENV]))
    if cfg.device == "cpu" or cfg.deterministic:
        return 1
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def train_side_by_side(cfg: Config, run_dir: Path, todo: list[int], workers: int) -> None:
    """Train the folds in `todo` in `workers` processes at once (worker i: folds todo[i::workers], GPU i)."""
    gpus = workers if not os.environ.get(ENV) else 0
    procs = []
    for i in range(workers):
        share = todo[i::workers]
        if not share:
            continue
        cmd = [sys.executable, "-m", "fkd", "train", "--config", str(run_dir / "config.yaml"),
               "--set", f"train_folds={','.join(map(str, share))}", "--set", f"name={run_dir.name}",
               "--set", f"runs_dir={run_dir.parent}", "--set", f"data_dir={cfg.data_dir}", "--set", "refit=0"]
        env = {**os.environ, ENV: "1"} | ({"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {})
        print(f"folds {share} in a process of their own{f' on GPU {i}' if gpus else ''}", flush=True)
        procs.append((share, spawn(cmd, env=env)))
    failed = [share for share, p in procs if p.wait() != 0]
    if failed:
        raise FkdError(f"{run_dir}: the process training folds {failed} failed (its output is above); rerun the "
                       "same command to resume")
