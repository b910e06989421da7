"""Folds are data: a `fold` column made once from a seed, saved as folds.csv beside every run.

    >>> make_folds(np.array([0, 0, 1, 1]), k=2, seed=0).tolist()   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import FkdError


def make_folds(source: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Deterministic K-fold ids (N,), stratified by annotation source: each source is dealt round-robin."""
    if k < 2:
        raise FkdError(f"folds must be at least 2, got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(source), np.int64)
    for s in np.unique(source):
        idx = np.flatnonzero(source == s)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def save_folds(path: Path, fold: np.ndarray, source: np.ndarray) -> Path:
    df = pd.DataFrame({"row": np.arange(len(fold)), "source": source, "fold": fold})
    return atomic.write_text(path, df.to_csv(index=False))
