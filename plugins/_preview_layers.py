"""Live preview tiles: synthetic image, learned-augmented image, real image + prediction overlay.

Laid out in a column to the right of the user's own data (never over it), each tile with its title
in the gap above it, so no title can run into another one whatever the zoom (side by side, titles
wider than their tiles on screen overlapped at 1280x800). Updated in place on each new preview; the
user's layer selection is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._owned_layers import find_role, other_layers_extent, upsert

TILES = [
    # role, title, row
    ("synthetic", "synthetic", 0),
    ("augmented", "learned A_θ", 1),
    ("real", "real + prediction", 2),
]
GAP = 0.08  # fraction of the data's width between it and the tiles
ROW_GAP = 0.22  # fraction of the tile height between tiles (the titles live there)


def display_array(a: np.ndarray, rotate: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim > 2:  # defensive: a 3D preview -> its middle slice
        a = np.take(a, a.shape[0] // 2, axis=0)
    return np.ascontiguousarray(np.rot90(a)) if rotate else a


def _title_color(viewer) -> str:
    """White on a dark canvas, black on a light one (the napari theme's canvas colour)."""
    try:
        from napari.utils.theme import get_system_theme, get_theme

        name = str(viewer.theme)
        theme = get_theme(get_system_theme() if name == "system" else name)
        r, g, b = theme.canvas.as_rgb_tuple()[:3]
        return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"
    except Exception:  # noqa: BLE001
        return "white"


def tile_titles(viewer, role: str, positions: list[list[float]], titles: list[str]) -> None:
    """A text-only Points layer: ``titles[i]`` just above ``positions[i]`` (2D world coordinates)."""
    upsert(viewer, role, "points", np.asarray(positions, float), name=f"L2S {role.replace('_', ' ')}",
           features={"title": list(titles)}, size=0.1, face_color="transparent", border_width=0,
           text={"string": "{title}", "anchor": "upper_left", "color": _title_color(viewer), "size": 10,
                 "translation": [0, 0]})


class PreviewLayers:
    """Owns the preview layers of one viewer."""

    def __init__(self, viewer, rotate: bool = False):
        self.viewer = viewer
        self.rotate = rotate
        self._origin: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self.step: int | None = None
        self._titled_shape: tuple[int, ...] | None = None

    def _tile_translate(self, row: int, shape: tuple[int, int]) -> list[float]:
        if self._origin is None or self._shape != shape:
            extent = other_layers_extent(self.viewer)
            gap = ROW_GAP * shape[0]
            if extent is None or not np.all(np.isfinite(extent)):
                self._origin = np.array([gap, 0.0])
            else:
                width = extent[1, -1] - extent[0, -1]
                self._origin = np.array([extent[0, -2] + gap, extent[1, -1] + max(GAP * width, 8.0)])
            self._shape = shape
        step = shape[0] * (1 + ROW_GAP)
        return [float(self._origin[0] + row * step), float(self._origin[1])]

    def update(self, arrays: dict[str, Any]) -> bool:
        """Show a preview (dict of arrays as in latest.npz). Returns False when it has no images."""
        if not all(k in arrays for k in ("synthetic", "augmented", "real")):
            return False
        self.step = arrays.get("step")
        shown = {k: display_array(arrays[k], self.rotate) for k in arrays if k != "step"}
        shape = tuple(shown["synthetic"].shape)
        first = find_role(self.viewer, "preview_synthetic") is None
        selected = set(self.viewer.layers.selection)
        active = self.viewer.layers.selection.active
        for role, _title, column in TILES:
            data = shown[role].astype(np.float32, copy=False)
            upsert(self.viewer, f"preview_{role}", "image", data, name=f"L2S {role}",
                   translate=self._tile_translate(column, shape), scale=[1.0, 1.0],
                   contrast_limits=[0.0, 1.0], colormap="gray", blending="translucent")
        translate = self._tile_translate(2, shape)
        if "prediction" in shown:
            upsert(self.viewer, "preview_prediction", "labels", shown["prediction"].astype(np.int32, copy=False),
                   name="L2S prediction", translate=translate, scale=[1.0, 1.0], opacity=0.45)
        if "real_labels" in shown:
            layer = upsert(self.viewer, "preview_real_labels", "labels",
                           shown["real_labels"].astype(np.int32, copy=False), name="L2S real labels (outline)",
                           translate=translate, scale=[1.0, 1.0], opacity=0.9)
            if first:
                layer.contour = 1
        if first or shape != self._titled_shape:
            self._titles(shape)  # static: only when the tiles move (a points layer update redraws its text)
            self._titled_shape = shape
        self._show_step()
        if first:
            self.viewer.layers.selection.clear()  # adding layers selected them: give the user's back
            self.viewer.layers.selection.update(selected & set(self.viewer.layers))
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
            self.viewer.reset_view()
        return True

    def _titles(self, shape: tuple[int, int]) -> None:
        """Static tile titles (a text-only Points layer); the step goes to the canvas text overlay,
        which is far cheaper to update than layer data."""
        points = []
        for _role, _title, row in TILES:
            y, x = self._tile_translate(row, shape)
            points.append([y - 1.0, x])  # the text sits above its point, in the gap over the tile
        tile_titles(self.viewer, "preview_titles", points, [title for _r, title, _c in TILES])

    def _show_step(self) -> None:
        overlay = _text_overlay(self.viewer)
        if overlay is not None and self.step is not None:
            overlay.text = f"Learn2Synth preview · step {self.step}"
            if not overlay.visible:
                overlay.position = "bottom_left"  # under the user's data: the tiles fill the right
                overlay.visible = True

    def layers(self) -> list:
        out = []
        for role in ("synthetic", "augmented", "real", "prediction", "real_labels", "titles"):
            layer = find_role(self.viewer, f"preview_{role}")
            if layer is not None:
                out.append(layer)
        return out


def _text_overlay(viewer):
    """The viewer's text overlay: ``viewer.canvas.overlays.text`` since napari 0.9 (the old
    ``viewer.text_overlay`` is deprecated there), ``viewer.text_overlay`` before; None if neither."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = overlays.get("text") if overlays is not None and hasattr(overlays, "get") else None
    return text if text is not None else getattr(viewer, "text_overlay", None)
