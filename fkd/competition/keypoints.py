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

from .spec import COMP

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


# ------------------------------------------------------------------- flip test-time augmentation
def tta_average(plain, mirrored, flip_const: float):
    """Flip TTA: the mean of a prediction and the un-flipped prediction of the mirrored face; numpy arrays
    (..., 30) or torch tensors (B, 30) alike (prediction averages on the device, CV on the saved arrays)."""
    unflip = flip_keypoints(mirrored, flip_const) if isinstance(mirrored, np.ndarray) else \
        flip_keypoints_torch(mirrored, flip_const)
    return (plain + unflip) / 2


def fit_tta_flip_const(tta_pred: np.ndarray, target: np.ndarray, c_used: float) -> float:
    """The TTA flip constant that minimises out-of-fold RMSE, in closed form.

    TTA(c) = (p + c - p_mirrored) / 2 in x, so TTA(c) = TTA(c_used) + (c - c_used) / 2 and the least-squares
    c is c_used + 2 * mean(x_true - TTA_x). It moves only partly with the training constant (ytf15, fold 0:
    training with 96 / 97 / 98 gave 97.42 / 97.63 / 97.71), so it also hints at the data's own convention: when it
    lies far from the training constant, training with a constant nearer to it is worth a try (format_cv says so).
    """
    x_t, x_p = target[..., 0::2], tta_pred[..., 0::2]
    m = np.isfinite(x_t) & np.isfinite(x_p)
    if not m.any():
        return float(c_used)
    return float(np.clip(c_used + 2 * np.mean(x_t[m] - x_p[m]), c_used - 3, c_used + 3))


# --------------------------------------------------------------------- more views: small shifts, zooms, turns
CENTRE = (COMP.image_size - 1) / 2     # zooms turn about the image's centre in pixel-index coordinates (47.5)


def view_matrices(shift: float, scale: float, rotate: float = 0.0) -> list[np.ndarray]:
    """2x3 affine maps of the extra TTA views: shifts by +-shift px along x and y, zooms by 1 +- scale and
    rotations by +-rotate degrees about the centre (a view is left out where its amount is 0). Each comes with its
    opposite, so a small error in where the labels' centre lies cancels to first order."""
    mats = []
    for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)) if shift else ():
        mats.append(np.array([[1, 0, dx], [0, 1, dy]], np.float32))
    for s in (1 + scale, 1 - scale) if scale else ():
        mats.append(np.array([[s, 0, (1 - s) * CENTRE], [0, s, (1 - s) * CENTRE]], np.float32))
    for deg in (rotate, -rotate) if rotate else ():
        c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
        a = np.array([[c, -s], [s, c]])
        mats.append(np.hstack([a, (CENTRE - a @ (CENTRE, CENTRE))[:, None]]).astype(np.float32))
    return mats


def views_of(cfg) -> list[np.ndarray]:
    """The extra TTA views a config asks for (its tta_shift, tta_scale and tta_rotate fields)."""
    return view_matrices(cfg.tta_shift, cfg.tta_scale, cfg.tta_rotate)


def unview(pred: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Keypoints (N, 30) predicted on a view made by the affine map m (x' = A x + t), back in the image's
    coordinates: x = A^-1 (x' - t)."""
    k = pred.reshape(len(pred), -1, 2).astype(np.float64)
    back = (k - m[:, 2]) @ np.linalg.inv(m[:, :2].astype(np.float64)).T
    return back.reshape(pred.shape).astype(pred.dtype)


def view_weight(flip_tta: np.ndarray, views_tta: np.ndarray, target: np.ndarray) -> float:
    """The weight w in [0, 1] of the extra views that minimises out-of-fold RMSE of (1 - w) flip + w views, in
    closed form (least squares over the labelled values)."""
    m = np.isfinite(target) & np.isfinite(flip_tta) & np.isfinite(views_tta)
    d, r = (views_tta - flip_tta)[m], (target - flip_tta)[m]
    return float(np.clip((d @ r) / max(d @ d, 1e-12), 0.0, 1.0)) if m.any() else 0.0
