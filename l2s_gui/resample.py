"""Resampling of RAS-ordered volumes to a chosen voxel size (``data.voxel_size``).

Training inputs and new scans are first reoriented to RAS by axis permutations/flips
(:func:`l2s_gui.io.to_ras`); when a voxel size is set, they are then resampled to it on the same
field of view: a volume of ``n`` voxels of size ``s`` becomes ``m = round(n * s / t)`` voxels of
size ``t * (n / m) ~ t``, voxel ``j`` of the new grid sitting at old voxel coordinate
``(j + 0.5) * n / m - 0.5`` (the ``align_corners=False`` convention of ``torch.nn.functional.interpolate``,
so going to the new grid and back is consistent). Scans are interpolated linearly, label maps by
nearest neighbour (ids are never blended).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["voxel_sizes", "target_shape", "resample", "resampled_affine"]


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis: the norms of the affine's columns."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))


def target_voxel_size(voxel_size: Sequence[float] | np.ndarray) -> np.ndarray:
    """``data.voxel_size`` as 3 values (one value means isotropic)."""
    v = [float(x) for x in voxel_size]
    return np.array(v * 3 if len(v) == 1 else v, dtype=np.float64)


MAX_RESAMPLED_VOXELS = 1 << 28
"""A resampled grid larger than this (1 GiB of float32) is refused rather than allocated."""


def target_shape(shape: Sequence[int], sizes: Sequence[float] | np.ndarray,
                 voxel_size: Sequence[float] | np.ndarray) -> list[int]:
    """Shape of the grid of ``voxel_size`` covering the field of view of ``shape`` x ``sizes``.
    Raises InputError when that grid would exceed :data:`MAX_RESAMPLED_VOXELS`."""
    target = target_voxel_size(voxel_size)
    out = [max(1, int(round(n * s / t))) for n, s, t in zip(shape, sizes, target)]
    if float(np.prod(np.asarray(out, dtype=np.float64))) > MAX_RESAMPLED_VOXELS:
        from .errors import InputError

        raise InputError(f"data.voxel_size: resampling a {'x'.join(map(str, shape))} volume of "
                         f"{'x'.join(f'{v:.3g}' for v in sizes)} mm voxels to {list(voxel_size)} mm gives "
                         f"{'x'.join(map(str, out))} voxels, too many; use a larger voxel size")
    return out


def resampled_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """The affine of the resampled grid (same field of view, :mod:`module convention <l2s_gui.resample>`)."""
    scale = np.array([n / m for n, m in zip(shape, new_shape)], dtype=np.float64)
    index = np.eye(4)
    index[:3, :3] = np.diag(scale)
    index[:3, 3] = 0.5 * scale - 0.5  # new voxel j -> old coordinate (j + 0.5) * n / m - 0.5
    return np.asarray(affine, dtype=np.float64) @ index


def resample(data: np.ndarray, shape: Sequence[int], labels: bool) -> np.ndarray:
    """``data`` (3D) resampled onto ``shape`` over the same field of view: linear for images,
    nearest neighbour for label maps (dtype kept)."""
    shape = [int(s) for s in shape]
    if list(data.shape) == shape:
        return data
    if labels:  # nearest neighbour in float64: exact for every integer label value up to 2^53
        src = torch.from_numpy(np.asarray(data, dtype=np.float64))[None, None]
        out = F.interpolate(src, size=shape, mode="nearest-exact")[0, 0].numpy()
        return out.astype(data.dtype, copy=False)
    src = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]
    out = F.interpolate(src, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    return out.astype(data.dtype, copy=False) if np.issubdtype(data.dtype, np.floating) else out
