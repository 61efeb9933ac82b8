"""napari writers: Labels and Image layers to NIfTI (or MGZ by extension) with the source affine.

The affine comes from ``layer.metadata["affine"]`` (set by the reader, the sample data and the
Segment widget) so a round trip is exact; layers without one get an affine from their scale/translate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._geometry import AFFINE_KEY, layer_affine, write_volume


def _write(path: str, data: Any, attributes: dict, labels: bool) -> list[str]:
    data = np.asarray(data)
    meta = attributes.get("metadata") or {}
    affine = layer_affine(attributes)
    if data.ndim == 4 and AFFINE_KEY in meta:  # napari put time/channel first; NIfTI wants it last
        data = np.moveaxis(data, 0, 3)
    if labels and data.dtype.kind not in "iu":
        data = data.astype(np.int32)
    header = meta.get("header")
    return [write_volume(path, data, affine, header=header)]


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    return _write(path, data, attributes, labels=True)


def write_image(path: str, data: Any, attributes: dict) -> list[str]:
    return _write(path, data, attributes, labels=False)
