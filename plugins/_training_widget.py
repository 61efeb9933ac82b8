"""The "Learn2Synth training" dock widget.

Training runs in a separate process (``python -m l2s_gui.cli train|resume``): the GUI writes the
chosen layers to ``RUN/inputs/`` as NIfTI, writes a config, starts the process and then only
*watches the run folder* (QTimer: state.json, metrics.jsonl incrementally, previews/latest.npz).
The same watcher opens a past run (plots and previews restored), resumes it, or follows a run
started elsewhere with the CLI. Pause/Resume/Stop go through ``control.json``; Stop escalates to
SIGINT and kill if the process does not exit in time.
"""

from __future__ import annotations

import copy
import math
import shutil
import socket
import time
import weakref
from pathlib import Path
from typing import Any, Optional

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout,
                            QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton,
                            QSpinBox, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
                            QAbstractItemView, QHeaderView, QScrollArea, QFrame, QSizePolicy)

from ._common import (LayerCombo, SourceList, error_text, layer_is_label_like, notify_error, notify_info,
                      notify_warning, set_enabled)
from ._geometry import layer_affine, safe_name, write_volume
from ._layers import find_role, upsert
from ._plots import TrainingPlots
from ._previews import PreviewLayers, tile_titles
from ._process import TrainingProcess
from ._watcher import RunWatcher, pid_alive

ACTIVE = ("running", "paused")
ENDED = ("stopped", "finished", "error")
STALE_AFTER_S = 180.0
"""A run whose files have not changed for this long, with no live local pid, counts as ended."""

# Live widgets, so the Segment widget can offer "the current run's model" (weak: no leaks).
_INSTANCES: "weakref.WeakSet[TrainingWidget]" = weakref.WeakSet()


def _unwrap(viewer):
    """napari hands plugin widgets a proxy of the viewer (one per widget): compare the real objects."""
    return getattr(viewer, "__wrapped__", viewer)


def training_widget_for(viewer) -> Optional["TrainingWidget"]:
    target = _unwrap(viewer)
    for widget in list(_INSTANCES):
        if _unwrap(widget.viewer) is target:
            return widget
    return None


def default_run_root() -> Path:
    return Path.home() / "l2s_runs"


def new_run_dir() -> Path:
    root = default_run_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"run-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"run-{stamp}-{n}"
    return path


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{what}: expected whole numbers separated by spaces, got {text!r}") from None


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def _dspin(lo: float, hi: float, value: float, decimals: int = 4, step: float = 0.01) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def _combo(items: list[str], current: Optional[str] = None) -> QComboBox:
    c = QComboBox()
    c.addItems(items)
    if current is not None:
        c.setCurrentText(current)
    return c


def _fixed_lines(label: QLabel, lines: int) -> None:
    """Give a label a fixed height so that changing its text never re-lays-out napari's main window
    (a relayout resizes the GL canvas: tens of milliseconds on every progress update)."""
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 4)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)


class _CloseGuard(QObject):
    """Event filter on napari's main window: closing during training asks, then stops cleanly."""

    def __init__(self, widget: "TrainingWidget"):
        super().__init__(widget)
        self._widget = weakref.ref(widget)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        widget = self._widget()
        if widget is not None and event.type() == QEvent.Type.Close and widget.process.is_running():
            if not widget.confirm_close():
                event.ignore()
                return True
        return False


class TrainingWidget(QWidget):
    """Learn2Synth training: inputs, settings, device, Start/Pause/Resume/Stop, progress, inspect."""

    def __init__(self, napari_viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        _INSTANCES.add(self)
        self.process = TrainingProcess(self)
        self.process.finished.connect(self._on_process_finished)
        self.watcher = RunWatcher(self, interval_ms=500)
        self.watcher.events_arrived.connect(self._on_events)
        self.watcher.state_changed.connect(self._on_state)
        self.watcher.preview_arrived.connect(self._on_preview)
        self.watcher.restarted.connect(self._on_restarted)
        self.previews = PreviewLayers(napari_viewer, rotate=True)
        self.plots: Optional[TrainingPlots] = None
        self._plots_dock = None
        self.run_dir: Optional[Path] = None
        self.state: dict[str, Any] = {}
        self.last_preview: Optional[dict[str, Any]] = None
        self._reported_error_for: Optional[str] = None
        self._total_steps = 0
        self._step = 0
        self._it_per_s = 0.0
        self._last_losses: dict[str, Optional[float]] = {}
        self._last_dice: Optional[float] = None
        self._pending_control: Optional[str] = None
        self._worker = None
        self._base_config: dict[str, Any] = {}
        self.confirm_close_answer: Optional[bool] = None  # tests: answer the close question
        self._build()
        self._close_guard = _CloseGuard(self)
        self._guarded_window = None
        napari_viewer.events.theme.connect(self._on_theme)
        self._update_buttons()

    # ------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)

        run_row = QHBoxLayout()
        self.run_edit = QLineEdit(str(new_run_dir()))
        self.run_edit.setToolTip("Run folder: config, metrics, previews, checkpoints and model.safetensors "
                                 "are written here (a new, empty folder for Start)")
        browse = QPushButton("…")
        browse.setFixedWidth(28)
        browse.setToolTip("Choose the folder for a new run")
        browse.clicked.connect(self._browse_run_dir)
        self.open_button = QPushButton("Open run…")
        self.open_button.setToolTip("Open a past run folder or one being written by `l2s train` elsewhere: "
                                    "plots and previews are restored and followed live")
        self.open_button.clicked.connect(self._choose_and_open_run)
        run_row.addWidget(QLabel("Run"))
        run_row.addWidget(self.run_edit, 1)
        run_row.addWidget(browse)
        run_row.addWidget(self.open_button)
        outer.addLayout(run_row)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._scroll(self._build_data_tab()), "Data")
        self.tabs.addTab(self._scroll(self._build_model_tab()), "Model")
        self.tabs.addTab(self._scroll(self._build_training_tab()), "Training")
        self.tabs.addTab(self._scroll(self._build_inspect_tab()), "Inspect")
        outer.addWidget(self.tabs, 1)

        dev_row = QHBoxLayout()
        self.device_combo = _combo(self._devices(), "auto")
        self.device_combo.setToolTip("auto: the first CUDA GPU, else Apple MPS, else the CPU")
        self.device_combo.currentTextChanged.connect(lambda *_: self._update_device_label())
        self.device_label = QLabel()
        self.device_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_label.setWordWrap(True)
        _fixed_lines(self.device_label, 2)
        dev_row.addWidget(QLabel("Device"))
        dev_row.addWidget(self.device_combo)
        dev_row.addWidget(self.device_label, 1)
        outer.addLayout(dev_row)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop")
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        outer.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        outer.addWidget(self.progress)
        self.status_label = QLabel("No run yet.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        _fixed_lines(self.status_label, 3)
        outer.addWidget(self.status_label)
        self._update_device_label()

    @staticmethod
    def _scroll(widget: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidget(widget)
        return area

    def _build_data_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(2, 2, 2, 2)

        box = QGroupBox("Label maps for synthesis")
        v = QVBoxLayout(box)
        self.synth_list = SourceList(self.viewer, kinds=("labels",), checked_by_default=lambda layer: True)
        self.synth_list.setToolTip("Checked label-map layers and files/folders feed the SynthSeg generator")
        self.synth_list.changed.connect(self._update_buttons)
        v.addWidget(self.synth_list)
        row = QHBoxLayout()
        add_files = QPushButton("Add files…")
        add_files.clicked.connect(self._add_synth_files)
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(self._add_synth_folder)
        remove = QPushButton("Remove")
        remove.setToolTip("Remove selected files/folders (layers are unchecked)")
        remove.clicked.connect(self.synth_list.remove_selected)
        for b in (add_files, add_folder, remove):
            row.addWidget(b)
        v.addLayout(row)
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
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.clicked.connect(self._add_layer_pair)
        add_folders = QPushButton("Add folders…")
        add_folders.setToolTip("A folder of scans and a folder of their label maps, paired in sorted order")
        add_folders.clicked.connect(self._add_folder_pair)
        remove_pair = QPushButton("Remove")
        remove_pair.clicked.connect(self._remove_pairs)
        grid.addWidget(QLabel("scan"), 0, 0)
        grid.addWidget(self.scan_combo, 0, 1)
        grid.addWidget(QLabel("labels"), 1, 0)
        grid.addWidget(self.labels_combo, 1, 1)
        row = QHBoxLayout()
        row.addWidget(self.add_pair_button)
        row.addWidget(add_folders)
        row.addWidget(remove_pair)
        grid.addLayout(row, 2, 0, 1, 2)
        v.addLayout(grid)
        form = QFormLayout()
        self.val_fraction = _dspin(0.0, 0.95, 0.25, 2, 0.05)
        self.val_fraction.setToolTip("Fraction of the real pairs held out for validation (at least one each "
                                     "way; with a single pair it serves both)")
        form.addRow("validation fraction", self.val_fraction)
        self.label_table_combo = QComboBox()
        self.label_table_combo.setEditable(True)
        self.label_table_combo.addItems(["auto"] + self._shipped_tables())
        self.label_table_combo.setToolTip("auto: every label value found becomes a class; or a shipped table "
                                          "or a path to a JSON label table")
        form.addRow("label table", self.label_table_combo)
        v.addLayout(form)
        layout.addWidget(box)
        sample = QPushButton("Use the built-in sample (files)")
        sample.setToolTip("Fill the inputs with the built-in sample: deformed label maps for synthesis and "
                          "three real T1 + labels pairs (MNI152 from nilearn, written once to the cache)")
        sample.clicked.connect(self.use_sample)
        layout.addWidget(sample)
        layout.addStretch(1)
        for combo in (self.scan_combo, self.labels_combo):
            combo.layer_changed.connect(self._update_buttons)
        return page

    def _build_model_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(2, 2, 2, 2)

        box = QGroupBox("Learned augmentation A_θ")
        form = QFormLayout(box)
        self.method_combo = _combo(["learn2synth", "synthseg", "supervised"], "learn2synth")
        self.method_combo.setToolTip("learn2synth: learn θ by hypergradients; synthseg: θ fixed at its initial "
                                     "values; supervised: train on the real pairs only")
        form.addRow("method", self.method_combo)
        self.aug_kind = _combo(["parametric", "nonparametric"], "parametric")
        form.addRow("augmentation", self.aug_kind)
        self.noise_combo = _combo(["fixed", "per_image", "none"], "fixed")
        self.noise_combo.setToolTip("fixed: x + σε (eq. 8); per_image: x + σ·s·ε, s ~ N(0,1) (eq. 9)")
        form.addRow("noise", self.noise_combo)
        self.sigma_init = _dspin(0.0, 5.0, 0.1, 3, 0.01)
        form.addRow("σ initial", self.sigma_init)
        self.inu_check = QCheckBox("intensity non-uniformity (INU)")
        self.inu_check.setChecked(True)
        form.addRow(self.inu_check)
        self.inu_nodes = QLineEdit("2 4 8")
        self.inu_nodes.setToolTip("M_k for each of the K random fields (K = how many numbers)")
        self.inu_k_label = QLabel()
        row = QHBoxLayout()
        row.addWidget(self.inu_nodes, 1)
        row.addWidget(self.inu_k_label)
        form.addRow("INU nodes M_k", row)
        self.c_init = _dspin(0.0, 10.0, 0.5, 3, 0.05)
        form.addRow("c initial", self.c_init)
        self.residual_widths = QLineEdit("8 16")
        self.residual_widths.setToolTip("Channels of the residual network (nonparametric augmentation)")
        form.addRow("residual widths", self.residual_widths)
        layout.addWidget(box)

        box = QGroupBox("Samples and network")
        form = QFormLayout(box)
        self.ndim_combo = _combo(["2D", "3D"], "2D")
        form.addRow("dimensions", self.ndim_combo)
        self.slice_axis = _spin(0, 2, 1)
        self.slice_axis.setToolTip("Voxel axis orthogonal to the 2D slices (1 is coronal for RAS volumes)")
        form.addRow("slice axis (2D)", self.slice_axis)
        self.patch_edit = QLineEdit("")
        self.patch_edit.setPlaceholderText("whole slice/volume, e.g. 96 96")
        self.patch_edit.setToolTip("Patch size (2 numbers in 2D, 3 in 3D), multiples of 2^(levels-1); "
                                   "empty: the whole slice/volume")
        form.addRow("patch size", self.patch_edit)
        self.batch_size = _spin(1, 256, 4)
        form.addRow("batch size", self.batch_size)
        self.widths_edit = QLineEdit("16 24 32 48 64")
        self.widths_edit.setToolTip("UNet channels per level (the number of levels is how many numbers)")
        form.addRow("UNet widths", self.widths_edit)
        layout.addWidget(box)
        layout.addStretch(1)

        self.aug_kind.currentTextChanged.connect(self._update_model_fields)
        self.inu_check.toggled.connect(self._update_model_fields)
        self.inu_nodes.textChanged.connect(self._update_model_fields)
        self.ndim_combo.currentTextChanged.connect(self._update_model_fields)
        self.method_combo.currentTextChanged.connect(self._update_model_fields)
        self._update_model_fields()
        return page

    def _build_training_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(2, 2, 2, 2)
        box = QGroupBox("Optimisation")
        form = QFormLayout(box)
        self.steps = _spin(1, 10_000_000, 1000, 100)
        self.steps.setToolTip("Total training steps (Resume continues to this total)")
        form.addRow("steps", self.steps)
        self.lr_seg = _dspin(1e-6, 1.0, 1e-3, 6, 1e-4)
        form.addRow("learning rate φ (network)", self.lr_seg)
        self.lr_aug = _dspin(1e-6, 1.0, 1e-3, 6, 1e-4)
        form.addRow("learning rate θ (augmentation)", self.lr_aug)
        self.inner_opt = _combo(["adam", "sgd"], "adam")
        form.addRow("inner update", self.inner_opt)
        self.hyper_mode = _combo(["exact", "naive", "approx"], "exact")
        self.hyper_mode.setToolTip("exact: forward-over-reverse (fast); naive: double backward (reference); "
                                   "approx: finite differences")
        form.addRow("hypergradient", self.hyper_mode)
        self.hyper_every = _spin(1, 1000, 1)
        self.hyper_every.setToolTip("Take the hyper-step (real pass + θ update) every k-th iteration")
        form.addRow("hyper-step every", self.hyper_every)
        self.hyper_start = _spin(0, 10_000_000, 0, 50)
        self.hyper_start.setToolTip("Plain iterations (θ fixed) before the first hyper-step")
        form.addRow("hyper-steps from step", self.hyper_start)
        self.seed = _spin(0, 2**31 - 1, 0)
        form.addRow("seed", self.seed)
        self.precision = _combo(["fp32", "bf16"], "fp32")
        form.addRow("precision", self.precision)
        layout.addWidget(box)
        box = QGroupBox("Reporting")
        form = QFormLayout(box)
        self.preview_every = _spin(1, 100000, 25)
        form.addRow("preview every", self.preview_every)
        self.val_every = _spin(1, 100000, 100)
        form.addRow("validate every", self.val_every)
        self.checkpoint_every = _spin(1, 1000000, 250)
        form.addRow("checkpoint every", self.checkpoint_every)
        row = QHBoxLayout()
        load = QPushButton("Load config…")
        load.setToolTip("Fill the settings from a YAML/JSON config (data paths included)")
        load.clicked.connect(self._load_config_dialog)
        save = QPushButton("Save config…")
        save.setToolTip("Save these settings as a config for `l2s train` (layers become files on Start only)")
        save.clicked.connect(self._save_config_dialog)
        row.addWidget(load)
        row.addWidget(save)
        form.addRow(row)
        layout.addWidget(box)
        layout.addStretch(1)
        return page

    def _build_inspect_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(2, 2, 2, 2)
        box = QGroupBox("Learned augmentation")
        form = QFormLayout(box)
        self.inspect_model = _combo(["current run", "model file"], "current run")
        self.inspect_model.currentTextChanged.connect(self._update_buttons)
        form.addRow("model", self.inspect_model)
        row = QHBoxLayout()
        self.inspect_model_path = QLineEdit()
        self.inspect_model_path.setPlaceholderText("model.safetensors")
        self.inspect_model_path.textChanged.connect(self._update_buttons)
        browse = QPushButton("…")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._browse_model)
        row.addWidget(self.inspect_model_path, 1)
        row.addWidget(browse)
        form.addRow("file", row)
        self.inspect_source = _combo(["synthetic preview", "real preview", "image layer"], "synthetic preview")
        self.inspect_source.setToolTip("The image A_θ is applied to: the latest preview slice, or the current "
                                       "slice (2D model) / volume (3D model) of an image layer")
        self.inspect_source.currentTextChanged.connect(self._update_buttons)
        form.addRow("image", self.inspect_source)
        self.inspect_layer = LayerCombo(self.viewer, kinds=("image",), placeholder="(no image layer)")
        self.inspect_layer.layer_changed.connect(self._update_buttons)
        form.addRow("image layer", self.inspect_layer)
        self.gallery_n = _spin(2, 64, 8)
        form.addRow("draws in gallery", self.gallery_n)
        self.inspect_seed = _spin(0, 2**31 - 1, 0)
        form.addRow("draw seed", self.inspect_seed)
        layout.addWidget(box)
        self.components_button = QPushButton("Show INU field + noise")
        self.components_button.clicked.connect(self.show_components)
        self.gallery_button = QPushButton("Gallery of random draws")
        self.gallery_button.clicked.connect(self.show_gallery)
        self.apply_button = QPushButton("Apply A_θ to image layer")
        self.apply_button.clicked.connect(self.apply_to_layer)
        for b in (self.components_button, self.gallery_button, self.apply_button):
            layout.addWidget(b)
        self.inspect_status = QLabel("")
        self.inspect_status.setWordWrap(True)
        layout.addWidget(self.inspect_status)
        layout.addStretch(1)
        return page

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _devices() -> list[str]:
        try:
            from l2s_gui.device import available_devices

            return ["auto"] + available_devices()
        except Exception:  # noqa: BLE001 - torch problems: offer the CPU
            return ["auto", "cpu"]

    @staticmethod
    def _shipped_tables() -> list[str]:
        try:
            from l2s_gui.labels import shipped_tables

            return shipped_tables()
        except Exception:  # noqa: BLE001
            return []

    def _update_device_label(self) -> None:
        device = self.state.get("device") if self.state.get("status") in ACTIVE else None
        if device:
            text = f"▶ running on <b>{device}</b>"
        else:
            choice = self.device_combo.currentText()
            resolved = choice
            if choice == "auto":
                try:
                    from l2s_gui.device import available_devices

                    resolved = available_devices()[0]
                except Exception:  # noqa: BLE001
                    resolved = "cpu"
            text = f"will run on <b>{resolved}</b>"
            if self.state.get("device"):
                text = f"last run: <b>{self.state['device']}</b>"
        self.device_label.setText(text)

    def _update_model_fields(self, *_args) -> None:
        parametric = self.aug_kind.currentText() == "parametric"
        self.noise_combo.setEnabled(parametric)
        self.inu_check.setEnabled(parametric)
        inu = parametric and self.inu_check.isChecked()
        self.inu_nodes.setEnabled(inu)
        self.c_init.setEnabled(inu)
        self.residual_widths.setEnabled(not parametric)
        try:
            k = len(_ints(self.inu_nodes.text(), "INU nodes"))
            self.inu_k_label.setText(f"K = {k}")
        except ValueError:
            self.inu_k_label.setText("K = ?")
        self.slice_axis.setEnabled(self.ndim_combo.currentText() == "2D")

    def _browse_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the new run", str(default_run_root()))
        if path:
            self.run_edit.setText(path)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", str(default_run_root()),
                                              "Models (*.safetensors)")
        if path:
            self.inspect_model_path.setText(path)
            self.inspect_model.setCurrentText("model file")

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
            notify_error(error_text(exc))
            return False
        self.apply_settings(config)
        return True

    def _add_layer_pair(self) -> None:
        scan, labels = self.scan_combo.layer(), self.labels_combo.layer()
        if scan is None or labels is None:
            return
        problem = self._pair_problem(scan, labels)
        if problem:
            notify_error(problem)
            return
        self.add_pair(scan, labels)

    def _pair_problem(self, scan, labels) -> str:
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

    def _pairs(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
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

    # ------------------------------------------------------------------------------------ config
    def missing_inputs(self) -> str:
        method = self.method_combo.currentText()
        missing = []
        if method in ("learn2synth", "synthseg") and not self.synth_list.sources():
            missing.append("check or add at least one label map for synthesis (Data tab)")
        if method in ("learn2synth", "supervised") and not self._pairs():
            missing.append("add at least one real scan + labels pair (Data tab)")
        return "; ".join(missing)

    def settings_dict(self) -> dict[str, Any]:
        """The config mapping for the current settings (data paths filled by :meth:`start`).

        Settings the widget does not show (synthesis ranges, recovery, ...) come from the last config
        loaded or opened, so they are kept."""
        widget = self._widget_settings()
        out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v
                               for k, v in copy.deepcopy(self._base_config).items()}
        for section, values in widget.items():
            out.setdefault(section, {}).update(values)
        for key in ("label_maps", "real_images", "real_labels"):
            out.get("data", {}).pop(key, None)
        return out

    def _widget_settings(self) -> dict[str, Any]:
        ndim = 3 if self.ndim_combo.currentText() == "3D" else 2
        patch = _ints(self.patch_edit.text(), "patch size") if self.patch_edit.text().strip() else []
        nodes = _ints(self.inu_nodes.text(), "INU nodes M_k")
        return {
            "data": {"val_fraction": float(self.val_fraction.value()),
                     "label_table": self.label_table_combo.currentText().strip() or "auto",
                     "ndim": ndim, "slice_axis": int(self.slice_axis.value()), "patch_size": patch,
                     "batch_size": int(self.batch_size.value())},
            "augmentation": {"kind": self.aug_kind.currentText(), "noise": self.noise_combo.currentText(),
                             "sigma_init": float(self.sigma_init.value()), "inu": self.inu_check.isChecked(),
                             "inu_nodes": nodes, "inu_c_init": float(self.c_init.value()),
                             "residual_widths": _ints(self.residual_widths.text(), "residual widths")},
            "network": {"widths": _ints(self.widths_edit.text(), "UNet widths")},
            "training": {"method": self.method_combo.currentText(), "steps": int(self.steps.value()),
                         "lr_segmentation": float(self.lr_seg.value()),
                         "lr_augmentation": float(self.lr_aug.value()),
                         "inner_optimizer": self.inner_opt.currentText(),
                         "hypergradient": self.hyper_mode.currentText(),
                         "hyper_every": int(self.hyper_every.value()),
                         "hyper_start": int(self.hyper_start.value()), "seed": int(self.seed.value()),
                         "device": self.device_combo.currentText(),
                         "precision": self.precision.currentText(),
                         "preview_every": int(self.preview_every.value()),
                         "val_every": int(self.val_every.value()),
                         "checkpoint_every": int(self.checkpoint_every.value())},
        }

    def apply_settings(self, data: dict[str, Any]) -> None:
        """Fill the widgets from a config mapping (paths become list entries; settings without a widget
        are kept for the next Start)."""
        self._base_config = copy.deepcopy({k: v for k, v in data.items() if isinstance(v, dict)})
        d, a, n, t = (data.get(k) or {} for k in ("data", "augmentation", "network", "training"))
        setters = [
            (self.val_fraction.setValue, d.get("val_fraction")),
            (self.label_table_combo.setCurrentText, d.get("label_table")),
            (lambda v: self.ndim_combo.setCurrentText(f"{v}D"), d.get("ndim")),
            (self.slice_axis.setValue, d.get("slice_axis")),
            (lambda v: self.patch_edit.setText(" ".join(map(str, v))), d.get("patch_size")),
            (self.batch_size.setValue, d.get("batch_size")),
            (self.aug_kind.setCurrentText, a.get("kind") if a.get("kind") != "none" else None),
            (self.noise_combo.setCurrentText, a.get("noise")),
            (self.sigma_init.setValue, a.get("sigma_init")),
            (self.inu_check.setChecked, a.get("inu")),
            (lambda v: self.inu_nodes.setText(" ".join(map(str, v))), a.get("inu_nodes")),
            (self.c_init.setValue, a.get("inu_c_init")),
            (lambda v: self.residual_widths.setText(" ".join(map(str, v))), a.get("residual_widths")),
            (lambda v: self.widths_edit.setText(" ".join(map(str, v))), n.get("widths")),
            (self.method_combo.setCurrentText, t.get("method")),
            (self.steps.setValue, t.get("steps")),
            (self.lr_seg.setValue, t.get("lr_segmentation")),
            (self.lr_aug.setValue, t.get("lr_augmentation")),
            (self.inner_opt.setCurrentText, t.get("inner_optimizer")),
            (self.hyper_mode.setCurrentText, t.get("hypergradient")),
            (self.hyper_every.setValue, t.get("hyper_every")),
            (self.hyper_start.setValue, t.get("hyper_start")),
            (self.seed.setValue, t.get("seed")),
            (self.precision.setCurrentText, t.get("precision")),
            (self.preview_every.setValue, t.get("preview_every")),
            (self.val_every.setValue, t.get("val_every")),
            (self.checkpoint_every.setValue, t.get("checkpoint_every")),
        ]
        for setter, value in setters:
            if value is not None:
                try:
                    setter(value)
                except (TypeError, ValueError):
                    pass
        if t.get("device") and self.device_combo.findText(str(t["device"])) >= 0:
            self.device_combo.setCurrentText(str(t["device"]))
        for p in d.get("label_maps") or []:
            self.synth_list.add_path(str(p))
        for scan, labels in zip(d.get("real_images") or [], d.get("real_labels") or []):
            self.add_pair(str(scan), str(labels))
        self._update_model_fields()
        self._update_buttons()

    def _load_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Config", "", "Config (*.yaml *.yml *.json)")
        if not path:
            return
        try:
            from l2s_gui.config import read_config_file

            self.apply_settings(read_config_file(path))
        except Exception as exc:  # noqa: BLE001
            notify_error(error_text(exc))

    def _save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save config", "config.yaml", "YAML (*.yaml)")
        if not path:
            return
        try:
            from l2s_gui.config import Config

            data = self.settings_dict()
            data["data"]["label_maps"] = [p for kind, p in self.synth_list.sources() if kind == "path"]
            pairs = [(a[1], b[1]) for a, b in self._pairs() if a[0] == "path" and b[0] == "path"]
            data["data"]["real_images"] = [a for a, _ in pairs]
            data["data"]["real_labels"] = [b for _, b in pairs]
            Config.from_dict(data).save(path)
            notify_info(f"config saved to {path}" + (" (layers are not included: they become files on Start)"
                                                     if any(k == "layer" for k, _ in self.synth_list.sources())
                                                     else ""))
        except Exception as exc:  # noqa: BLE001
            notify_error(error_text(exc))

    # ------------------------------------------------------------------------------------ start
    def _write_layer(self, layer, path: Path, labels: bool) -> str:
        data = np.asarray(layer.data)
        if labels:
            if data.dtype.kind not in "iu":
                data = np.round(data).astype(np.int32)
        else:
            data = data.astype(np.float32, copy=False)
        header = (layer.metadata or {}).get("header")
        return write_volume(path, data, layer_affine(layer), header=header)

    def prepare_run(self, run_dir: Path) -> Path:
        """Validate the settings, write the chosen layers to ``run_dir/inputs`` and the config; return
        the config path. Raises ValueError / L2SError with a one-line message."""
        from l2s_gui.config import Config, check_data_present

        data = self.settings_dict()
        method = data["training"]["method"]
        synth = self.synth_list.sources() if method != "supervised" else []
        pairs = self._pairs()  # synthseg: optional, then used for validation only
        # check the layers before writing anything
        for kind, item in synth:
            if kind == "layer":
                ok, why = layer_is_label_like(item)
                if not ok:
                    raise ValueError(why)
        resolved_pairs = []
        for (ka, a), (kb, b) in pairs:
            la = self._layer_named(a) if ka == "layer" else a
            lb = self._layer_named(b) if kb == "layer" else b
            if la is None or lb is None:
                raise ValueError(f"layer '{a if la is None else b}' of a real pair is no longer open; "
                                 f"remove that pair")
            if ka == "layer" and kb == "layer":
                problem = self._pair_problem(la, lb)
                if problem:
                    raise ValueError(problem)
            elif kb == "layer":
                ok, why = layer_is_label_like(lb)
                if not ok:
                    raise ValueError(why)
            resolved_pairs.append(((ka, la), (kb, lb)))
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
        label_maps: list[str] = []
        for i, (kind, item) in enumerate(synth):
            if kind == "layer":
                label_maps.append(self._write_layer(item, inputs / f"synth_{i:03d}_{safe_name(item.name)}.nii",
                                                    labels=True))
            else:
                label_maps.append(str(Path(item).resolve()))
        real_images, real_labels = [], []
        for i, ((ka, a), (kb, b)) in enumerate(resolved_pairs):
            real_images.append(self._write_layer(a, inputs / f"real_{i:03d}_scan_{safe_name(a.name)}.nii",
                                                 labels=False) if ka == "layer" else str(Path(a).resolve()))
            real_labels.append(self._write_layer(b, inputs / f"real_{i:03d}_labels_{safe_name(b.name)}.nii",
                                                 labels=True) if kb == "layer" else str(Path(b).resolve()))
        data["data"].update(label_maps=label_maps, real_images=real_images, real_labels=real_labels)
        config = Config.from_dict(data)
        config_path = inputs / "config.yaml"
        config.save(config_path)
        return config_path

    def start(self) -> bool:
        """Start a new training run in a subprocess. Returns False (and notifies) on bad input."""
        if self.process.is_running():
            notify_warning("a training run is already in progress; stop it first")
            return False
        missing = self.missing_inputs()
        if missing:
            notify_error(missing)
            return False
        text = self.run_edit.text().strip()
        run_dir = Path(text).expanduser() if text else new_run_dir()
        if self.run_dir is not None and run_dir.resolve() == self.run_dir.resolve() and run_dir.exists():
            run_dir = new_run_dir() if text.startswith(str(default_run_root())) else run_dir
            self.run_edit.setText(str(run_dir))
        try:
            config_path = self.prepare_run(run_dir)
        except Exception as exc:  # noqa: BLE001 - shown to the user, viewer stays usable
            notify_error(error_text(exc))
            return False
        self._attach(run_dir)
        self.process.start(["train", str(config_path), "-o", str(run_dir), "--overwrite", "--quiet"], run_dir)
        self.status_label.setText(f"Starting training in {run_dir} …")
        self._set_waiting("starting…")
        self._update_buttons()
        return True

    # ------------------------------------------------------------------------------------ control
    def _send(self, command: str) -> None:
        if self.run_dir is None:
            return
        try:
            self.watcher.reader.send_control(command)
        except OSError as exc:
            notify_error(f"{self.run_dir}: cannot write control.json ({exc})")
            return
        self._pending_control = command
        self._update_buttons()

    def pause(self) -> None:
        if self.state.get("status") == "running" or self.process.is_running():
            self._send("pause")
            self.status_label.setText("Pausing after the current step …")

    def resume(self) -> None:
        status = self.state.get("status")
        if status == "paused" and (self.process.is_running() or self._external_alive()):
            self._send("resume")
            self.status_label.setText("Resuming …")
            return
        self.resume_run()

    def resume_run(self) -> bool:
        """Continue an ended run from its latest checkpoint in a new process (``l2s resume``)."""
        if self.run_dir is None or self.process.is_running():
            return False
        from l2s_gui.runs import RunFolder

        run = RunFolder(self.run_dir)
        if run.latest_checkpoint() is None:
            notify_error(f"{self.run_dir}: no checkpoint to resume from yet")
            return False
        args = ["resume", str(self.run_dir), "--quiet"]
        total = int(self.state.get("total_steps") or self._total_steps or 0)
        wanted = int(self.steps.value())
        if wanted > int(self.state.get("step") or 0) and wanted != total:
            args += ["--steps", str(wanted)]
        elif int(self.state.get("step") or 0) >= total > 0:
            notify_warning(f"the run already reached its {total} steps; raise 'steps' (Training tab) to continue")
            return False
        run.clear_control()
        self._reported_error_for = None
        self.process.start(args, self.run_dir)
        if not self.watcher.is_watching():
            self.watcher.watch(self.run_dir)
        self.status_label.setText(f"Resuming {self.run_dir} …")
        self._set_waiting("resuming…")
        self._update_buttons()
        return True

    def stop(self) -> None:
        """Ask the trainer to checkpoint and exit; escalate (SIGINT, kill) if it does not."""
        if self.process.is_running():
            self.process.request_stop()
            self.status_label.setText("Stopping: saving a checkpoint …")
        elif self.state.get("status") in ACTIVE:
            self._send("stop")  # a run started elsewhere: it stops at its next step
            self.status_label.setText("Stop requested (the run's process stops at its next step) …")
        self._pending_control = "stop"
        self._update_buttons()

    def confirm_close(self) -> bool:
        """napari is closing while training: ask; on yes stop cleanly (blocking a few seconds)."""
        answer = self.confirm_close_answer
        if answer is None:
            reply = QMessageBox.question(
                self, "Training in progress",
                "A Learn2Synth training is running.\nStop it (a checkpoint is saved) and close napari?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            answer = reply == QMessageBox.StandardButton.Yes
        if answer:
            self.status_label.setText("Stopping training before closing …")
            self.process.stop_blocking()
            self.watcher.stop()
        return answer

    def shutdown(self) -> None:
        """Stop the process (blocking) and the watcher; used when the widget goes away."""
        self.watcher.stop()
        if self.process.is_running():
            self.process.stop_blocking()

    # ------------------------------------------------------------------------------------ runs
    def _choose_and_open_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open run folder", str(default_run_root()))
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Open a run folder: restore plots and previews, then follow it live."""
        path = Path(path).expanduser()
        if not (path / "config.yaml").is_file() and not (path / "state.json").is_file():
            notify_error(f"{path}: not a run folder (no config.yaml or state.json)")
            return False
        if self.process.is_running() and self.run_dir is not None and path.resolve() != self.run_dir.resolve():
            notify_warning("a training started here is still running; stop it before opening another run")
            return False
        try:
            from l2s_gui.config import read_config_file

            if (path / "config.yaml").is_file():
                cfg = read_config_file(path / "config.yaml")
                cfg.get("data", {}).pop("label_maps", None)
                cfg.get("data", {}).pop("real_images", None)
                cfg.get("data", {}).pop("real_labels", None)
                self.apply_settings(cfg)
        except Exception as exc:  # noqa: BLE001 - settings are a convenience; keep opening
            notify_warning(f"{path}: could not read config.yaml ({error_text(exc)})")
        self._attach(path)
        self.run_edit.setText(str(path))
        return True

    def _attach(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.state = {}
        self._reported_error_for = None
        self._pending_control = None
        self._total_steps = self._step = 0
        self._it_per_s = 0.0
        self._last_dice = None
        self.ensure_plots()
        self.plots.clear()
        self.watcher.watch(self.run_dir)
        self._update_buttons()

    def ensure_plots(self) -> TrainingPlots:
        if self.plots is None:
            self.plots = TrainingPlots(theme=str(self.viewer.theme))
            try:
                self._plots_dock = self.viewer.window.add_dock_widget(
                    self.plots, name="Learn2Synth plots", area="bottom")
            except Exception:  # noqa: BLE001 - headless viewer: keep the widget only
                self._plots_dock = None
        return self.plots

    def _on_theme(self, event=None) -> None:
        if self.plots is not None:
            self.plots.set_theme(str(self.viewer.theme))

    def _external_alive(self) -> bool:
        """A run not started by this widget that looks alive: its pid runs here, or it runs on another
        host (``state["host"]`` when the engine writes it), or its files changed in the last minutes."""
        if self.process.is_running() or self.run_dir is None:
            return False
        if self.state.get("status") not in ACTIVE:
            return False
        pid, host = self.state.get("pid"), self.state.get("host")
        if host and host != socket.gethostname():
            return True
        if pid_alive(pid):
            return True
        if host:  # this host, pid gone: it died without updating state.json
            return False
        newest = 0.0
        for name in ("metrics.jsonl", "state.json", "control.json"):
            try:
                newest = max(newest, (self.run_dir / name).stat().st_mtime)
            except OSError:
                pass
        return time.time() - newest < STALE_AFTER_S

    # ------------------------------------------------------------------------------------ events
    def _on_restarted(self) -> None:
        if self.plots is not None:
            self.plots.clear()

    def _on_events(self, events: list[dict[str, Any]]) -> None:
        if self.plots is not None:
            for e in events:
                if e.get("kind") == "start" and e.get("label_values"):
                    self.plots.label_names = self._label_names(e["label_values"])
            self.plots.add_events(events)
        for e in events:
            kind = e.get("kind")
            if kind == "start":
                self._total_steps = int(e.get("total_steps") or 0)
                self._step = int(e.get("step") or 0)
            elif kind == "step":
                self._step = int(e.get("step") or 0)
                self._it_per_s = float(e.get("it_per_s") or 0.0)
                self._last_losses = {"synth": e.get("loss_synth"), "real": e.get("loss_real")}
            elif kind == "validation":
                self._last_dice = e.get("mean_dice")
        self._update_progress()

    def _label_names(self, values: list) -> dict[str, str]:
        """value -> name for the plot legends, from the run's label table setting."""
        try:
            from l2s_gui.labels import LabelTable, load_label_table

            spec = "auto"
            if self.run_dir is not None and (self.run_dir / "config.yaml").is_file():
                from l2s_gui.config import read_config_file

                spec = str((read_config_file(self.run_dir / "config.yaml").get("data") or {}).get("label_table", "auto"))
            table = LabelTable.from_values(values) if spec == "auto" else load_label_table(spec)
            return {str(v): n for v, n in zip(table.values, table.names)}
        except Exception:  # noqa: BLE001 - names are cosmetic
            return {}

    def _on_state(self, state: dict[str, Any]) -> None:
        old = self.state.get("status")
        self.state = dict(state)
        status = state.get("status")
        if state.get("total_steps"):
            self._total_steps = int(state["total_steps"])
        if state.get("step") is not None:
            self._step = max(self._step, int(state["step"]))
        if status in ("paused", "running") and self._pending_control in ("pause", "resume"):
            self._pending_control = None
        if status == "error" and self._reported_error_for != str(self.run_dir):
            self._reported_error_for = str(self.run_dir)
            notify_error(f"training failed: {state.get('message') or 'see the run folder'}")
        if status in ENDED:
            self._pending_control = None
        if status == "finished" and old not in (None, "finished") and not self.process.is_running():
            notify_info(f"training finished at step {state.get('step')}; model: "
                        f"{Path(self.run_dir) / 'model.safetensors'}")
        self._update_device_label()
        self._update_progress()
        self._update_buttons()

    def _on_preview(self, arrays: dict[str, Any]) -> None:
        self.last_preview = arrays
        try:
            self.previews.update(arrays)
        except Exception as exc:  # noqa: BLE001 - a bad preview must not break the watcher
            notify_warning(f"could not show the preview: {error_text(exc)}")
        self._update_buttons()

    def _on_process_finished(self, code: int, tail: str) -> None:
        # read what the process wrote last (final state, done event) before reporting
        self.watcher.poll()
        status = self.state.get("status")
        if code != 0 and status != "error" and not (self.process.stopping and code in (-1, 130, 137, 143, 9, 15)):
            message = self._error_from_tail(tail)
            if code < 0 or code in (137, 9):
                message = ("the training process was killed (out of system memory?)"
                           + (f": {message}" if message else ""))
            elif not message:
                message = f"the training process exited with code {code}"
            if self._reported_error_for != str(self.run_dir):
                self._reported_error_for = str(self.run_dir)
                notify_error(f"training failed: {message}")
            self.state["status"] = "error"
            self.state["message"] = message
        elif code == 0 and status == "finished":
            notify_info(f"training finished at step {self.state.get('step')}; model: "
                        f"{Path(self.run_dir) / 'model.safetensors'}")
        self._pending_control = None
        self._update_device_label()
        self._update_progress()
        self._update_buttons()

    @staticmethod
    def _error_from_tail(tail: str) -> str:
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("l2s: error:"):
                return line[len("l2s: error:"):].strip()
        for line in reversed(lines):
            if "Error" in line or "error" in line or "Killed" in line:
                return line[:300]
        return lines[-1][:300] if lines else ""

    # ------------------------------------------------------------------------------------ display
    def _update_progress(self) -> None:
        status = self.state.get("status")
        total = self._total_steps or int(self.state.get("total_steps") or 0)
        step = self._step
        if total > 0:
            # QProgressBar.setValue repaints synchronously; with napari's GL canvas in the same window
            # that costs a full window composite (~40 ms in software GL). Let Qt repaint on its own.
            self.progress.setUpdatesEnabled(False)
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
            self.progress.setUpdatesEnabled(True)
        elif status in ACTIVE or self.process.is_running():
            self._set_waiting("starting…")
        rate = self._it_per_s
        eta = (total - step) / rate if rate > 0 and total else float("nan")
        if status == "running" or (self.process.is_running() and status is None):
            fmt = f"{step}/{total}  ·  {rate:.2f} it/s  ·  ETA {_fmt_eta(eta)}"
        elif status:
            fmt = f"{status} · {step}/{total}"
        else:
            fmt = "starting…" if self.process.is_running() else "idle"
        self.progress.setFormat(fmt)
        parts = []
        if self.run_dir is not None:
            parts.append(f"<b>{status or ('starting' if self.process.is_running() else 'no state yet')}</b>"
                         f" · {self.run_dir.name}")
        synth, real = self._last_losses.get("synth"), self._last_losses.get("real")
        if synth is not None:
            parts.append(f"loss synth {synth:.3f}" + (f", real {real:.3f}" if real is not None else ""))
        if self._last_dice is not None and self._last_dice == self._last_dice:
            parts.append(f"val Dice {self._last_dice:.3f}")
        if status == "error" and self.state.get("message"):
            parts.append(f"<span style='color:#e06c75'>{self.state['message']}</span>")
        if parts:
            self.status_label.setText(" · ".join(parts))

    def _set_waiting(self, text: str) -> None:
        """An empty bar with a text (not Qt's busy animation: it repaints the window continuously,
        which costs a lot of CPU next to napari's OpenGL canvas)."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _update_buttons(self, *_args) -> None:
        status = self.state.get("status")
        ours = self.process.is_running()
        external = self._external_alive()
        live = ours or external
        stopping = self._pending_control == "stop" or self.process.stopping and ours
        missing = self.missing_inputs()
        if ours:
            set_enabled(self.start_button, False, "a training run is in progress")
        elif missing:
            set_enabled(self.start_button, False, f"to start: {missing}")
        else:
            set_enabled(self.start_button, True, tip="Start a new run in the run folder (a separate process)")
        can_pause = live and status in (None, "running") and not stopping and self._pending_control != "pause"
        set_enabled(self.pause_button, can_pause,
                    "nothing is running" if not live else "already paused or stopping",
                    tip="Pause after the current step (the process keeps its memory)")
        has_ckpt = self.run_dir is not None and (self.run_dir / "checkpoints").is_dir() and any(
            (self.run_dir / "checkpoints").glob("step_*"))
        if live and status == "paused" and not stopping:
            set_enabled(self.resume_button, True, tip="Continue the paused run")
        elif not live and self.run_dir is not None and status in ENDED + ("running", "paused") and has_ckpt:
            set_enabled(self.resume_button, True,
                        tip="Continue this run from its latest checkpoint in a new process (`l2s resume`); "
                            "raise 'steps' to train longer")
        else:
            why = ("open or start a run first" if self.run_dir is None else
                   "the run is running" if live and status != "paused" else
                   "no checkpoint in this run yet" if not has_ckpt else "nothing to resume")
            set_enabled(self.resume_button, False, why)
        set_enabled(self.stop_button, live and not stopping,
                    "nothing is running" if not live else "stopping…",
                    tip="Save a checkpoint and end the training process (frees its GPU memory)")
        # inspection
        model_path = self.inspect_model_path_resolved()
        have_model = model_path is not None and model_path.is_file()
        source = self.inspect_source.currentText()
        if not have_model:
            why = ("no model yet: it appears at the run's first checkpoint" if
                   self.inspect_model.currentText() == "current run" else "choose a model file")
        elif source != "image layer" and self.last_preview is None:
            why = "no preview yet: start or open a run, or pick 'image layer'"
        elif source == "image layer" and self.inspect_layer.layer() is None:
            why = "open an image layer first"
        else:
            why = ""
        for b, tip in ((self.components_button, "Show the INU field and the added noise of one draw of A_θ"),
                       (self.gallery_button, "Several random draws of A_θ at the current θ, side by side")):
            set_enabled(b, not why, why, tip)
        apply_why = ("no model yet: it appears at the run's first checkpoint" if not have_model else
                     "open an image layer first" if self.inspect_layer.layer() is None else "")
        set_enabled(self.apply_button, not apply_why, apply_why,
                    "Apply the model's learned augmentation to the chosen image layer (a new layer)")

    def inspect_model_path_resolved(self) -> Optional[Path]:
        if self.inspect_model.currentText() == "current run":
            return self.run_dir / "model.safetensors" if self.run_dir is not None else None
        text = self.inspect_model_path.text().strip()
        return Path(text).expanduser() if text else None

    # ------------------------------------------------------------------------------------ inspect
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
            from ._inspect import normalize, plane_index

            index, transpose = plane_index(layer, self.viewer)

            def plane():
                volume = normalize(np.asarray(data))  # whole volume, as in training
                p = np.asarray(volume[index], np.float32)
                return (p.T if transpose else p), True

            return plane, None
        if np.ndim(data) != 3:
            raise ValueError(f"the model is 3D but layer '{layer.name}' is {np.ndim(data)}D")
        return (lambda: (np.asarray(data), False)), layer

    def _run_inspect(self, what: str) -> None:
        path = self.inspect_model_path_resolved()
        if path is None or not path.is_file():
            notify_error("no model file to inspect yet")
            return
        seed = int(self.inspect_seed.value())
        n = int(self.gallery_n.value())
        try:
            from ._inspect import load_model_cached

            model = load_model_cached(path)
            produce, layer = self._inspect_input(model)
        except Exception as exc:  # noqa: BLE001
            notify_error(error_text(exc))
            return
        from napari.qt.threading import thread_worker

        from . import _inspect

        @thread_worker(ignore_errors=True)  # errors go to our notification, not re-raised
        def work():
            image, normalized = produce()
            if what == "components":
                return _inspect.components(model, image, seed=seed, normalized=normalized)
            return _inspect.gallery(model, image, n=n, seed=seed, normalized=normalized)

        worker = work()
        worker.returned.connect(lambda result: self._show_inspect(what, result, layer, model))
        worker.errored.connect(lambda exc: notify_error(error_text(exc)))
        worker.finished.connect(lambda: self.inspect_status.setText(""))
        self.inspect_status.setText("computing …")
        self._worker = worker
        worker.start()

    def show_components(self) -> None:
        self._run_inspect("components")

    def show_gallery(self) -> None:
        self._run_inspect("gallery")

    def _inspect_origin(self, shape: tuple[int, ...]) -> list[float]:
        """Top-left of the inspection row: under the preview tiles (or next to the data)."""
        synthetic = find_role(self.viewer, "preview_synthetic")
        if synthetic is not None:
            y, x = synthetic.translate[-2:]
            return [float(y + synthetic.data.shape[-2] * 1.15), float(x)]
        from ._layers import other_layers_extent

        extent = other_layers_extent(self.viewer)
        if extent is None:
            return [0.0, 0.0]
        return [float(extent[1, -2] + 8), float(extent[0, -1])]

    def _show_inspect(self, what: str, result, layer, model) -> None:
        from ._inspect import mosaic

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
            for k, (key, title, cmap) in enumerate((("augmented", "A_θ draw", "gray"),
                                                    ("inu_field", "INU field", "magma"),
                                                    ("noise", "noise", "twilight_shifted"),
                                                    ("residual", "residual", "twilight_shifted"))):
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
            notify_error("choose a model and an image layer first")
            return
        try:
            from ._inspect import load_model_cached

            model = load_model_cached(path)
        except Exception as exc:  # noqa: BLE001
            notify_error(error_text(exc))
            return
        from napari.qt.threading import thread_worker

        from ._inspect import apply_to_volume

        data = np.asarray(layer.data)
        seed = int(self.inspect_seed.value())
        affine = layer_affine(layer) if data.ndim == 3 else None

        @thread_worker(ignore_errors=True)  # errors go to our notification, not re-raised
        def work():
            return apply_to_volume(model, data, seed=seed, affine=affine)

        def done(result):
            if result is None:
                return
            meta = {k: v for k, v in (layer.metadata or {}).items() if k in ("affine", "source_path", "header")}
            meta["l2s_augmented_by"] = str(path)
            upsert(self.viewer, f"applied_{layer.name}", "image", result.astype(np.float32),
                   name=f"{layer.name} · A_θ", scale=list(layer.scale), translate=list(layer.translate),
                   colormap="gray", contrast_limits=[0.0, 1.0], metadata=meta)
            self.inspect_status.setText(f"applied A_θ of {path.name} to '{layer.name}'")

        worker = work()
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: notify_error(error_text(exc)))
        self.inspect_status.setText("applying …")
        self._worker = worker
        worker.start()

    # ------------------------------------------------------------------------------------ teardown
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        # once docked, watch napari's main window (our top-level window) for its close event
        window = self.window()
        if window is not None and window is not self and window is not self._guarded_window:
            window.installEventFilter(self._close_guard)
            self._guarded_window = window
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
