"""Follow a run folder on the GUI thread: a QTimer asks the engine's :class:`l2s_gui.runs.RunReader`
what changed (events incrementally, state, the latest preview) and emits it as Qt signals.

The same watcher follows a run the GUI started, a past run opened from disk (its history arrives in
the first polls, in chunks, so plots are restored without stalling the event loop) and a run
started elsewhere with the CLI (a synced or shared folder). A tick costs three ``stat`` calls when
nothing changed; nothing read can raise (the reader skips damaged lines and files).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QElapsedTimer, QObject, QTimer, Signal

from l2s_gui.runs import RunReader


class RunWatcher(QObject):
    """Polls a run folder and emits what changed."""

    state_changed = Signal(dict)
    events_arrived = Signal(list)
    preview_arrived = Signal(dict)
    inspector_arrived = Signal(dict)
    restarted = Signal()

    def __init__(self, parent: QObject | None = None, interval_ms: int = 1000, preview_interval_ms: int = 2000):
        """``preview_interval_ms``: the latest preview is read (and drawn) at most this often: decoding
        it and redrawing the canvas is most of what the GUI costs while a run trains."""
        super().__init__(parent)
        self.reader: RunReader | None = None
        self.preview_interval_ms = preview_interval_ms
        self._since_preview = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def path(self) -> Path | None:
        return self.reader.path if self.reader is not None else None

    def watch(self, path: str | Path) -> None:
        self.reader = RunReader(path)
        self._since_preview.invalidate()
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
        due = not self._since_preview.isValid() or self._since_preview.elapsed() >= self.preview_interval_ms
        preview = reader.preview_if_changed() if due or not self._timer.isActive() else None
        if preview is not None:
            self._since_preview.start()
            self.preview_arrived.emit(preview)
        if due or not self._timer.isActive():
            inspector_map = reader.inspector_map_if_changed()
            if inspector_map is not None:
                self.inspector_arrived.emit(inspector_map)
        if reader.more_events_pending() and self._timer.isActive():
            QTimer.singleShot(0, self.poll)  # catch up on a long past run without blocking
