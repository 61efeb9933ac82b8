"""napari writers: Labels and Image layers to NIfTI (or MGZ by extension) with the source affine,
through the engine's :func:`l2s_gui.io.write_volume`.

The affine comes from ``layer.metadata["affine"]`` (set by the reader, the sample data and the
Segment widget) so a round trip is exact; layers without one get an affine from their scale/translate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2s_gui.io import write_volume

from ._nifti_layers import AFFINE_KEY, HEADER_KEY, layer_affine


def _write(path: str, data: Any, attributes: dict, labels: bool) -> list[str]:
    data = np.asarray(data)
    meta = attributes.get("metadata") or {}
    if data.ndim == 4 and AFFINE_KEY in meta:  # napari put time/channel first; NIfTI wants it last
        data = np.moveaxis(data, 0, 3)
    if labels and data.dtype.kind not in "iu":
        data = data.astype(np.int32)
    return [str(write_volume(path, data, layer_affine(attributes), header=meta.get(HEADER_KEY)))]


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    return _write(path, data, attributes, labels=True)


def write_image(path: str, data: Any, attributes: dict) -> list[str]:
    return _write(path, data, attributes, labels=False)
