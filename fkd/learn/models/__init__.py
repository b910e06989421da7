"""Keypoint models behind one factory: the reference BaselineNet and any timm backbone with a head by name.

    >>> m = create_model("resnet18", head="simcc")          # every option not given: the Config's default
    >>> m = create_from_config(cfg)                         # doctest: +SKIP
    >>> pred = predict_images(m, images, source, dev, amp)  # doctest: +SKIP   (N, 30) pixels

Training builds its model with `create_from_config`, prediction and the speed probe load fold checkpoints with
`load_fold_model`: one way to build a model, whoever needs it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...competition.keypoints import tta_average
from ...device import autocast, to_input
from ...errors import FkdError
from .backbones import MODELS, build_timm, is_model
from .heads import HEADS, OWN_STRIDES
from .model import N_OUT, N_SOURCES, KeypointModel

# the Config fields a model is built from; what create_model is not given comes from the Config's defaults
MODEL_FIELDS = ("head", "dropout", "source_aware", "loss", "weights", "output_stride", "simcc_split", "simcc_sigma")
PREDICT_BATCH = 256


def create_model(name: str, **kw) -> KeypointModel:
    """A registered model by name, or any other timm backbone name (timm's own registry)."""
    from ...config import Config

    opts = {k: getattr(Config, k) for k in MODEL_FIELDS} | kw
    if name in MODELS:
        return MODELS[name](**opts)
    if not is_model(name):
        raise FkdError(f"unknown model {name!r}: use one of {', '.join(MODELS)} or a timm backbone name")
    return build_timm(name, **opts)


def create_from_config(cfg) -> KeypointModel:
    """The model a Config describes (untrained): what training builds and prediction loads weights into."""
    return create_model(cfg.model, **{k: getattr(cfg, k) for k in MODEL_FIELDS})


def ready(model: KeypointModel, cfg, dev: torch.device) -> KeypointModel:
    """The model on the device, in the memory format the config runs it in."""
    model = model.to(dev)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def load_fold_model(cfg, ck: Path, dev: torch.device) -> KeypointModel:
    """The model `cfg` describes with a fold checkpoint's weights, on `dev`, ready to predict."""
    model = ready(create_from_config(cfg), cfg, dev)
    try:
        state = torch.load(ck, map_location=dev, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise FkdError(f"{ck}: unreadable checkpoint ({type(e).__name__}); retrain that fold") from None
    model.load_state_dict(state["model"])
    return model


@torch.no_grad()
def predict_images(model, images: np.ndarray, source: np.ndarray, dev: torch.device, amp: torch.dtype | None,
                   tta: bool = False, flip_const: float = 96.0, batch_size: int = PREDICT_BATCH,
                   channels_last: bool = True) -> np.ndarray:
    """(N, 96, 96) uint8 images + (N,) sources -> (N, 30) float32 pixel predictions.

    With tta the mirrored image is predicted too, un-flipped (x -> c - x, left/right swapped) and averaged
    (fkd.competition.keypoints.tta_average, the same function CV uses on saved predictions).
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
                p = tta_average(p, model(x.flip(-1), s)["preds"].float(), flip_const)
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_OUT), np.float32)


def predict_views(model, images: np.ndarray, source: np.ndarray, dev: torch.device, amp: torch.dtype | None,
                  mats: list[np.ndarray], channels_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The extra TTA views (fkd.competition.keypoints.view_matrices): each face and its mirror image shifted or
    zoomed, predicted, mapped back; the mean over views of (plain, mirrored), the mirrored ones not un-flipped
    (tta_average does that with the run's constant, as for the flip alone)."""
    import cv2

    from ...competition.keypoints import unview

    mirror = np.ascontiguousarray(images[:, :, ::-1])
    plain, mirrored = [], []
    for m in mats:
        for faces, out in ((images, plain), (mirror, mirrored)):
            warped = np.stack([cv2.warpAffine(f, m, f.shape[::-1], flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE) for f in faces]) if len(faces) else faces
            out.append(unview(predict_images(model, warped, source, dev, amp, channels_last=channels_last), m))
    return np.mean(plain, 0), np.mean(mirrored, 0)


__all__ = ["HEADS", "MODELS", "MODEL_FIELDS", "N_OUT", "N_SOURCES", "OWN_STRIDES", "KeypointModel", "create_model",
           "create_from_config", "is_model", "load_fold_model", "predict_images", "predict_views", "ready"]
