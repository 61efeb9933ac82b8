"""The training subprocess (``python -m l2s_gui.cli train|resume ...``) driven by a QProcess.

Running the engine in its own process keeps napari responsive (no GIL contention), lets a crash or
an out-of-memory error end only that process, and frees GPU memory at once when it exits.
Stop is cooperative first (control.json "stop": the trainer checkpoints and exits), then SIGINT
(the CLI also checkpoints on KeyboardInterrupt), then kill.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from pathlib import Path

from qtpy.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from l2s_gui.runs import RunFolder

STOP_GRACE_MS = 8000
NICE = int(os.environ.get("L2S_GUI_TRAINING_NICE", "10"))
"""CPU priority decrease of the training process (POSIX): the GUI gets the CPU first when it needs it."""
INTERRUPT_GRACE_MS = 4000


class TrainingProcess(QObject):
    """One training process at a time; emits ``finished(exit_code, stderr_tail)``."""

    started = Signal()
    finished = Signal(int, str)
    output = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._proc: QProcess | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._partial = ""
        self._stopping = False
        self.run_dir: Path | None = None

    # state
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        if self._proc is None:
            return None
        pid = int(self._proc.processId())
        return pid or None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    # start
    def start(self, args: list[str], run_dir: str | Path) -> None:
        if self.is_running():
            raise RuntimeError("a training process is already running")
        self.run_dir = Path(run_dir)
        self._tail.clear()
        self._partial = ""
        self._stopping = False
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read_output)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        proc.setWorkingDirectory(str(self.run_dir.parent if self.run_dir.parent.is_dir() else Path.cwd()))
        self._proc = proc
        proc.start(sys.executable, ["-m", "l2s_napari._niced_cli", "--nice", str(NICE), "--", *args])
        self.started.emit()

    def _read_output(self) -> None:
        if self._proc is None:
            return
        text = bytes(self._proc.readAllStandardOutput()).decode("utf-8", "replace")
        text = self._partial + text.replace("\r", "\n")
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._tail.append(line.rstrip())
                self.output.emit(line.rstrip())

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._proc is not None:
            self._tail.append(f"l2s: error: could not start {sys.executable} -m l2s_gui.cli "
                              f"({self._proc.errorString()})")
            self._on_finished(127, QProcess.ExitStatus.CrashExit)

    def _on_finished(self, code: int, status) -> None:
        proc = self._proc
        if proc is None:
            return
        self._read_output()
        if self._partial.strip():
            self._tail.append(self._partial.rstrip())
            self._partial = ""
        crashed = status == QProcess.ExitStatus.CrashExit
        self._proc = None
        proc.deleteLater()
        self.finished.emit(-1 if crashed else int(code), self.stderr_tail())

    # stop
    def request_stop(self) -> None:
        """Cooperative stop, escalating on timers (never blocks the GUI)."""
        if not self.is_running():
            return
        self._stopping = True
        if self.run_dir is not None:
            try:
                RunFolder(self.run_dir).send_control("stop")
            except OSError:
                pass
        proc = self._proc
        QTimer.singleShot(STOP_GRACE_MS, lambda: self._escalate(proc, interrupt=True))

    def _escalate(self, proc: QProcess | None, interrupt: bool) -> None:
        if proc is None or proc is not self._proc or not self.is_running():
            return
        if interrupt:
            self._interrupt()
            QTimer.singleShot(INTERRUPT_GRACE_MS, lambda: self._escalate(proc, interrupt=False))
        else:
            proc.kill()

    def _interrupt(self) -> None:
        pid = self.pid()
        if pid is None or self._proc is None:
            return
        if os.name == "posix":
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        else:
            self._proc.terminate()

    def stop_blocking(self, grace_ms: int = STOP_GRACE_MS) -> None:
        """Stop and wait (used when napari closes): control file, SIGINT, then kill."""
        if not self.is_running():
            return
        self._stopping = True
        proc = self._proc
        if self.run_dir is not None:
            try:
                RunFolder(self.run_dir).send_control("stop")
            except OSError:
                pass
        if proc.waitForFinished(grace_ms):
            return
        self._interrupt()
        if proc.waitForFinished(INTERRUPT_GRACE_MS):
            return
        proc.kill()
        proc.waitForFinished(2000)
