"""The model contract: `model(x, source, target)` returns a dict with `preds` (and `loss` when targets are given).

Every model takes (images (B,1,96,96) float in [0,1], source (B,) long) and returns `preds` (B, 30) in pixels,
plus `loss` when targets (B, 30, NaN = missing) are given, so the training loop never special-cases a model.
A body (BaselineNet's or a timm backbone) feeds a head (fkd/learn/models/heads); a head that decodes its own
output (SimCC, heatmaps) brings its own loss, the coordinate heads use the config's `loss` (fkd/learn/losses.py).

    >>> from fkd.learn.models import create_model
    >>> out = create_model("baseline")(torch.rand(2, 1, 96, 96), torch.tensor([0, 1]))
    >>> out["preds"].shape
    torch.Size([2, 30])
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...competition import COMP, FULL
from ..losses import HALF, masked_loss

N_OUT = 2 * len(COMP.keypoints)  # 30
N_SOURCES = 2


class KeypointModel(nn.Module):
    """body: images -> features; head: features -> (B, n_sources * 30) normalised coordinates.

    With source awareness the head predicts one set of coordinates per annotation source and the source
    input picks one: the two sources label the nose tip and bottom lip differently, so they get their own
    outputs on a shared body. The head's last layer and the loss run in fp32 under autocast.
    """

    def __init__(self, body: nn.Module, head: nn.Module, source_aware: bool, loss: str = "mse"):
        super().__init__()
        self.body, self.head = body, head
        self.source_aware, self.loss_kind = source_aware, loss

    @torch.no_grad()
    def init_output(self, mean_px: torch.Tensor) -> None:
        """Start from the mean keypoints (n_sources, 30 pixels): the first steps refine instead of searching."""
        mean = (mean_px - HALF) / HALF
        if hasattr(self.head, "init_output"):
            self.head.init_output(mean if self.source_aware else mean.mean(0, keepdim=True))

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor | None = None,
                teacher: torch.Tensor | None = None, teacher_weight: float = 0.0) -> dict:
        """preds (B, 30) pixels of each image's own source; with a target (B, 30, NaN = unlabelled) the loss too.
        Teacher labels (B, 30, fkd/teacher.py) train the full-source outputs, weighted by teacher_weight."""
        feats = self.body(x)
        if getattr(self.head, "runs_in_autocast", False):   # a decoder worth bf16; it decodes in fp32 itself
            out = self.head(feats)
        else:
            with torch.autocast(x.device.type, enabled=False):
                out = self.head(feats.float() if torch.is_tensor(feats) else [f.float() for f in feats])
        out, extra = out if isinstance(out, tuple) else (out, None)
        with torch.autocast(x.device.type, enabled=False):
            every = out.float().view(x.shape[0], -1, N_OUT)                   # (B, S, 30)
            out = every.gather(1, source.view(-1, 1, 1).expand(-1, 1, N_OUT)) if self.source_aware else every
            preds = out[:, 0] * HALF + HALF                                    # (B, 30) pixels
            result = {"preds": preds}
            if target is not None:
                result["loss"] = self._loss(extra, preds, target, source)
            if target is not None and teacher is not None and teacher_weight > 0:
                k = FULL if self.source_aware else 0                           # the full source's outputs
                full = torch.full_like(source, k)
                result["loss"] = result["loss"] + teacher_weight * self._loss(extra, every[:, k] * HALF + HALF,
                                                                              teacher, full)
        return result

    def _loss(self, extra, preds: torch.Tensor, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if extra is not None:
            return self.head.loss(extra, target, source if self.source_aware else None)
        return masked_loss(preds, target, self.loss_kind)
