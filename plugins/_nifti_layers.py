"""napari layers of NIfTI/MGZ volumes: the napari side of :mod:`l2s_gui.io` (which reads, writes and
decides label map vs scan).

napari's 2D slicing ignores rotations and shears, so a volume is *displayed* with its affine's
axis-aligned part (``scale`` = voxel sizes, ``translate`` = origin:
:func:`l2s_gui.io.axis_aligned_transform`) while the true voxel-to-world affine is kept in
``layer.metadata["affine"]`` and written back on save. Data stay in voxel order, so a read/write
round trip is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from l2s_gui.io import (
    affine_from_scale_translate,
    axis_aligned_transform,
    label_dtype,
    looks_like_labels,
    read_volume,
    strip_suffix,
    volume_suffix,
)

AFFINE_KEY = "affine"
SOURCE_KEY = "source_path"
HEADER_KEY = "header"


def is_volume_file(path: str | Path) -> bool:
    return volume_suffix(path) is not None


def layer_affine(layer_or_attrs: Any) -> np.ndarray:
    """The true affine of a layer (metadata) or, failing that, one built from scale/translate.

    Accepts a napari layer or the ``attributes`` dict napari hands to writers.
    """
    if isinstance(layer_or_attrs, dict):
        meta = layer_or_attrs.get("metadata") or {}
        scale, translate = layer_or_attrs.get("scale", [1, 1, 1]), layer_or_attrs.get("translate", [0, 0, 0])
    else:
        meta = layer_or_attrs.metadata or {}
        scale, translate = layer_or_attrs.scale, layer_or_attrs.translate
    affine = meta.get(AFFINE_KEY)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape == (4, 4):
            return affine
    return affine_from_scale_translate(scale, translate)


def volume_to_layer_data(path: str | Path) -> tuple[np.ndarray, dict, str]:
    """A napari LayerData tuple for a volume file: ('labels' for label maps, else 'image')."""
    volume = read_volume(path)
    data, affine = volume.data, volume.affine
    scale, translate = axis_aligned_transform(affine, data.ndim if data.ndim <= 3 else 3)
    if data.ndim == 4:  # time/channel last in NIfTI -> first in napari
        data = np.moveaxis(data, 3, 0)
        scale, translate = [1.0] + scale, [0.0] + translate
    if data.ndim == 2:
        scale, translate = scale[:2], translate[:2]
    meta = {AFFINE_KEY: affine, SOURCE_KEY: str(Path(path).resolve()), HEADER_KEY: volume.header}
    kwargs: dict[str, Any] = {"name": strip_suffix(path), "scale": scale, "translate": translate, "metadata": meta}
    if data.ndim <= 3 and looks_like_labels(data, path):
        if data.dtype.kind not in "iu":
            data = data.astype(label_dtype(data))
        return data, kwargs, "labels"
    data = data.astype(np.float32) if data.dtype.kind == "f" and data.dtype != np.float32 else data
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if finite.size:
        lo, hi = np.percentile(finite[:: max(1, finite.size // 1_000_000)], [0.5, 99.5])
        if hi > lo:
            kwargs["contrast_limits"] = [float(lo), float(hi)]
    kwargs["colormap"] = "gray"
    return data, kwargs, "image"
