"""Heatmap heads decoded by soft-argmax (integral regression): one map per keypoint, its expected position.

    >>> soft_argmax(torch.zeros(1, 15, 24, 24), stride=4).shape
    torch.Size([1, 15, 2])
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ....competition import COMP
from ...losses import HALF
from ..model import N_OUT


def soft_argmax(logits: torch.Tensor, stride: float) -> torch.Tensor:
    """(B, K, H, W) heatmap logits -> (B, K, 2) expected (x, y), normalised like the targets; fp32 throughout
    (bf16 spacing near 96 px is 0.5 px). Cell i covers pixels [i*stride, (i+1)*stride), so its centre sits
    at (i + 0.5) * stride - 0.5 in pixel-index coordinates: the same convention encodes and decodes."""
    b, k, h, w = logits.shape
    p = torch.softmax(logits.float().flatten(2), -1).view(b, k, h, w)
    ys = ((torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5) * stride - 0.5 - HALF) / HALF
    xs = ((torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5) * stride - 0.5 - HALF) / HALF
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


class SoftArgmaxHead(nn.Module):
    """Heatmap head: 1x1 conv -> one heatmap per keypoint (and source) -> soft-argmax -> coordinates."""

    def __init__(self, in_ch: int, stride: int, n_sets: int, dropout: float):
        super().__init__()
        self.stride, self.n_sets = stride, n_sets
        self.drop = nn.Dropout2d(dropout)
        self.conv = nn.Sequential(nn.Conv2d(in_ch, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                  nn.Conv2d(128, n_sets * len(COMP.keypoints), 1))
        self.beta = nn.Parameter(torch.tensor(1.0))

    def forward(self, f):
        h = self.conv(self.drop(f))                                     # (B, S*15, H, W)
        return soft_argmax(h * self.beta, COMP.image_size // h.shape[-1]).flatten(1)   # (B, S*30) x0, y0, x1...


class FPNHeatmapHead(nn.Module):
    """Heatmaps at stride 4 over the backbone's multi-scale features, decoded by soft-argmax (integral regression).

    An FPN-style decoder: 1x1 laterals to `width` channels on every feature map of stride >= 4, top-down
    nearest upsampling and sums down to stride 4 (24x24 at 96 px), a 3x3 conv + BN + ReLU, then one heatmap per
    keypoint (and source). The loss is the run's loss on the decoded coordinates (masked, per labelled value),
    so a missing keypoint's map gets no gradient. A per-keypoint offset, set to the mean keypoints' distance
    from the map's centre by init_output, lets training start where the mean face is.
    """

    runs_in_autocast = True

    def __init__(self, channels: list[int], reductions: list[int], n_sets: int, dropout: float, width: int = 64):
        super().__init__()
        self.idx = [i for i, r in enumerate(reductions) if r >= 4]
        self.stride = reductions[self.idx[0]]
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], width, 1) for i in self.idx)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.drop = nn.Dropout2d(dropout)
        self.out = nn.Conv2d(width, n_sets * len(COMP.keypoints), 1)
        self.offset = nn.Parameter(torch.zeros(n_sets * N_OUT))

    def forward(self, feats):
        fs = [feats[i] for i in self.idx]
        x = self.lateral[-1](fs[-1])
        for lat, f in zip(list(self.lateral)[-2::-1], fs[-2::-1]):          # coarse to fine
            x = F.interpolate(x, size=f.shape[-2:], mode="nearest") + lat(f)
        h = self.out(self.drop(self.smooth(x)))                             # (B, S*15, 24, 24)
        with torch.autocast(h.device.type, enabled=False):
            return soft_argmax(h, self.stride).flatten(1) + self.offset     # (B, S*30) x0, y0, x1, ...

    def init_output(self, mean: torch.Tensor) -> None:
        self.offset.copy_(mean.reshape(-1).to(self.offset))               # the map's centre is 0 (normalised)


class LastFeature(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)[-1]
