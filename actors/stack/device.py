"""Device choice and mixed precision, written so the same code runs on CPU-only machines unchanged."""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch

# float64 matters to ELMo only (its LSTM recurrence in float64, its CPU default under ``auto``);
# every other layer runs plain float32 under it.
PRECISIONS = ("auto", "float32", "float64", "bfloat16", "float16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``; a ValueError naming them otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first CUDA GPU when one is visible, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype matmuls run in under ``precision`` on ``device``; None means plain float32.

    ``auto`` is bf16 (fp16 where bf16 is unsupported) on CUDA and float32 on CPU: on CPU the
    default stays exact to the float32 reference outputs. An explicit ``bfloat16`` or ``float16``
    autocasts on CPU too; on CPUs with AMX or AVX512-BF16 (``cpu_has_native_bf16``) that runs the
    encoder 2-3x and a 2048-wide LSTM 3-5x faster than float32, at a cosine similarity of about
    0.9999 to the float32 vectors (see bench/README.md). Elsewhere it is emulated and slow.
    """
    check_precision(precision)
    if precision in ("float32", "float64") or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, precision)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """Autocast to ``autocast_dtype(device, precision)``; a no-op where that is plain float32."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16), as oneDNN sees it."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False
