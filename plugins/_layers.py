"""Layers the plugin owns (previews, inspection results): created once, then updated in place.

Each owned layer is tagged ``metadata["l2s_role"]``; later updates find it by that tag (even if the
user renamed it) and assign ``layer.data`` instead of adding a new layer. A layer the user deleted
is simply created again on the next update.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

ROLE_KEY = "l2s_role"


def find_role(viewer, role: str):
    for layer in viewer.layers:
        if (layer.metadata or {}).get(ROLE_KEY) == role:
            return layer
    return None


def upsert(viewer, role: str, kind: str, data: np.ndarray, name: str, **kwargs: Any):
    """Update the layer with ``role`` in place or add it. ``kind``: 'image' | 'labels' | 'points'."""
    layer = find_role(viewer, role)
    meta = dict(kwargs.pop("metadata", {}) or {})
    meta[ROLE_KEY] = role
    if layer is not None and layer.ndim != np.ndim(data) and kind != "points":
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        adder = {"image": viewer.add_image, "labels": viewer.add_labels, "points": viewer.add_points}[kind]
        return adder(data, name=name, metadata=meta, **kwargs)
    with layer.events.blocker_all() if hasattr(layer.events, "blocker_all") else _nullcontext():
        for key in ("scale", "translate"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
    if kind == "points":
        layer.data = data
        if "features" in kwargs:
            layer.features = kwargs["features"]
    else:
        layer.data = data
    if kind == "image" and "contrast_limits" in kwargs:
        layer.contrast_limits = kwargs["contrast_limits"]
    layer.metadata.update(meta)
    layer.refresh()
    return layer


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def other_layers_extent(viewer, exclude_prefix: str = "preview") -> Optional[np.ndarray]:
    """World extent (2 x ndim) of the layers not owned by the plugin's previews, or None."""
    boxes = []
    for layer in viewer.layers:
        role = (layer.metadata or {}).get(ROLE_KEY, "")
        if role.startswith(exclude_prefix):
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
