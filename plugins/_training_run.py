"""Run control of the training widget: the run folder, Start / Pause / Resume / Stop, opening a past
run, and stopping cleanly when napari closes.

Training runs in a separate process (``python -m l2s_gui.cli train|resume``, :class:`TrainingProcess`);
Pause/Resume/Stop of a run started elsewhere go through its ``control.json``."""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox

from ._common import error_text
from ._forms import default_run_root
from ._plots import TrainingPlots
from l2s_gui.run_lock import LEGACY_STALE_S, writer_alive

ACTIVE = ("running", "paused")
ENDED = ("stopped", "finished", "error")
STALE_AFTER_S = LEGACY_STALE_S
"""A run folder without lock or host information (older versions) whose files have not changed for
this long, with no live local pid, counts as ended."""


def new_run_dir() -> Path:
    root = default_run_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"run-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"run-{stamp}-{n}"
    return path


class RunControlMixin:
    """Starting, steering and opening runs for :class:`TrainingWidget`.

    Uses from the widget: ``process``, ``watcher``, ``viewer``, ``run_edit``, ``steps``, ``status_label``,
    ``state`` and the run counters, ``missing_inputs`` / ``prepare_run`` (inputs), ``apply_settings``,
    ``_set_waiting`` / ``_update_buttons`` (status) and the notifiers."""

    def _browse_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the new run", str(default_run_root()))
        if path:
            self.run_edit.setText(path)

    def start(self) -> bool:
        """Start a new training run in a subprocess. Returns False (and notifies) on bad input."""
        if self.process.is_running():
            self._notify_warning("a training run is already in progress; stop it first")
            return False
        missing = self.missing_inputs()
        if missing:
            self._notify_error(missing)
            return False
        text = self.run_edit.text().strip()
        run_dir = Path(text).expanduser() if text else new_run_dir()
        if self.run_dir is not None and run_dir.resolve() == self.run_dir.resolve() and run_dir.exists():
            run_dir = new_run_dir() if text.startswith(str(default_run_root())) else run_dir
            self.run_edit.setText(str(run_dir))
        if self._refuse_locked(run_dir):
            return False
        try:
            config_path = self.prepare_run(run_dir)
        except Exception as exc:  # noqa: BLE001 - shown to the user, viewer stays usable
            self._notify_error(error_text(exc))
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
            self._notify_error(f"{self.run_dir}: cannot write control.json ({exc})")
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
        if self._refuse_locked(self.run_dir):
            return False
        if run.latest_checkpoint() is None:
            self._notify_error(f"{self.run_dir}: no checkpoint to resume from yet")
            return False
        args = ["resume", str(self.run_dir), "--quiet"]
        total = int(self.state.get("total_steps") or self._total_steps or 0)
        wanted = int(self.steps.value())
        if wanted > int(self.state.get("step") or 0) and wanted != total:
            args += ["--steps", str(wanted)]
        elif int(self.state.get("step") or 0) >= total > 0:
            self._notify_warning(f"the run already reached its {total} steps; raise 'steps' (Training tab) "
                                 f"to continue")
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
            self._notify_error(f"{path}: not a run folder (no config.yaml or state.json)")
            return False
        if self.process.is_running() and self.run_dir is not None and path.resolve() != self.run_dir.resolve():
            self._notify_warning("a training started here is still running; stop it before opening another run")
            return False
        try:
            from l2s_gui.config import read_config_file

            if (path / "config.yaml").is_file():
                cfg = read_config_file(path / "config.yaml")
                for key in ("label_maps", "real_images", "real_labels"):
                    cfg.get("data", {}).pop(key, None)
                self.apply_settings(cfg)
        except Exception as exc:  # noqa: BLE001 - settings are a convenience; keep opening
            self._notify_warning(f"{path}: could not read config.yaml ({error_text(exc)})")
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

    def _refuse_locked(self, run_dir: Path) -> bool:
        """Another live process writes ``run_dir``: say so (naming its pid) and refuse."""
        from l2s_gui.run_lock import describe_holder, lock_holder

        holder = lock_holder(run_dir) if Path(run_dir).is_dir() else None
        if holder is None:
            return False
        self._notify_error(f"{run_dir}: in use by {describe_holder(holder)}; stop it first or choose another "
                           f"run folder")
        return True

    def _external_alive(self) -> bool:
        """A run not started by this widget that looks alive: a live process holds its lock here, or it
        runs on another host with a recent heartbeat, or (older run folders) its pid runs here or its
        files changed in the last minutes (:func:`l2s_gui.run_lock.writer_alive`)."""
        if self.process.is_running() or self.run_dir is None:
            return False
        if self.state.get("status") not in ACTIVE:
            return False
        try:
            return writer_alive(self.run_dir, self.state)[0]
        except Exception:  # noqa: BLE001 - a damaged folder counts as not alive
            return False
