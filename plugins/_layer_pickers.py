"""Layer pickers kept in sync with the viewer's layer list: a combo of layers of some kinds (the
preferred kind first, so a labels picker starts on a Labels layer), and a checkable list of layers
and files; a layer as the engine's in-memory volume."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QWidget

from ._owned_layers import ROLE_KEY

LAYER_PREFIX = "layer: "


def layer_kind(layer) -> str:
    return type(layer).__name__.lower()


def is_owned(layer, prefixes: tuple[str, ...] = ("preview_",)) -> bool:
    """A layer the plugin created (live previews by default)."""
    role = (layer.metadata or {}).get(ROLE_KEY, "")
    return bool(role) and role.startswith(prefixes)


class _FollowsLayers:
    """Mixin for the layer pickers: ``refresh()`` whenever the viewer's layers are added, removed,
    moved or renamed (bound methods: napari holds them weakly, so a closed widget is not kept)."""

    def _follow_layers(self, viewer) -> None:
        events = viewer.layers.events
        events.inserted.connect(self._on_layers_changed)
        events.removed.connect(self._on_layers_changed)
        events.moved.connect(self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        value = getattr(event, "value", None)
        if value is not None and hasattr(value, "events"):
            try:
                value.events.name.connect(self.refresh)
            except Exception:  # noqa: BLE001
                pass
        self.refresh()


class LayerCombo(_FollowsLayers, QComboBox):
    """A combo box of the viewer's layers of some kinds, kept in sync with the layer list."""

    layer_changed = Signal()

    def __init__(self, viewer, kinds: Iterable[str] = ("image",), placeholder: str = "(no layer)",
                 accept: Callable | None = None, parent: QWidget | None = None,
                 exclude_roles: tuple[str, ...] = ("preview_",)):
        """``kinds``: the layer kinds offered, the first one preferred (listed first, so chosen by
        default)."""
        super().__init__(parent)
        self.exclude_roles = exclude_roles
        self._viewer_ref = weakref.ref(viewer)
        self.kinds = tuple(kinds)
        self.placeholder = placeholder
        self.accept = accept
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self._follow_layers(viewer)
        self.currentIndexChanged.connect(lambda *_: self.layer_changed.emit())
        self.refresh()

    def _candidates(self) -> list:
        viewer = self._viewer_ref()
        if viewer is None:
            return []
        out = []
        for layer in viewer.layers:
            if layer_kind(layer) not in self.kinds or (self.exclude_roles and is_owned(layer, self.exclude_roles)):
                continue
            if self.accept is not None and not self.accept(layer):
                continue
            out.append(layer)
        return sorted(out, key=lambda layer: self.kinds.index(layer_kind(layer)))  # stable: list order kept

    def refresh(self, *_args) -> None:
        current = self.currentText()
        names = [layer.name for layer in self._candidates()]
        self.blockSignals(True)
        self.clear()
        if names:
            self.addItems(names)
            if current in names:
                self.setCurrentIndex(names.index(current))
        else:
            self.addItem(self.placeholder)
        self.blockSignals(False)
        if self.currentText() != current:
            self.layer_changed.emit()

    def layer(self):
        viewer = self._viewer_ref()
        if viewer is None:
            return None
        name = self.currentText()
        for layer in self._candidates():
            if layer.name == name:
                return layer
        return None

    def set_layer_name(self, name: str) -> None:
        index = self.findText(name)
        if index >= 0:
            self.setCurrentIndex(index)


class SourceList(_FollowsLayers, QListWidget):
    """A checkable list of inputs: layers of some kinds (kept in sync) and added files/folders.

    ``sources()`` returns ``[("layer", layer), ("path", "/path"), ...]`` for the checked entries, in
    list order.
    """

    changed = Signal()

    def __init__(self, viewer, kinds: Iterable[str] = ("labels",), checked_by_default: Callable | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer_ref = weakref.ref(viewer)
        self.kinds = tuple(kinds)
        self.checked_by_default = checked_by_default or (lambda layer: False)
        self._paths: list[str] = []
        self._state: dict[str, bool] = {}
        self._follow_layers(viewer)
        self.itemChanged.connect(self._on_item_changed)
        self.setMaximumHeight(110)
        self.refresh()

    def _layers(self) -> list:
        viewer = self._viewer_ref()
        if viewer is None:
            return []
        return [layer for layer in viewer.layers
                if layer_kind(layer) in self.kinds and not (layer.metadata or {}).get(ROLE_KEY)]

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        self._state[key] = item.checkState() == Qt.CheckState.Checked
        self.changed.emit()

    def add_path(self, path: str) -> None:
        if path and path not in self._paths:
            self._paths.append(path)
            self._state[f"path:{path}"] = True
            self.refresh()
            self.changed.emit()

    def remove_selected(self) -> None:
        for item in self.selectedItems():
            key = item.data(Qt.ItemDataRole.UserRole)
            if key.startswith("path:"):
                self._paths.remove(key[5:])
                self._state.pop(key, None)
            else:
                self._state[key] = False
        self.refresh()
        self.changed.emit()

    def refresh(self, *_args) -> None:
        self.blockSignals(True)
        self.clear()
        for layer in self._layers():
            key = f"layer:{layer.name}"
            if key not in self._state:
                self._state[key] = bool(self.checked_by_default(layer))
            item = QListWidgetItem(f"{LAYER_PREFIX}{layer.name}")
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if self._state[key] else Qt.CheckState.Unchecked)
            self.addItem(item)
        for path in self._paths:
            key = f"path:{path}"
            item = QListWidgetItem(path)
            item.setToolTip(path)
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if self._state.get(key, True) else Qt.CheckState.Unchecked)
            self.addItem(item)
        self.blockSignals(False)

    def sources(self) -> list[tuple[str, object]]:
        layers = {f"layer:{layer.name}": layer for layer in self._layers()}
        out: list[tuple[str, object]] = []
        for i in range(self.count()):
            item = self.item(i)
            if item.checkState() != Qt.CheckState.Checked:
                continue
            key = item.data(Qt.ItemDataRole.UserRole)
            if key.startswith("layer:") and key in layers:
                out.append(("layer", layers[key]))
            elif key.startswith("path:"):
                out.append(("path", key[5:]))
        return out


def layer_volume(layer):
    """A napari layer as the engine's in-memory volume (data, true affine, header, name)."""
    from l2s_gui.run_inputs import ArrayVolume

    from ._nifti_layers import layer_affine

    return ArrayVolume(np.asarray(layer.data), layer_affine(layer), layer.name, (layer.metadata or {}).get("header"))
