"""napari reader: NIfTI (.nii, .nii.gz) and MGZ/MGH volumes.

Integer label maps open as Labels layers (original label values kept), scans as Image layers (the
engine's :func:`l2s_gui.io.looks_like_labels` decides). Layers are displayed with an axis-aligned
scale/translate; the true affine and the source path are kept in ``layer.metadata`` ("affine",
"source_path") and used by the writer and the widgets.
"""

from __future__ import annotations

from collections.abc import Callable

from ._nifti_layers import is_volume_file, volume_to_layer_data


def napari_get_reader(path) -> Callable | None:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(isinstance(p, str) and is_volume_file(p) for p in paths):
        return None
    return read_volumes


def read_volumes(path) -> list:
    """Read one or more files into LayerData tuples; an unreadable file raises a one-line error
    (napari shows it as a notification)."""
    paths = [path] if isinstance(path, str) else list(path)
    return [volume_to_layer_data(p) for p in paths]
