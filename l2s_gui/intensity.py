"""Intensity normalisation used identically for training (real scans) and segmentation.

Robust min-max: the 0.5th and 99.5th percentiles of the whole image map to 0 and 1, values outside
are clipped. Percentiles use linear interpolation between order statistics (numpy's default), so the
numpy and torch versions give the same result (to float32 rounding).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

__all__ = ["normalize_intensities", "LOW_PERCENTILE", "HIGH_PERCENTILE"]

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


def _np_percentiles(flat: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    n = flat.size
    ranks: set[int] = set()
    for q in qs:
        k = int(math.floor(q / 100 * (n - 1)))
        ranks.update((k, min(k + 1, n - 1)))
    part = np.partition(flat, sorted(ranks))
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        k = int(math.floor(pos))
        frac = pos - k
        lo = float(part[k])
        hi = float(part[min(k + 1, n - 1)])
        out.append(lo + frac * (hi - lo))
    return out


def _torch_percentiles(flat: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    n = flat.numel()
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        k = int(math.floor(pos))
        frac = pos - k
        # kthvalue is 1-based and O(n); avoids torch.quantile's input-size limit
        lo = float(torch.kthvalue(flat, k + 1).values)
        hi = float(torch.kthvalue(flat, min(k + 2, n)).values) if frac > 0 else lo
        out.append(lo + frac * (hi - lo))
    return out


def normalize_intensities(x: ArrayLike, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE) -> ArrayLike:
    """Map the ``low``/``high`` percentiles of ``x`` to 0/1 and clip to [0, 1] (float32).

    Works on a numpy array or a torch tensor (any device) holding one image; returns the same kind.
    A constant image gives zeros.
    """
    if isinstance(x, torch.Tensor):
        xf = x.detach().float()
        flat = xf.reshape(-1)
        if flat.numel() == 0:
            return xf.clone()
        lo, hi = _torch_percentiles(flat, (low, high))
        if hi <= lo:
            lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            return torch.zeros_like(xf)
        return ((xf - lo) / (hi - lo)).clamp_(0.0, 1.0)
    arr = np.asarray(x, dtype=np.float32)
    if arr.size == 0:
        return arr.copy()
    lo, hi = _np_percentiles(arr.reshape(-1), (low, high))
    if hi <= lo:
        lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr)
    out = (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
