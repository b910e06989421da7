"""The competition, as described by competition/facial-keypoints-detection.yaml, and its two annotation sources.

    >>> from fkd.competition import COMP
    >>> COMP.slug, len(COMP.columns), COMP.flip_perm[:4]
    ('facial-keypoints-detection', 30, [1, 0, 4, 5])
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]   # the repository: fkd/competition/spec.py -> .
COMPETITION_FILE = Path(os.environ.get("FKD_COMPETITION", ROOT / "competition" / "facial-keypoints-detection.yaml"))


@dataclass(frozen=True)
class Competition:
    slug: str
    url: str
    image_size: int
    daily_submissions: int
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[str, str], ...]
    common: tuple[str, ...]
    files: dict
    public_fraction: float
    split_seed: int
    data_dir: str
    title: str = ""
    category: str = ""
    reward: str = ""
    deadline: str = ""
    pages: tuple[tuple[str, str], ...] = ()   # (name, markdown text) of the overview, evaluation, rules pages

    @cached_property
    def columns(self) -> list[str]:
        """The 30 label columns in file order: <kp>_x, <kp>_y, ..."""
        return [f"{k}_{a}" for k in self.keypoints for a in ("x", "y")]

    @cached_property
    def common_columns(self) -> list[str]:
        return [f"{k}_{a}" for k in self.common for a in ("x", "y")]

    @cached_property
    def common_mask(self) -> "list[bool]":
        """(30,) True for the 8 columns both annotation sources label."""
        cc = set(self.common_columns)
        return [c in cc for c in self.columns]

    @cached_property
    def flip_perm(self) -> list[int]:
        """Keypoint permutation of a horizontal flip: new[i] = old[flip_perm[i]] (15 entries)."""
        idx = {k: i for i, k in enumerate(self.keypoints)}
        perm = list(range(len(self.keypoints)))
        for a, b in self.flip_pairs:
            perm[idx[a]], perm[idx[b]] = idx[b], idx[a]
        return perm

    @property
    def n_pixels(self) -> int:
        return self.image_size * self.image_size


def load_competition(path: Path = COMPETITION_FILE) -> Competition:
    d = yaml.safe_load(Path(path).read_text())
    kps = tuple(d["keypoints"])
    pairs = tuple(tuple(p) for p in d["flip_pairs"])
    for name in [n for p in pairs for n in p] + list(d["common"]):
        if name not in kps:
            raise ValueError(f"{path}: {name!r} is not one of the keypoints")
    return Competition(
        slug=d["slug"], url=d["url"], image_size=int(d["image_size"]),
        daily_submissions=int(d["daily_submissions"]), keypoints=kps, flip_pairs=pairs,
        common=tuple(d["common"]), files=dict(d["files"]),
        public_fraction=float(d["leaderboard"]["public_fraction"]),
        split_seed=int(d["leaderboard"]["split_seed"]), data_dir=d["data_dir"],
        title=d.get("title", d["slug"]), category=d.get("category", ""), reward=d.get("reward", ""),
        deadline=str(d.get("deadline", "")), pages=tuple((k, str(v)) for k, v in (d.get("pages") or {}).items()),
    )


COMP = load_competition()

PRACTICE_DIR = Path(COMP.data_dir) / "practice"   # where `make submit OFFLINE=1` writes the practice competition
FULL, COMMON = 1, 0  # annotation sources: fully labelled / the 8 common columns only
COMMON_MASK = np.array(COMP.common_mask)  # (30,) True for the columns both sources label


def row_source(keypoints: np.ndarray) -> np.ndarray:
    """FULL for rows with any label beyond the 8 common columns, else COMMON."""
    return np.where(np.isfinite(keypoints[:, ~COMMON_MASK]).any(1), FULL, COMMON).astype(np.int8)
