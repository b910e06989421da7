"""Training faces for torch: per-sample seeded augmentation, and the loader of one epoch.

Every epoch's randomness (shuffle, augmentation) is seeded from (seed, fold, epoch), and each sample's from
(epoch seed, index), so an epoch is the same whatever the number of loader workers and a resumed run repeats it.

    >>> ds = FaceDataset(images, keypoints, source, Augmenter(1.0, 0.5, 97.0))   # doctest: +SKIP
    >>> loader = epoch_loader(ds, cfg, dev, epoch_seed(cfg, fold=0, epoch=3))     # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
import torch

from .augment import Augmenter


class FaceDataset(torch.utils.data.Dataset):
    """Training faces with per-sample seeded augmentation; yields uint8 image, keypoints (NaN = masked), source,
    and with teacher labels (N, 30) given, the sample's teacher labels moved by the same augmentation (learned at
    teacher_weight times the real labels' loss)."""

    def __init__(self, images, keypoints, source, aug: Augmenter | None, teacher: np.ndarray | None = None,
                 teacher_weight: float = 0.0):
        self.images, self.kp, self.source, self.aug, self.teacher = images, keypoints, source, aug, teacher
        self.teacher_weight = teacher_weight
        self.epoch_seed = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img, kp = self.images[i], self.kp[i]
        if self.teacher is not None:   # teacher labels (fkd/learn/teacher.py) move with the face: one transform
            kp = np.stack([kp, self.teacher[i]])
        if self.aug is not None:
            img, kp = self.aug(img, kp, seed=self.epoch_seed * 1_000_003 + i)
        item = torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(kp.astype(np.float32)), int(self.source[i])
        if self.teacher is not None:
            return item[0], item[1][0], item[2], item[1][1]
        return item


def _worker_init(_):
    import cv2
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def epoch_seed(cfg, fold: int, epoch: int) -> int:
    """The seed of one fold's epoch (-1: the fold's model initialisation)."""
    return (cfg.seed * 1_000_003 + fold * 10_007 + epoch) % (2**31)


def epoch_loader(ds: FaceDataset, cfg, dev: torch.device, seed: int, workers: int) -> torch.utils.data.DataLoader:
    """One epoch's shuffled batches; the augmentation and the order follow `seed`."""
    ds.epoch_seed = seed
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(ds) >= cfg.batch_size,
        num_workers=workers, worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(seed), pin_memory=dev.type == "cuda", persistent_workers=False)
