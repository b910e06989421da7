"""Where and how the math runs: device selection, bf16 autocast, input tensors, loader workers.

    >>> dev, amp = select_device("auto", "auto")      # cuda + bf16 when present; else cpu (+ bf16 on AMX CPUs)
"""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache

import torch

from .errors import FkdError


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 autocast pays off on this CPU (with channels_last)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def select_device(device: str = "auto", amp: str = "auto") -> tuple[torch.device, torch.dtype | None]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FkdError("device=cuda asked for, but torch sees no CUDA GPU; use --set device=auto")
    dev = torch.device(device)
    if amp == "off":
        return dev, None
    if amp == "bf16":
        return dev, torch.bfloat16
    ok = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_has_bf16()
    return dev, (torch.bfloat16 if ok else None)


def autocast(dev: torch.device, dtype: torch.dtype | None):
    """Autocast when a dtype is set, else a context that does nothing (no branches in the loops)."""
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_input(images: torch.Tensor, dev: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (B, 96, 96) -> float (B, 1, 96, 96) in [0, 1] on the device."""
    x = images.to(dev, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def default_workers(dev: torch.device) -> int:
    n = os.cpu_count() or 1
    if dev.type == "cuda":
        return max(1, min(8, n - 1))
    return 0 if n <= 2 else min(4, n // 4)  # on a small CPU the augmentation is cheap next to the model
