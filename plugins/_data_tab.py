"""The Data tab of the training widget: label maps for synthesis and real (scan, labels) pairs --
layers of the viewer or files/folders -- the validation split and the label table, and the
unlabelled scans of self-training with its round settings (``self_training.*``, from the schema).

It only collects; the engine checks and writes (:func:`l2s_gui.run_inputs.prepare_run_inputs`).
When the viewer holds the built-in sample (opened from napari's sample menu), its scan and labels
become a real pair on their own, so Start is ready at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from l2s_gui.run_inputs import labels_problem, pair_problem

from . import _notify
from ._config_form import ConfigForm, slider_editor
from ._form_widgets import button, button_row, tab_page
from ._layer_pickers import LayerCombo, SourceList, layer_volume
from ._sample_data import SAMPLE_KEY

SELF_TRAINING_KEYS = ["self_training.rounds", "self_training.confidence", "self_training.tolerance",
                      "self_training.steps", "self_training.pseudo_fraction", "self_training.student_init"]
VOLUME_FILTER = "Volumes (*.nii *.nii.gz *.mgz *.mgh)"
Entry = tuple[str, Any]
"""("layer", layer name) or ("path", "/a/file/or/folder")."""


def _shipped_tables() -> list[str]:
    try:
        from l2s_gui.labels import shipped_tables

        return shipped_tables()
    except Exception:  # noqa: BLE001
        return []


class DataTab(QWidget):
    """Inputs of a training run; emits ``changed`` whenever they change."""

    changed = Signal()
    sample_requested = Signal()

    def __init__(self, viewer, form: ConfigForm, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        form.add("data.val_fraction", editor=slider_editor(form_spec("data.val_fraction")))
        table = QComboBox()
        table.setEditable(True)
        table.addItems(["auto"] + _shipped_tables())
        form.add("data.label_table", editor=_combo_editor(table, "data.label_table"))
        self.form = form
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        page, layout = tab_page()
        outer.addWidget(page)

        box = QGroupBox("Label maps for synthesis")
        v = QVBoxLayout(box)
        self.synth_list = SourceList(viewer, kinds=("labels",), checked_by_default=lambda layer: True)
        self.synth_list.setToolTip("Checked label-map layers and files/folders feed the SynthSeg generator")
        self.synth_list.changed.connect(self.changed)
        v.addWidget(self.synth_list)
        v.addLayout(button_row(button("Add files…", self._add_synth_files),
                               button("Add folder…", self._add_synth_folder),
                               button("Remove", self.synth_list.remove_selected,
                                      "Remove selected files/folders (layers are unchecked)")))
        layout.addWidget(box)

        box = QGroupBox("Real scans + labels (hyper-step / validation)")
        v = QVBoxLayout(box)
        self.pairs_table = QTableWidget(0, 2)
        self.pairs_table.setHorizontalHeaderLabels(["scan", "labels"])
        self.pairs_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.pairs_table.verticalHeader().setVisible(False)
        self.pairs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.pairs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.pairs_table.setMaximumHeight(110)
        v.addWidget(self.pairs_table)
        grid = QGridLayout()
        self.scan_combo = LayerCombo(viewer, kinds=("image",), placeholder="(no image layer)")
        self.labels_combo = LayerCombo(viewer, kinds=("labels", "image"), placeholder="(no labels layer)")
        self.labels_combo.setToolTip("A Labels layer (or an image holding whole numbers) on the scan's grid")
        self.add_pair_button = button("Add pair", self._add_layer_pair)
        grid.addWidget(QLabel("scan"), 0, 0)
        grid.addWidget(self.scan_combo, 0, 1)
        grid.addWidget(QLabel("labels"), 1, 0)
        grid.addWidget(self.labels_combo, 1, 1)
        grid.addLayout(button_row(self.add_pair_button,
                                  button("Add folders…", self._add_folder_pair,
                                         "A folder of scans and a folder of their label maps, paired in sorted order"),
                                  button("Remove", self._remove_pairs)), 2, 0, 1, 2)
        v.addLayout(grid)
        rows = QFormLayout()
        form.rows(rows, ["data.val_fraction", "data.label_table"])
        v.addLayout(rows)
        layout.addWidget(box)
        layout.addWidget(self._unlabelled_box(form))
        layout.addWidget(button("Use the built-in sample (files)", self.sample_requested.emit,
                                "Fill the inputs and settings with the built-in sample of `l2s demo`: deformed "
                                "label maps for synthesis and three real T1 + labels pairs (MNI152 from nilearn, "
                                "written once to the cache)"))
        layout.addStretch(1)
        viewer.layers.events.inserted.connect(self._adopt_sample)
        self._adopt_sample()

    def _unlabelled_box(self, form: ConfigForm) -> QGroupBox:
        """Unlabelled target scans (checked image layers, files, folders) and the round settings."""
        box = QGroupBox("Unlabelled scans (self-training)")
        v = QVBoxLayout(box)
        self.unlabelled_list = SourceList(viewer=self.viewer, kinds=("image",))
        self.unlabelled_list.setToolTip("Checked image layers and files/folders: after training, each self-training "
                                        "round pseudo-labels them and trains a student on them and synthetic images")
        self.unlabelled_list.changed.connect(self.changed)
        v.addWidget(self.unlabelled_list)
        v.addLayout(button_row(button("Add files…", self._add_unlabelled_files),
                               button("Add folder…", self._add_unlabelled_folder),
                               button("Remove", self.unlabelled_list.remove_selected,
                                      "Remove selected files/folders (layers are unchecked)")))
        rows = QFormLayout()
        for key in SELF_TRAINING_KEYS:
            form.add(key)
        form.rows(rows, SELF_TRAINING_KEYS)
        v.addLayout(rows)
        return box

    def _add_unlabelled_files(self) -> None:
        self._add_files_to(self.unlabelled_list, "Unlabelled scans")

    def _add_unlabelled_folder(self) -> None:
        self._add_folder_to(self.unlabelled_list, "Folder of unlabelled scans")

    def unlabelled_sources(self) -> list:
        """The checked unlabelled scans for :func:`l2s_gui.run_inputs.prepare_run_inputs`: layers as
        in-memory volumes, files/folders as paths."""
        return [layer_volume(item) if kind == "layer" else item for kind, item in self.unlabelled_list.sources()]

    # ------------------------------------------------------------------------------------ entries
    def _add_files_to(self, target: SourceList, title: str) -> None:
        """Volume files chosen in a file dialog titled ``title``, added to ``target``."""
        paths, _ = QFileDialog.getOpenFileNames(self, title, "", VOLUME_FILTER)
        for p in paths:
            target.add_path(p)

    def _add_folder_to(self, target: SourceList, title: str) -> None:
        """A folder chosen in a dialog titled ``title``, added to ``target``."""
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            target.add_path(path)

    def _add_synth_files(self) -> None:
        self._add_files_to(self.synth_list, "Label maps")

    def _add_synth_folder(self) -> None:
        self._add_folder_to(self.synth_list, "Folder of label maps")

    def add_pair(self, scan: Any, labels: Any) -> None:
        """Add a real (scan, labels) pair: layers or paths (files or folders)."""
        row = self.pairs_table.rowCount()
        self.pairs_table.insertRow(row)
        for col, item in enumerate((scan, labels)):
            if isinstance(item, (str, Path)):
                cell = QTableWidgetItem(str(item))
                cell.setData(Qt.ItemDataRole.UserRole, ("path", str(item)))
                cell.setToolTip(str(item))
            else:
                cell = QTableWidgetItem(f"layer: {item.name}")
                cell.setData(Qt.ItemDataRole.UserRole, ("layer", item.name))
            self.pairs_table.setItem(row, col, cell)
        self.changed.emit()

    def _adopt_sample(self, *_args) -> None:
        """The built-in sample's scan and labels (napari's sample menu) become a pair, once."""
        if self.pairs_table.rowCount():
            return
        found = {(layer.metadata or {}).get(SAMPLE_KEY): layer for layer in self.viewer.layers}
        scan, labels = found.get("scan"), found.get("labels")
        if scan is not None and labels is not None and not pair_problem(layer_volume(scan), layer_volume(labels)):
            self.add_pair(scan, labels)
            self.scan_combo.set_layer_name(scan.name)
            self.labels_combo.set_layer_name(labels.name)

    def _add_layer_pair(self) -> None:
        scan, labels = self.scan_combo.layer(), self.labels_combo.layer()
        if scan is None or labels is None:
            return
        problem = pair_problem(layer_volume(scan), layer_volume(labels)) if scan is not labels else \
            "choose different layers for the scan and its labels"
        if problem:
            _notify.notify_error(problem)
            return
        self.add_pair(scan, labels)

    def _add_folder_pair(self) -> None:
        scans = QFileDialog.getExistingDirectory(self, "Folder of real scans")
        if not scans:
            return
        labels = QFileDialog.getExistingDirectory(self, "Folder of their label maps (same sorted order)")
        if labels:
            self.add_pair(scans, labels)

    def _remove_pairs(self) -> None:
        for r in sorted({i.row() for i in self.pairs_table.selectedIndexes()}, reverse=True):
            self.pairs_table.removeRow(r)
        self.changed.emit()

    def pairs(self) -> list[tuple[Entry, Entry]]:
        """The real pairs in table order, each side ("layer", layer name) or ("path", path)."""
        out = []
        for r in range(self.pairs_table.rowCount()):
            a, b = self.pairs_table.item(r, 0), self.pairs_table.item(r, 1)
            if a is not None and b is not None:
                out.append((a.data(Qt.ItemDataRole.UserRole), b.data(Qt.ItemDataRole.UserRole)))
        return out

    def counts(self) -> tuple[int, int]:
        """(label maps checked for synthesis, real pairs)."""
        return len(self.synth_list.sources()), len(self.pairs())

    # ------------------------------------------------------------------------------------ config
    def apply_paths(self, data: dict[str, Any]) -> None:
        """The file entries of a config mapping (its data lists)."""
        d = data.get("data") or {}
        for p in d.get("label_maps") or []:
            self.synth_list.add_path(str(p))
        for scan, labels in zip(d.get("real_images") or [], d.get("real_labels") or []):
            self.add_pair(str(scan), str(labels))
        for p in d.get("unlabelled_images") or []:
            self.unlabelled_list.add_path(str(p))

    def file_paths(self) -> dict[str, list[str]]:
        """The data lists of the file entries (layers become files on Start only)."""
        pairs = [(a[1], b[1]) for a, b in self.pairs() if a[0] == "path" and b[0] == "path"]
        return {"label_maps": [p for kind, p in self.synth_list.sources() if kind == "path"],
                "real_images": [a for a, _ in pairs], "real_labels": [b for _, b in pairs],
                "unlabelled_images": [p for kind, p in self.unlabelled_list.sources() if kind == "path"]}

    def has_layers(self) -> bool:
        return any(kind == "layer" for kind, _ in self.synth_list.sources() + self.unlabelled_list.sources()) or any(
            a[0] == "layer" or b[0] == "layer" for a, b in self.pairs())

    def run_sources(self) -> tuple[list, list]:
        """(label maps, pairs) for :func:`l2s_gui.run_inputs.prepare_run_inputs`: layers as in-memory
        volumes, files as paths. ValueError naming a layer that is gone or not a label map."""
        def layer_named(name: str):
            for layer in self.viewer.layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"layer '{name}' of a real pair is no longer open; remove that pair")

        maps = []
        for kind, item in self.synth_list.sources():
            if kind == "layer":
                volume = layer_volume(item)
                if labels_problem(volume):
                    raise ValueError(labels_problem(volume))
                maps.append(volume)
            else:
                maps.append(item)
        pairs = []
        for (ka, a), (kb, b) in self.pairs():
            pairs.append((layer_volume(layer_named(a)) if ka == "layer" else a,
                          layer_volume(layer_named(b)) if kb == "layer" else b))
        return maps, pairs


def form_spec(key: str):
    from l2s_gui.config import config_fields

    return {f.key: f for f in config_fields()}[key]


def _combo_editor(combo: QComboBox, key: str):
    from ._config_form import Editor, _tooltip

    spec = form_spec(key)
    combo.setCurrentText(str(spec.default))
    combo.setToolTip(_tooltip(spec) + "\nauto: every label value found becomes a class; or a shipped table "
                     "or a path to a JSON label table")
    return Editor(spec, combo, lambda: combo.currentText().strip() or "auto", lambda v: combo.setCurrentText(str(v)))
