"""Typed events yielded by the trainer; the CLI, the GUI, the run folder and the tests consume them.

Each event is a small dataclass with a ``kind`` tag and a JSON form (:meth:`to_json`); previews
carry numpy arrays and are stored in the run folder as ``.npz`` rather than in the metrics file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                continue
            out[f.name] = value
        return out


@dataclass
class StartEvent(Event):
    """Training starts (or resumes) at ``step`` of ``total_steps`` on ``device``."""

    kind: ClassVar[str] = "start"
    step: int
    total_steps: int
    device: str
    method: str
    n_classes: int
    label_values: list[int]
    resumed: bool = False


@dataclass
class StepEvent(Event):
    """One iteration done. ``loss_real`` is None on iterations without a hyper-step."""

    kind: ClassVar[str] = "step"
    step: int
    loss_synth: float | None
    loss_real: float | None
    theta: dict[str, Any]
    """Current augmentation parameters, e.g. {"sigma": 0.1, "c": [0.5, 0.5, 0.5]}."""
    it_per_s: float
    elapsed_s: float


@dataclass
class ValidationEvent(Event):
    """Hard Dice of the current network on the validation pairs, per original label value of the
    classes the validation labels hold (background excluded), and their mean."""

    kind: ClassVar[str] = "validation"
    step: int
    dice: dict[str, float]
    mean_dice: float


@dataclass
class PreviewEvent(Event):
    """2D previews (one slice for 3D runs): synthetic image, its learned augmentation, a real image,
    the current prediction and the real labels (original label values)."""

    kind: ClassVar[str] = "preview"
    step: int
    synthetic: np.ndarray = field(repr=False)
    augmented: np.ndarray = field(repr=False)
    real: np.ndarray = field(repr=False)
    prediction: np.ndarray = field(repr=False)
    real_labels: np.ndarray = field(repr=False)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ("synthetic", "augmented", "real", "prediction", "real_labels")}


@dataclass
class CheckpointEvent(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass
class LogEvent(Event):
    """A human-readable message (a warning, or what the trainer is doing)."""

    kind: ClassVar[str] = "log"
    step: int
    level: str
    message: str


@dataclass
class DoneEvent(Event):
    """Training ended: ``reason`` is 'finished', 'stopped' or 'error' (then ``message`` says why)."""

    kind: ClassVar[str] = "done"
    step: int
    reason: str
    model_path: str | None = None
    message: str = ""


@dataclass
class RoundEvent(Event):
    """A self-training round ended (:mod:`l2s_gui.self_training`): round 0 is the teacher trained as
    configured, rounds 1.. are students. ``mean_dice``/``dice``: validation Dice of the round's network
    (per original label value); ``change``: mean_dice minus the previous round's (None in round 0);
    ``kept_fraction``: share of the pseudo-labelled voxels at or above the confidence threshold (None
    in round 0); ``stop``: why self-training ends after this round ('' when it goes on)."""

    kind: ClassVar[str] = "round"
    step: int
    round: int
    mean_dice: float
    dice: dict[str, float] = field(default_factory=dict)
    change: float | None = None
    kept_fraction: float | None = None
    stop: str = ""


@dataclass
class InspectorEvent(Event):
    """The Inspector's evaluation (:mod:`l2s_gui.inspector_run`): balanced patch-wise accuracy on the
    validation images vs a fixed set of synthetic images (0.5 = indistinguishable) and its real and
    synthetic parts, the BCE ``loss`` on that set, ``updates`` done so far, and ``map``: P(real) of
    each of the grid x grid patches of the real preview image (near 1: synthetic images still differ
    from real ones there), whose grid is ``preview_shape``. The map is stored next to the previews,
    not in metrics.jsonl (events read from it have ``map`` None)."""

    kind: ClassVar[str] = "inspector"
    step: int
    accuracy: float
    accuracy_real: float
    accuracy_synthetic: float
    loss: float
    grid: int
    updates: int = 0
    map: np.ndarray | None = field(default=None, repr=False)
    preview_shape: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.pop("map", None)
        return out


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (StartEvent, StepEvent, ValidationEvent, PreviewEvent, CheckpointEvent, LogEvent, DoneEvent,
                RoundEvent, InspectorEvent)
}


def event_from_json(data: dict[str, Any]) -> Event:
    """Rebuild a (non-preview) event from its JSON form, e.g. a line of metrics.jsonl."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("kind")]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
