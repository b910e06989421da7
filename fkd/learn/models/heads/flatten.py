"""Coordinate heads on the backbone's final map: flatten it (keeping the 3x3 layout) or pool it away.

    >>> FlattenHead(512 * 9, n_sets=2, dropout=0.1)      # doctest: +ELLIPSIS
    FlattenHead(...)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..model import N_OUT


class FlattenHead(nn.Module):
    """Keep the spatial map (3x3 at 96 px): flatten -> dropout -> linear."""

    def __init__(self, in_features: int, n_sets: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, n_sets * N_OUT)

    def forward(self, f):
        return self.fc(self.drop(f.flatten(1)))

    def init_output(self, mean: torch.Tensor) -> None:
        self.fc.weight.zero_()  # the net starts as the mean keypoint; the body learns from step 2
        self.fc.bias.copy_(mean.reshape(-1).to(self.fc.bias))


class PoolHead(FlattenHead):
    """timm's default global-average pool, kept only to measure what it throws away."""

    def forward(self, f):
        return self.fc(self.drop(f.mean((2, 3))))
