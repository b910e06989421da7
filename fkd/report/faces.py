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


def duplicates_report(d: CompetitionData, z: float, out: Path, n_groups: int = 6) -> tuple[str, Path | None]:
    """What `fkd data` says of recurring faces: identical images (and those whose labels disagree), near-duplicate
    groups (at the twin threshold of the default folds) and their sizes; a PNG of the largest groups."""
    from ..competition.folds import duplicate_groups

    g = duplicate_groups(d.images, d.keypoints, z)
    sizes = g.sizes
    hist = np.bincount(np.minimum(sizes, 10))[1:]
    lines = [f"identical images  {sum(len(s) for s in g.exact):,} rows in {len(g.exact):,} sets"
             + (f"; {len(g.conflicting):,} set(s) labelled differently (rows "
                + ", ".join("/".join(map(str, s[:4])) for s in g.conflicting[:5])
                + (", ..." if len(g.conflicting) > 5 else "") + "): --set dup_labels=keep|average|drop decides"
                if g.conflicting else ""),
             f"near duplicates   {len(sizes):,} groups (twins: an eye-aligned, band-passed likeness {z:g} std. "
             f"deviations above both faces' own); {int((sizes > 1).sum()):,} groups of 2+ hold "
             f"{int(sizes[sizes > 1].sum()):,} rows; "
             f"largest {int(sizes.max())}",
             "group sizes       " + ", ".join(f"{k}{'+' if k == 10 else ''}: {v:,}"
                                             for k, v in enumerate(hist, 1) if v)]
    big = np.argsort(-sizes)[:n_groups]
    big = [b for b in big if sizes[b] > 1]
    if not big:
        return "\n".join(lines), None
    rows = [np.flatnonzero(g.group == b)[:4] for b in big]
    idx = np.concatenate(rows)
    titles = [f"group {i} ({sizes[b]} faces): row {r}" for i, (b, rr) in enumerate(zip(big, rows)) for r in rr]
    return "\n".join(lines), face_grid(d.images[idx], [(d.keypoints[idx], "lime", "o")], titles, out, cols=4)
