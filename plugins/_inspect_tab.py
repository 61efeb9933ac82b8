"""The Inspect tab of the training widget: look at a model's learned augmentation A_θ (one draw with
its INU field and noise, a gallery of draws) or apply it to an image layer. The computing is the
engine's (:mod:`l2s_gui.augmentation_view`, Qt-free and tested headless); this tab runs it in a
worker thread and places the results as layers."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget
from superqt import QElidingLineEdit

from . import _notify
from ._form_widgets import browse_row, button, choose_model_file, combo, set_enabled, spin, tab_page
from ._layer_pickers import LayerCombo
from ._nifti_layers import layer_affine
from ._owned_layers import find_role, other_layers_extent, upsert
from ._preview_layers import PreviewLayers, tile_titles
from ._run_status import RunStatus

NO_MODEL_YET = "no model yet: it appears at the run's first checkpoint"


class InspectTab(QWidget):
    """Inspect a model's learned augmentation: the current run's (``status.run_dir``) or a file's."""

    def __init__(self, viewer, status: RunStatus, previews: PreviewLayers, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.status = status
        self.previews = previews
        self.last_preview: dict | None = None
        self._worker = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self._build())
        status.events.run_dir.connect(self._update_buttons)
        status.events.model_version.connect(self._update_buttons)
        self._update_buttons()

    def set_preview(self, arrays: dict | None) -> None:
        self.last_preview = arrays
        self._update_buttons()

    def _build(self) -> QWidget:
        page, layout = tab_page()
        box = QGroupBox("Learned augmentation")
        form = QFormLayout(box)
        self.inspect_model = combo(["current run", "model file"], "current run")
        self.inspect_model.currentTextChanged.connect(self._update_buttons)
        form.addRow("model", self.inspect_model)
        self.inspect_model_path = QElidingLineEdit()
        self.inspect_model_path.setPlaceholderText("model.safetensors")
        self.inspect_model_path.textChanged.connect(self._update_buttons)
        form.addRow("file", browse_row(self.inspect_model_path, self._browse_model))
        self.inspect_source = combo(["synthetic preview", "real preview", "image layer"], "synthetic preview")
        self.inspect_source.setToolTip("The image A_θ is applied to: the latest preview slice, or the current "
                                       "slice (2D model) / volume (3D model) of an image layer")
        self.inspect_source.currentTextChanged.connect(self._update_buttons)
        form.addRow("image", self.inspect_source)
        self.inspect_layer = LayerCombo(self.viewer, kinds=("image",), placeholder="(no image layer)")
        self.inspect_layer.layer_changed.connect(self._update_buttons)
        form.addRow("image layer", self.inspect_layer)
        self.gallery_n = spin(2, 64, 8)
        form.addRow("draws in gallery", self.gallery_n)
        self.inspect_seed = spin(0, 2**31 - 1, 0)
        form.addRow("draw seed", self.inspect_seed)
        layout.addWidget(box)
        self.components_button = button("Show INU field + noise", self.show_components)
        self.gallery_button = button("Gallery of random draws", self.show_gallery)
        self.apply_button = button("Apply A_θ to image layer", self.apply_to_layer)
        for b in (self.components_button, self.gallery_button, self.apply_button):
            layout.addWidget(b)
        self.inspect_status = QLabel("")
        self.inspect_status.setWordWrap(True)
        layout.addWidget(self.inspect_status)
        layout.addStretch(1)
        return page

    def _browse_model(self) -> None:
        path = choose_model_file(self)
        if path:
            self.inspect_model_path.setText(path)
            self.inspect_model.setCurrentText("model file")

    def inspect_model_path_resolved(self) -> Path | None:
        if self.inspect_model.currentText() == "current run":
            from l2s_gui.runs import RunFolder

            return RunFolder(self.status.run_dir).model_path if self.status.run_dir is not None else None
        text = self.inspect_model_path.text().strip()
        return Path(text).expanduser() if text else None

    def _update_buttons(self, *_args) -> None:
        model_path = self.inspect_model_path_resolved()
        have_model = model_path is not None and model_path.is_file()
        source = self.inspect_source.currentText()
        if not have_model:
            why = NO_MODEL_YET if self.inspect_model.currentText() == "current run" else "choose a model file"
        elif source != "image layer" and self.last_preview is None:
            why = "no preview yet: start or open a run, or pick 'image layer'"
        elif source == "image layer" and self.inspect_layer.layer() is None:
            why = "open an image layer first"
        else:
            why = ""
        for b, tip in ((self.components_button, "Show the INU field and the added noise of one draw of A_θ"),
                       (self.gallery_button, "Several random draws of A_θ at the current θ, side by side")):
            set_enabled(b, not why, why, tip)
        apply_why = (NO_MODEL_YET if not have_model else
                     "open an image layer first" if self.inspect_layer.layer() is None else "")
        set_enabled(self.apply_button, not apply_why, apply_why,
                    "Apply the model's learned augmentation to the chosen image layer (a new layer)")

    # ------------------------------------------------------------------------------------ work
    def _load_model(self, path: Path):
        """The model (cached), or None after notifying why not."""
        try:
            from l2s_gui.augmentation_view import load_model_cached

            return load_model_cached(path)
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return None

    def _start_worker(self, worker, on_result: Callable, busy: str) -> None:
        worker.returned.connect(on_result)
        worker.errored.connect(lambda exc: _notify.notify_error(_notify.error_text(exc)))
        self.inspect_status.setText(busy)
        self._worker = worker
        worker.start()

    def _inspect_input(self, model):
        """(image producer for the worker, source layer or None): None -> the result goes in tiles
        under the previews; a layer -> volumes placed beside it with its geometry (3D models)."""
        source = self.inspect_source.currentText()
        if source in ("synthetic preview", "real preview"):
            if self.last_preview is None:
                raise ValueError("no preview yet")
            key = "synthetic" if source == "synthetic preview" else "real"
            if model.ndim == 3:
                raise ValueError("the model is 3D: choose 'image layer' to inspect it on a volume")
            image = np.asarray(self.last_preview[key], np.float32)
            return (lambda: (image, True)), None
        layer = self.inspect_layer.layer()
        if layer is None:
            raise ValueError("open an image layer first")
        data = layer.data
        if model.ndim == 2:
            from l2s_gui.intensity import normalize_intensities

            index, transpose = plane_index(layer, self.viewer)

            def plane():
                volume = normalize_intensities(np.asarray(data, np.float32))  # whole volume, as in training
                p = np.asarray(volume[index], np.float32)
                return (p.T if transpose else p), True

            return plane, None
        if np.ndim(data) != 3:
            raise ValueError(f"the model is 3D but layer '{layer.name}' is {np.ndim(data)}D")
        return (lambda: (np.asarray(data), False)), layer

    def _run_inspect(self, what: str) -> None:
        path = self.inspect_model_path_resolved()
        if path is None or not path.is_file():
            _notify.notify_error("no model file to inspect yet")
            return
        seed = int(self.inspect_seed.value())
        n = int(self.gallery_n.value())
        model = self._load_model(path)
        if model is None:
            return
        try:
            produce, layer = self._inspect_input(model)
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return
        from napari.qt.threading import thread_worker

        from l2s_gui import augmentation_view

        @thread_worker(ignore_errors=True)  # errors go to our notification, not re-raised
        def work():
            image, normalized = produce()
            if what == "components":
                return augmentation_view.components(model, image, seed=seed, normalized=normalized)
            return augmentation_view.gallery(model, image, n=n, seed=seed, normalized=normalized)

        worker = work()
        worker.finished.connect(lambda: self.inspect_status.setText(""))
        self._start_worker(worker, lambda result: self._show_inspect(what, result, layer, model), "computing …")

    def show_components(self) -> None:
        self._run_inspect("components")

    def show_gallery(self) -> None:
        self._run_inspect("gallery")

    # ------------------------------------------------------------------------------------ results
    def _inspect_origin(self, shape: tuple[int, ...]) -> list[float]:
        """Top-left of the inspection row: right of the preview tiles (or under the data)."""
        synthetic = find_role(self.viewer, "preview_synthetic")
        if synthetic is not None:  # beside the preview column, level with its first tile
            y, x = synthetic.translate[-2:]
            return [float(y), float(x + synthetic.data.shape[-1] * 1.15)]
        extent = other_layers_extent(self.viewer)
        if extent is None:
            return [0.0, 0.0]
        return [float(extent[1, -2] + 8), float(extent[0, -1])]

    def _show_inspect(self, what: str, result, layer, model) -> None:
        from l2s_gui.augmentation_view import mosaic

        theta = model.augmentation.theta() if hasattr(model.augmentation, "theta") else {}
        desc = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else
                         f"{k}=[{', '.join(f'{x:.2f}' for x in v)}]" for k, v in theta.items()
                         if isinstance(v, (float, list)))
        rotate = self.previews.rotate and layer is None and self.inspect_source.currentText() != "image layer"
        prep = (lambda a: np.ascontiguousarray(np.rot90(a))) if rotate else (lambda a: a)
        if layer is not None:  # 3D volumes: beside the source layer, same geometry
            scale = list(layer.scale)
            width = layer.data.shape[-1] * scale[-1]
            base = list(layer.translate)
            meta = {"affine": (layer.metadata or {}).get("affine"), "l2s_theta": theta}

            def place(k):
                t = list(base)
                t[-1] += k * width * 1.1
                return t
        else:
            scale = [1.0, 1.0]
            meta = {"l2s_theta": theta}
            first = prep(next(iter(result.values())) if isinstance(result, dict) else result[0])
            origin = self._inspect_origin(first.shape)
            width = first.shape[-1]

            def place(k):
                return [origin[0], origin[1] + k * width * 1.08]
        if what == "components":
            shown = 0
            titles: list = []
            for key, title, cmap in (("augmented", "A_θ draw", "gray"),
                                     ("inu_field", "INU field", "magma"),
                                     ("noise", "noise", "twilight_shifted"),
                                     ("residual", "residual", "twilight_shifted")):
                if key not in result:
                    continue
                arr = prep(result[key]).astype(np.float32)
                if key == "augmented":
                    limits = [0.0, 1.0]
                elif key == "inu_field":
                    limits = [float(arr.min()), float(max(arr.max(), arr.min() + 1e-6))]
                else:
                    m = float(np.abs(arr).max()) or 1e-6
                    limits = [-m, m]
                upsert(self.viewer, f"inspect_{key}", "image", arr, name=f"L2S {title}", scale=scale,
                       translate=place(shown), colormap=cmap, contrast_limits=limits, metadata=meta)
                titles.append((place(shown), title))
                shown += 1
            if layer is None:
                tile_titles(self.viewer, "inspect_titles", [[y - 1.0, x] for (y, x), _t in titles],
                            [t for _p, t in titles])
            self.inspect_status.setText(f"one draw at θ: {desc}")
        else:
            tiles = [prep(a) for a in result]
            columns = math.ceil(len(tiles) / math.ceil(len(tiles) / 4))
            grid = mosaic(tiles, columns=columns, gap=2 if layer is None else 0)
            if layer is not None:  # volumes: tile along the last axis only
                grid = np.concatenate(tiles, axis=-1)
            upsert(self.viewer, "inspect_gallery", "image", grid.astype(np.float32), name="L2S gallery",
                   scale=scale, translate=place(0) if layer is None else place(1), colormap="gray",
                   contrast_limits=[0.0, 1.0], metadata=meta)
            self.inspect_status.setText(f"{len(tiles)} draws at θ: {desc}")

    def apply_to_layer(self) -> None:
        """Apply the model's learned augmentation to the chosen image layer -> a new image layer."""
        path = self.inspect_model_path_resolved()
        layer = self.inspect_layer.layer()
        if path is None or not path.is_file() or layer is None:
            _notify.notify_error("choose a model and an image layer first")
            return
        model = self._load_model(path)
        if model is None:
            return
        from napari.qt.threading import thread_worker

        from l2s_gui.augmentation_view import augment_scan

        data = np.asarray(layer.data)
        seed = int(self.inspect_seed.value())
        affine = layer_affine(layer) if data.ndim == 3 else None

        @thread_worker(ignore_errors=True)  # errors go to our notification, not re-raised
        def work():  # prepared as segmentation prepares a scan: RAS order, the model's voxel size
            return augment_scan(model, data, affine, seed=seed)

        def done(result):
            if result is None:
                return
            meta = {k: v for k, v in (layer.metadata or {}).items() if k in ("affine", "source_path", "header")}
            meta["l2s_augmented_by"] = str(path)
            upsert(self.viewer, f"applied_{layer.name}", "image", result.astype(np.float32),
                   name=f"{layer.name} · A_θ", scale=list(layer.scale), translate=list(layer.translate),
                   colormap="gray", contrast_limits=[0.0, 1.0], metadata=meta)
            self.inspect_status.setText(f"applied A_θ of {path.name} to '{layer.name}'")

        self._start_worker(work(), done, "applying …")


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
