"""SynthMix's patch-wise mix-up (SynthMix Sec. 2.2): a random k x k (x k) binary mask, upsampled
(nearest) to the image, picks each cell from one of two images.

``x~ = M * x_T + (1 - M) * x_S`` (eq. 2) and ``y~ = M * y_T + (1 - M) * y_S`` (eq. 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["random_grid_mask", "grid_mix"]


def random_grid_mask(shape: Sequence[int], k: int, ratio: float, generator: torch.Generator) -> Tensor:
    """The mix-up mask M of SynthMix eq. 2-3 for an image batch of ``shape`` ``(B, 1, *spatial)``.

    Each spatial axis of size ``n`` is cut into cells of ``ceil(n / k)`` voxels (k cells when k
    divides n, fewer at the far side otherwise); every cell of every sample is 1 (take ``a`` in
    :func:`grid_mix`) with probability ``ratio`` (SynthMix's lambda), independently. Returns a
    float32 0/1 tensor of ``shape`` on ``generator``'s device; batched, no loop over samples.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or shape[1] != 1:
        raise ValueError(f"shape must be (B, 1, *spatial), got {shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    spatial = shape[2:]
    cell = [math.ceil(n / k) for n in spatial]
    cells = tuple(math.ceil(n / c) for n, c in zip(spatial, cell))
    draw = torch.rand(shape[:2] + cells, generator=generator, device=generator.device)
    mask = (draw < ratio).to(torch.float32)
    for axis, (n, c) in enumerate(zip(spatial, cell)):
        mask = mask.repeat_interleave(c, dim=axis + 2).narrow(axis + 2, 0, n)
    return mask


def grid_mix(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """``mask * a + (1 - mask) * b`` (SynthMix eq. 2), exactly (a selection, no arithmetic).

    ``a``, ``b``: images ``(B, C, *spatial)`` or label maps ``(B, *spatial)`` (eq. 3); ``mask``:
    from :func:`random_grid_mask` (``(B, 1, *spatial)``, 1 = take ``a``), moved to ``a``'s device.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    take_a = mask.to(a.device).bool()
    if a.dim() == take_a.dim() - 1:  # label maps (B, *spatial)
        take_a = take_a[:, 0]
    return torch.where(take_a, a, b)
