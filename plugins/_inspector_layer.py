"""The Inspector's map as its own layer over the real preview tile (config section ``inspector``).

The map is P(real) of each k x k patch of the real preview image (engine: :mod:`l2s_gui.inspector`):
near 1 where the Inspector is sure the real patch is real, i.e. where the synthetic images still
differ from real ones; 0.5 or below where they look alike. It is upsampled to the preview's grid by
the engine (:func:`l2s_gui.inspector.map_on_grid`), shown with a fixed 0-1 colour range at partial
opacity, and updated in place; a map that arrives before the preview tiles waits for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2s_gui.inspector import map_on_grid

from ._owned_layers import find_role, upsert
from ._preview_layers import PreviewLayers, display_array

ROLE = "preview_inspector"
LAYER_NAME = "L2S inspector: P(real) of real patches (1 = synthetic differs here)"
COLORMAP = "inferno"
OPACITY = 0.5


class InspectorLayer:
    """Owns the Inspector layer of one viewer, placed on the real tile of ``previews``."""

    def __init__(self, viewer, previews: PreviewLayers):
        self.viewer = viewer
        self.previews = previews
        self.pending: dict[str, Any] | None = None
        self.step: int | None = None

    def update(self, arrays: dict[str, Any]) -> bool:
        """Show a map (``RunReader.inspector_map_if_changed``); False while no preview tile exists
        yet (it is shown with the next preview: :meth:`refresh`)."""
        self.pending = arrays
        return self.refresh()

    def refresh(self) -> bool:
        arrays = self.pending
        real = find_role(self.viewer, "preview_real")
        if arrays is None or real is None:
            return False
        tile = np.shape(real.data)
        shape = arrays.get("preview_shape") or []
        grid = tuple(shape) if len(shape) == 2 else (tile[1], tile[0]) if self.previews.rotate else tuple(tile)
        shown = display_array(map_on_grid(arrays["map"], grid), self.previews.rotate).astype(np.float32)
        if shown.shape != tuple(tile):
            return False  # the map belongs to another preview grid: wait for its preview
        selected = set(self.viewer.layers.selection)
        active = self.viewer.layers.selection.active
        first = find_role(self.viewer, ROLE) is None
        upsert(self.viewer, ROLE, "image", shown, name=LAYER_NAME, translate=list(np.asarray(real.translate, float)),
               scale=[1.0, 1.0], contrast_limits=[0.0, 1.0], colormap=COLORMAP, opacity=OPACITY,
               blending="translucent")
        if first:  # adding the layer selected it: give the user's selection back
            self.viewer.layers.selection.clear()
            self.viewer.layers.selection.update(selected & set(self.viewer.layers))
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        self.step = arrays.get("step")
        return True

    def layer(self):
        return find_role(self.viewer, ROLE)
