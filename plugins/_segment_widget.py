"""The "Segment" dock widget: a trained model + an image layer -> a Labels layer on the image's grid.

The model: the current training run's (the viewer's shared :class:`RunStatus` says which run and
when its model changed: no polling), the shipped starter model (the default when there is no other
model), or a model file. Runs the engine's :func:`l2s_gui.segment.segment_image` in a worker thread
(napari ``thread_worker``) with progress and cancel; the result keeps the image's scale/translate
and true affine, holds the original label values, and comes with a per-label volume table (voxel
counts and volumes from :func:`l2s_gui.segment.label_volumes`, soft volumes from the posteriors)
that saves as the engine's CSV (:func:`l2s_gui.segment.write_volumes_csv`, as ``l2s segment
--vol``), the labels as NIfTI. Options: the left/right flipped pass (on by default; a note when
the model's label table allows none) and the largest-connected-component clean-up.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLineEdit, ensure_main_thread

from l2s_gui.io import write_volume

from . import _notify
from ._form_widgets import browse_row, button, button_row, choose_model_file, combo, device_choices, set_enabled
from ._layer_pickers import LayerCombo
from ._nifti_layers import layer_affine
from ._owned_layers import upsert
from ._run_status import run_status_for

CURRENT_RUN = "current training run"
STARTER_MODEL = "starter model"
MODEL_FILE = "model file"


def starter_path() -> Path | None:
    from l2s_gui.starter import starter_model_path

    return starter_model_path()


class SegmentWidget(QWidget):
    """Segment an image layer with a trained Learn2Synth model."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        trainer_attached = run_status_for(napari_viewer).trainer_attached
        self.status = run_status_for(napari_viewer)
        self._worker = None
        self._cancel = threading.Event()
        self.result_layer = None
        self.volumes: dict[int, tuple[int, float]] = {}
        self.soft_volumes: dict[int, float] = {}
        self.notes: list[str] = []
        self._names: dict[int, str] = {}
        self._info_key: tuple | None = None
        self._table_of_result = None
        self._subject = ""
        self._build()
        # no model of the user's own yet: the starter model (a training run, once there is one, wins)
        self._auto_source = True
        self.refresh_starter()
        if not trainer_attached and self.status.run_dir is None and starter_path() is not None:
            self._choose_source(STARTER_MODEL)
        self.status.events.run_dir.connect(self._on_run_changed)
        self.status.events.model_version.connect(self._update_buttons)
        self._update_buttons()

    # ------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.model_source = combo([CURRENT_RUN, STARTER_MODEL, MODEL_FILE])
        self.model_source.setToolTip("The model.safetensors of the run in the training widget, the shipped "
                                     "starter model, or a model file")
        self.model_source.currentTextChanged.connect(self._on_source_chosen)
        form.addRow("model", self.model_source)
        self.model_path = QElidingLineEdit()
        self.model_path.setPlaceholderText("model.safetensors (or a run folder)")
        self.model_path.textChanged.connect(self._on_model_path_edited)
        form.addRow("file", browse_row(self.model_path, self._browse_model, "Choose a model file"))
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)
        self.image_combo = LayerCombo(self.viewer, kinds=("image",), placeholder="(open an image layer)",
                                      exclude_roles=("preview_titles",))
        self.image_combo.layer_changed.connect(self._update_buttons)
        form.addRow("image", self.image_combo)
        self.device_combo = combo(device_choices())
        self.device_combo.setToolTip("auto: the first CUDA GPU, else Apple MPS, else the CPU")
        form.addRow("device", self.device_combo)
        self.flip_check = QCheckBox("average a left/right flipped pass")
        self.flip_check.setChecked(True)
        self.flip_check.setToolTip("Segment the scan flipped left/right too and average the posteriors, with the "
                                   "left/right classes swapped (as SynthSeg); skipped, with a note, when the model's "
                                   "label table does not say which classes are left/right")
        form.addRow("flip", self.flip_check)
        self.clean_check = QCheckBox("keep each structure's largest connected component")
        self.clean_check.setChecked(False)
        self.clean_check.setToolTip("Clean-up: voxels outside a structure's largest 26-connected component go to "
                                    "their next most probable class")
        form.addRow("clean-up", self.clean_check)
        layout.addLayout(form)

        self.segment_button = button("Segment", self.segment)
        self.cancel_button = button("Cancel", self.cancel)
        layout.addLayout(button_row(self.segment_button, self.cancel_button))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        layout.addWidget(self.progress)

        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["label", "name", "voxels", "volume (mm³)", "soft volume (mm³)"])
        self.table.horizontalHeaderItem(4).setToolTip("Posteriors summed over the scan's voxels times the voxel "
                                                      "volume (as SynthSeg's --vol)")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        layout.addWidget(self.table, 1)
        self.total_label = QLabel("")
        layout.addWidget(self.total_label)
        self.save_labels_button = button("Save labels…", self._save_labels_dialog)
        self.save_csv_button = button("Save volumes (CSV)…", self._save_csv_dialog)
        layout.addLayout(button_row(self.save_labels_button, self.save_csv_button))

    # ------------------------------------------------------------------------------------ model
    def _browse_model(self) -> None:
        path = choose_model_file(self)
        if path:
            self.model_path.setText(path)

    def _on_model_path_edited(self, text: str) -> None:
        if text.strip():
            self._choose_source(MODEL_FILE)
            self._auto_source = False
        self._update_buttons()

    def _choose_source(self, source: str) -> None:
        self.model_source.blockSignals(True)
        self.model_source.setCurrentText(source)
        self.model_source.blockSignals(False)

    def _on_source_chosen(self, *_args) -> None:
        self._auto_source = False
        self._update_buttons()

    def _on_run_changed(self, *_args) -> None:
        if self._auto_source and self.status.run_dir is not None:
            self._choose_source(CURRENT_RUN)
        self._update_buttons()

    def refresh_starter(self) -> None:
        """Enable the starter entry when this installation holds the starter model (else say why)."""
        from l2s_gui.starter import STARTER_FILE

        item = self.model_source.model().item(self.model_source.findText(STARTER_MODEL))
        available = starter_path() is not None
        item.setEnabled(available)
        item.setToolTip("the shipped starter model: 2D, background + 4 brain classes" if available else
                        f"no starter model in this installation ({STARTER_FILE} is not installed)")
        if not available and self.model_source.currentText() == STARTER_MODEL:
            self._choose_source(CURRENT_RUN)

    def model_file(self) -> Path | None:
        source = self.model_source.currentText()
        if source == CURRENT_RUN:
            from l2s_gui.runs import RunFolder

            return RunFolder(self.status.run_dir).model_path if self.status.run_dir is not None else None
        if source == STARTER_MODEL:
            return starter_path()
        text = self.model_path.text().strip()
        if not text:
            return None
        from l2s_gui.runs import RunFolder

        path = Path(text).expanduser()
        return RunFolder(path).model_path if path.is_dir() else path

    def _model_problem(self) -> str:
        path = self.model_file()
        source = self.model_source.currentText()
        if path is None:
            return ("no training run: start or open one in 'Learn2Synth training', or choose a model file"
                    if source == CURRENT_RUN else "no starter model in this installation; choose a model file"
                    if source == STARTER_MODEL else "choose a model file")
        if not path.is_file():
            return (f"the run has no model yet (written at its first checkpoint): {path}"
                    if self.model_source.currentText() == CURRENT_RUN else f"{path}: file not found")
        return ""

    # ------------------------------------------------------------------------------------ state
    def _busy(self) -> bool:
        return self._worker is not None

    def _update_buttons(self, *_args) -> None:
        busy = self._busy()
        problem = self._model_problem()
        if not problem:
            self._describe_model()
        else:
            self.model_info.setText("")
            self._info_key = None
        if busy:
            set_enabled(self.segment_button, False, "a segmentation is running")
        elif problem:
            set_enabled(self.segment_button, False, problem)
        elif self.image_combo.layer() is None:
            set_enabled(self.segment_button, False, "open an image layer (a scan) to segment")
        else:
            set_enabled(self.segment_button, True, tip="Segment the image layer (a Labels layer is added)")
        set_enabled(self.cancel_button, busy, "nothing to cancel", "Cancel the running segmentation")
        have = self.result_layer is not None and self.result_layer in self.viewer.layers
        set_enabled(self.save_labels_button, have, "segment an image first", "Save the labels as NIfTI")
        set_enabled(self.save_csv_button, bool(self.volumes), "segment an image first",
                    "Save the per-label volumes as CSV")

    def _describe_model(self) -> None:
        path = self.model_file()
        try:
            st = path.stat()
            key = (str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and key == self._info_key:
            return
        self._info_key = key
        try:
            from l2s_gui.model_io import read_model_metadata

            meta = read_model_metadata(path)
            cfg = meta.get("config", {})
            labels = meta.get("label_table", {}).get("labels", [])
            ndim = cfg.get("data", {}).get("ndim", "?")
            self.model_info.setText(f"{ndim}D, {len(labels)} classes, step {meta.get('step', '?')}")
        except Exception as exc:  # noqa: BLE001
            self.model_info.setText(f"<span style='color:#e06c75'>{_notify.error_text(exc)}</span>")

    @ensure_main_thread
    def _on_progress(self, done: int, total: int) -> None:
        # no synchronous repaint per slice (QProgressBar.setValue repaints at once otherwise)
        self.progress.setUpdatesEnabled(False)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"segmenting … {100 * done // max(total, 1)}%")
        self.progress.setUpdatesEnabled(True)

    # ------------------------------------------------------------------------------------ run
    def segment(self) -> bool:
        """Start segmenting the chosen image layer in a worker thread."""
        if self._busy():
            return False
        problem = self._model_problem()
        layer = self.image_combo.layer()
        if problem or layer is None:
            _notify.notify_error(problem or "open an image layer (a scan) to segment")
            return False
        data = np.asarray(layer.data)
        model_path = self.model_file()
        affine = layer_affine(layer)
        device = self.device_combo.currentText()
        flip, clean = self.flip_check.isChecked(), self.clean_check.isChecked()
        self._cancel.clear()
        cancel = self._cancel

        from napari.qt.threading import thread_worker

        source = (layer.metadata or {}).get("source_path") or f"layer '{layer.name}'"
        self._subject = source

        @thread_worker(ignore_errors=True)  # errors go to our notification, not re-raised
        def work():
            return run_segmentation(model_path, data, affine, device,
                                    progress=lambda d, t: self._on_progress(int(d), int(t)),
                                    cancelled=cancel.is_set, source=source, flip=flip, clean=clean)

        worker = work()
        worker.returned.connect(lambda result: self._on_result(result, layer, model_path))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("loading model …")
        self._update_buttons()
        worker.start()
        return True

    def cancel(self) -> None:
        if self._busy():
            self._cancel.set()
            self.progress.setFormat("cancelling …")

    def _on_error(self, exc: BaseException) -> None:
        _notify.notify_error(f"segmentation failed: {_notify.error_text(exc)}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._cancel.is_set():
            self.progress.setValue(0)
            self.progress.setFormat("cancelled")
        self._update_buttons()

    def _on_result(self, result: dict[str, Any] | None, layer, model_path: Path) -> None:
        if result is None:  # cancelled
            return
        labels = result["labels"]
        meta = {"affine": layer_affine(layer), "l2s_model": str(model_path)}
        for key in ("source_path", "header"):
            if key in (layer.metadata or {}):
                meta[key if key != "source_path" else "segmented_from"] = layer.metadata[key]
        self.result_layer = upsert(self.viewer, f"segment_{layer.name}", "labels", labels,
                                   name=f"{layer.name} segmentation", scale=list(layer.scale),
                                   translate=list(layer.translate), metadata=meta, opacity=0.5)
        self._names = result.get("names", {})
        self._table_of_result = result.get("table")
        self.volumes = result["volumes"]
        self.soft_volumes = result.get("soft_volumes", {})
        self.notes = list(result.get("notes", []))
        for note in self.notes:
            _notify.notify_info(note)
        self._fill_table()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done")
        self._update_buttons()

    def _fill_table(self) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(0)
        total = 0.0
        for value, (count, mm3) in sorted(self.volumes.items()):
            row = self.table.rowCount()
            self.table.insertRow(row)
            soft = self.soft_volumes.get(value, float("nan"))
            for col, item in enumerate((value, self._names.get(value, f"label {value}"), count, mm3, soft)):
                cell = QTableWidgetItem()
                if isinstance(item, (int, float)):
                    cell.setData(Qt.ItemDataRole.DisplayRole, round(item, 1) if isinstance(item, float) else item)
                    cell.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                else:
                    cell.setText(str(item))
                self.table.setItem(row, col, cell)
            total += mm3
        self.table.setSortingEnabled(True)
        self.total_label.setText(f"total labelled volume: {total / 1000:.1f} cm³ ({len(self.volumes)} labels)")

    # ------------------------------------------------------------------------------------ save
    def _save_labels_dialog(self) -> None:
        if self.result_layer is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"{self.result_layer.name}.nii.gz",
                                              "NIfTI (*.nii.gz *.nii);;MGZ (*.mgz)")
        if path:
            self.save_labels(path)

    def save_labels(self, path: str | Path) -> str | None:
        layer = self.result_layer
        if layer is None:
            return None
        try:
            source = (layer.metadata or {}).get("segmented_from")
            if source and Path(path).resolve() == Path(source).resolve():
                raise ValueError(f"{path}: is the input scan; choose another file (inputs are never overwritten)")
            out = write_volume(path, np.asarray(layer.data), layer_affine(layer),
                               header=(layer.metadata or {}).get("header"))
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return None
        _notify.notify_info(f"labels saved to {out}")
        return str(out)

    def _save_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save volumes", "volumes.csv", "CSV (*.csv)")
        if path:
            self.save_csv(path)

    def save_csv(self, path: str | Path) -> str | None:
        """The soft volumes of the last segmentation in the engine's CSV format (``l2s segment --vol``:
        one row per subject, one column per label)."""
        if self._table_of_result is None:
            return None
        try:
            from l2s_gui.segment import write_volumes_csv

            out = write_volumes_csv(path, [(self._subject, self.soft_volumes)], self._table_of_result,
                                    overwrite=True)
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return None
        return str(out)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.cancel()
        super().closeEvent(event)


def run_segmentation(model_path: Path, data: np.ndarray, affine: np.ndarray, device: str,
                     progress=None, cancelled=None, source: str | None = None, flip: bool = True,
                     clean: bool = False) -> dict[str, Any] | None:
    """Load the model and segment ``data`` (voxel order, ``affine``) on ``device`` (worker thread)
    with the engine (:func:`l2s_gui.segment.segment_image`, :func:`~l2s_gui.segment.label_volumes`).

    Returns {"labels": original label values on the image's grid, "volumes": {value: (voxels, mm3)}
    for every label of the model (0 when absent), "soft_volumes": {value: mm3 from the posteriors},
    "names": {value: name}, "table": the label table, "notes": [things to tell the user]} or None
    when cancelled.
    """
    import torch

    from l2s_gui.device import resolve_device
    from l2s_gui.model_io import load_model
    from l2s_gui.segment import SegmentationCancelled, label_volumes, segment_image

    dev = resolve_device(device, key="device")
    model = load_model(model_path, dev)
    report = (lambda fraction: progress(int(round(1000 * fraction)), 1000)) if progress else None
    try:
        result = segment_image(model, data, affine, dev, source=source, progress=report, cancelled=cancelled,
                               flip=flip, clean=clean)
    except SegmentationCancelled:
        return None
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    names = {int(v): n for v, n in zip(model.table.values, model.table.names)}
    return {"labels": result.labels, "volumes": label_volumes(result.labels, affine, model.table),
            "soft_volumes": dict(result.volumes_mm3), "names": names, "table": model.table,
            "notes": list(result.notes)}
