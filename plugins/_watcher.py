"""Watch a run folder from the GUI: a QTimer polls state.json, metrics.jsonl (incrementally, whole
lines only) and previews/latest.npz (reloaded when its mtime changes).

The same watcher follows a run the GUI started, a past run opened from disk (all its events arrive
in the first polls, so plots are restored) and a run started elsewhere with the CLI (a synced or
shared folder). Reading is cheap (three ``stat`` calls per tick when nothing changed).

Everything is read defensively (the engine's ``sanitize_*`` helpers): a malformed metrics line or a
wrongly typed field is dropped on its own, a damaged state.json or preview is skipped, so nothing
read from a run folder can raise in the Qt event loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from qtpy.QtCore import QObject, QTimer, Signal

from l2s_gui import run_lock
from l2s_gui.runs import RunFolder, load_preview_arrays, sanitize_event_json, sanitize_state

MAX_BYTES_PER_TICK = 4 << 20
"""A long past run's metrics are read in chunks so one tick never stalls the event loop."""


def _stat_key(path: Path) -> Optional[tuple[int, int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class RunReader:
    """Qt-free incremental reader of one run folder (used by :class:`RunWatcher` and the tests)."""

    def __init__(self, path: str | Path):
        self.run = RunFolder(path)
        self.offset = 0
        self._pending = b""
        self._state_key: Optional[tuple[int, int, int]] = None
        self._preview_key: Optional[tuple[int, int, int]] = None
        self._metrics_inode: Optional[int] = None

    @property
    def path(self) -> Path:
        return self.run.path

    def state_if_changed(self) -> Optional[dict[str, Any]]:
        key = _stat_key(self.run.state_path)
        if key is None or key == self._state_key:
            return None
        try:
            state = json.loads(self.run.state_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None  # being replaced (next tick) or damaged
        self._state_key = key
        return sanitize_state(state) if isinstance(state, dict) else None

    def new_events(self) -> tuple[list[dict[str, Any]], bool]:
        """(events appended since the last call as JSON dicts, whether the file was restarted)."""
        path = self.run.metrics_path
        try:
            st = path.stat()
        except OSError:
            return [], False
        size = st.st_size
        restarted = False
        replaced = self._metrics_inode is not None and st.st_ino != self._metrics_inode
        if size < self.offset or (replaced and self.offset > 0):
            # the run was started anew (--overwrite) or resumed (history after its checkpoint cut)
            self.offset, self._pending, restarted = 0, b"", True
        self._metrics_inode = st.st_ino
        if size == self.offset:
            return [], restarted
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(MAX_BYTES_PER_TICK)
        except OSError:
            return [], restarted
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) < MAX_BYTES_PER_TICK:
            return [], restarted  # a line is being written
        if end == 0:  # one absurdly long line: skip it
            end = len(chunk)
        self.offset += end
        events = []
        for line in chunk[:end].splitlines():
            try:
                item = sanitize_event_json(json.loads(line))
            except (ValueError, RecursionError):
                continue
            if item is not None:
                events.append(item)
        return events, restarted

    def more_events_pending(self) -> bool:
        try:
            return self.run.metrics_path.stat().st_size > self.offset
        except OSError:
            return False

    def preview_if_changed(self) -> Optional[dict[str, Any]]:
        key = _stat_key(self.run.preview_path)
        if key is None or key == self._preview_key:
            return None
        arrays = load_preview_arrays(self.run.preview_path)
        if arrays is None:
            return None  # replaced under us (next tick) or damaged
        self._preview_key = key
        return arrays

    def send_control(self, command: str) -> None:
        self.run.send_control(command)


class RunWatcher(QObject):
    """Polls a run folder on the GUI thread and emits what changed."""

    state_changed = Signal(dict)
    events_arrived = Signal(list)
    preview_arrived = Signal(dict)
    restarted = Signal()

    def __init__(self, parent: Optional[QObject] = None, interval_ms: int = 250):
        super().__init__(parent)
        self.reader: Optional[RunReader] = None
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def path(self) -> Optional[Path]:
        return self.reader.path if self.reader is not None else None

    def watch(self, path: str | Path) -> None:
        self.reader = RunReader(path)
        self.restarted.emit()
        self.poll()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def is_watching(self) -> bool:
        return self._timer.isActive()

    def poll(self) -> None:
        reader = self.reader
        if reader is None:
            return
        events, restarted = reader.new_events()
        if restarted:
            self.restarted.emit()
        if events:
            self.events_arrived.emit(events)
        state = reader.state_if_changed()
        if state is not None:
            self.state_changed.emit(state)
        preview = reader.preview_if_changed()
        if preview is not None:
            self.preview_arrived.emit(preview)
        if reader.more_events_pending() and self._timer.isActive():
            QTimer.singleShot(0, self.poll)  # catch up on a long past run without blocking


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid runs on this machine (False for remote/unknown pids)."""
    return run_lock.pid_alive(pid)
