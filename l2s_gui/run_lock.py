"""One writer per run folder: ``run.lock`` held with ``flock`` by the writing process.

``l2s train``, ``l2s resume`` and ``l2s demo`` take the lock before writing anything into a run folder
and hold it until they exit; the kernel releases it when the process dies (even on kill -9), so a
crashed run never leaves a stale lock. The lock file records the holder (pid, host, command, start
time) for the message shown to a second writer, which is refused in one line naming that pid.

Readers (``l2s watch``, the napari plugin) ask :func:`writer_alive` whether a run marked
running/paused in state.json still has a live writer: the lock is held (this host, or a shared file
system with working locks); or, for a run on another host (a synced folder), its heartbeat is recent.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import RunLockedError, write_error
from .runs import LOCK_NAME, RunFolder, hostname

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, liveness from pid/heartbeat only
    fcntl = None  # type: ignore[assignment]

ACQUIRE_RETRY_S = 1.0
"""A reader probing the lock holds it for microseconds: retry that long before refusing."""
REMOTE_STALE_S = 900.0
"""A run on another host whose heartbeat (state.json, refreshed at least every 30 s while it writes
events) is older than this counts as dead."""
LEGACY_STALE_S = 180.0
"""A run folder without host or lock information (written by an older version): no file changed
for this long and no live pid here -> dead."""


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid runs on this machine."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: dict[str, Any]) -> str:
    pid, host, command = info.get("pid"), info.get("host"), info.get("command")
    text = f"process {pid}" if pid is not None else "another process"
    if host and host != hostname():
        text += f" on {host}"
    if command:
        text += f" (l2s {command}"
        started = info.get("started")
        if isinstance(started, (int, float)):
            text += f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
        text += ")"
    return text


class RunLock:
    """``with RunLock(run_dir, "train") as lock:`` holds the run folder for this process.

    Entering raises :class:`~l2s_gui.errors.RunLockedError` when a live process holds it;
    ``lock.took_over`` is a message when the previous holder died without finishing."""

    def __init__(self, run_dir: str | Path, command: str):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self.took_over: str | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        if fcntl is not None:
            deadline = time.monotonic() + ACQUIRE_RETRY_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        break  # no locking on this file system (ENOLCK, ...): carry on without
                    if time.monotonic() >= deadline:
                        info = _read_info(self.path)
                        os.close(fd)
                        raise RunLockedError(
                            f"{self.run_dir}: in use by {describe_holder(info)}; stop it first "
                            f"(or wait for it to end), or choose another run folder") from None
                    time.sleep(0.05)
        previous = _read_info(self.path)
        state = RunFolder(self.run_dir).read_state()
        if state.get("status") in ("running", "paused") and state.get("host") in (None, hostname()):
            pid = state.get("pid", previous.get("pid"))
            if pid != os.getpid():
                self.took_over = (f"the previous {describe_holder(previous or {'pid': pid})} "
                                  f"is no longer running; taking over its run folder")
        info = {"pid": os.getpid(), "host": hostname(), "command": self.command, "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # the lock itself is what counts
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder's info ({} when unknown) while a live process holds the run's lock, else None
    (also when there is no lock file or locks are not supported)."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return _read_info(path)
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_not_locked(run_dir: str | Path, what: str) -> None:
    """Raise RunLockedError naming the holder when a live process writes ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    info = lock_holder(run_dir)
    if info is not None:
        raise RunLockedError(f"{run_dir}: in use by {describe_holder(info)}; cannot {what} while it runs "
                             f"(stop it first, or choose another run folder)")


def writer_alive(run_dir: str | Path, state: dict[str, Any] | None = None,
                 now: float | None = None) -> tuple[bool, str]:
    """(whether a process still writes this run, who or why not). Meant for runs whose state.json
    says running or paused."""
    run_dir = Path(run_dir)
    holder = lock_holder(run_dir)
    if holder is not None:
        return True, describe_holder(holder)
    if state is None:
        state = RunFolder(run_dir).read_state()
    now = time.time() if now is None else now
    host, pid = state.get("host"), state.get("pid")
    who = describe_holder({"pid": pid, "host": host})
    if host and host != hostname():
        beat = max(float(state.get("heartbeat") or 0.0), float(state.get("updated") or 0.0),
                   _mtime(run_dir / "metrics.jsonl"))
        if now - beat < REMOTE_STALE_S:
            return True, who
        return False, f"{who} has not written for {int(now - beat)} s"
    if (run_dir / LOCK_NAME).exists() or host == hostname():
        return False, f"{who} is no longer running"
    # an older run folder without lock or host: a live pid here, or files changed recently
    if pid_alive(pid):
        return True, who
    newest = max(_mtime(run_dir / name) for name in ("metrics.jsonl", "state.json", "control.json"))
    if now - newest < LEGACY_STALE_S:
        return True, who
    return False, f"{who} is no longer running"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
