"""Learning-rate schedules as pure `step -> multiplier` functions, one registry, and the torch scheduler for a Config.

    >>> sched_onecycle(0, 100, 0.1), round(sched_onecycle(100, 100, 0.1), 3)
    (0.04, 0.001)
"""
from __future__ import annotations

import math
from typing import Callable


def sched_onecycle(step: int, total: int, warmup: float) -> float:
    """Linear warm-up from 1/25 to 1 over `warmup` of training, then cosine down to 1e-3."""
    w = max(1, int(total * max(warmup, 0.01)))
    if step < w:
        return 0.04 + 0.96 * step / w
    t = min(1.0, (step - w) / max(1, total - w))
    return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * t))


def sched_cosine(step: int, total: int, warmup: float) -> float:
    """Linear warm-up from 0 over `warmup` of training, then cosine down to 1e-2."""
    w = int(total * warmup)
    if step < w:
        return (step + 1) / (w + 1)
    t = min(1.0, (step - w) / max(1, total - w))
    return 1e-2 + (1 - 1e-2) * 0.5 * (1 + math.cos(math.pi * t))


def sched_constant(step: int, total: int, warmup: float) -> float:
    return 1.0


# plateau: the reference's ReduceLROnPlateau(factor 0.5, patience 3) on validation RMSE, stepped per epoch
SCHEDULERS: dict[str, Callable[[int, int, float], float] | None] = {
    "onecycle": sched_onecycle, "cosine": sched_cosine, "constant": sched_constant, "plateau": None,
}


def make_scheduler(cfg, opt, total_steps: int):
    """The torch scheduler of cfg.scheduler: a LambdaLR over the pure function, or ReduceLROnPlateau."""
    import torch

    fn = SCHEDULERS[cfg.scheduler]
    if fn is None:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=3)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: fn(s, total_steps, cfg.warmup))
