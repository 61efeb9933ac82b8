"""The "Learn2Synth training" dock widget: composed of one widget per tab (Data, Model, Training,
Inspect) around the run it starts or follows.

Training runs in a separate process (``python -m l2s_gui.cli train|resume``, :class:`TrainingProcess`):
the engine checks the inputs and writes the chosen layers to ``RUN/inputs/``
(:func:`l2s_gui.run_inputs.prepare_run_inputs`), the process trains, and this widget only *watches
the run folder* (:class:`RunWatcher` around the engine's :class:`l2s_gui.runs.RunReader`). The same
watcher opens a past run (plots and previews restored), resumes it, or follows a run started
elsewhere with the CLI; Pause/Resume/Stop go through the run's control file. What it learns goes
into the viewer's shared :class:`RunStatus`, which the Segment widget observes.
"""

from __future__ import annotations

import math
import time
import weakref
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLineEdit

from l2s_gui.events import CheckpointEvent, DoneEvent, StartEvent, StepEvent, ValidationEvent
from l2s_gui.runs import ACTIVE, ENDED, RunFolder

from . import _notify
from ._config_form import Editor
from ._data_tab import DataTab
from ._form_widgets import (
    browse_row,
    button,
    button_row,
    default_run_root,
    device_choices,
    fixed_lines,
    resolve_device_choice,
    scrolled,
    set_enabled,
)
from ._inspect_tab import InspectTab
from ._inspector_layer import InspectorLayer
from ._preview_layers import PreviewLayers
from ._run_status import run_status_for
from ._run_watcher import RunWatcher
from ._settings_tabs import ModelTab, TrainingTab, build_form
from ._training_plots import TrainingPlots
from ._training_process import TrainingProcess

__all__ = ["TrainingWidget", "new_run_dir", "fmt_eta", "error_from_tail"]

WATCH_INTERVAL_MS = 1000
"""How often the run folder is polled (events, state); progress a human reads needs no more."""


def new_run_dir() -> Path:
    root = default_run_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"run-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"run-{stamp}-{n}"
    return path


def fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def error_from_tail(tail: str) -> str:
    """The error a failed training process printed last (its ``l2s: error:`` line if any)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("l2s: error:"):
            return line[len("l2s: error:"):].strip()
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Killed" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


class _CloseGuard(QObject):
    """Event filter on napari's main window: closing during training asks, then stops cleanly."""

    def __init__(self, widget: TrainingWidget):
        super().__init__(widget)
        self._widget = weakref.ref(widget)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        widget = self._widget()
        if widget is not None and event.type() == QEvent.Type.Close and widget.process.is_running():
            if not widget.confirm_close():
                event.ignore()
                return True
        return False


def _device_editor() -> Editor:
    from ._data_tab import form_spec

    combo = QComboBox()
    combo.addItems(device_choices())
    combo.setToolTip("auto: the first CUDA GPU, else Apple MPS, else the CPU")
    # a device this machine does not offer is not in the combo: the choice stays
    return Editor(form_spec("training.device"), combo, combo.currentText,
                  lambda v: combo.setCurrentText(str(v)) if v else None)


class TrainingWidget(QWidget):
    """Learn2Synth training: inputs, settings, device, Start/Pause/Resume/Stop, progress, inspect."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.status = run_status_for(napari_viewer)
        self.status.trainer_attached = True
        self.process = TrainingProcess(self)
        self.process.finished.connect(self._on_process_finished)
        self.watcher = RunWatcher(self, interval_ms=WATCH_INTERVAL_MS)
        self.watcher.events_arrived.connect(self._on_events)
        self.watcher.state_changed.connect(self._on_state)
        self.watcher.preview_arrived.connect(self._on_preview)
        self.watcher.restarted.connect(self._on_restarted)
        self.previews = PreviewLayers(napari_viewer, rotate=True)
        self.inspector_layer = InspectorLayer(napari_viewer, self.previews)
        self.watcher.inspector_arrived.connect(self._on_inspector_map)
        self.plots: TrainingPlots | None = None
        self._plots_dock = None
        self.state: dict[str, Any] = {}
        self._reported_error_for: str | None = None
        self._last_losses: dict[str, float | None] = {}
        self._last_dice: float | None = None
        self._pending_control: str | None = None
        self.confirm_close_answer: bool | None = None  # tests: answer the close question

        self.form = build_form()
        self.form.add("training.device", editor=_device_editor())
        self.data = DataTab(napari_viewer, self.form)
        self.model_tab = ModelTab(self.form)
        self.training_tab = TrainingTab(self.form)
        self.inspect = InspectTab(napari_viewer, self.status, self.previews)
        self.data.changed.connect(self._update_buttons)
        self.data.sample_requested.connect(self.use_sample)
        self.form["training.method"].currentIndexChanged.connect(self._update_buttons)
        self.training_tab.buttons_layout.addLayout(button_row(
            button("Load config…", self._load_config_dialog,
                   "Fill the settings from a YAML/JSON config (data paths included)"),
            button("Save config…", self._save_config_dialog,
                   "Save these settings as a config for `l2s train` (layers become files on Start only)")))
        self._build()
        self._close_guard = _CloseGuard(self)
        self._guarded_window = None
        napari_viewer.events.theme.connect(self._on_theme)
        self.device_combo.currentTextChanged.connect(lambda *_: self._update_device_label())
        self._update_device_label()
        self._update_buttons()

    # ------------------------------------------------------------------------------------ shared state
    def _set_status(self, changes: dict[str, Any]) -> None:
        """Update the shared run status (each changed field emits its own event)."""
        for name, value in changes.items():
            setattr(self.status, name, value)

    @property
    def run_dir(self) -> Path | None:
        return self.status.run_dir

    @property
    def _step(self) -> int:
        return self.status.step

    @property
    def last_preview(self) -> dict[str, Any] | None:
        return self.inspect.last_preview

    @property
    def device_combo(self) -> QComboBox:
        return self.form["training.device"]

    # ------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.run_edit = QElidingLineEdit(str(new_run_dir()))
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
        self.tabs.addTab(scrolled(self.data), "Data")
        self.tabs.addTab(scrolled(self.model_tab), "Model")
        self.tabs.addTab(scrolled(self.training_tab), "Training")
        self.tabs.addTab(scrolled(self.inspect), "Inspect")
        outer.addWidget(self.tabs, 1)

        dev_row = QHBoxLayout()
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

    # ------------------------------------------------------------------------------------ settings
    def settings_dict(self) -> dict[str, Any]:
        """The config mapping of the current settings (data lists filled on Start)."""
        return self.form.settings()

    def apply_settings(self, data: dict[str, Any]) -> None:
        """Fill the form from a config mapping (its files become Data-tab entries; settings without
        an editor are kept for the next Start)."""
        self.form.apply(data)
        self.data.apply_paths(data)
        self.model_tab.update_fields()
        self._update_buttons()

    def add_pair(self, scan: Any, labels: Any) -> None:
        self.data.add_pair(scan, labels)

    def use_sample(self) -> bool:
        """Inputs and settings of the engine's demo (``l2s_gui.sample_data.sample_config``)."""
        try:
            from l2s_gui.sample_data import sample_config

            config = sample_config()
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return False
        self.apply_settings(config)
        return True

    def missing_inputs(self) -> str:
        from l2s_gui.run_inputs import missing_inputs

        return missing_inputs(self.form.editors["training.method"].read(), *self.data.counts())

    def _load_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Config", "", "Config (*.yaml *.yml *.json)")
        if not path:
            return
        try:
            from l2s_gui.config import read_config_file

            self.apply_settings(read_config_file(path))
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))

    def _save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save config", "config.yaml", "YAML (*.yaml)")
        if path:
            self.save_config(path)

    def save_config(self, path: str | Path) -> bool:
        try:
            from l2s_gui.config import Config

            data = self.settings_dict()
            data.setdefault("data", {}).update(self.data.file_paths())
            Config.from_dict(data).save(Path(path))
        except Exception as exc:  # noqa: BLE001
            _notify.notify_error(_notify.error_text(exc))
            return False
        _notify.notify_info(f"config saved to {path}" + (" (layers are not included: they become files on Start)"
                                                          if self.data.has_layers() else ""))
        return True

    # ------------------------------------------------------------------------------------ run control
    def _browse_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the new run", str(default_run_root()))
        if path:
            self.run_edit.setText(path)

    def start(self) -> bool:
        """Start a new training run in a subprocess. Returns False (and notifies) on bad input."""
        from l2s_gui.run_inputs import prepare_run_inputs

        if self.process.is_running():
            _notify.notify_warning("a training run is already in progress; stop it first")
            return False
        missing = self.missing_inputs()
        if missing:
            _notify.notify_error(missing)
            return False
        text = self.run_edit.text().strip()
        run_dir = Path(text).expanduser() if text else new_run_dir()
        if self.run_dir is not None and run_dir.resolve() == self.run_dir.resolve() and run_dir.exists():
            run_dir = new_run_dir() if text.startswith(str(default_run_root())) else run_dir
            self.run_edit.setText(str(run_dir))
        if self._refuse_locked(run_dir):
            return False
        try:
            maps, pairs = self.data.run_sources()
            config_path = prepare_run_inputs(run_dir, self.settings_dict(), maps, pairs,
                                             unlabelled=self.data.unlabelled_sources())
        except Exception as exc:  # noqa: BLE001 - shown to the user, viewer stays usable
            _notify.notify_error(_notify.error_text(exc))
            return False
        self._attach(run_dir)
        self.process.start(["train", str(config_path), "-o", str(run_dir), "--overwrite", "--quiet"], run_dir)
        self.status.process_running = True
        self.status_label.setText(f"Starting training in {run_dir} …")
        self._set_waiting("starting…")
        self._update_buttons()
        return True

    def _send(self, command: str) -> None:
        if self.run_dir is None:
            return
        try:
            self.watcher.reader.send_control(command)
        except Exception as exc:  # noqa: BLE001 - OutputError naming the control file
            _notify.notify_error(_notify.error_text(exc))
            return
        self._pending_control = command
        self._update_buttons()

    def pause(self) -> None:
        if self.state.get("status") == "running" or self.process.is_running():
            self._send("pause")
            self.status_label.setText("Pausing after the current step …")

    def resume(self) -> None:
        if self.state.get("status") == "paused" and (self.process.is_running() or self._external_alive()):
            self._send("resume")
            self.status_label.setText("Resuming …")
            return
        self.resume_run()

    def resume_run(self) -> bool:
        """Continue an ended run from its latest checkpoint in a new process (``l2s resume``)."""
        if self.run_dir is None or self.process.is_running():
            return False
        run = RunFolder(self.run_dir)
        if self._refuse_locked(self.run_dir):
            return False
        if run.latest_checkpoint() is None:
            _notify.notify_error(f"{self.run_dir}: no checkpoint to resume from yet")
            return False
        args = ["resume", str(self.run_dir), "--quiet"]
        step = int(self.state.get("step") or 0)
        total = int(self.state.get("total_steps") or self.status.total_steps or 0)
        wanted = int(self.form.editors["training.steps"].read())
        if wanted > step and wanted != total:
            args += ["--steps", str(wanted)]
        elif step >= total > 0:
            _notify.notify_warning(f"the run already reached its {total} steps; raise 'steps' (Training tab) "
                                   f"to continue")
            return False
        run.clear_control()
        self._reported_error_for = None
        self.process.start(args, self.run_dir)
        self.status.process_running = True
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
        run = RunFolder(Path(path).expanduser())
        if not run.looks_like_run():
            from l2s_gui.runs import CONFIG_NAME, STATE_NAME

            _notify.notify_error(f"{run.path}: not a run folder (no {CONFIG_NAME} or {STATE_NAME})")
            return False
        if self.process.is_running() and self.run_dir is not None and run.path.resolve() != self.run_dir.resolve():
            _notify.notify_warning("a training started here is still running; stop it before opening another run")
            return False
        try:
            from l2s_gui.config import read_config_file

            if run.config_path.is_file():
                cfg = read_config_file(run.config_path)
                for key in ("label_maps", "real_images", "real_labels"):
                    cfg.get("data", {}).pop(key, None)
                self.form.apply(cfg)
                self.model_tab.update_fields()
        except Exception as exc:  # noqa: BLE001 - settings are a convenience; keep opening
            _notify.notify_warning(f"{run.path}: could not read its config ({_notify.error_text(exc)})")
        self._attach(run.path)
        self.run_edit.setText(str(run.path))
        return True

    def _attach(self, run_dir: Path) -> None:
        self.state = {}
        self._reported_error_for = None
        self._pending_control = None
        self._last_dice = None
        self._last_losses = {}
        self._set_status(dict(run_dir=Path(run_dir), status="", step=0, total_steps=0, it_per_s=0.0,
                                device="", message=""))
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

    def _refuse_locked(self, run_dir: Path) -> bool:
        """Another live process writes ``run_dir``: say so (naming its pid) and refuse."""
        from l2s_gui.run_lock import describe_holder

        holder = RunFolder(run_dir).lock_holder()
        if holder is None:
            return False
        _notify.notify_error(f"{run_dir}: in use by {describe_holder(holder)}; stop it first or choose another "
                             f"run folder")
        return True

    def _external_alive(self) -> bool:
        """A run not started by this widget that looks alive (the engine's liveness rule:
        :meth:`l2s_gui.runs.RunFolder.writer_alive`: its lock held here, or a fresh heartbeat from
        the host that writes it)."""
        if self.process.is_running() or self.run_dir is None or self.state.get("status") not in ACTIVE:
            return False
        try:
            return RunFolder(self.run_dir).writer_alive(self.state)[0]
        except Exception:  # noqa: BLE001 - a damaged folder counts as not alive
            return False

    # ------------------------------------------------------------------------------------ what the run says
    def _on_restarted(self) -> None:
        if self.plots is not None:
            self.plots.clear()

    def _on_events(self, events: list) -> None:
        if self.plots is not None:
            for e in events:
                if isinstance(e, StartEvent) and e.label_values:
                    self.plots.label_names = self._label_names(e.label_values)
            self.plots.add_events(events)
        changes: dict[str, Any] = {}
        for e in events:
            try:
                self._take_event(e, changes)
            except (TypeError, ValueError):
                continue  # one odd event never drops the others of its batch
        if changes:
            self._set_status(changes)
        self._update_progress()

    def _take_event(self, e, changes: dict[str, Any]) -> None:
        if isinstance(e, StartEvent):
            changes["total_steps"] = int(e.total_steps or 0)
            changes["step"] = int(e.step or 0)
        elif isinstance(e, StepEvent):
            changes["step"] = int(e.step)
            changes["it_per_s"] = float(e.it_per_s or 0.0)
            self._last_losses = {"synth": None if e.loss_synth is None else float(e.loss_synth),
                                 "real": None if e.loss_real is None else float(e.loss_real)}
        elif isinstance(e, ValidationEvent):
            self._last_dice = None if e.mean_dice is None else float(e.mean_dice)
        elif isinstance(e, (CheckpointEvent, DoneEvent)):
            changes["model_version"] = self.status.model_version + 1

    def _label_names(self, values: list) -> dict[str, str]:
        """value -> name for the plot legends, from the run's label table setting."""
        try:
            from l2s_gui.config import read_config_file
            from l2s_gui.labels import LabelTable, load_label_table

            spec = "auto"
            run = RunFolder(self.run_dir) if self.run_dir is not None else None
            if run is not None and run.config_path.is_file():
                spec = str((read_config_file(run.config_path).get("data") or {}).get("label_table", "auto"))
            table = LabelTable.from_values(values) if spec == "auto" else load_label_table(spec)
            return {str(v): n for v, n in zip(table.values, table.names)}
        except Exception:  # noqa: BLE001 - names are cosmetic
            return {}

    def _notify_finished(self) -> None:
        _notify.notify_info(f"training finished at step {self.state.get('step')}; model: "
                            f"{RunFolder(self.run_dir).model_path}")

    def _on_state(self, state: dict[str, Any]) -> None:
        old = self.state.get("status")
        self.state = dict(state)
        status = state.get("status")
        changes: dict[str, Any] = {"status": status or "", "device": state.get("device") or "",
                                   "message": state.get("message") or ""}
        if state.get("total_steps"):
            changes["total_steps"] = int(state["total_steps"])
        if state.get("step") is not None:
            changes["step"] = max(self.status.step, int(state["step"]))
        if status in ("paused", "running") and self._pending_control in ("pause", "resume"):
            self._pending_control = None
        if status == "error" and self._reported_error_for != str(self.run_dir):
            self._reported_error_for = str(self.run_dir)
            _notify.notify_error(f"training failed: {state.get('message') or 'see the run folder'}")
        if status in ENDED:
            self._pending_control = None
            changes["model_version"] = self.status.model_version + 1
        self._set_status(changes)
        if status == "finished" and old not in (None, "finished") and not self.process.is_running():
            self._notify_finished()
        self._refresh_run_display()

    def _on_preview(self, arrays: dict[str, Any]) -> None:
        try:
            self.previews.update(arrays)
        except Exception as exc:  # noqa: BLE001 - a bad preview must not break the watcher
            _notify.notify_warning(f"could not show the preview: {_notify.error_text(exc)}")
        self.inspect.set_preview(arrays)
        self._show_inspector_map(self.inspector_layer.refresh)  # a map waiting for its tile

    def _on_inspector_map(self, arrays: dict[str, Any]) -> None:
        self._show_inspector_map(lambda: self.inspector_layer.update(arrays))

    def _show_inspector_map(self, show) -> None:
        try:
            show()
        except Exception as exc:  # noqa: BLE001 - a bad map must not break the watcher
            _notify.notify_warning(f"could not show the inspector map: {_notify.error_text(exc)}")

    def _on_process_finished(self, code: int, tail: str) -> None:
        self.watcher.poll()  # read what the process wrote last (final state, done event) first
        self.status.process_running = False
        status = self.state.get("status")
        if code != 0 and status != "error" and not (self.process.stopping and code in (-1, 130, 137, 143, 9, 15)):
            message = error_from_tail(tail)
            if code < 0 or code in (137, 9):
                message = ("the training process was killed (out of system memory?)"
                           + (f": {message}" if message else ""))
            elif not message:
                message = f"the training process exited with code {code}"
            if self._reported_error_for != str(self.run_dir):
                self._reported_error_for = str(self.run_dir)
                _notify.notify_error(f"training failed: {message}")
            self.state["status"] = "error"
            self.state["message"] = message
            self._set_status({"status": "error", "message": message})
        elif code == 0 and status == "finished":
            self._notify_finished()
        self._pending_control = None
        self.status.model_version += 1
        self._refresh_run_display()

    # ------------------------------------------------------------------------------------ display
    def _refresh_run_display(self) -> None:
        self._update_device_label()
        self._update_progress()
        self._update_buttons()

    def _update_device_label(self) -> None:
        device = self.state.get("device") if self.state.get("status") in ACTIVE else None
        if device:
            text = f"▶ running on <b>{device}</b>"
        elif self.state.get("device"):
            text = f"last run: <b>{self.state['device']}</b>"
        else:
            text = f"will run on <b>{resolve_device_choice(self.device_combo.currentText())}</b>"
        self.device_label.setText(text)

    def _update_progress(self) -> None:
        status = self.state.get("status")
        total = self.status.total_steps or int(self.state.get("total_steps") or 0)
        step = self.status.step
        if total > 0:
            # QProgressBar.setValue repaints synchronously; with napari's GL canvas in the same window
            # that costs a full window composite (~40 ms in software GL). Let Qt repaint on its own.
            self.progress.setUpdatesEnabled(False)
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
            self.progress.setUpdatesEnabled(True)
        elif status in ACTIVE or self.process.is_running():
            self._set_waiting("starting…")
        rate = self.status.it_per_s
        eta = (total - step) / rate if rate > 0 and total else float("nan")
        dead = (status in ACTIVE and self.run_dir is not None and not self.process.is_running()
                and not self._external_alive())
        if dead:  # state.json says running but its process died (kill -9, crash, reboot)
            status = f"{status}, process gone"
            fmt = f"{status} · {step}/{total}"
        elif status == "running" or (self.process.is_running() and status is None):
            fmt = f"{step}/{total}  ·  {rate:.2f} it/s  ·  ETA {fmt_eta(eta)}"
        elif status:
            fmt = f"{status} · {step}/{total}"
        else:
            fmt = "starting…" if self.process.is_running() else "idle"
        if self.progress.format() != fmt:
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
        if dead:
            parts.append("its process is no longer running: Resume continues it from its last checkpoint")
        if status == "error" and self.state.get("message"):
            parts.append(f"<span style='color:#e06c75'>{self.state['message']}</span>")
        text = " · ".join(parts)
        if parts and self.status_label.text() != text:
            self.status_label.setText(text)

    def _set_waiting(self, text: str) -> None:
        """An empty bar with a text (not Qt's busy animation: it repaints the window continuously,
        which costs a lot of CPU next to napari's OpenGL canvas)."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _update_buttons(self, *_args) -> None:
        status = self.state.get("status")
        ours = self.process.is_running()
        live = ours or self._external_alive()
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
        has_ckpt = self.run_dir is not None and RunFolder(self.run_dir).has_checkpoint()
        if live and status == "paused" and not stopping:
            set_enabled(self.resume_button, True, tip="Continue the paused run")
        elif not live and self.run_dir is not None and status in ENDED + ACTIVE and has_ckpt:
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
