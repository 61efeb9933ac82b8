"""Qt building blocks of the widgets: spin boxes, combos, tab pages, button rows, file rows, button
gating with a tooltip saying why, the device choice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


def default_run_root() -> Path:
    """Where new runs go, and where the file dialogs for runs and models start."""
    return Path.home() / "l2s_runs"


def spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def combo(items: list[str], current: str | None = None) -> QComboBox:
    c = QComboBox()
    c.addItems(items)
    if current is not None:
        c.setCurrentText(current)
    return c


def tab_page() -> tuple[QWidget, QVBoxLayout]:
    """An empty tab page and its vertical layout."""
    page = QWidget()
    layout = QVBoxLayout(page)
    layout.setContentsMargins(2, 2, 2, 2)
    return page, layout


def scrolled(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless, resizable scroll area (tabs taller than the dock stay usable)."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    return area


def button(text: str, on_click: Callable[[], Any], tip: str = "") -> QPushButton:
    b = QPushButton(text)
    if tip:
        b.setToolTip(tip)
    b.clicked.connect(on_click)
    return b


def button_row(*buttons: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for b in buttons:
        row.addWidget(b)
    return row


def browse_row(edit: QLineEdit, on_browse: Callable[[], None], tip: str = "") -> QHBoxLayout:
    """A line edit (stretching) with a small "…" button after it."""
    browse = QPushButton("…")
    browse.setFixedWidth(28)
    if tip:
        browse.setToolTip(tip)
    browse.clicked.connect(on_browse)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


def set_enabled(widget: QWidget, enabled: bool, why_not: str = "", tip: str = "") -> None:
    """Enable a button, or disable it with a tooltip saying what is missing."""
    widget.setEnabled(bool(enabled))
    widget.setToolTip(tip if enabled else (why_not or tip))


def choose_model_file(parent: QWidget) -> str:
    """Ask for a model.safetensors; "" when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Model file", str(default_run_root()), "Models (*.safetensors)")
    return path


def fixed_lines(label: QLabel, lines: int) -> None:
    """Give a label a fixed height so that changing its text never re-lays-out napari's main window
    (a relayout resizes the GL canvas: tens of milliseconds on every progress update)."""
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 4)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)


def device_choices() -> list[str]:
    """"auto" and the devices torch can use here (the CPU only when torch has a problem)."""
    try:
        from l2s_gui.device import available_devices

        return ["auto"] + available_devices()
    except Exception:  # noqa: BLE001 - torch problems: offer the CPU
        return ["auto", "cpu"]


def resolve_device_choice(choice: str) -> str:
    """The device a choice stands for ("auto": the first available, else the CPU)."""
    if choice != "auto":
        return choice
    try:
        from l2s_gui.device import available_devices

        return available_devices()[0]
    except Exception:  # noqa: BLE001
        return "cpu"
