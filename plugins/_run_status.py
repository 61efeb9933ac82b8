"""The one run-status object the widgets of a viewer share (an evented dataclass, as in
careamics-napari): the training widget writes it from what its run-folder watcher and training
process report; the Segment widget (and anything else) subscribes to the fields it needs, e.g.
``status.events.model_version.connect(...)``, so no widget polls another.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from psygnal import evented

from l2s_gui.runs import ACTIVE, RunFolder


@evented
@dataclass
class RunStatus:
    """What is known about the run the training widget follows."""

    run_dir: Path | None = None
    status: str = ""
    """'' (no state yet), or state.json's status: running, paused, stopped, finished, error."""
    step: int = 0
    total_steps: int = 0
    it_per_s: float = 0.0
    device: str = ""
    message: str = ""
    process_running: bool = False
    """A training process started by this viewer's training widget runs."""
    trainer_attached: bool = False
    """A training widget works in this viewer (the Segment widget then offers its run first)."""
    model_version: int = 0
    """Bumped whenever the run's model file may have changed (a checkpoint, the run's end)."""

    @property
    def model_path(self) -> Path | None:
        """The run's model file, or None before its first checkpoint (or without a run)."""
        if self.run_dir is None:
            return None
        path = RunFolder(self.run_dir).model_path
        return path if path.is_file() else None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


_BY_VIEWER: weakref.WeakKeyDictionary[object, RunStatus] = weakref.WeakKeyDictionary()


def _unwrap(viewer):
    """napari hands each plugin widget its own proxy of the viewer: key on the real object."""
    return getattr(viewer, "__wrapped__", viewer)


def run_status_for(viewer) -> RunStatus:
    """The status shared by the widgets of ``viewer`` (created by whichever widget asks first)."""
    key = _unwrap(viewer)
    status = _BY_VIEWER.get(key)
    if status is None:
        status = _BY_VIEWER[key] = RunStatus()
    return status
