"""The training settings as a form driven by the engine's config schema
(:func:`l2s_gui.config.config_fields`): each shown setting gets the editor its type asks for --
a combo of its choices, a check box, a spin box bounded by its range, a line of numbers for a list
-- with its default, its range and its help text as tooltip. Nothing here restates a range or a
choice: a new setting or a changed bound in ``l2s_gui/config.py`` reaches the GUI by itself.

:class:`ConfigForm` maps the editors to and from a config mapping (``settings()`` /
``apply()``); settings without an editor (synthesis ranges, recovery, ...) come from the last config
applied, so a loaded config keeps them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from l2s_gui.config import Config, FieldSpec, config_fields

INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 1e6

LABELS: dict[str, str] = {
    # the words on the form (layout, not schema: ranges, choices and help come from config_fields)
    "training.method": "method",
    "augmentation.kind": "augmentation",
    "augmentation.noise": "noise",
    "augmentation.sigma_init": "σ initial",
    "augmentation.sigma_range": "σ range (uniform)",
    "augmentation.inu": "intensity non-uniformity (INU)",
    "augmentation.inu_nodes": "INU nodes M_k",
    "augmentation.inu_c_init": "c initial",
    "augmentation.inu_c_max": "c max",
    "augmentation.residual_widths": "residual widths",
    "data.ndim": "dimensions",
    "data.slice_axis": "slice axis (2D)",
    "data.patch_size": "patch size",
    "data.batch_size": "batch size",
    "data.voxel_size": "voxel size (mm)",
    "data.val_fraction": "validation fraction",
    "synthesis.intensity_prior": "tissue intensities",
    "synthesis.intensity_prior_spread": "spread around the real ones",
    "data.label_table": "label table",
    "network.widths": "UNet widths",
    "network.norm": "UNet normalisation",
    "network.activation": "UNet activation",
    "training.steps": "steps",
    "training.lr_segmentation": "learning rate φ (network)",
    "training.lr_segmentation_schedule": "φ rate schedule",
    "training.lr_segmentation_final": "φ rate at the end (×)",
    "training.lr_augmentation": "learning rate θ (augmentation)",
    "training.lr_augmentation_schedule": "θ rate schedule",
    "training.lr_augmentation_final": "θ rate at the end (×)",
    "training.lr_inu_scale": "INU exponents' rate (× θ rate)",
    "training.inner_optimizer": "inner update",
    "training.hypergradient": "hypergradient",
    "training.hypergradient_route": "exact route",
    "training.hyper_every": "hyper-step every",
    "training.hyper_start": "hyper-steps from step",
    "training.seed": "seed",
    "training.precision": "precision",
    "training.preview_every": "preview every",
    "training.val_every": "validate every",
    "training.checkpoint_every": "checkpoint every",
    "training.synthmix_fraction": "share of aligned mixes",
    "training.synthmix_grid": "mask grid k (cells per axis)",
    "training.synthmix_ratio": "λ: share of real cells",
    "self_training.rounds": "rounds (max)",
    "self_training.confidence": "confidence threshold",
    "self_training.tolerance": "stop below Dice change",
    "self_training.steps": "steps per round (0: as training)",
    "self_training.pseudo_fraction": "pseudo-labelled share of a batch",
    "self_training.student_init": "student starts from",
}
PLACEHOLDERS = {"data.patch_size": "whole slice/volume, e.g. 96 96", "data.voxel_size": "each file's own grid, e.g. 1"}
CHOICE_TEXT = {"data.ndim": {2: "2D", 3: "3D"},
               "synthesis.intensity_prior": {"uniform": "any contrast (SynthSeg)",
                                             "real": "around the real scans' (SynthSeg-rule)"}}
DATA_PATH_KEYS = ("data.label_maps", "data.real_images", "data.real_labels", "data.unlabelled_images")


def _fields() -> dict[str, FieldSpec]:
    return {f.key: f for f in config_fields()}


def _parse_list(text: str, spec: FieldSpec, label: str) -> list:
    cast = int if spec.item_type is int else float if spec.item_type is float else str
    words = text.replace(",", " ").split()
    try:
        return [cast(v) for v in words]
    except ValueError:
        kind = "whole numbers" if cast is int else "numbers"
        raise ValueError(f"{label}: expected {kind} separated by spaces, got {text!r}") from None


def _list_text(value: Any) -> str:
    values = value if isinstance(value, (list, tuple)) else [value]
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class Editor:
    """One setting's editor: ``widget``, ``read()`` -> config value, ``write(value)``."""

    def __init__(self, spec: FieldSpec, widget: QWidget, read: Callable[[], Any], write: Callable[[Any], None]):
        self.spec, self.widget, self.read, self.write = spec, widget, read, write


def _tooltip(spec: FieldSpec) -> str:
    parts = [spec.doc or spec.help]
    if spec.range_text():
        parts.append(f"allowed: {spec.range_text()}")
    if spec.lengths_text():
        parts.append(f"length: {spec.lengths_text()}")
    parts.append(f"default: {_list_text(spec.default) if spec.is_list else spec.default}  ({spec.key})")
    return "\n".join(p for p in parts if p)


def _decimals(spec: FieldSpec) -> int:
    default = abs(float(spec.default or 0.0))
    return 6 if 0 < default < 0.01 else 4 if default < 1 else 3


def make_editor(spec: FieldSpec) -> Editor:
    """The editor a setting's type asks for (see the module docstring)."""
    label = LABELS.get(spec.key, spec.name)
    if spec.choices is not None:
        w = QComboBox()
        texts = CHOICE_TEXT.get(spec.key, {})
        for choice in spec.choices:
            w.addItem(texts.get(choice, str(choice)), choice)

        def write_choice(value, w=w):
            index = w.findData(value)
            if index >= 0:
                w.setCurrentIndex(index)

        editor = Editor(spec, w, lambda w=w: w.currentData(), write_choice)
        write_choice(spec.default)
    elif spec.item_type is bool and not spec.is_list:
        w = QCheckBox(label)
        editor = Editor(spec, w, w.isChecked, lambda v, w=w: w.setChecked(bool(v)))
        w.setChecked(bool(spec.default))
    elif spec.item_type is int and not spec.is_list:
        w = QSpinBox()
        low = spec.min if spec.min is not None else -INT_LIMIT
        w.setRange(int(low) + (1 if spec.min_exclusive else 0),
                   int(spec.max) - (1 if spec.max_exclusive else 0) if spec.max is not None else INT_LIMIT)
        w.setSingleStep(max(1, int(spec.default or 1) // 10) if spec.name in ("steps", "hyper_start") else 1)
        w.setValue(int(spec.default))
        editor = Editor(spec, w, lambda w=w: int(w.value()), lambda v, w=w: w.setValue(int(v)))
    elif spec.item_type is float and not spec.is_list:
        w = QDoubleSpinBox()
        decimals = _decimals(spec)
        tiny = 10.0 ** -decimals
        w.setDecimals(decimals)
        low = spec.min if spec.min is not None else -FLOAT_LIMIT
        high = spec.upper_bound() if spec.upper_bound() is not None else FLOAT_LIMIT
        w.setRange(float(low) + (tiny if spec.min_exclusive else 0.0),
                   float(high) - (tiny if spec.max_exclusive else 0.0))
        w.setSingleStep(max(tiny, 10.0 ** math.floor(math.log10(abs(spec.default)))) if spec.default else 0.01)
        w.setValue(float(spec.default))
        editor = Editor(spec, w, lambda w=w: float(w.value()), lambda v, w=w: w.setValue(float(v)))
    elif spec.is_list:
        w = QLineEdit(_list_text(spec.default))
        if spec.key in PLACEHOLDERS:
            w.setPlaceholderText(PLACEHOLDERS[spec.key])
        editor = Editor(spec, w, lambda w=w: _parse_list(w.text(), spec, label),
                        lambda v, w=w: w.setText(_list_text(v)))
    else:
        w = QLineEdit(str(spec.default))
        editor = Editor(spec, w, lambda w=w: w.text().strip(), lambda v, w=w: w.setText(str(v)))
    w.setToolTip(_tooltip(spec))
    return editor


class ConfigForm:
    """Editors for some settings of the schema and the config mapping they stand for."""

    def __init__(self, keys: list[str]):
        specs = _fields()
        self.editors: dict[str, Editor] = {}
        for key in keys:
            self.add(key, specs[key])
        self._base: dict[str, Any] = {}

    def add(self, key: str, spec: FieldSpec | None = None, editor: Editor | None = None) -> Editor:
        """Add the schema's editor for ``key``, or a custom ``editor`` (device, warm start)."""
        spec = spec or _fields()[key]
        self.editors[key] = editor or make_editor(spec)
        return self.editors[key]

    def __getitem__(self, key: str) -> QWidget:
        return self.editors[key].widget

    def label(self, key: str) -> str:
        return LABELS.get(key, key.split(".")[1])

    def rows(self, form: QFormLayout, keys: list[str]) -> None:
        """Add ``keys``' editors to ``form`` with their labels (a check box carries its own)."""
        for key in keys:
            widget = self[key]
            if isinstance(widget, QCheckBox):
                form.addRow(widget)
            else:
                form.addRow(self.label(key), widget)

    def settings(self) -> dict[str, Any]:
        """The config mapping: the last applied config with every editor's value; the data lists
        are left out (the Data tab provides them). ValueError naming the setting on bad text."""
        out = copy.deepcopy(self._base)
        for key, editor in self.editors.items():
            section, name = key.split(".")
            out.setdefault(section, {})[name] = editor.read()
        for key in DATA_PATH_KEYS:
            out.get("data", {}).pop(key.split(".")[1], None)
        return out

    def apply(self, data: dict[str, Any]) -> None:
        """Show a config mapping; values of the wrong kind leave their editor as it is."""
        self._base = copy.deepcopy({k: v for k, v in data.items() if isinstance(v, dict)})
        for key, editor in self.editors.items():
            section, name = key.split(".")
            value = (data.get(section) or {}).get(name)
            if value is None:
                continue
            try:
                editor.write(value)
            except (TypeError, ValueError, OverflowError):
                pass

    @staticmethod
    def defaults() -> dict[str, Any]:
        return Config().to_dict()


def slider_editor(spec: FieldSpec, decimals: int = 2) -> Editor:
    """A labelled slider (superqt) for a setting bounded on both sides (e.g. a fraction)."""
    from qtpy.QtCore import Qt
    from superqt import QLabeledDoubleSlider

    w = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    tiny = 10.0 ** -decimals
    w.setDecimals(decimals)
    w.setRange(float(spec.min) + (tiny if spec.min_exclusive else 0.0),
               float(spec.upper_bound()) - (tiny if spec.max_exclusive else 0.0))
    w.setSingleStep(0.05)
    w.setValue(float(spec.default))
    w.setToolTip(_tooltip(spec))
    return Editor(spec, w, lambda: round(float(w.value()), decimals), lambda v: w.setValue(float(v)))


class ModelChoice(QWidget):
    """A model to start from: none, the shipped starter model, or a model file / run folder.

    ``value()`` is "" (none), the starter model's path, or the file typed; the starter entry is
    disabled, with a tooltip saying why, when this installation has no starter model."""

    NONE, STARTER, FILE = 0, 1, 2

    def __init__(self, none_text: str, parent: QWidget | None = None):
        from qtpy.QtWidgets import QHBoxLayout
        from superqt import QElidingLineEdit

        from ._form_widgets import button, choose_model_file

        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.addItems([none_text, "starter model", "model file"])
        self.path_edit = QElidingLineEdit()
        self.path_edit.setPlaceholderText("model.safetensors or a run folder")
        self.path_edit.setMinimumWidth(60)
        pick = button("…", lambda: self._browse(choose_model_file), "Choose a model file (or type a run folder)")
        pick.setMaximumWidth(32)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo)
        row.addWidget(self.path_edit, 1)
        row.addWidget(pick)
        self.refresh_starter()
        self.combo.currentIndexChanged.connect(self._sync)
        self.path_edit.textEdited.connect(
            lambda text: self.combo.setCurrentIndex(self.FILE if text.strip() else self.NONE))
        self._sync()

    @staticmethod
    def starter_path():
        from l2s_gui.starter import starter_model_path

        return starter_model_path()

    def refresh_starter(self) -> None:
        """Enable the starter entry when the starter model is installed (else say why not)."""
        from l2s_gui.starter import STARTER_FILE

        item = self.combo.model().item(self.STARTER)
        available = self.starter_path() is not None
        item.setEnabled(available)
        item.setToolTip("the shipped starter model (2D, 4 classes + background)" if available else
                        f"no starter model in this installation ({STARTER_FILE} is not installed)")
        if not available and self.combo.currentIndex() == self.STARTER:
            self.combo.setCurrentIndex(self.NONE)

    def _browse(self, choose) -> None:
        path = choose(self)
        if path:
            self.path_edit.setText(path)
            self.combo.setCurrentIndex(self.FILE)

    def _sync(self, *_args) -> None:
        self.path_edit.setEnabled(self.combo.currentIndex() == self.FILE)

    def value(self) -> str:
        index = self.combo.currentIndex()
        if index == self.STARTER:
            path = self.starter_path()
            return str(path) if path is not None else ""
        return self.path_edit.text().strip() if index == self.FILE else ""

    def set_value(self, value: Any) -> None:
        from l2s_gui.starter import STARTER_NAME

        text = str(value or "").strip()
        starter = self.starter_path()
        if starter is not None and (text.lower() == STARTER_NAME or text == str(starter)):
            self.combo.setCurrentIndex(self.STARTER)
        elif text:  # (also "starter" without a starter model: kept, and Start says what is missing)
            self.path_edit.setText(text)
            self.combo.setCurrentIndex(self.FILE)
        else:
            self.combo.setCurrentIndex(self.NONE)

    def choose_starter(self) -> bool:
        if self.starter_path() is None:
            return False
        self.combo.setCurrentIndex(self.STARTER)
        return True


def model_choice_editor(key: str, none_text: str) -> Editor:
    spec = _fields()[key]
    w = ModelChoice(none_text)
    w.setToolTip(_tooltip(spec))
    return Editor(spec, w, w.value, w.set_value)
