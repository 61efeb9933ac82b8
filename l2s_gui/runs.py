"""The run folder: the one source of truth of a training run, written by the trainer (CLI) and
read by anyone watching it (the napari plugin, a synced folder from a GPU server).

Layout::

    config.yaml           validated config
    state.json            {"status", "step", "total_steps", "pid", "device", "message", "updated"}
    metrics.jsonl         one JSON event per line (start, step, validation, checkpoint, log, done)
    previews/latest.npz   arrays of the latest preview event (+ "step")
    previews/inspector.npz  the latest Inspector map (+ "step", "preview_shape"); its scalars are in metrics
    checkpoints/step_NNNNNNN/{state.safetensors, state.json}   written atomically
    model.safetensors     exported model (weights + config + label table), updated at checkpoints
    control.json          {"command": "pause" | "resume" | "stop"}, written by a controller

Every file is replaced atomically (temporary file + ``os.replace``) except metrics.jsonl, which is
only appended to in whole lines, so a reader never sees a half-written file. Files and folders follow
the user's umask (0644 / 0755 by default), so colleagues can read a model or watch a run. Failing
writes (read-only place, disk full, permissions) raise :class:`~l2s_gui.errors.OutputError` naming
the path. The writing process holds ``run.lock`` (:mod:`l2s_gui.run_lock`); state.json records its
pid, host and a heartbeat.

Everything read back is read defensively (:func:`sanitize_event_json`, :func:`sanitize_state`,
:func:`sanitize_preview`, :func:`check_checkpoint`): a damaged file is skipped, never trusted.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text, dir_mode, file_mode, is_temporary_name
from .config import Config
from .errors import InputError, OutputError, OutputExistsError, write_error
from .events import EVENT_TYPES, Event, InspectorEvent, PreviewEvent, StepEvent

CONTROL_COMMANDS = ("pause", "resume", "stop")
ACTIVE = ("running", "paused")
"""Statuses of a run whose process should be alive (check with :meth:`RunFolder.writer_alive`)."""
ENDED = ("stopped", "finished", "error")
LOCK_NAME = "run.lock"
CONFIG_NAME, STATE_NAME, METRICS_NAME, CONTROL_NAME = "config.yaml", "state.json", "metrics.jsonl", "control.json"
MODEL_NAME, MODEL_JSON_NAME, ERROR_LOG_NAME = "model.safetensors", "model.json", "error.log"
PREVIEWS_DIR, PREVIEW_NAME, CHECKPOINTS_DIR = "previews", "latest.npz", "checkpoints"
INSPECTOR_NAME = "inspector.npz"
"""The latest Inspector map, in ``previews/`` (:class:`~l2s_gui.events.InspectorEvent`)."""
INPUTS_DIR = "inputs"
"""Where a controller (the GUI) writes the inputs of a run it starts (layers as NIfTI, the config)
before the trainer creates the run folder around them."""
RUN_FILES = (CONFIG_NAME, STATE_NAME, METRICS_NAME, CONTROL_NAME, MODEL_NAME, MODEL_JSON_NAME, ERROR_LOG_NAME,
             LOCK_NAME)
RUN_DIRS = (PREVIEWS_DIR, CHECKPOINTS_DIR)
HEARTBEAT_EVERY_S = 30.0
"""state.json's heartbeat is refreshed at least this often while events are written."""
_STEP_DIR = re.compile(r"^step_(\d+)$")

def hostname() -> str:
    return socket.gethostname()


class RunFolder:
    """Read and write one run folder (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def state_path(self) -> Path:
        return self.path / STATE_NAME

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def preview_path(self) -> Path:
        return self.path / PREVIEWS_DIR / PREVIEW_NAME

    @property
    def inspector_path(self) -> Path:
        return self.path / PREVIEWS_DIR / INSPECTOR_NAME

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_NAME

    @property
    def control_path(self) -> Path:
        return self.path / CONTROL_NAME

    @property
    def inputs_dir(self) -> Path:
        return self.path / INPUTS_DIR

    # creation
    def exists(self) -> bool:
        return self.config_path.is_file()

    def looks_like_run(self) -> bool:
        """A run folder (its config or its state is there), possibly still starting or damaged."""
        return self.config_path.is_file() or self.state_path.is_file()

    def has_checkpoint(self) -> bool:
        """Any committed checkpoint folder (intact or not: see :meth:`latest_checkpoint`)."""
        return bool(self.checkpoint_dirs())

    def prepare_inputs(self) -> Path:
        """Make an empty ``inputs/`` folder for a run a controller is about to start here.

        The emptiness rule: the run folder must not exist, be empty, or hold only an ``inputs/``
        folder (an earlier start of ours that failed before the run began: it is removed). Anything
        else is refused with an OutputExistsError (the GUI's Start never reuses a folder)."""
        names = self._entries()
        if names == [INPUTS_DIR]:
            try:
                shutil.rmtree(self.inputs_dir)
            except OSError as exc:
                raise write_error(self.inputs_dir, exc) from None
        elif self.path.exists() and (not self.path.is_dir() or names):
            raise OutputExistsError(f"{self.path}: run folder exists and is not empty; choose a new folder "
                                    f"(or open it to resume it)")
        try:
            self.inputs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.inputs_dir, exc) from None
        return self.inputs_dir

    def writer_alive(self, state: Optional[dict[str, Any]] = None) -> tuple[bool, str]:
        """(whether a process still writes this run, who or why not): its lock held here, or for a
        run on another host a recent heartbeat in state.json (:func:`l2s_gui.run_lock.writer_alive`)."""
        from .run_lock import writer_alive

        return writer_alive(self.path, state)

    def lock_holder(self) -> Optional[dict[str, Any]]:
        """Who holds the run's lock (a live writer), or None."""
        from .run_lock import lock_holder

        return lock_holder(self.path) if self.path.is_dir() else None

    def _entries(self) -> list[str]:
        try:
            return [p.name for p in self.path.iterdir()]
        except OSError:
            return []

    def restartable(self) -> bool:
        """A run that ended before its first checkpoint (no checkpoint, no model, only run files):
        ``l2s train -o`` may start it again without --overwrite (nothing of value is replaced)."""
        names = [n for n in self._entries() if not n.startswith(".")]
        if "state.json" not in names or self.read_state().get("status") not in ("running", "paused", "error"):
            return False  # not a run of ours that started and then died or failed
        if not set(names) <= set(RUN_FILES) | set(RUN_DIRS) or "model.safetensors" in names:
            return False
        if self.checkpoints_dir.is_dir() and any(_STEP_DIR.match(p.name) for p in self.checkpoints_dir.iterdir()):
            return False
        return True

    def check_can_create(self, overwrite: bool = False, check_lock: bool = True) -> None:
        """Raise OutputExistsError if :meth:`create` would refuse this folder (and RunLockedError
        when a live process writes it)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputExistsError(f"{self.path}: exists and is not a folder; choose another run folder")
        if check_lock:
            from .run_lock import check_not_locked

            check_not_locked(self.path, "start a new run in it")
        names = [n for n in self._entries() if n != LOCK_NAME]
        if names and not overwrite and not self.restartable():
            raise OutputExistsError(
                f"{self.path}: run folder already exists and is not empty; use `l2s resume {self.path}` "
                f"to continue it, another -o folder, or --overwrite to start it anew")

    def create(self, config: Config, overwrite: bool = False) -> None:
        """Start a new run folder; refuse a non-empty folder unless ``overwrite`` (or
        :meth:`restartable`). Call it while holding the run's lock."""
        self.check_can_create(overwrite, check_lock=False)
        try:
            if self.path.is_dir():
                for name in RUN_FILES:
                    if name != LOCK_NAME:
                        (self.path / name).unlink(missing_ok=True)
                for name in RUN_DIRS:
                    if (self.path / name).exists():
                        shutil.rmtree(self.path / name)
                self.clean_leftovers()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        atomic_write_text(self.config_path, _yaml_dump(config.to_dict()))

    def save_config(self, config: Config) -> None:
        atomic_write_text(self.config_path, _yaml_dump(config.to_dict()))

    def clean_leftovers(self) -> list[Path]:
        """Remove what a crash leaves behind: unfinished checkpoints (``checkpoints/.tmp_step_*``) and
        temporary files of atomic writes (``.NAME.*.tmp``). Call it while holding the run's lock."""
        removed = []
        for folder in (self.path, self.path / "previews", self.checkpoints_dir):
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for p in entries:
                if p.name.startswith(".tmp_step_") or is_temporary_name(p.name):
                    try:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                        removed.append(p)
                    except OSError:
                        pass
        return removed

    def load_config(self) -> Config:
        if not self.exists():
            raise InputError(f"{self.path}: not a run folder (no config.yaml)")
        return Config.load(self.config_path)

    # state
    def write_state(self, **state: Any) -> None:
        """Update state.json; it also records the writer's host and a heartbeat (``updated``)."""
        current = self.read_state()
        current.update(state)
        current["host"] = hostname()
        current["updated"] = current["heartbeat"] = time.time()
        text = json.dumps(current, indent=1)
        try:
            atomic_write_text(self.state_path, text)
        except OutputError:
            if not self._write_in_place(self.state_path, text.encode()):
                raise
        self._last_heartbeat = time.monotonic()

    @staticmethod
    def _write_in_place(path: Path, data: bytes) -> bool:
        """Last resort on a full disk (no room for a temporary file): rewrite a small existing file in
        place, reusing its space. Readers skip a state.json caught half-written."""
        try:
            with open(path, "r+b") as fh:
                fh.truncate(0)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        except OSError:
            return False

    def read_state(self) -> dict[str, Any]:
        """state.json with only well-typed known keys ({} when missing or damaged)."""
        try:
            return sanitize_state(json.loads(self.state_path.read_text()))
        except (OSError, ValueError, RecursionError):
            return {}

    def _heartbeat(self) -> None:
        """Refresh state.json's heartbeat (only from the writer, at most every HEARTBEAT_EVERY_S;
        best effort: a failing heartbeat never stops a run)."""
        last = getattr(self, "_last_heartbeat", None)
        if last is not None and time.monotonic() - last >= HEARTBEAT_EVERY_S:
            try:
                self.write_state()
            except Exception:  # noqa: BLE001
                self._last_heartbeat = time.monotonic()

    # events
    def append_event(self, event: Event) -> None:
        if isinstance(event, PreviewEvent):
            self.write_preview(event)
            return
        if isinstance(event, InspectorEvent) and event.map is not None:
            self.write_inspector_map(event)
        line = json.dumps(event.to_json(), default=_json_default) + "\n"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as fh:
                fh.write(line)
        except OSError as exc:
            raise write_error(self.metrics_path, exc) from None
        self._heartbeat()

    def write_preview(self, event: PreviewEvent) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, step=np.int64(event.step), **event.arrays())
        atomic_write_bytes(self.preview_path, buffer.getvalue())

    def read_preview(self) -> Optional[PreviewEvent]:
        arrays = load_preview_arrays(self.preview_path)
        if arrays is None or "step" not in arrays or not all(k in arrays for k in PREVIEW_KEYS):
            return None
        step = arrays.pop("step")
        return PreviewEvent(step=step, **{k: arrays[k] for k in PREVIEW_KEYS})

    def write_inspector_map(self, event: InspectorEvent) -> None:
        """previews/inspector.npz: the event's map, step and preview grid (replaced atomically)."""
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, step=np.int64(event.step), map=np.asarray(event.map, np.float32),
                            preview_shape=np.asarray(event.preview_shape, np.int64))
        atomic_write_bytes(self.inspector_path, buffer.getvalue())

    def read_inspector_map(self) -> Optional[dict[str, Any]]:
        """The latest Inspector map (:func:`load_inspector_arrays`), or None."""
        return load_inspector_arrays(self.inspector_path)

    def read_events(self, offset: int = 0) -> tuple[list[Event], int]:
        """Events appended since byte ``offset`` and the new offset (only whole lines are read)."""
        try:
            with open(self.metrics_path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except OSError:
            return [], offset
        end = chunk.rfind(b"\n") + 1
        events = parse_event_lines(chunk[:end])
        return events, offset + end

    def iter_events(self) -> Iterator[Event]:
        yield from self.read_events(0)[0]

    # control
    def send_control(self, command: str) -> None:
        if command not in CONTROL_COMMANDS:
            raise ValueError(f"unknown control command {command!r}")
        atomic_write_text(self.control_path, json.dumps({"command": command, "time": time.time()}))

    def read_control(self) -> Optional[str]:
        """The pending command (polled by the trainer every step and while paused, which also keeps
        the heartbeat fresh during a long pause)."""
        self._heartbeat()
        try:
            command = json.loads(self.control_path.read_text()).get("command")
        except (OSError, ValueError, AttributeError, RecursionError):
            return None
        return command if command in CONTROL_COMMANDS else None

    def clear_control(self) -> None:
        try:
            self.control_path.unlink(missing_ok=True)
        except OSError as exc:
            raise write_error(self.control_path, exc) from None

    def write_error_log(self, text: str) -> None:
        """Best effort (the run is failing already; a full disk must not hide the first error)."""
        try:
            atomic_write_text(self.path / "error.log", text)
        except Exception:  # noqa: BLE001
            pass

    # checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        """Committed checkpoint folders (``step_NNNNNNN``), oldest first, intact or not."""
        try:
            entries = list(self.checkpoints_dir.iterdir())
        except OSError:
            return []
        found = [(int(m.group(1)), p) for p in entries if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def resume_checkpoint(self) -> tuple[Optional[Path], list[tuple[Path, str]]]:
        """(the newest intact checkpoint or None, [(newer damaged checkpoint, why)])."""
        damaged = []
        for folder in reversed(self.checkpoint_dirs()):
            problem = check_checkpoint(folder)
            if problem is None:
                return folder, damaged
            damaged.append((folder, problem))
        return None, damaged

    @staticmethod
    def checkpoint_step(folder: Path) -> int:
        return int(_STEP_DIR.match(folder.name).group(1))

    def latest_checkpoint(self) -> Optional[Path]:
        """The newest intact checkpoint (damaged newer ones are skipped: see :meth:`resume_checkpoint`)."""
        return self.resume_checkpoint()[0]

    def prepare_resume(self, step: int) -> None:
        """Before continuing from the checkpoint at ``step`` (holding the run's lock): drop newer
        (damaged or lost) checkpoints, keep only the history up to ``step`` in metrics.jsonl (plots
        stay monotone, a half-written last line goes), clean crash leftovers and bring model.json in
        line with model.safetensors."""
        self.clean_leftovers()
        try:
            for folder in self.checkpoint_dirs():
                if int(_STEP_DIR.match(folder.name).group(1)) > step:
                    shutil.rmtree(folder)
        except OSError as exc:
            raise write_error(self.checkpoints_dir, exc) from None
        self.truncate_metrics(step)
        self.sync_model_json()

    def truncate_metrics(self, step: int) -> int:
        """Keep the events of metrics.jsonl up to ``step`` (whole, valid lines); return how many went."""
        try:
            raw = self.metrics_path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise InputError(f"{self.metrics_path}: cannot read ({exc.strerror})") from None
        kept, dropped = [], 0
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                ok = isinstance(item, dict) and _as_int(item.get("step")) is not None and item["step"] <= step
            except (ValueError, RecursionError):
                ok = False
            if ok:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            atomic_write_bytes(self.metrics_path, b"".join(k + b"\n" for k in kept))
        return dropped

    def sync_model_json(self) -> None:
        """model.json is written after model.safetensors: after a crash between the two it lags by one
        export; rewrite it from the model's own metadata."""
        if not self.model_path.is_file():
            return
        try:
            from safetensors import safe_open

            with safe_open(str(self.model_path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["l2s"])
        except Exception:  # noqa: BLE001 - a damaged model is reported by whoever loads it
            return
        text = json.dumps(meta, indent=1)
        json_path = self.model_path.with_suffix(".json")
        try:
            current = json_path.read_text()
        except OSError:
            current = None
        if current != text:
            atomic_write_text(json_path, text)

    def new_checkpoint_dir(self, step: int) -> tuple[Path, Path]:
        """(temporary dir to fill, final dir); call :meth:`commit_checkpoint` once filled."""
        try:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.checkpoints_dir, prefix=".tmp_step_"))
            os.chmod(tmp, dir_mode())  # mkdtemp creates 0700 folders
        except OSError as exc:
            raise write_error(self.checkpoints_dir, exc) from None
        return tmp, self.checkpoints_dir / f"step_{step:07d}"

    @staticmethod
    def save_tensors(tensors: dict, path: Path) -> None:
        """``safetensors.torch.save_file`` whose I/O failures (disk full, ...) become OutputError
        naming the path (safetensors reports them as its own exception type)."""
        from safetensors.torch import save_file

        try:
            save_file(tensors, str(path))
        except OSError as exc:
            raise write_error(path, exc) from None
        except Exception as exc:  # noqa: BLE001 - SafetensorError: "I/O error: ... (os error 28)"
            match = re.search(r"os error (\d+)", str(exc))
            if match is None:
                raise
            code = int(match.group(1))
            raise write_error(path, OSError(code, os.strerror(code), str(path))) from None

    def commit_checkpoint(self, tmp: Path, final: Path, keep: int) -> None:
        try:
            for item in tmp.iterdir():  # safetensors writes 0600 files
                if item.is_file():
                    os.chmod(item, file_mode())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(final, exc) from None
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reading defensively
class RunReader:
    """Incremental, defensive reader of one run folder for watchers (the GUI, ``l2s watch``).

    Each call reads only what changed since the previous one: :meth:`new_events` the whole lines
    appended to metrics.jsonl (typed events; a line being written waits for the next call; a file
    that shrank or was replaced -- a run started anew or resumed -- reads from the start and says
    so), :meth:`state_if_changed` state.json and :meth:`preview_if_changed` the latest preview, each
    only when its file changed (one ``stat`` per call otherwise). Nothing read can raise: damaged
    lines, fields or files are skipped (the ``sanitize_*`` helpers)."""

    MAX_BYTES_PER_READ = 4 << 20
    """A long past run's metrics arrive in chunks, so one call never stalls an event loop."""

    def __init__(self, path: str | Path):
        self.run = RunFolder(path)
        self.offset = 0
        self._state_key: Optional[tuple[int, int, int]] = None
        self._preview_key: Optional[tuple[int, int, int]] = None
        self._inspector_key: Optional[tuple[int, int, int]] = None
        self._metrics_inode: Optional[int] = None

    @property
    def path(self) -> Path:
        return self.run.path

    def new_events(self) -> tuple[list[Event], bool]:
        """(events appended since the last call, whether the file was restarted)."""
        path = self.run.metrics_path
        try:
            st = path.stat()
        except OSError:
            return [], False
        restarted = False
        replaced = self._metrics_inode is not None and st.st_ino != self._metrics_inode
        if st.st_size < self.offset or (replaced and self.offset > 0):
            self.offset, restarted = 0, True
        self._metrics_inode = st.st_ino
        if st.st_size == self.offset:
            return [], restarted
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(self.MAX_BYTES_PER_READ)
        except OSError:
            return [], restarted
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) < self.MAX_BYTES_PER_READ:
            return [], restarted  # a line is being written
        if end == 0:  # one absurdly long line: skip it
            end = len(chunk)
        self.offset += end
        return parse_event_lines(chunk[:end]), restarted

    def more_events_pending(self) -> bool:
        try:
            return self.run.metrics_path.stat().st_size > self.offset
        except OSError:
            return False

    def state_if_changed(self) -> Optional[dict[str, Any]]:
        """The sanitised state.json when it changed since the last call, else None (also while it
        is being replaced or when it is damaged)."""
        key = _stat_key(self.run.state_path)
        if key is None or key == self._state_key:
            return None
        try:
            state = json.loads(self.run.state_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None
        self._state_key = key
        return sanitize_state(state) if isinstance(state, dict) else None

    def preview_if_changed(self) -> Optional[dict[str, Any]]:
        """The latest preview's arrays (:func:`load_preview_arrays`) when the file changed, else None."""
        key = _stat_key(self.run.preview_path)
        if key is None or key == self._preview_key:
            return None
        arrays = load_preview_arrays(self.run.preview_path)
        if arrays is None:
            return None  # replaced under us (next call) or damaged
        self._preview_key = key
        return arrays

    def inspector_map_if_changed(self) -> Optional[dict[str, Any]]:
        """The latest Inspector map (:func:`load_inspector_arrays`) when its file changed, else None."""
        key = _stat_key(self.run.inspector_path)
        if key is None or key == self._inspector_key:
            return None
        arrays = load_inspector_arrays(self.run.inspector_path)
        if arrays is not None:
            self._inspector_key = key
        return arrays

    def send_control(self, command: str) -> None:
        self.run.send_control(command)


def _stat_key(path: Path) -> Optional[tuple[int, int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def parse_event_lines(data: bytes) -> list[Event]:
    """Typed events from whole metrics.jsonl lines; unusable lines are skipped, missing fields of a
    usable one take neutral values (:func:`lenient_event`)."""
    events = []
    for line in data.splitlines():
        try:
            item = sanitize_event_json(json.loads(line))
        except (ValueError, RecursionError):
            continue
        if item is not None:
            events.append(lenient_event(item))
    return events


def _neutral(annotation: Any) -> Any:
    text = str(annotation)
    if "Optional" in text or "None" in text:
        return None
    for name, value in (("dict", {}), ("list", []), ("float", float("nan")), ("int", 0), ("bool", False),
                        ("str", "")):
        if text.startswith(name):
            return value() if callable(value) else value
    return None


def lenient_event(item: dict[str, Any]) -> Event:
    """The typed event of a sanitised metrics line (:func:`sanitize_event_json`), fields it lacks
    (a damaged or older line) set to neutral values: None, NaN, 0, "" or empty."""
    import dataclasses

    cls = EVENT_TYPES[item["kind"]]
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in item:
            kwargs[f.name] = item[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = _neutral(f.type)
    if cls is StepEvent and kwargs.get("it_per_s") != kwargs.get("it_per_s"):
        kwargs["it_per_s"] = 0.0
    return cls(**kwargs)


PREVIEW_KEYS = ("synthetic", "augmented", "real", "prediction", "real_labels")
MAX_PREVIEW_VOXELS = 64 << 20
CHECKPOINT_META = {"step": int, "inner_t": int, "label_table": dict}


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _as_float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_checkpoint(folder: Path) -> Optional[str]:
    """None when ``folder`` is a complete checkpoint, else why not (missing, truncated or empty
    state.safetensors; missing or malformed state.json)."""
    try:
        meta = json.loads((folder / "state.json").read_text())
    except FileNotFoundError:
        return "state.json is missing"
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"state.json is unreadable ({type(exc).__name__})"
    if not isinstance(meta, dict):
        return "state.json is not a JSON object"
    for key, kind in CHECKPOINT_META.items():
        value = meta.get(key)
        if (_as_int(value) is None) if kind is int else not isinstance(value, kind):
            return f"state.json has no valid {key!r}"
    match = _STEP_DIR.match(folder.name)
    if match and _as_int(meta["step"]) != int(match.group(1)):
        return f"state.json says step {meta['step']}"
    if meta.get("outer_param_groups") is not None and not isinstance(meta["outer_param_groups"], list):
        return "state.json has no valid 'outer_param_groups'"
    if _as_float(meta.get("elapsed_s", 0.0)) is None:
        return "state.json has no valid 'elapsed_s'"
    path = folder / "state.safetensors"
    if not path.is_file():
        return "state.safetensors is missing"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
    except Exception:  # noqa: BLE001 - safetensors raises several types for a damaged file
        return "state.safetensors is damaged (empty, truncated or not a safetensors file)"
    if not {"rng.data", "rng.device"} <= keys or not any(k.startswith("net.") for k in keys):
        return "state.safetensors lacks tensors"
    return None


def sanitize_state(state: Any) -> dict[str, Any]:
    """Only the well-typed known keys of a state.json mapping (a damaged one gives {})."""
    if not isinstance(state, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("status", "device", "message", "host"):
        if isinstance(state.get(key), str):
            out[key] = state[key]
    for key in ("step", "total_steps", "pid"):
        value = _as_int(state.get(key))
        if value is not None and value >= 0:
            out[key] = value
    for key in ("updated", "heartbeat"):
        value = _as_float(state.get(key))
        if value is not None and math.isfinite(value):
            out[key] = value
    for key, value in state.items():  # anything else a newer writer adds, if plainly typed
        if key not in out and key not in ("status", "device", "message", "host", "step", "total_steps", "pid",
                                          "updated", "heartbeat") and isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out


_EVENT_NUMBERS = {"step": ("loss_synth", "loss_real", "it_per_s", "elapsed_s"), "validation": ("mean_dice",),
                  "round": ("mean_dice", "change", "kept_fraction"),
                  "inspector": ("accuracy", "accuracy_real", "accuracy_synthetic", "loss")}
_EVENT_INTS = {"start": ("total_steps", "n_classes"), "round": ("round",), "inspector": ("grid", "updates")}
_EVENT_STRINGS = {"start": ("device", "method"), "log": ("level", "message"), "done": ("reason", "message"),
                  "checkpoint": ("path",), "round": ("stop",)}


def sanitize_event_json(item: Any) -> Optional[dict[str, Any]]:
    """A metrics.jsonl event with wrongly typed fields removed, or None when it is unusable (not a
    mapping, unknown kind, no valid step). Well-formed events come back unchanged."""
    if not isinstance(item, dict):
        return None
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in EVENT_TYPES or kind == "preview":
        return None
    step = _as_int(item.get("step"))
    if step is None or step < 0:
        return None
    out = dict(item)
    out["step"] = step
    for key in _EVENT_NUMBERS.get(kind, ()):
        if key in out and out[key] is not None and _as_float(out[key]) is None:
            del out[key]
    for key in _EVENT_INTS.get(kind, ()):
        if key in out and _as_int(out[key]) is None:
            del out[key]
    for key in _EVENT_STRINGS.get(kind, ()):
        if key in out and not isinstance(out[key], str):
            del out[key]
    if kind == "done" and "model_path" in out and not (out["model_path"] is None or isinstance(out["model_path"], str)):
        del out["model_path"]
    if kind == "inspector":
        out.pop("map", None)  # arrays live in previews/inspector.npz
        if "preview_shape" in out and not _int_list(out["preview_shape"]):
            del out["preview_shape"]
    if kind == "start" and "label_values" in out:
        values = out["label_values"]
        if not isinstance(values, list) or any(_as_int(v) is None for v in values):
            del out["label_values"]
    if kind == "step" and "theta" in out:
        theta = out["theta"]
        if not isinstance(theta, dict):
            out["theta"] = {}
        elif not all(_theta_value_ok(v) for v in theta.values()):
            out["theta"] = {str(k): v for k, v in theta.items() if _theta_value_ok(v)}
    if kind in ("validation", "round") and "dice" in out:
        dice = out["dice"]
        if not isinstance(dice, dict):
            out["dice"] = {}
        elif not all(_as_float(v) is not None for v in dice.values()):
            out["dice"] = {str(k): v for k, v in dice.items() if _as_float(v) is not None}
    return out


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_as_int(v) is not None and v > 0 for v in value)


def _theta_value_ok(value: Any) -> bool:
    if isinstance(value, list):
        return all(_as_float(v) is not None for v in value)
    return _as_float(value) is not None


def sanitize_preview(arrays: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Preview arrays fit to show (numeric, 2D or 3D, not huge, ``step`` an int), or None."""
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        a = np.asarray(value)
        if key == "step":
            if a.ndim != 0 or not np.issubdtype(a.dtype, np.integer):
                return None
            out["step"] = int(a)
            continue
        if a.dtype.kind not in "biuf" or a.ndim not in (2, 3) or a.size == 0 or a.size > MAX_PREVIEW_VOXELS:
            return None
        out[key] = a
    if not any(k in out for k in PREVIEW_KEYS):
        return None
    return out


def load_preview_arrays(path: Path) -> Optional[dict[str, Any]]:
    """The arrays of a previews/latest.npz (see :func:`sanitize_preview`), or None when it is
    missing, being replaced or damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                return None
            arrays = {k: np.array(data[k]) for k in data.files}
    except Exception:  # noqa: BLE001 - zip/zlib/npy raise many types for a damaged file
        return None
    return sanitize_preview(arrays)


def load_inspector_arrays(path: Path) -> Optional[dict[str, Any]]:
    """{"step": int, "map": 2D float array in [0, 1], "preview_shape": [h, w] or []} of a
    previews/inspector.npz, or None when it is missing, being replaced or damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            step, patch_map = np.array(data["step"]), np.array(data["map"])
            shape = np.array(data["preview_shape"]) if "preview_shape" in data.files else np.zeros(0, np.int64)
    except Exception:  # noqa: BLE001 - zip/zlib/npy raise many types for a damaged file
        return None
    if step.ndim != 0 or not np.issubdtype(step.dtype, np.integer) or int(step) < 0:
        return None
    if (patch_map.dtype.kind != "f" or patch_map.ndim != 2 or patch_map.size == 0
            or patch_map.size > MAX_PREVIEW_VOXELS or not np.all(np.isfinite(patch_map))):
        return None
    if shape.ndim != 1 or shape.dtype.kind not in "iu" or shape.size not in (0, 2) or np.any(shape <= 0):
        shape = np.zeros(0, np.int64)
    return {"step": int(step), "map": np.clip(patch_map, 0.0, 1.0).astype(np.float32),
            "preview_shape": [int(v) for v in shape]}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
