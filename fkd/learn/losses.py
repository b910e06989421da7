"""Losses on the labelled coordinates only, by name: the `loss` config field picks one for the coordinate heads.

Each registered loss takes the normalised differences of the labelled values (a flat tensor, pixels / 48) and
returns their mean; SimCC and the heatmap heads bring their own loss on top of these (fkd/learn/models/heads).

    >>> import torch
    >>> round(masked_loss(torch.tensor([[50.0, 48.0]]), torch.tensor([[48.0, float("nan")]]), "l1").item(), 4)
    0.0417
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..competition import COMP

HALF = COMP.image_size / 2       # targets are normalised as (px - 48) / 48
WING_W_PX, WING_EPS_PX = 10.0, 2.0   # Feng et al. 2018


def _wing(d: torch.Tensor) -> torch.Tensor:
    w, eps = WING_W_PX / HALF, WING_EPS_PX / HALF
    c = w - w * torch.log(torch.tensor(1 + w / eps))
    a = d.abs()
    return torch.where(a < w, w * torch.log(1 + a / eps), a - c).mean()


LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mse": lambda d: d.pow(2).mean(),
    "l1": lambda d: d.abs().mean(),     # beat mse out of fold on ytf15 although the metric is an RMSE
    "smoothl1": lambda d: F.smooth_l1_loss(d, torch.zeros_like(d), beta=1.0 / HALF),
    "wing": _wing,
}


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Loss over the labelled values only (NaN targets ignored), averaged over labelled values; pixels in."""
    mask = torch.isfinite(target)
    d = ((pred.float() - torch.nan_to_num(target.float())) / HALF)[mask]
    if d.numel() == 0:
        return pred.sum() * 0.0
    return LOSSES[kind](d)
