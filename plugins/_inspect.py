"""What the learned augmentation A_theta does (no Qt): its INU field and noise for one draw, a
gallery of random draws, and applying a saved model's augmentation to a whole scan.

Inputs are normalised like the training scans (robust min-max to [0, 1]) unless they already are
(previews). A 2D model works on 2D slices (a volume is augmented slice by slice along the model's
``slice_axis``, each slice an independent draw as in training); a 3D model works on volumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

_CACHE: dict[tuple[str, int, int], object] = {}


def load_model_cached(path: str | Path):
    """``l2s_gui.model_io.load_model`` on the CPU, cached by (path, mtime, size)."""
    from l2s_gui.model_io import load_model

    path = Path(path)
    st = os.stat(path)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    model = _CACHE.get(key)
    if model is None:
        _CACHE.clear()
        model = load_model(path, "cpu")
        _CACHE[key] = model
    return model


def normalize(x: np.ndarray, already: bool = False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if already:
        return x
    from l2s_gui.intensity import normalize_intensities

    return np.asarray(normalize_intensities(x), dtype=np.float32)


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(int(seed))


def components(model, image: np.ndarray, seed: int = 0, normalized: bool = False) -> dict[str, np.ndarray]:
    """One draw of A_theta on ``image`` (2D for a 2D model, 3D for a 3D model):
    {"input", "augmented", "inu_field", "noise", "residual"} (the parts the augmentation has)."""
    import torch

    x = normalize(image, normalized)
    if x.ndim != model.ndim:
        raise ValueError(f"a {model.ndim}D model needs a {model.ndim}D image, got {x.ndim}D"
                         + ("; choose an image layer (volume)" if model.ndim == 3 else ""))
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
    import torch

    x = normalize(image, normalized)
    if x.ndim != model.ndim:
        raise ValueError(f"a {model.ndim}D model needs a {model.ndim}D image, got {x.ndim}D")
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None].expand(n, 1, *x.shape).contiguous()
    aug = model.augmentation
    with torch.no_grad():
        draw = aug.sample(t, _generator(seed))
        out = aug(t, draw)[:, 0].numpy()
    return [out[i] for i in range(n)]


def apply_to_volume(model, volume: np.ndarray, seed: int = 0, normalized: bool = False,
                    progress=None, cancelled=None, batch: int = 16,
                    affine: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """A_theta applied to a whole scan (slice by slice along the model's slice axis for a 2D model,
    in RAS voxel order when ``affine`` is given, as in training). None when cancelled."""
    ras, back = to_ras(volume, affine)
    out = _apply(model, ras, seed, normalized, progress, cancelled, batch)
    return None if out is None else back(out)


def _apply(model, volume, seed, normalized, progress, cancelled, batch) -> Optional[np.ndarray]:
    import torch

    x = normalize(volume, normalized)
    aug = model.augmentation
    gen = _generator(seed)
    with torch.no_grad():
        if model.ndim == 3 or x.ndim == 2:
            if x.ndim != model.ndim:
                raise ValueError(f"a {model.ndim}D model needs a {model.ndim}D image, got {x.ndim}D")
            t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
            if progress:
                progress(0, 1)
            out = aug(t, aug.sample(t, gen))[0, 0].numpy()
            if progress:
                progress(1, 1)
            return out
        if x.ndim != 3:
            raise ValueError(f"expected a 2D or 3D image, got {x.ndim}D")
        axis = model.slice_axis
        moved = np.moveaxis(x, axis, 0)
        result = np.empty_like(moved)
        n = moved.shape[0]
        for start in range(0, n, batch):
            if cancelled is not None and cancelled():
                return None
            t = torch.from_numpy(np.ascontiguousarray(moved[start:start + batch]))[:, None]
            result[start:start + batch] = aug(t, aug.sample(t, gen))[:, 0].numpy()
            if progress:
                progress(min(n, start + batch), n)
        return np.moveaxis(result, 0, axis)


def mosaic(arrays: list[np.ndarray], columns: int = 4, gap: int = 2, fill: float = 0.0) -> np.ndarray:
    """Tile same-shaped arrays along their last two axes (rows x columns, ``gap`` pixels apart)."""
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


def plane_index(layer, viewer) -> tuple[tuple, bool]:
    """Index (into the layer's data) of the 2D plane the viewer shows now, and whether that plane must
    be transposed to match the display (rows = the first displayed axis)."""
    nd = layer.ndim
    if nd == 2:
        return (slice(None), slice(None)), False
    world_displayed = list(viewer.dims.displayed)[-2:]
    offset = viewer.dims.ndim - nd
    axes = [a - offset for a in world_displayed if a - offset >= 0]
    if len(axes) != 2:
        axes = [nd - 2, nd - 1]
    point = layer.world_to_data(viewer.dims.point[-nd:])
    shape = layer.data.shape
    index: list = []
    for ax in range(nd):
        if ax in axes:
            index.append(slice(None))
        else:
            index.append(int(np.clip(round(float(point[ax])), 0, shape[ax] - 1)))
    return tuple(index), axes[0] > axes[1]


def to_ras(volume: np.ndarray, affine: Optional[np.ndarray]):
    """(volume in RAS voxel order, undo function): the engine trains and segments in RAS order."""
    if affine is None or np.ndim(volume) != 3:
        return volume, (lambda a: a)
    from l2s_gui.io import from_ras, to_ras as engine_to_ras

    ras, _affine, transform = engine_to_ras(np.asarray(volume), np.asarray(affine, float))
    return ras, (lambda a: from_ras(a, transform))
