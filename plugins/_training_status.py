"""Following a run in the training widget: what the run-folder watcher and the training process
report (events, state, previews, exit) becomes plots, the progress bar with its ETA, the status and
device lines, and which of Start / Pause / Resume / Stop can be pressed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ._common import error_text, set_enabled
from ._forms import resolve_device_choice
from ._training_run import ACTIVE, ENDED


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


class RunStatusMixin:
    """The watcher/process slots and the progress display of :class:`TrainingWidget`.

    Uses from the widget: ``process``, ``watcher``, ``plots``, ``previews``, ``run_dir``, ``state`` and
    the run counters, ``progress`` / ``status_label`` / ``device_label`` / ``device_combo`` and the run
    buttons, ``missing_inputs``, ``_external_alive`` and the notifiers."""

    # ------------------------------------------------------------------------------------ events
    def _on_restarted(self) -> None:
        if self.plots is not None:
            self.plots.clear()

    def _on_events(self, events: list[dict[str, Any]]) -> None:
        # events come sanitised from the watcher; each is still handled on its own so that one odd
        # event can never drop the others of its batch
        if self.plots is not None:
            for e in events:
                if e.get("kind") == "start" and e.get("label_values"):
                    self.plots.label_names = self._label_names(e["label_values"])
            self.plots.add_events(events)
        for e in events:
            try:
                self._take_event(e)
            except (TypeError, ValueError):
                continue
        self._update_progress()

    def _take_event(self, e: dict[str, Any]) -> None:
        kind = e.get("kind")
        if kind == "start":
            self._total_steps = int(e.get("total_steps") or 0)
            self._step = int(e.get("step") or 0)
        elif kind == "step":
            self._step = int(e.get("step") or 0)
            self._it_per_s = float(e.get("it_per_s") or 0.0)
            synth, real = e.get("loss_synth"), e.get("loss_real")
            self._last_losses = {"synth": float(synth) if synth is not None else None,
                                 "real": float(real) if real is not None else None}
        elif kind == "validation":
            dice = e.get("mean_dice")
            self._last_dice = float(dice) if dice is not None else None

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

    def _notify_finished(self) -> None:
        self._notify_info(f"training finished at step {self.state.get('step')}; model: "
                          f"{Path(self.run_dir) / 'model.safetensors'}")

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
            self._notify_error(f"training failed: {state.get('message') or 'see the run folder'}")
        if status in ENDED:
            self._pending_control = None
        if status == "finished" and old not in (None, "finished") and not self.process.is_running():
            self._notify_finished()
        self._refresh_run_display()

    def _on_preview(self, arrays: dict[str, Any]) -> None:
        self.last_preview = arrays
        try:
            self.previews.update(arrays)
        except Exception as exc:  # noqa: BLE001 - a bad preview must not break the watcher
            self._notify_warning(f"could not show the preview: {error_text(exc)}")
        self._update_buttons()

    def _on_process_finished(self, code: int, tail: str) -> None:
        # read what the process wrote last (final state, done event) before reporting
        self.watcher.poll()
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
                self._notify_error(f"training failed: {message}")
            self.state["status"] = "error"
            self.state["message"] = message
        elif code == 0 and status == "finished":
            self._notify_finished()
        self._pending_control = None
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
        if parts:
            self.status_label.setText(" · ".join(parts))

    def _set_waiting(self, text: str) -> None:
        """An empty bar with a text (not Qt's busy animation: it repaints the window continuously,
        which costs a lot of CPU next to napari's OpenGL canvas)."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _update_run_buttons(self) -> None:
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
