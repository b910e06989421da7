"""Heads for timm backbones, by name: the `head` config field picks one (`HEADS`).

Each builder takes (backbone name, n_sets, dropout, timm kwargs, **options) and returns (body, head): the body is
the timm backbone in the form the head reads (the final map, or every stage for fpn4). A builder takes the
options it knows (simcc_split, simcc_sigma) and ignores the rest. A new head plugs in by registering here.

    >>> sorted(HEADS)
    ['flatten', 'fpn4', 'heatmap', 'pool', 'simcc']
"""
from __future__ import annotations

from typing import Callable

import torch

from ....competition import COMP
from .flatten import FlattenHead, PoolHead
from .heatmap import FPNHeatmapHead, LastFeature, SoftArgmaxHead, soft_argmax
from .simcc import SimCCHead

HEATMAP_STRIDE = 8   # the `heatmap` head dilates the backbone's last stage to this stride (12x12 at 96 px)


def probe(body: torch.nn.Module):
    """The body's output for one blank image: its shapes size the head."""
    with torch.no_grad():
        return body(torch.zeros(1, 1, COMP.image_size, COMP.image_size))


def _flatten(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    return body, FlattenHead(probe(body)[0].numel(), n_sets, dropout)     # the (C, 3, 3) map flattened


def _pool(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    return body, PoolHead(probe(body).shape[1], n_sets, dropout)


def _heatmap(name, n_sets, dropout, kw, **_):
    import timm
    try:
        body = timm.create_model(name, features_only=True, out_indices=(-1,), output_stride=HEATMAP_STRIDE, **kw)
    except (TypeError, ValueError, AssertionError):
        body = timm.create_model(name, features_only=True, out_indices=(-2,), **kw)
    f = probe(body)[-1]
    return LastFeature(body), SoftArgmaxHead(f.shape[1], COMP.image_size // f.shape[-1], n_sets, dropout)


def _fpn4(name, n_sets, dropout, kw, **_):
    import timm
    body = timm.create_model(name, features_only=True, **kw)
    info = body.feature_info
    return body, FPNHeatmapHead(info.channels(), info.reduction(), n_sets, dropout)


def _simcc(name, n_sets, dropout, kw, *, simcc_split, simcc_sigma, **_):
    import timm
    body = timm.create_model(name, num_classes=0, global_pool="", **kw)
    f = probe(body)
    return body, SimCCHead(f.shape[1], f.shape[2] * f.shape[3], n_sets, dropout, split=simcc_split,
                           sigma=simcc_sigma)


HEADS: dict[str, Callable] = {
    "flatten": _flatten,   # the final 3x3 map flattened into a linear layer (the quick preset's)
    "pool": _pool,         # global average pooling, to measure what it throws away
    "heatmap": _heatmap,   # soft-argmax on a dilated stride-8 map of the last stage
    "fpn4": _fpn4,         # FPN decoder to stride 4, heatmaps, soft-argmax (integral regression)
    "simcc": _simcc,       # SimCC: x and y classified over 1/simcc_split-pixel bins (default and best)
}
OWN_STRIDES = {"heatmap", "fpn4"}   # heads that set the backbone's strides themselves (no output_stride)

__all__ = ["HEADS", "OWN_STRIDES", "FPNHeatmapHead", "FlattenHead", "PoolHead", "SimCCHead", "SoftArgmaxHead",
           "probe", "soft_argmax"]
