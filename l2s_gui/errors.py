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
