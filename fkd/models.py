"""Keypoint models: the reference BaselineNet and any timm backbone, behind one registry and one factory.

Every model takes (images (B,1,96,96) float in [0,1], source (B,) long) and returns a dict with `preds`
(B, 30) in pixels, plus `loss` when targets (B, 30, NaN = missing) are given. So the training loop never
special-cases a model.

    >>> m = create_model("baseline", dropout=0.1)
    >>> out = m(torch.rand(2, 1, 96, 96), torch.tensor([0, 1]))
    >>> out["preds"].shape
    torch.Size([2, 30])
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .competition import COMP
from .device import autocast, to_input
from .keypoints import flip_keypoints_torch

N_OUT = 2 * len(COMP.keypoints)  # 30
N_SOURCES = 2
HALF = COMP.image_size / 2       # targets are normalised as (px - 48) / 48


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Loss over the labelled values only (NaN targets ignored), averaged over labelled values; pixels in."""
    mask = torch.isfinite(target)
    d = (pred.float() - torch.nan_to_num(target.float())) / HALF
    d = d[mask]
    if d.numel() == 0:
        return pred.sum() * 0.0
    if kind == "mse":
        return d.pow(2).mean()
    if kind == "l1":
        return d.abs().mean()
    if kind == "smoothl1":
        return F.smooth_l1_loss(d, torch.zeros_like(d), beta=1.0 / HALF)
    if kind == "wing":  # Feng et al. 2018, w = 10 px, eps = 2 px
        w, eps = 10.0 / HALF, 2.0 / HALF
        c = w - w * torch.log(torch.tensor(1 + w / eps))
        a = d.abs()
        return torch.where(a < w, w * torch.log(1 + a / eps), a - c).mean()
    raise ValueError(kind)


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

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        feats = self.body(x)
        with torch.autocast(x.device.type, enabled=False):
            out = self.head(feats.float() if torch.is_tensor(feats) else [f.float() for f in feats])
            out = out.view(x.shape[0], -1, N_OUT)                             # (B, S, 30)
            if self.source_aware:
                out = out.gather(1, source.view(-1, 1, 1).expand(-1, 1, N_OUT))  # (B, 1, 30)
            preds = out[:, 0] * HALF + HALF                                    # (B, 30) pixels
            result = {"preds": preds}
            if target is not None:
                result["loss"] = masked_loss(preds, target, self.loss_kind)
        return result


# ------------------------------------------------------------------------------------------ baseline
def he_init(module: nn.Module) -> None:
    """He-normal weights (ReLU gain), zero biases. PyTorch's default init shrinks the signal through five
    BN-free blocks (feature std 0.015 at the flatten on ytf15), and the net sat at the mean keypoints for a
    whole 16-epoch schedule (val RMSE 4.72 = the mean's); with this init it learns from the first epochs."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


class BaselineBody(nn.Module):
    """The reference project's BaselineNet body: five 3x3 'same' conv + ReLU + MaxPool2d(2) blocks."""

    def __init__(self):
        super().__init__()
        chans = [1, 64, 64, 128, 128, 256]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        he_init(self)

    def forward(self, x):
        return self.features(x).flatten(1)  # (B, 256 * 3 * 3 = 2304)


class BaselineHead(nn.Module):
    """Linear 2,304 -> 1,024 -> ReLU -> Dropout -> 512 -> ReLU -> Dropout -> 30, as in the reference.

    Source awareness adds a learned per-source offset (2 x 30 values, zero at start) instead of changing the
    reference layers, so with source_aware=False this is the reference network exactly.
    """

    def __init__(self, dropout: float, source_aware: bool):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2304, 1024), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(1024, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(512, N_OUT))
        self.offset = nn.Parameter(torch.zeros(N_SOURCES if source_aware else 1, N_OUT))
        he_init(self.mlp)
        nn.init.zeros_(self.mlp[-1].weight)  # the net starts exactly at the mean keypoints (init_output)

    def forward(self, f):
        return (self.mlp(f)[:, None, :] + self.offset[None]).flatten(1)

    def init_output(self, mean: torch.Tensor) -> None:
        self.offset.copy_(mean.to(self.offset))


def build_baseline(dropout: float = 0.1, source_aware: bool = True, loss: str = "mse", **_) -> KeypointModel:
    return KeypointModel(BaselineBody(), BaselineHead(dropout, source_aware), source_aware, loss)


# ------------------------------------------------------------------------------------------ timm
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
        b, k, hh, ww = h.shape
        p = torch.softmax(h.flatten(2) * self.beta, -1).view(b, k, hh, ww)
        # cell centres in pixel-index coordinates, normalised like the targets
        ys = ((torch.arange(hh, device=f.device) + 0.5) * self.stride - 0.5 - HALF) / HALF
        xs = ((torch.arange(ww, device=f.device) + 0.5) * self.stride - 0.5 - HALF) / HALF
        x = (p.sum(2) * xs).sum(-1)                                     # (B, S*15)
        y = (p.sum(3) * ys).sum(-1)
        return torch.stack([x, y], -1).view(b, -1)                      # (B, S*30) as x0,y0,x1,y1...


class FlattenHead(nn.Module):
    """Keep the spatial map (3x3 at 96 px): flatten -> dropout -> linear."""

    def __init__(self, in_features: int, n_sets: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, n_sets * N_OUT)

    def forward(self, f):
        return self.fc(self.drop(f.flatten(1)))

    def init_output(self, mean: torch.Tensor) -> None:
        self.fc.weight.zero_()  # the net starts as the mean keypoint; the body learns from step 2
        self.fc.bias.copy_(mean.reshape(-1).to(self.fc.bias))


class PoolHead(FlattenHead):
    """timm's default global-average pool, kept only to measure what it throws away."""

    def forward(self, f):
        return self.fc(self.drop(f.mean((2, 3))))


def build_timm(name: str, head: str = "flatten", dropout: float = 0.1, source_aware: bool = True,
               loss: str = "mse", weights: str = "", **_) -> KeypointModel:
    import timm

    n_sets = N_SOURCES if source_aware else 1
    kw = dict(pretrained=bool(weights), in_chans=1)
    if weights:
        kw["pretrained_cfg_overlay"] = dict(file=str(weights))
    if head == "heatmap":
        try:
            body = timm.create_model(name, features_only=True, out_indices=(-1,), output_stride=8, **kw)
        except (TypeError, ValueError, AssertionError):
            body = timm.create_model(name, features_only=True, out_indices=(-2,), **kw)
        with torch.no_grad():
            f = body(torch.zeros(1, 1, COMP.image_size, COMP.image_size))[-1]
        stride = COMP.image_size // f.shape[-1]
        return KeypointModel(_LastFeature(body), SoftArgmaxHead(f.shape[1], stride, n_sets, dropout), source_aware, loss)
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    with torch.no_grad():
        f = body(torch.zeros(1, 1, COMP.image_size, COMP.image_size))      # (1, C, 3, 3)
    if head == "pool":
        return KeypointModel(body, PoolHead(f.shape[1], n_sets, dropout), source_aware, loss)
    return KeypointModel(body, FlattenHead(f[0].numel(), n_sets, dropout), source_aware, loss)


class _LastFeature(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)[-1]


MODELS: dict[str, Callable[..., KeypointModel]] = {
    "baseline": build_baseline,
    "resnet18": lambda **kw: build_timm("resnet18", **kw),
    "resnet34": lambda **kw: build_timm("resnet34", **kw),
    "convnext_atto": lambda **kw: build_timm("convnext_atto", **kw),
    "efficientnet_b0": lambda **kw: build_timm("efficientnet_b0", **kw),
    "regnety_004": lambda **kw: build_timm("regnety_004", **kw),
}


def is_model(name: str) -> bool:
    """A registered name, or a backbone timm knows."""
    if name in MODELS:
        return True
    import timm

    return timm.is_model(name)


def create_from_config(cfg) -> KeypointModel:
    """The model a Config describes (untrained): what training builds and prediction loads weights into."""
    return create_model(cfg.model, head=cfg.head, dropout=cfg.dropout, source_aware=cfg.source_aware,
                        loss=cfg.loss, weights=cfg.weights)


def create_model(name: str, **kw) -> KeypointModel:
    """A registered model by name, or any other timm backbone name (timm's own registry)."""
    if name in MODELS:
        return MODELS[name](**kw)
    if not is_model(name):
        from .errors import FkdError
        raise FkdError(f"unknown model {name!r}: use one of {', '.join(MODELS)} or a timm backbone name")
    return build_timm(name, **kw)


# ------------------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict_images(model, images: np.ndarray, source: np.ndarray, dev: torch.device, amp: torch.dtype | None,
                   tta: bool = False, flip_const: float = 96.0, batch_size: int = 256,
                   channels_last: bool = True) -> np.ndarray:
    """(N, 96, 96) uint8 images + (N,) sources -> (N, 30) float32 pixel predictions.

    With tta the flipped image is predicted too, un-flipped (x -> c - x, left/right swapped) and averaged.
    """
    model.eval()
    out = []
    imgs, src = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(source.astype(np.int64))
    for i in range(0, len(imgs), batch_size):
        x = to_input(imgs[i:i + batch_size], dev, channels_last)
        s = src[i:i + batch_size].to(dev)
        with autocast(dev, amp):
            p = model(x, s)["preds"].float()
            if tta:
                pf = model(x.flip(-1), s)["preds"].float()
                p = (p + flip_keypoints_torch(pf, flip_const)) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 30), np.float32)
