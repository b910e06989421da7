"""Bodies by name: the registered ones (`MODELS`) and any other backbone timm knows, each with a head by name.

    >>> sorted(MODELS)[:3]
    ['baseline', 'convnext_atto', 'efficientnet_b0']
"""
from __future__ import annotations

from typing import Callable

from ...errors import FkdError
from .baseline import build_baseline
from .heads import HEADS
from .model import N_SOURCES, KeypointModel


def timm_kwargs(weights: str, output_stride: int) -> dict:
    """timm.create_model's arguments: one input channel, local pretrained weights if given (never a download)."""
    kw = dict(pretrained=bool(weights), in_chans=1)
    if weights:
        kw["pretrained_cfg_overlay"] = dict(file=str(weights))
    if output_stride:
        kw["output_stride"] = output_stride
    return kw


def build_timm(name: str, *, head: str, dropout: float, source_aware: bool, loss: str, weights: str,
               output_stride: int, **head_options) -> KeypointModel:
    if head not in HEADS:
        raise FkdError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    body, h = HEADS[head](name, N_SOURCES if source_aware else 1, dropout, timm_kwargs(weights, output_stride),
                          **head_options)
    return KeypointModel(body, h, source_aware, loss)


def _timm(name: str) -> Callable[..., KeypointModel]:
    return lambda **kw: build_timm(name, **kw)


MODELS: dict[str, Callable[..., KeypointModel]] = {
    "baseline": build_baseline,
    **{name: _timm(name) for name in ("resnet18", "resnet34", "convnext_atto", "efficientnet_b0", "regnety_004",
                                      "regnetx_002")},
}


def is_model(name: str) -> bool:
    """A registered name, or a backbone timm knows."""
    if name in MODELS:
        return True
    import timm

    return timm.is_model(name)
