"""Keypoint geometry as pure functions over arrays.

Coordinates are in pixels, x to the right and y down. A horizontal flip maps x to `c - x` where the flip
constant `c` is a property of the data set's labels, measured, not assumed: a mirror of the image about its
centre would give 95 (= W - 1) for labels at pixel centres or 96 (= W) for pixel edges, but real annotations
sit off that: on ytf15 the labels flip about 97.5 out of fold. fkd keeps two fields: `flip_const`, the
constant training's flip augmentation uses (97 in the default preset, 96 for the practice faces), and
`tta_flip_const`, the one flip TTA un-flips with, fitted out of fold by every run (0 = fitted).

    >>> import numpy as np
    >>> k = np.arange(30, dtype=np.float32)[None]
    >>> bool(np.allclose(flip_keypoints(flip_keypoints(k, 95.0), 95.0), k))
    True
"""
from __future__ import annotations

import numpy as np

from .competition import COMP

FLIP_PERM = np.array(COMP.flip_perm)  # (15,) new keypoint i takes old keypoint FLIP_PERM[i]


def flip_keypoints(kp: np.ndarray, flip_const: float) -> np.ndarray:
    """Mirror keypoints (..., 30) laid out x0, y0, x1, y1...: x -> c - x, then swap left/right. NaN stays NaN."""
    k = kp.reshape(*kp.shape[:-1], -1, 2)[..., FLIP_PERM, :].copy()  # (..., 15, 2)
    k[..., 0] = flip_const - k[..., 0]
    return k.reshape(kp.shape)


def flip_keypoints_torch(kp, flip_const: float):
    """flip_keypoints for a torch tensor (B, 30)."""
    import torch

    perm = torch.as_tensor(FLIP_PERM, device=kp.device)
    k = kp.reshape(kp.shape[0], -1, 2)[:, perm, :]
    k = torch.stack([flip_const - k[..., 0], k[..., 1]], dim=-1)
    return k.reshape(kp.shape)
