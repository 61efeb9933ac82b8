"""User-facing errors: one clear line naming the file or setting and what to do.

Everything the CLI or the GUI shows to a user derives from :class:`L2SError`; anything else is a bug.
"""

from __future__ import annotations


class L2SError(Exception):
    """Base class of errors whose message is shown to the user as is (one line, no traceback)."""


class InputError(L2SError):
    """A file or array given by the user cannot be used (unreadable, wrong shape, NaN, ...)."""


class ConfigError(L2SError):
    """A configuration value is invalid; the message names the key."""


class OutputExistsError(L2SError):
    """An output would overwrite an existing file and overwriting was not asked for."""


class DeviceMemoryError(L2SError):
    """The device ran out of memory; the message suggests a smaller patch or batch."""


def out_of_memory_message(what: str, device: str) -> str:
    return (f"out of memory on {device} while {what}: use a smaller patch_size or batch_size "
            f"(or a 2D model / the CPU)")


class OutputError(L2SError):
    """An output cannot be written (read-only place, disk full, permissions); the message names the path."""


class RunLockedError(L2SError):
    """Another live process writes this run folder; the message names its pid and host."""


def os_error_reason(exc: OSError) -> str:
    """A short reason for an OSError ('disk full (no space left on device)', 'permission denied', ...)."""
    import errno

    reasons = {errno.ENOSPC: "disk full (no space left on device)", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or folder",
               errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "is a folder",
               errno.ENAMETOOLONG: "file name too long", errno.EEXIST: "already exists"}
    if exc.errno in reasons:
        return reasons[exc.errno]
    text = exc.strerror or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def write_error(path, exc: OSError) -> OutputError:
    """The one-line error for failing to write ``path``."""
    return OutputError(f"{path}: cannot write ({os_error_reason(exc)})")
