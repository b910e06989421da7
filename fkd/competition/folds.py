"""Folds are data: a `fold` column made once from a seed, saved as folds.csv beside every run.

The training files hold several frames of one person, nearly identical. Folds made from random rows put such
twins on both sides and flatter the CV, so by default (`folds_by=groups`) near-duplicate faces are grouped and
a group never straddles two folds:

1. exact duplicates: the same pixels (a hash of each image);
2. near duplicates: each face is aligned by its labelled eye centres (a similarity transform that puts them at
   fixed points of a 48x48 crop) and band-pass filtered (a difference of Gaussians, sigma 1 and 3 px: identity
   detail, not lighting); two faces are compared by normalised correlation, and a pair is a twin when its
   correlation stands out for both faces: more than `group_z` standard deviations above each face's mean
   correlation with all the others (a likeness measured against each face's own background, so that a data set
   of faces that are all alike, like the practice faces, does not chain into one group), or when it is higher
   than two different faces ever reached (SAME_FRAME: another frame of the same shot);
3. groups are the connected components of those pairs (union-find over a sparse graph: scipy);
4. folds come from the groups, stratified by annotation source (scikit-learn's StratifiedGroupKFold).

Why these choices, measured on ytf15 (whose test people never appear in training, so test-to-training pairs
are known to be different people; `benchmarks/near_duplicates.py`): at the likeness that 1 % of different
people reach, the band-passed crop finds a twin for 60 % of the training faces where the raw crop finds 36 %
and an unaligned thumbnail 15 %. A fixed correlation threshold chains: at 0.65 one group held 166 ytf15 faces
and 1,661 of 2,000 practice faces. Measured against each face's background, at `group_z` 4 the largest ytf15
group holds 19 faces, the practice faces stay apart, and the validation faces of grouped folds are as unlike
their training faces as the test's new people are (median nearest-face correlation 0.546 against 0.551; random
row folds: 0.691).

    >>> groups = duplicate_groups(data.images, data.keypoints, z=4.0)               # doctest: +SKIP
    >>> folds = make_folds(data.source, k=4, seed=42, groups=groups.group)          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import FkdError

CROP = 48                       # aligned face crop, pixels
EYE_ROW, EYE_LEFT_COL, EYE_SEP = 0.35, 0.30, 0.40   # the eye centres' place in the crop (fractions of CROP)
DOG_SIGMAS = (1.0, 3.0)         # the band-pass: identity detail kept, lighting and blur dropped
BLOCK = 2048                    # rows compared at once (a BLOCK x N similarity block in memory)
SAME_FRAME = 0.95               # a correlation no two different faces reached (ytf15's different people at most
                                # 0.725, the practice faces, all drawn alike, 0.942): always a twin
LEFT_EYE, RIGHT_EYE = slice(0, 2), slice(2, 4)       # left_eye_center (x, y), right_eye_center (x, y) columns


# ------------------------------------------------------------------------------------------ embeddings
def align_faces(images: np.ndarray, keypoints: np.ndarray, size: int = CROP) -> np.ndarray:
    """(N, size, size) float32 crops with both eye centres at fixed points. A row without both eye centres is
    placed by the mean eye positions (its crop is then only rescaled)."""
    import cv2

    left, right = keypoints[:, LEFT_EYE].astype(np.float64), keypoints[:, RIGHT_EYE].astype(np.float64)
    ok = np.isfinite(left).all(1) & np.isfinite(right).all(1)
    if ok.any():
        left[~ok], right[~ok] = left[ok].mean(0), right[ok].mean(0)
    else:
        left[:], right[:] = (64.0, 38.0), (32.0, 38.0)
    # the subject's right eye appears on the image's left: it goes to the crop's left point
    dst_r = np.array([EYE_LEFT_COL * size, EYE_ROW * size])
    dst_l = dst_r + [EYE_SEP * size, 0.0]
    out = np.empty((len(images), size, size), np.float32)
    for i in range(len(images)):
        m = _similarity(right[i], left[i], dst_r, dst_l)
        out[i] = cv2.warpAffine(images[i].astype(np.float32), m, (size, size), flags=cv2.INTER_AREA,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def _similarity(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, scale, shift) that maps points a, b to a2, b2."""
    src, dst = complex(*(b - a)), complex(*(b2 - a2))
    z = dst / src if abs(src) > 1e-6 else 1.0 + 0j
    t = complex(*a2) - z * complex(*a)
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]], np.float32)


def face_embeddings(images: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(N, CROP * CROP) unit vectors: eye-aligned, band-passed, zero-mean crops; their dot product is the
    normalised correlation of two faces."""
    import cv2

    crops = align_faces(images, keypoints)
    s1, s2 = DOG_SIGMAS
    x = np.stack([cv2.GaussianBlur(c, (0, 0), s1) - cv2.GaussianBlur(c, (0, 0), s2) for c in crops])
    x = x.reshape(len(x), -1)
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    return x.astype(np.float32)


def nearest_other(emb: np.ndarray, others: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """(N,) each row's highest similarity to a row of `others` (M, D); `exclude` (N, M) bool masks pairs out."""
    out = np.empty(len(emb), np.float32)
    for i in range(0, len(emb), BLOCK):
        sim = emb[i:i + BLOCK] @ others.T
        if exclude is not None:
            sim[exclude[i:i + BLOCK]] = -1.0
        out[i:i + BLOCK] = sim.max(1) if sim.shape[1] else -1.0
    return out


def background(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each face's correlation with every other face: the likeness a twin must stand out from."""
    n = len(emb)
    total, squares = np.zeros(n), np.zeros(n)
    self_sim = (emb.astype(np.float64) ** 2).sum(1)
    for i in range(0, n, BLOCK):
        sim = (emb[i:i + BLOCK] @ emb.T).astype(np.float64)
        total[i:i + BLOCK], squares[i:i + BLOCK] = sim.sum(1), (sim ** 2).sum(1)
    mean = (total - self_sim) / max(n - 1, 1)
    var = (squares - self_sim ** 2) / max(n - 1, 1) - mean ** 2
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)


def twins(emb: np.ndarray, rows: np.ndarray, cols: np.ndarray, z: float, bg) -> np.ndarray:
    """(len(rows), len(cols)) bool: the pairs that are twins. Their correlation stands out by more than z standard
    deviations for both faces, or it is higher than any two different faces reached (SAME_FRAME)."""
    mean, std = bg
    sim = emb[rows] @ emb[cols].T
    standout = np.minimum((sim - mean[rows, None]) / std[rows, None], (sim - mean[None, cols]) / std[None, cols])
    return (standout > z) | (sim > SAME_FRAME)


# ------------------------------------------------------------------------------------------------ groups
@dataclass
class Groups:
    """Near-duplicate groups of the training rows."""

    group: np.ndarray           # (N,) group id of each row (0..n_groups-1)
    exact: list[np.ndarray]     # row indices of each set of identical images (2+ rows)
    conflicting: list[np.ndarray]   # those sets whose labels disagree (a labelled value differs by > 0.5 px)
    z: float                    # the twin threshold they were made with

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.group)


def exact_duplicates(images: np.ndarray) -> list[np.ndarray]:
    """Sets of rows (2+) whose images are identical, pixel for pixel."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    _, inverse, counts = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_inverse=True,
                                   return_counts=True)
    return [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]


def labels_disagree(keypoints: np.ndarray, rows: np.ndarray, tol: float = 0.5) -> bool:
    """Whether rows of one image label any value differently (by more than tol pixels)."""
    k = keypoints[rows]
    both = np.isfinite(k).sum(0) >= 2                     # values labelled by at least two of the rows
    if not both.any():
        return False
    k = k[:, both]
    finite = np.isfinite(k)
    return bool((k.max(0, initial=-np.inf, where=finite) - k.min(0, initial=np.inf, where=finite)).max() > tol)


def twin_pairs(emb: np.ndarray, z: float, bg=None) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) that are twins: their correlation stands out by more than z for both."""
    bg = background(emb) if bg is None else bg
    n, everyone = len(emb), np.arange(len(emb))
    rows, cols = [], []
    for i in range(0, n, BLOCK):
        r, c = np.nonzero(twins(emb, everyone[i:i + BLOCK], everyone, z, bg))
        keep = r + i < c                         # each pair once, no self-pairs
        rows.append(r[keep] + i)
        cols.append(c[keep])
    return np.concatenate(rows), np.concatenate(cols)


def duplicate_groups(images: np.ndarray, keypoints: np.ndarray, z: float, emb: np.ndarray | None = None) -> Groups:
    """Exact and near-duplicate faces joined into groups (connected components of the twin pairs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(images)
    exact = exact_duplicates(images)
    r, c = twin_pairs(face_embeddings(images, keypoints) if emb is None else emb, z)
    r = np.concatenate([r, *[np.full(len(s) - 1, s[0]) for s in exact]])
    c = np.concatenate([c, *[s[1:] for s in exact]])
    _, group = connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)), directed=False)
    return Groups(group.astype(np.int64), exact, [s for s in exact if labels_disagree(keypoints, s)], z)


def near_twin_share(emb: np.ndarray, folds: np.ndarray, z: float, which=None) -> float:
    """The share of validation rows (of the folds in `which`) with a twin among the training rows of their own
    fold (the same rule as the groups'): what a random-row split leaks."""
    bg = background(emb)
    found = []
    for k in (np.unique(folds) if which is None else which):
        va, tr = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        for i in range(0, len(va), BLOCK):
            found.append(twins(emb, va[i:i + BLOCK], tr, z, bg).any(1))
    return float(np.mean(np.concatenate(found))) if found else float("nan")


# ------------------------------------------------------------------------------------------------- folds
def make_folds(source: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Deterministic K-fold ids (N,), stratified by annotation source. Without groups each source is dealt
    round-robin over shuffled rows; with groups, whole groups go to folds (StratifiedGroupKFold)."""
    if k < 2:
        raise FkdError(f"folds must be at least 2, got {k}")
    if groups is None:
        rng = np.random.default_rng(seed)
        fold = np.empty(len(source), np.int64)
        for s in np.unique(source):
            idx = np.flatnonzero(source == s)
            fold[rng.permutation(idx)] = np.arange(len(idx)) % k
        return fold
    n_groups, largest = len(np.unique(groups)), int(np.bincount(groups).max())
    if n_groups < k:
        raise FkdError(f"the training faces form {n_groups} near-duplicate group(s), fewer than the {k} folds asked "
                       "for; use fewer folds (--set folds=...) or split by rows (--set folds_by=rows)")
    if largest > len(groups) / k:
        raise FkdError(f"one near-duplicate group holds {largest} of {len(groups)} faces, more than a fold; raise "
                       "the twin threshold (--set group_z=5) or split by rows (--set folds_by=rows)")
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.empty(len(source), np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % (2**32))
    for f, (_, va) in enumerate(splitter.split(np.zeros(len(source)), source, groups)):
        fold[va] = f
    return fold


def save_folds(path: Path, fold: np.ndarray, source: np.ndarray, group: np.ndarray | None = None) -> Path:
    """folds.csv: row, source, fold (and group: the near-duplicate group of the row, -1 for row folds)."""
    df = pd.DataFrame({"row": np.arange(len(fold)), "source": source, "fold": fold,
                       "group": group if group is not None else np.full(len(fold), -1)})
    return atomic.write_text(path, df.to_csv(index=False))
