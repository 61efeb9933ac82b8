"""Atomic file writes: the one helper every writer of the engine and the plugin uses.

A file is written to a temporary file in the destination folder, flushed, given the mode the
user's umask asks for (``mkstemp`` creates 0600 files) and renamed over the destination, so a
reader (a watcher, another process, a synced folder) never sees a half-written file. Failures
raise :class:`~l2s_gui.errors.OutputError` naming the destination, and leave no temporary file.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a.txt", "hello")
>>> (folder / "a.txt").read_text()
'hello'
>>> with atomic_path(folder / "b.csv") as tmp:
...     _ = tmp.write_text("x,y")
>>> sorted(p.name for p in folder.iterdir())
['a.txt', 'b.csv']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import write_error

__all__ = ["current_umask", "file_mode", "dir_mode", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "is_temporary_name"]

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the user's umask (0644 with the usual 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder under the user's umask (0755 with the usual 022)."""
    return 0o777 & ~current_umask()


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary file this module creates (``.NAME.XXXX.tmp[.ext]``)."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or f"{TMP_SUFFIX}." in name)


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an exception, removed otherwise. ``keep_suffix`` ends the temporary name (libraries
    such as nibabel choose the format from it, e.g. ``".nii.gz"``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX + keep_suffix)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` (flushed to disk before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
