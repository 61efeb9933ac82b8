"""Live training plots (pyqtgraph): theta (sigma, c_1..c_K), synthetic/real loss, validation Dice,
and, for runs with the Inspector, its accuracy (with the 0.5 line: indistinguishable).

Colours follow the napari theme (background, text, accent) and change with it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

# Distinguishable on dark and light backgrounds (Okabe-Ito, minus black/yellow).
PALETTE = ["#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999"]


def theme_colors(theme_name: str) -> dict[str, str]:
    try:
        from napari.utils.theme import get_system_theme, get_theme

        if theme_name == "system":
            theme_name = get_system_theme()
        theme = get_theme(theme_name)
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
                "grid": theme.highlight.as_hex(), "accent": theme.current.as_hex(),
                "warning": theme.warning.as_hex()}
    except Exception:  # noqa: BLE001 - any theme problem falls back to the dark defaults
        return {"background": "#23242b", "text": "#f0f1f2", "grid": "#61696e", "accent": "#4560c4",
                "warning": "#e3b617"}


class _Series:
    def __init__(self) -> None:
        self.x: list[float] = []
        self.y: list[float] = []

    def add(self, x: float, y: float | None) -> None:
        if y is None:
            return
        try:
            y = float(y)
        except (TypeError, ValueError):
            return
        if math.isfinite(y):
            self.x.append(float(x))
            self.y.append(y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.x, float), np.asarray(self.y, float)


class TrainingPlots(QWidget):
    """Three plots side by side; feed them run-folder events (:mod:`l2s_gui.events`) with :meth:`add_events`.

    Curves are redrawn at most every ``min_interval_ms`` (a pyqtgraph repaint plus the window
    composite costs tens of milliseconds in software OpenGL; every two seconds is plenty for a human
    following a training), without antialiasing (software painting of antialiased lines is slow).
    """

    def __init__(self, parent: QWidget | None = None, theme: str = "dark", min_interval_ms: int = 2000):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self._throttle = QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.setInterval(min_interval_ms)
        self._throttle.timeout.connect(self._flush)
        self._dirty = False
        self.graphics = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)
        self.chance_line = None
        self.inspector_plot = None  # added with the first Inspector event (runs without it keep three plots)
        self.theta_plot = self.graphics.addPlot(title="augmentation θ")
        self.loss_plot = self.graphics.addPlot(title="loss (soft Dice)")
        self.dice_plot = self.graphics.addPlot(title="validation Dice")
        for plot in self.plots:
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("bottom", "step")
            plot.addLegend(offset=(-4, 4), labelTextSize="8pt")
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
        self.dice_plot.setYRange(0, 1, padding=0.02)
        self.series: dict[str, _Series] = {}
        self.label_names: dict[str, str] = {}
        self.rounds: list[Any] = []  # RoundEvents of a self-training run, by round
        self.curves: dict[str, Any] = {}
        self._colors = theme_colors(theme)
        self.set_theme(theme)
        self.setMinimumHeight(150)

    def sizeHint(self):  # noqa: N802 - Qt API: a modest strip under the canvas
        from qtpy.QtCore import QSize

        return QSize(900, 210)

    @property
    def plots(self):
        base = (self.theta_plot, self.loss_plot, self.dice_plot)
        return base if self.inspector_plot is None else base + (self.inspector_plot,)

    def _ensure_inspector_plot(self):
        """The Inspector's accuracy plot (0-1, a dashed line at 0.5 = indistinguishable)."""
        if self.inspector_plot is None:
            plot = self.inspector_plot = self.graphics.addPlot(title="inspector accuracy")
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("bottom", "step")
            plot.addLegend(offset=(-4, 4), labelTextSize="8pt")
            plot.setYRange(0, 1, padding=0.02)
            self.chance_line = pg.InfiniteLine(pos=0.5, angle=0, movable=False,
                                               pen=pg.mkPen(self._colors["grid"], width=1,
                                                            style=pg.QtCore.Qt.PenStyle.DashLine))
            plot.addItem(self.chance_line)
            self.set_theme_colors()
        return self.inspector_plot

    # theme
    def set_theme(self, theme: str) -> None:
        self._colors = theme_colors(theme)
        self.set_theme_colors()

    def set_theme_colors(self) -> None:
        c = self._colors
        self.graphics.setBackground(c["background"])
        for plot in self.plots:
            plot.titleLabel.setText(plot.titleLabel.text, color=c["text"], size="9pt")
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.setPen(pg.mkPen(c["grid"]))
                axis.setTextPen(pg.mkPen(c["text"]))
            if plot.legend is not None:
                plot.legend.setLabelTextColor(c["text"])
        for key, curve in self.curves.items():
            if key != "round_dice":
                curve.setPen(self._pen(key))

    def _pen(self, key: str):
        fixed = {"sigma": self._colors["warning"], "loss_synth": PALETTE[0], "loss_real": PALETTE[1],
                 "mean_dice": self._colors["text"], "inspector_accuracy": self._colors["text"],
                 "inspector_real": PALETTE[2], "inspector_synthetic": PALETTE[3]}
        if key in fixed:
            return pg.mkPen(fixed[key], width=2)
        if key.startswith("c_"):
            return pg.mkPen(PALETTE[(int(key[2:]) + 1) % len(PALETTE)], width=1.5)
        if key.startswith("dice_"):
            index = sorted(k for k in self.series if k.startswith("dice_")).index(key)
            return pg.mkPen(PALETTE[(index + 2) % len(PALETTE)], width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
        return pg.mkPen(PALETTE[hash(key) % len(PALETTE)], width=1.5)

    # data
    def clear(self) -> None:
        self._dirty = False
        for plot in self.plots:
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()
        self.series.clear()
        self.curves.clear()
        self.rounds.clear()
        if self.inspector_plot is not None:  # a restarted or other run may have no Inspector
            self.graphics.removeItem(self.inspector_plot)
            self.inspector_plot = None

    def _add(self, key: str, x: float, y: Any) -> None:
        self.series.setdefault(key, _Series()).add(x, y)

    def add_events(self, events: list) -> None:
        touched = False
        for e in events:
            try:
                touched = self._add_event(e) or touched
            except (TypeError, ValueError, AttributeError):
                continue  # one malformed event never drops the others
        if touched:
            self._dirty = True
            if not self._throttle.isActive():
                self._flush()  # draw now, then at most once per interval

    def _add_event(self, e) -> bool:
        from l2s_gui.events import InspectorEvent, RoundEvent, StepEvent, ValidationEvent

        if isinstance(e, RoundEvent):  # self-training: one marker per round on the Dice plot
            self._add("round_dice", e.step, e.mean_dice)
            self.rounds = [r for r in self.rounds if r.round != e.round] + [e]
            return True

        step = e.step
        if isinstance(e, StepEvent):
            self._add("loss_synth", step, e.loss_synth)
            self._add("loss_real", step, e.loss_real)
            for name, value in (e.theta or {}).items():
                if isinstance(value, (list, tuple)):
                    for k, v in enumerate(value):
                        self._add(f"{name}_{k + 1}", step, v)
                else:
                    self._add(name, step, value)
            return True
        if isinstance(e, ValidationEvent):
            self._add("mean_dice", step, e.mean_dice)
            for label, value in (e.dice or {}).items():
                self._add(f"dice_{label}", step, value)
            return True
        if isinstance(e, InspectorEvent):
            self._add("inspector_accuracy", step, e.accuracy)
            self._add("inspector_real", step, e.accuracy_real)
            self._add("inspector_synthetic", step, e.accuracy_synthetic)
            return True
        return False

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._refresh()
            self._throttle.start()

    def flush(self) -> None:
        """Draw pending data now (tests, screenshots)."""
        self._throttle.stop()
        self._dirty = True
        self._flush()

    def _plot_for(self, key: str):
        if key.startswith("inspector"):
            return self._ensure_inspector_plot()
        if key.startswith("loss"):
            return self.loss_plot
        if key.startswith("dice") or key in ("mean_dice", "round_dice"):
            return self.dice_plot
        return self.theta_plot

    def _legend_name(self, key: str) -> str:
        names = {"loss_synth": "synthetic", "loss_real": "real", "mean_dice": "mean", "sigma": "σ",
                 "round_dice": "rounds",
                 "inspector_accuracy": "accuracy", "inspector_real": "real patches",
                 "inspector_synthetic": "synthetic patches"}
        if key in names:
            return names[key]
        if key.startswith("dice_"):
            name = self.label_names.get(key[5:])
            if name:
                name = name.replace("Left-", "").replace("Cerebral-", "")
                return f"{key[5:]} {name[:16]}"
            return f"label {key[5:]}"
        if key.startswith("c_"):
            return f"c{key[2:]}"
        return key

    def _refresh(self) -> None:
        for key in sorted(self.series):
            x, y = self.series[key].arrays()
            curve = self.curves.get(key)
            if curve is None:
                if x.size == 0:
                    continue
                plot = self._plot_for(key)
                if key == "round_dice":  # markers, no line
                    curve = plot.plot(name=self._legend_name(key), pen=None, symbol="o", symbolSize=9,
                                      symbolBrush=self._colors["accent"], symbolPen=self._colors["text"])
                else:
                    curve = plot.plot(name=self._legend_name(key), pen=self._pen(key))
                self.curves[key] = curve
            curve.setData(x, y)
        self.dice_plot.setTitle(self.dice_title(), color=self._colors["text"], size="9pt")

    def dice_title(self) -> str:
        """'validation Dice', followed in a self-training run by each round's mean Dice and change."""
        parts = []
        for r in sorted(self.rounds, key=lambda r: r.round):
            text = f"r{r.round} {float(r.mean_dice):.3f}"
            if r.change is not None:
                text += f" ({float(r.change):+.3f})"
            parts.append(text)
        return "validation Dice" + (" · rounds: " + ", ".join(parts) if parts else "")

    def last(self, key: str) -> float | None:
        s = self.series.get(key)
        return s.y[-1] if s is not None and s.y else None
