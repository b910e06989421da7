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
from .data import FULL
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


def soft_argmax(logits: torch.Tensor, stride: float) -> torch.Tensor:
    """(B, K, H, W) heatmap logits -> (B, K, 2) expected (x, y), normalised like the targets; fp32 throughout
    (bf16 spacing near 96 px is 0.5 px). Cell i covers pixels [i*stride, (i+1)*stride), so its centre sits
    at (i + 0.5) * stride - 0.5 in pixel-index coordinates: the same convention encodes and decodes."""
    b, k, h, w = logits.shape
    p = torch.softmax(logits.float().flatten(2), -1).view(b, k, h, w)
    ys = ((torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5) * stride - 0.5 - HALF) / HALF
    xs = ((torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5) * stride - 0.5 - HALF) / HALF
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


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

    def __init__(self, in_ch: int, hw: int, n_sets: int, dropout: float, dim: int = 32, hidden: int = 256,
                 split: int = 2, sigma: float = 1.5):
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


def _timm_kw(weights: str, output_stride: int = 0) -> dict:
    kw = dict(pretrained=bool(weights), in_chans=1)
    if weights:
        kw["pretrained_cfg_overlay"] = dict(file=str(weights))
    if output_stride:
        kw["output_stride"] = output_stride
    return kw


def _probe(body: nn.Module):
    with torch.no_grad():
        return body(torch.zeros(1, 1, COMP.image_size, COMP.image_size))


def _head_flatten(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    return body, FlattenHead(_probe(body)[0].numel(), n_sets, dropout)     # the (C, 3, 3) map flattened


def _head_pool(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    return body, PoolHead(_probe(body).shape[1], n_sets, dropout)


def _head_heatmap(name, n_sets, dropout, kw, **_):
    import timm
    try:
        body = timm.create_model(name, features_only=True, out_indices=(-1,), output_stride=8, **kw)
    except (TypeError, ValueError, AssertionError):
        body = timm.create_model(name, features_only=True, out_indices=(-2,), **kw)
    f = _probe(body)[-1]
    return _LastFeature(body), SoftArgmaxHead(f.shape[1], COMP.image_size // f.shape[-1], n_sets, dropout)


def _head_fpn4(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, features_only=True, **kw)
    info = body.feature_info
    return body, FPNHeatmapHead(info.channels(), info.reduction(), n_sets, dropout)


def _head_simcc(name, n_sets, dropout, kw, simcc_split=2, simcc_sigma=1.5, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    f = _probe(body)
    return body, SimCCHead(f.shape[1], f.shape[2] * f.shape[3], n_sets, dropout, split=simcc_split,
                           sigma=simcc_sigma)


# heads for timm backbones: name -> (backbone name, n_sets, dropout, timm kwargs, **head options) -> (body, head);
# a head takes the options it knows (simcc_split, simcc_sigma) and ignores the rest
HEADS: dict[str, Callable] = {
    "flatten": _head_flatten,   # the final 3x3 map flattened into a linear layer (the quick preset's)
    "pool": _head_pool,         # global average pooling, to measure what it throws away
    "heatmap": _head_heatmap,   # soft-argmax on a dilated stride-8 map of the last stage
    "fpn4": _head_fpn4,         # FPN decoder to stride 4, heatmaps, soft-argmax (integral regression)
    "simcc": _head_simcc,       # SimCC: x and y classified over 1/simcc_split-pixel bins (default and best)
}
OWN_STRIDES = {"heatmap", "fpn4"}   # heads that set the backbone's strides themselves (no output_stride)


def build_timm(name: str, head: str = "flatten", dropout: float = 0.1, source_aware: bool = True,
               loss: str = "mse", weights: str = "", output_stride: int = 0, **head_options) -> KeypointModel:
    if head not in HEADS:
        from .errors import FkdError
        raise FkdError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    body, h = HEADS[head](name, N_SOURCES if source_aware else 1, dropout, _timm_kw(weights, output_stride),
                          **head_options)
    return KeypointModel(body, h, source_aware, loss)


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
                        loss=cfg.loss, weights=cfg.weights, output_stride=cfg.output_stride,
                        simcc_split=cfg.simcc_split, simcc_sigma=cfg.simcc_sigma)


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
