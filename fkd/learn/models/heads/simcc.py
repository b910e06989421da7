"""SimCC (RTMPose): x and y each classified over bins finer than a pixel, decoded by expectation.

    >>> head = SimCCHead(in_ch=8, hw=9, n_sets=1, dropout=0.0, split=2, sigma=1.5)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ....competition import COMP
from ...losses import HALF


class SimCCHead(nn.Module):
    """SimCC (RTMPose): x and y each classified over bins finer than a pixel, decoded by expectation.

    A 1x1 conv gives every keypoint (and source) `dim` channels of the final map; each keypoint's
    dim x H x W values go through a shared MLP to `hidden` features and two shared linear layers to
    `split` x 96 bins for x and for y (192 at split 2): ~0.7 M parameters where one linear layer from the
    flattened features to 15 x 2 x 192 bins would hold ~50 M. The loss is the KL divergence to a Gaussian
    of `sigma` pixels at the label (bin centres at (i + 0.5) / split - 0.5, the heatmap head's convention),
    averaged over labelled keypoints; decoding is the softmax expectation, in fp32. `split` and `sigma` come from
    the config's simcc_split and simcc_sigma.
    """

    runs_in_autocast = True

    def __init__(self, in_ch: int, hw: int, n_sets: int, dropout: float, split: int, sigma: float, dim: int = 32,
                 hidden: int = 256):
        super().__init__()
        self.k, self.n_sets, self.split, self.sigma = len(COMP.keypoints), n_sets, split, sigma
        self.bins = COMP.image_size * split
        self.proj = nn.Conv2d(in_ch, n_sets * self.k * dim, 1)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim * hw, hidden), nn.GELU())
        self.fx, self.fy = nn.Linear(hidden, self.bins), nn.Linear(hidden, self.bins)
        self.register_buffer("centres", (torch.arange(self.bins, dtype=torch.float32) + 0.5) / split - 0.5,
                             persistent=False)

    def forward(self, f):
        b = f.shape[0]
        z = self.proj(f).reshape(b, self.n_sets * self.k, -1)               # (B, S*15, dim*H*W)
        z = self.mlp(z)
        lx, ly = self.fx(z).float(), self.fy(z).float()                     # (B, S*15, bins) each
        with torch.autocast(f.device.type, enabled=False):
            x = (torch.softmax(lx, -1) * self.centres).sum(-1)
            y = (torch.softmax(ly, -1) * self.centres).sum(-1)
            coords = (torch.stack([x, y], -1) - HALF) / HALF               # (B, S*15, 2) normalised
        return coords.flatten(1), (lx, ly)

    def loss(self, extra, target: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        lx, ly = (e.view(e.shape[0], self.n_sets, self.k, self.bins) for e in extra)
        if source is not None:
            pick = source.view(-1, 1, 1, 1).expand(-1, 1, self.k, self.bins)
            lx, ly = lx.gather(1, pick)[:, 0], ly.gather(1, pick)[:, 0]     # (B, 15, bins)
        else:
            lx, ly = lx[:, 0], ly[:, 0]
        t = target.float().view(-1, self.k, 2)
        mask = torch.isfinite(t).all(-1)                                    # (B, 15) labelled keypoints
        if not mask.any():
            return lx.sum() * 0.0
        t = torch.nan_to_num(t)
        total = 0.0
        for logits, coord in ((lx, t[..., 0]), (ly, t[..., 1])):
            g = torch.exp(-0.5 * ((self.centres - coord[..., None]) / self.sigma) ** 2)
            g = g / g.sum(-1, keepdim=True)                                 # (B, 15, bins) target distribution
            kl = (g * (torch.log(g.clamp_min(1e-12)) - torch.log_softmax(logits, -1))).sum(-1)
            total = total + kl[mask].mean()
        return total / 2
