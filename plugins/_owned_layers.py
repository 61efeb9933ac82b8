"""Layers the plugin owns (previews, inspection results): created once, then updated in place.

Each owned layer is tagged ``metadata["l2s_role"]``; later updates find it by that tag (even if the
user renamed it) and assign ``layer.data`` instead of adding a new layer. A layer the user deleted
is simply created again on the next update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROLE_KEY = "l2s_role"


def find_role(viewer, role: str):
    for layer in viewer.layers:
        if (layer.metadata or {}).get(ROLE_KEY) == role:
            return layer
    return None


def upsert(viewer, role: str, kind: str, data: np.ndarray, name: str, **kwargs: Any):
    """Update the layer with ``role`` in place or add it. ``kind``: 'image' | 'labels' | 'points'.

    On update only what changed is assigned (every napari setter refreshes the layer, and a preview
    update must stay cheap: it runs on the GUI thread while training).
    """
    layer = find_role(viewer, role)
    meta = dict(kwargs.pop("metadata", {}) or {})
    meta[ROLE_KEY] = role
    if layer is not None and (layer.ndim != np.ndim(data) or _kind(layer) != kind) and kind != "points":
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        adder = {"image": viewer.add_image, "labels": viewer.add_labels, "points": viewer.add_points}[kind]
        return adder(data, name=name, metadata=meta, **kwargs)
    for key in ("scale", "translate"):
        if key in kwargs and not np.allclose(np.asarray(getattr(layer, key), float)[-len(kwargs[key]):],
                                             np.asarray(kwargs[key], float)):
            setattr(layer, key, kwargs[key])
    if kind == "points":
        if "features" in kwargs:
            layer.features = kwargs["features"]
        if np.shape(layer.data) != np.shape(data) or not np.allclose(layer.data, data):
            layer.data = data
    else:
        current = layer.data
        if (isinstance(current, np.ndarray) and current.shape == np.shape(data)
                and current.dtype == np.asarray(data).dtype and current.flags.writeable):
            # same geometry: copy into the layer's buffer and refresh (skips napari's dims update)
            np.copyto(current, data)
            layer.refresh()
        else:
            layer.data = data
    if kind == "image" and "contrast_limits" in kwargs:
        limits = [float(v) for v in kwargs["contrast_limits"]]
        if list(map(float, layer.contrast_limits)) != limits:
            layer.contrast_limits = limits
    for key, value in meta.items():
        if layer.metadata.get(key) is not value:
            layer.metadata[key] = value
    return layer


def _kind(layer) -> str:
    return type(layer).__name__.lower()


def other_layers_extent(viewer, exclude_prefix: tuple[str, ...] = ("preview", "inspect")) -> np.ndarray | None:
    """World extent (2 x ndim) of the layers not owned by the plugin's previews, or None."""
    boxes = []
    for layer in viewer.layers:
        role = (layer.metadata or {}).get(ROLE_KEY, "")
        if role and role.startswith(exclude_prefix):
            continue
        try:
            boxes.append(np.asarray(layer.extent.world, float))
        except Exception:  # noqa: BLE001
            continue
    if not boxes:
        return None
    ndim = max(b.shape[1] for b in boxes)
    lo = np.full(ndim, np.inf)
    hi = np.full(ndim, -np.inf)
    for b in boxes:
        lo[-b.shape[1]:] = np.minimum(lo[-b.shape[1]:], b[0])
        hi[-b.shape[1]:] = np.maximum(hi[-b.shape[1]:], b[1])
    return np.stack([lo, hi])
