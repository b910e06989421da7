"""Keypoint-aware augmentation: albumentations for the photometric and affine part, fkd's own flip.

The horizontal flip is fkd's pure function (fkd.keypoints.flip_keypoints): it mirrors x with the run's
`flip_const` AND swaps left/right labels (albumentations 2.0.8 has no label mapping). Points stay 15 fixed
rows (NaN = missing) through every transform; a point pushed out of the image becomes NaN (masked), never
silently dropped. Each sample's randomness is seeded from (epoch seed, sample index), so an epoch is
reproducible whatever the number of loader workers, and a resumed run repeats it exactly.

    >>> aug = Augmenter(strength=1.0, flip_p=0.5, flip_const=95.0)
    >>> img, kp = aug(np.zeros((96, 96), np.uint8), np.full(30, 40.0, np.float32), seed=1)
"""
from __future__ import annotations

import random

import cv2
import numpy as np

from ..competition import COMP
from ..competition.keypoints import flip_keypoints

S = COMP.image_size


ROTATE_DEG, SCALE, SHIFT_PX = 18.0, 0.12, 7    # the affine ranges at strength 1 (the presets')


def build_pipeline(strength: float, rotate: float = ROTATE_DEG, scale: float = SCALE, cutout: float = 0.0):
    """Albumentations at `strength` (0 = off): affine (rotate degrees and scale fraction at strength 1), photometric,
    blur, noise, and with cutout > 0 CoarseDropout (1-3 holes of 8-20 px, that probability): keypoints under a
    hole stay labelled, so the model learns where an occluded point lies."""
    import albumentations as A

    s = float(strength)
    return A.Compose([
        # BORDER_REPLICATE, not REFLECT: with reflection albumentations adds mirrored copies of the keypoints
        A.Affine(rotate=(-rotate * s, rotate * s), scale=(1 - scale * s, 1 + scale * s),
                 translate_px=(-int(SHIFT_PX * s), int(SHIFT_PX * s)), border_mode=cv2.BORDER_REPLICATE,
                 p=min(1.0, 0.9 * s)),
        A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=min(1.0, 0.6 * s)),
        A.RandomGamma(gamma_limit=(100 - 20 * s, 100 + 20 * s), p=min(1.0, 0.2 * s)),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=min(1.0, 0.15 * s)),
        A.GaussNoise(std_range=(0.01, 0.04 * s + 0.01), p=min(1.0, 0.2 * s)),
        *([A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(8, 20), hole_width_range=(8, 20),
                           fill="random_uniform", p=cutout)] if cutout > 0 else []),
    ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


class Augmenter:
    def __init__(self, strength: float, flip_p: float, flip_const: float, rotate: float = ROTATE_DEG,
                 scale: float = SCALE, cutout: float = 0.0):
        self.strength, self.flip_p, self.flip_const = strength, flip_p, flip_const
        self.pipeline = build_pipeline(strength, rotate, scale, cutout) if strength > 0 or cutout > 0 else None

    @classmethod
    def of(cls, cfg, epoch: int | None = None) -> "Augmenter":
        """The augmentation cfg asks for at this epoch: aug_end's strength over the last quarter of the epochs
        where it is set (>= 0), cfg.aug before."""
        late = epoch is not None and cfg.aug_end >= 0 and epoch >= cfg.epochs - max(1, round(cfg.epochs / 4))
        return cls(cfg.aug_end if late else cfg.aug, cfg.flip_p, cfg.flip_const, cfg.rotate, cfg.scale,
                   cfg.cutout)

    def __call__(self, image: np.ndarray, kp: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """image (96, 96) uint8, kp (30,) float32 NaN = missing -> augmented copies. kp may also be (k, 30):
        k label sets of the same face (real and teacher labels), moved by the same transform."""
        rng = np.random.default_rng(seed)
        kp = kp.astype(np.float32)
        if rng.random() < self.flip_p:
            image = np.ascontiguousarray(image[:, ::-1])  # pixel x -> 95 - x
            kp = flip_keypoints(kp, self.flip_const)
        if self.pipeline is not None:
            # one generator pair shared by every transform (albumentations' set_random_state), not a pair per
            # transform (set_random_seed): the same per-sample reproducibility at about a sixth of the seeding cost
            s = int(rng.integers(2**31))
            self.pipeline.set_random_state(np.random.default_rng(s), random.Random(s))
            pts = np.clip(kp.reshape(-1, 2), 0, S - 1e-3)  # albumentations refuses x == 96.0 exactly
            out = self.pipeline(image=image, keypoints=pts)
            image = out["image"]
            k = np.asarray(out["keypoints"], np.float32).reshape(len(pts), -1)[:, :2].copy()
            k[~np.isfinite(kp.reshape(-1, 2)).all(1)] = np.nan
            kp = k.reshape(kp.shape)
        outside = (kp < 0) | (kp >= S)
        kp = kp.copy()
        kp.reshape(-1, 2)[outside.reshape(-1, 2).any(1)] = np.nan  # left the image: masked, not dropped
        return image, kp
