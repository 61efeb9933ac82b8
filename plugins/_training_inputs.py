"""Inputs of the training widget: the Data tab (label maps for synthesis, real scan + labels pairs,
validation split, label table, the built-in sample) and writing them into a new run folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
                            QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ._common import LayerCombo, SourceList, error_text, layer_is_label_like
from ._forms import button, button_row, dspin, tab_page
from ._geometry import layer_affine, safe_name, write_volume

Entry = tuple[str, Any]
"""("layer", layer or layer name) or ("path", "/a/file/or/folder")."""


def _shipped_tables() -> list[str]:
    try:
        from l2s_gui.labels import shipped_tables

        return shipped_tables()
    except Exception:  # noqa: BLE001
        return []


def _write_layer(layer, path: Path, labels: bool) -> str:
    data = np.asarray(layer.data)
    if labels:
        if data.dtype.kind not in "iu":
            data = np.round(data).astype(np.int32)
    else:
        data = data.astype(np.float32, copy=False)
    header = (layer.metadata or {}).get("header")
    return write_volume(path, data, layer_affine(layer), header=header)


def pair_problem(scan, labels) -> str:
    """Why two layers cannot be a (scan, labels) pair; "" when they can."""
    ok, why = layer_is_label_like(labels)
    if not ok:
        return why
    if scan is labels:
        return "choose different layers for the scan and its labels"
    s_shape, l_shape = tuple(np.shape(scan.data)), tuple(np.shape(labels.data))
    if s_shape != l_shape:
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        return (f"scan '{scan.name}' ({fmt(s_shape)}) and labels '{labels.name}' ({fmt(l_shape)}): shapes "
                f"differ; the label map must be on the scan's voxel grid")
    return ""


class InputsMixin:
    """The Data tab of :class:`TrainingWidget` and :meth:`prepare_run`.

    Uses from the widget: ``viewer``, ``method_combo``, ``settings_dict``, ``apply_settings``,
    ``_update_buttons`` and the notifiers."""

    def _build_data_tab(self) -> QWidget:
        page, layout = tab_page()

        box = QGroupBox("Label maps for synthesis")
        v = QVBoxLayout(box)
        self.synth_list = SourceList(self.viewer, kinds=("labels",), checked_by_default=lambda layer: True)
        self.synth_list.setToolTip("Checked label-map layers and files/folders feed the SynthSeg generator")
        self.synth_list.changed.connect(self._update_buttons)
        v.addWidget(self.synth_list)
        add_files = button("Add files…", self._add_synth_files)
        add_folder = button("Add folder…", self._add_synth_folder)
        remove = button("Remove", self.synth_list.remove_selected,
                        "Remove selected files/folders (layers are unchecked)")
        v.addLayout(button_row(add_files, add_folder, remove))
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
        self.scan_combo = LayerCombo(self.viewer, kinds=("image",), placeholder="(no image layer)")
        self.labels_combo = LayerCombo(self.viewer, kinds=("labels", "image"), placeholder="(no labels layer)")
        self.labels_combo.setToolTip("A Labels layer (or an image holding whole numbers) on the scan's grid")
        self.add_pair_button = button("Add pair", self._add_layer_pair)
        add_folders = button("Add folders…", self._add_folder_pair,
                             "A folder of scans and a folder of their label maps, paired in sorted order")
        remove_pair = button("Remove", self._remove_pairs)
        grid.addWidget(QLabel("scan"), 0, 0)
        grid.addWidget(self.scan_combo, 0, 1)
        grid.addWidget(QLabel("labels"), 1, 0)
        grid.addWidget(self.labels_combo, 1, 1)
        grid.addLayout(button_row(self.add_pair_button, add_folders, remove_pair), 2, 0, 1, 2)
        v.addLayout(grid)
        form = QFormLayout()
        self.val_fraction = dspin(0.0, 0.95, 0.25, 2, 0.05)
        self.val_fraction.setToolTip("Fraction of the real pairs held out for validation (at least one each "
                                     "way; with a single pair it serves both)")
        form.addRow("validation fraction", self.val_fraction)
        self.label_table_combo = QComboBox()
        self.label_table_combo.setEditable(True)
        self.label_table_combo.addItems(["auto"] + _shipped_tables())
        self.label_table_combo.setToolTip("auto: every label value found becomes a class; or a shipped table "
                                          "or a path to a JSON label table")
        form.addRow("label table", self.label_table_combo)
        v.addLayout(form)
        layout.addWidget(box)
        layout.addWidget(button("Use the built-in sample (files)", self.use_sample,
                                "Fill the inputs with the built-in sample: deformed label maps for synthesis "
                                "and three real T1 + labels pairs (MNI152 from nilearn, written once to the "
                                "cache)"))
        layout.addStretch(1)
        for c in (self.scan_combo, self.labels_combo):
            c.layer_changed.connect(self._update_buttons)
        return page

    # ------------------------------------------------------------------------------------ entries
    def _add_synth_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Label maps", "", "Volumes (*.nii *.nii.gz *.mgz *.mgh)")
        for p in paths:
            self.synth_list.add_path(p)

    def _add_synth_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of label maps")
        if path:
            self.synth_list.add_path(path)

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
        self._update_buttons()

    def use_sample(self) -> bool:
        """Inputs and settings of the engine's demo (``l2s_gui.sample_data.sample_config``)."""
        try:
            from l2s_gui.sample_data import sample_config

            config = sample_config()
        except Exception as exc:  # noqa: BLE001
            self._notify_error(error_text(exc))
            return False
        self.apply_settings(config)
        return True

    def _add_layer_pair(self) -> None:
        scan, labels = self.scan_combo.layer(), self.labels_combo.layer()
        if scan is None or labels is None:
            return
        problem = pair_problem(scan, labels)
        if problem:
            self._notify_error(problem)
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
        rows = sorted({i.row() for i in self.pairs_table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.pairs_table.removeRow(r)
        self._update_buttons()

    def _pairs(self) -> list[tuple[Entry, Entry]]:
        """The real pairs in table order, each side ("layer", layer name) or ("path", path)."""
        out = []
        for r in range(self.pairs_table.rowCount()):
            a, b = self.pairs_table.item(r, 0), self.pairs_table.item(r, 1)
            if a is not None and b is not None:
                out.append((a.data(Qt.ItemDataRole.UserRole), b.data(Qt.ItemDataRole.UserRole)))
        return out

    def _layer_named(self, name: str):
        for layer in self.viewer.layers:
            if layer.name == name:
                return layer
        return None

    def missing_inputs(self) -> str:
        method = self.method_combo.currentText()
        missing = []
        if method in ("learn2synth", "synthseg") and not self.synth_list.sources():
            missing.append("check or add at least one label map for synthesis (Data tab)")
        if method in ("learn2synth", "supervised") and not self._pairs():
            missing.append("add at least one real scan + labels pair (Data tab)")
        return "; ".join(missing)

    # ------------------------------------------------------------------------------------ run folder
    def _resolved_pairs(self) -> list[tuple[Entry, Entry]]:
        """The real pairs with their layers looked up and checked (ValueError naming the problem)."""
        resolved = []
        for (ka, a), (kb, b) in self._pairs():
            la = self._layer_named(a) if ka == "layer" else a
            lb = self._layer_named(b) if kb == "layer" else b
            if la is None or lb is None:
                raise ValueError(f"layer '{a if la is None else b}' of a real pair is no longer open; "
                                 f"remove that pair")
            if ka == "layer" and kb == "layer":
                problem = pair_problem(la, lb)
                if problem:
                    raise ValueError(problem)
            elif kb == "layer":
                ok, why = layer_is_label_like(lb)
                if not ok:
                    raise ValueError(why)
            resolved.append(((ka, la), (kb, lb)))
        return resolved

    def prepare_run(self, run_dir: Path) -> Path:
        """Validate the settings, write the chosen layers to ``run_dir/inputs`` and the config; return
        the config path. Raises ValueError / L2SError with a one-line message."""
        from l2s_gui.config import Config, check_data_present

        data = self.settings_dict()
        method = data["training"]["method"]
        synth = self.synth_list.sources() if method != "supervised" else []
        # check the layers before writing anything (synthseg: pairs optional, then for validation only)
        for kind, item in synth:
            if kind == "layer":
                ok, why = layer_is_label_like(item)
                if not ok:
                    raise ValueError(why)
        resolved_pairs = self._resolved_pairs()
        # validate the config (paths are placeholders for now)
        probe = dict(data)
        probe["data"] = dict(data["data"], label_maps=["x"] if synth else [],
                             real_images=["x"] * len(resolved_pairs), real_labels=["x"] * len(resolved_pairs))
        check_data_present(Config.from_dict(probe))

        if run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == ["inputs"]:
            shutil.rmtree(run_dir / "inputs")  # a start of ours that failed before the run began
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ValueError(f"{run_dir}: run folder exists and is not empty; choose a new folder "
                             f"(or Open run… to resume it)")
        inputs = run_dir / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)

        def written(kind: str, item: Any, name: str, labels: bool) -> str:
            if kind == "layer":
                return _write_layer(item, inputs / f"{name}_{safe_name(item.name)}.nii", labels=labels)
            return str(Path(item).resolve())

        label_maps = [written(kind, item, f"synth_{i:03d}", True) for i, (kind, item) in enumerate(synth)]
        real_images, real_labels = [], []
        for i, ((ka, a), (kb, b)) in enumerate(resolved_pairs):
            real_images.append(written(ka, a, f"real_{i:03d}_scan", False))
            real_labels.append(written(kb, b, f"real_{i:03d}_labels", True))
        data["data"].update(label_maps=label_maps, real_images=real_images, real_labels=real_labels)
        config_path = inputs / "config.yaml"
        Config.from_dict(data).save(config_path)
        return config_path
