"""Training faces drawn with their keypoints: the preview `fkd data` writes.

    >>> preview(load_data("competition/data/practice"), Path("preview.png"))   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..competition import FULL
from ..competition.data import CompetitionData
from ..plots import face_grid


def preview(d: CompetitionData, out: Path, n: int = 16, seed: int = 0) -> Path:
    """PNG grid of training faces with their keypoints (full source in green, common-only in orange)."""
    idx = np.sort(np.random.default_rng(seed).choice(len(d.images), size=min(n, len(d.images)), replace=False))
    src = ["full" if d.source[i] == FULL else "common" for i in idx]
    colours = ["lime" if s == "full" else "orange" for s in src]
    return face_grid(d.images[idx], [(d.keypoints[idx], colours, "o")],
                     [f"row {i} ({s})" for i, s in zip(idx, src)], out)
