"""User notifications of every widget (napari's toasts), and the one-line text of an exception.

Widgets call ``_notify.notify_error(...)`` through this module, so tests and scripts can collect
the messages by replacing these three functions in one place.
"""

from __future__ import annotations


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(str(message))


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(str(message))


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(str(message))


def error_text(exc: BaseException) -> str:
    """One line for the user: L2SError messages as they are, anything else with its type."""
    from l2s_gui.errors import L2SError

    if isinstance(exc, L2SError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        first = str(exc).splitlines()[0] if str(exc) else "MemoryError"
        return f"out of memory: {first} (try the CPU or a smaller input)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ValueError) and text:
        return text  # our own checks raise ValueError with a finished sentence
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
