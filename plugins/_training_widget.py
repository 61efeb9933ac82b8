"""The "Learn2Synth training" dock widget.

Training runs in a separate process (``python -m l2s_gui.cli train|resume``): the GUI writes the
chosen layers to ``RUN/inputs/`` as NIfTI, writes a config, starts the process and then only
*watches the run folder* (QTimer: state.json, metrics.jsonl incrementally, previews/latest.npz).
The same watcher opens a past run (plots and previews restored), resumes it, or follows a run
started elsewhere with the CLI. Pause/Resume/Stop go through ``control.json``; Stop escalates to
SIGINT and kill if the process does not exit in time.

The widget is assembled from one mixin per job:

- :mod:`._training_inputs`: the Data tab (label maps, real pairs) and writing them into a run folder;
- :mod:`._training_settings`: the Model and Training tabs <-> a config mapping;
- :mod:`._training_run`: Start / Pause / Resume / Stop, opening runs;
- :mod:`._training_status`: watcher and process reports -> plots, progress, ETA, button states;
- :mod:`._training_inspect`: the Inspect tab (the learned augmentation A_θ).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Optional

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QProgressBar, QTabWidget, QVBoxLayout, QWidget

from ._common import notify_error, notify_info, notify_warning
from ._forms import browse_row, button, button_row, combo, default_run_root, device_choices, fixed_lines, scrolled
from ._plots import TrainingPlots
from ._previews import PreviewLayers
from ._process import TrainingProcess
from ._training_inputs import InputsMixin
from ._training_inspect import InspectMixin
from ._training_run import ACTIVE, ENDED, STALE_AFTER_S, RunControlMixin, new_run_dir
from ._training_settings import SettingsMixin
from ._training_status import RunStatusMixin
from ._watcher import RunWatcher

__all__ = ["ACTIVE", "ENDED", "STALE_AFTER_S", "TrainingWidget", "default_run_root", "new_run_dir",
           "notify_error", "notify_info", "notify_warning", "training_widget_for"]

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


class TrainingWidget(InputsMixin, SettingsMixin, RunControlMixin, RunStatusMixin, InspectMixin, QWidget):
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

        self.run_edit = QLineEdit(str(new_run_dir()))
        self.run_edit.setToolTip("Run folder: config, metrics, previews, checkpoints and model.safetensors "
                                 "are written here (a new, empty folder for Start)")
        self.open_button = button("Open run…", self._choose_and_open_run,
                                  "Open a past run folder or one being written by `l2s train` elsewhere: "
                                  "plots and previews are restored and followed live")
        run_row = browse_row(self.run_edit, self._browse_run_dir, "Choose the folder for a new run")
        run_row.insertWidget(0, QLabel("Run"))
        run_row.addWidget(self.open_button)
        outer.addLayout(run_row)

        self.tabs = QTabWidget()
        self.tabs.addTab(scrolled(self._build_data_tab()), "Data")
        self.tabs.addTab(scrolled(self._build_model_tab()), "Model")
        self.tabs.addTab(scrolled(self._build_training_tab()), "Training")
        self.tabs.addTab(scrolled(self._build_inspect_tab()), "Inspect")
        outer.addWidget(self.tabs, 1)

        dev_row = QHBoxLayout()
        self.device_combo = combo(device_choices(), "auto")
        self.device_combo.setToolTip("auto: the first CUDA GPU, else Apple MPS, else the CPU")
        self.device_combo.currentTextChanged.connect(lambda *_: self._update_device_label())
        self.device_label = QLabel()
        self.device_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_label.setWordWrap(True)
        fixed_lines(self.device_label, 2)
        dev_row.addWidget(QLabel("Device"))
        dev_row.addWidget(self.device_combo)
        dev_row.addWidget(self.device_label, 1)
        outer.addLayout(dev_row)

        self.start_button = button("Start", self.start)
        self.pause_button = button("Pause", self.pause)
        self.resume_button = button("Resume", self.resume)
        self.stop_button = button("Stop", self.stop)
        outer.addLayout(button_row(self.start_button, self.pause_button, self.resume_button, self.stop_button))

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        outer.addWidget(self.progress)
        self.status_label = QLabel("No run yet.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        fixed_lines(self.status_label, 3)
        outer.addWidget(self.status_label)
        self._update_device_label()

    def _update_buttons(self, *_args) -> None:
        self._update_run_buttons()
        self._update_inspect_buttons()

    # ------------------------------------------------------------------------------------ notifications
    # The mixins notify through these: the names are looked up in this module when called, so tests
    # and scripts/screenshot.py can replace ``l2s_napari._training_widget.notify_*``.
    def _notify_error(self, message: str) -> None:
        notify_error(message)

    def _notify_warning(self, message: str) -> None:
        notify_warning(message)

    def _notify_info(self, message: str) -> None:
        notify_info(message)

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
