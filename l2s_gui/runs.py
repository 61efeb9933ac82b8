"""The run folder: the one source of truth of a training run, written by the trainer (CLI) and
read by anyone watching it (the napari plugin, a synced folder from a GPU server).

Layout::

    config.yaml           validated config
    state.json            {"status", "step", "total_steps", "pid", "device", "message", "updated"}
    metrics.jsonl         one JSON event per line (start, step, validation, checkpoint, log, done)
    previews/latest.npz   arrays of the latest preview event (+ "step")
    checkpoints/step_NNNNNNN/{state.safetensors, state.json}   written atomically
    model.safetensors     exported model (weights + config + label table), updated at checkpoints
    control.json          {"command": "pause" | "resume" | "stop"}, written by a controller

Every file is replaced atomically (temporary file + ``os.replace``) except metrics.jsonl, which is
only appended to in whole lines, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .config import Config
from .errors import InputError, OutputExistsError
from .events import Event, PreviewEvent, event_from_json

CONTROL_COMMANDS = ("pause", "resume", "stop")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class RunFolder:
    """Read and write one run folder (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def preview_path(self) -> Path:
        return self.path / "previews" / "latest.npz"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def control_path(self) -> Path:
        return self.path / "control.json"

    # creation
    def exists(self) -> bool:
        return self.config_path.is_file()

    def check_can_create(self, overwrite: bool = False) -> None:
        """Raise OutputExistsError if :meth:`create` would refuse this folder."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputExistsError(f"{self.path}: exists and is not a folder; choose another run folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"{self.path}: run folder already exists and is not empty; use `l2s resume {self.path}` "
                    f"to continue it, another -o folder, or --overwrite to start it anew")

    def create(self, config: Config, overwrite: bool = False) -> None:
        """Start a new run folder; refuse a non-empty folder unless ``overwrite``."""
        self.check_can_create(overwrite)
        if self.path.is_dir() and any(self.path.iterdir()):
            for name in ("metrics.jsonl", "state.json", "control.json", "model.safetensors", "model.json", "config.yaml",
                         "error.log"):
                (self.path / name).unlink(missing_ok=True)
            for name in ("previews", "checkpoints"):
                shutil.rmtree(self.path / name, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, _yaml_dump(config.to_dict()))

    def load_config(self) -> Config:
        if not self.exists():
            raise InputError(f"{self.path}: not a run folder (no config.yaml)")
        return Config.load(self.config_path)

    # state
    def write_state(self, **state: Any) -> None:
        current = self.read_state()
        current.update(state)
        current["updated"] = time.time()
        atomic_write_text(self.state_path, json.dumps(current, indent=1))

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    # events
    def append_event(self, event: Event) -> None:
        if isinstance(event, PreviewEvent):
            self.write_preview(event)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(event.to_json(), default=_json_default) + "\n")

    def write_preview(self, event: PreviewEvent) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, step=np.int64(event.step), **event.arrays())
        atomic_write_bytes(self.preview_path, buffer.getvalue())

    def read_preview(self) -> Optional[PreviewEvent]:
        try:
            with np.load(self.preview_path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError):
            return None
        step = int(arrays.pop("step"))
        return PreviewEvent(step=step, **arrays)

    def read_events(self, offset: int = 0) -> tuple[list[Event], int]:
        """Events appended since byte ``offset`` and the new offset (only whole lines are read)."""
        try:
            with open(self.metrics_path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except OSError:
            return [], offset
        end = chunk.rfind(b"\n") + 1
        events = []
        for line in chunk[:end].splitlines():
            try:
                events.append(event_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return events, offset + end

    def iter_events(self) -> Iterator[Event]:
        yield from self.read_events(0)[0]

    # control
    def send_control(self, command: str) -> None:
        if command not in CONTROL_COMMANDS:
            raise ValueError(f"unknown control command {command!r}")
        atomic_write_text(self.control_path, json.dumps({"command": command, "time": time.time()}))

    def read_control(self) -> Optional[str]:
        try:
            return json.loads(self.control_path.read_text()).get("command")
        except (OSError, ValueError, AttributeError):
            return None

    def clear_control(self) -> None:
        self.control_path.unlink(missing_ok=True)

    # checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step_*") if (p / "state.json").is_file())

    def latest_checkpoint(self) -> Optional[Path]:
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None

    def new_checkpoint_dir(self, step: int) -> tuple[Path, Path]:
        """(temporary dir to fill, final dir); call :meth:`commit_checkpoint` once filled."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.checkpoints_dir, prefix=".tmp_step_"))
        return tmp, self.checkpoints_dir / f"step_{step:07d}"

    def commit_checkpoint(self, tmp: Path, final: Path, keep: int) -> None:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
