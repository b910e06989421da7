"""Optimisers by name: the `optimizer` config field picks one; weight decay only on weights, never on norms and biases.

    >>> opt = make_optimizer(cfg, model)          # doctest: +SKIP
"""
from __future__ import annotations

import torch

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,   # decoupled weight decay (the presets')
    "adam": torch.optim.Adam,     # the reference project's
}


def make_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """cfg.optimizer over the model's parameters: matrices and kernels decay by cfg.weight_decay, vectors do not."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return OPTIMIZERS[cfg.optimizer]([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
