"""Device choice and mixed precision, written so the same code runs on CPU-only machines unchanged."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first CUDA GPU when one is visible, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """bf16 (or fp16 where bf16 is unsupported) autocast on CUDA; a no-op on CPU.

    ``precision``: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``. CPU always runs float32,
    because the reference outputs (and users' expectations of exactness) are float32.
    """
    if device.type != "cuda" or precision == "float32":
        yield
        return
    if precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = getattr(torch, precision)
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
