"""What a model's learned augmentation A_theta does, computed without any GUI: one draw with its
parts (INU field, noise, residual), a gallery of independent draws, and A_theta applied to a whole
scan the way the model sees scans.

Inputs are normalised like the training scans (:func:`~l2s_gui.intensity.normalize_intensities`)
unless they already are (previews). :func:`augment_scan` prepares a scan exactly as
:func:`~l2s_gui.segment.segment_scan` does -- RAS voxel order, normalisation, linear resampling to
the model's training voxel size (2D models: in-plane only) -- applies A_theta there (2D models
slice by slice along their slice axis, each slice an independent draw as in training) and maps the
result back (linear resampling, original voxel order) onto the scan's own grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .intensity import normalize_intensities
from .io import from_ras, to_ras
from .resample import resample, target_shape, target_voxel_size, voxel_sizes

__all__ = ["load_model_cached", "components", "gallery", "augment_scan", "mosaic"]

_CACHE: dict[tuple[str, int, int], object] = {}


def load_model_cached(path: str | Path):
    """:func:`~l2s_gui.model_io.load_model` on the CPU, cached by (path, mtime, size): a run's
    model is re-read only when a checkpoint rewrote it."""
    from .model_io import load_model

    path = Path(path)
    st = os.stat(path)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    model = _CACHE.get(key)
    if model is None:
        _CACHE.clear()
        model = load_model(path, "cpu")
        _CACHE[key] = model
    return model


def _normalized(x: np.ndarray, already: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x if already else np.asarray(normalize_intensities(x), dtype=np.float32)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_ndim(model, x: np.ndarray) -> None:
    if x.ndim != model.ndim:
        raise ValueError(f"a {model.ndim}D model needs a {model.ndim}D image, got {x.ndim}D"
                         + ("; choose an image layer (volume)" if model.ndim == 3 else ""))


def components(model, image: np.ndarray, seed: int = 0, normalized: bool = False) -> dict[str, np.ndarray]:
    """One draw of A_theta on ``image`` (2D for a 2D model, 3D for a 3D model):
    {"input", "augmented", "inu_field", "noise", "residual"} (the parts the augmentation has)."""
    x = _normalized(image, normalized)
    _check_ndim(model, x)
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    aug = model.augmentation
    with torch.no_grad():
        draw = aug.sample(t, _generator(seed))
        out = {"input": x, "augmented": aug(t, draw)[0, 0].numpy()}
        for name, value in aug.components(t, draw).items():
            out[name] = value[0, 0].detach().cpu().numpy()
    return out


def gallery(model, image: np.ndarray, n: int = 8, seed: int = 0, normalized: bool = False) -> list[np.ndarray]:
    """``n`` independent draws of A_theta applied to the same image."""
    x = _normalized(image, normalized)
    _check_ndim(model, x)
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None].expand(n, 1, *x.shape).contiguous()
    aug = model.augmentation
    with torch.no_grad():
        out = aug(t, aug.sample(t, _generator(seed)))[:, 0].numpy()
    return [out[i] for i in range(n)]


def augment_scan(model, volume: np.ndarray, affine: np.ndarray | None = None, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None, batch: int = 16) -> np.ndarray | None:
    """A_theta applied to a whole scan on the model's grid (module docstring), returned on the
    scan's grid and voxel order, in [0, 1]-ish normalised intensities. ``affine`` (the scan's
    voxel-to-world affine) is needed for 3D scans; a 2D image is augmented as it is. None when
    ``cancelled()`` became true."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 2:
        _check_ndim(model, volume)
        return _apply(model, _normalized(volume, False), seed, progress, cancelled, batch)
    if volume.ndim != 3:
        raise ValueError(f"expected a 2D or 3D image, got {volume.ndim}D")
    if affine is None:
        affine = np.eye(4)
    data_ras, affine_ras, start = to_ras(volume, np.asarray(affine, float))
    image = _normalized(data_ras, False)
    shape = image.shape
    if model.voxel_size:
        sizes = voxel_sizes(affine_ras)
        target = target_voxel_size(model.voxel_size)
        if model.ndim == 2:
            target[model.slice_axis] = sizes[model.slice_axis]
        image = resample(image, target_shape(image.shape, sizes, target), False)
    out = _apply(model, image, seed, progress, cancelled, batch)
    if out is None:
        return None
    if tuple(out.shape) != tuple(shape):
        out = resample(out, shape, False)
    return from_ras(np.asarray(out, np.float32), start)


def _apply(model, x: np.ndarray, seed: int, progress, cancelled, batch: int) -> np.ndarray | None:
    aug = model.augmentation
    gen = _generator(seed)
    with torch.no_grad():
        if model.ndim == 3 or x.ndim == 2:
            _check_ndim(model, x)
            t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
            out = aug(t, aug.sample(t, gen))[0, 0].numpy()
            if progress:
                progress(1, 1)
            return out
        moved = np.moveaxis(x, model.slice_axis, 0)
        result = np.empty_like(moved)
        n = moved.shape[0]
        for begin in range(0, n, batch):
            if cancelled is not None and cancelled():
                return None
            t = torch.from_numpy(np.ascontiguousarray(moved[begin:begin + batch]))[:, None]
            result[begin:begin + batch] = aug(t, aug.sample(t, gen))[:, 0].numpy()
            if progress:
                progress(min(n, begin + batch), n)
        return np.moveaxis(result, 0, model.slice_axis)


def mosaic(arrays: list[np.ndarray], columns: int = 4, gap: int = 2, fill: float = 0.0) -> np.ndarray:
    """Tile same-shaped arrays along their last two axes (rows x columns, ``gap`` pixels apart).

    >>> mosaic([np.zeros((2, 2)), np.ones((2, 2))], columns=2, gap=1).shape
    (2, 5)
    """
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays)
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    h, w = arrays[0].shape[-2:]
    lead = arrays[0].shape[:-2]
    out = np.full(lead + (rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap), fill,
                  dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        r, c = divmod(i, columns)
        out[..., r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = a
    return out
