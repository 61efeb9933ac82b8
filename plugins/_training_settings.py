"""Settings of the training widget: the Model and Training tabs, and the two-way mapping between the
form fields and a config mapping (``settings_dict`` / ``apply_settings``, Load/Save config)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                            QLineEdit, QWidget)

from ._common import error_text
from ._forms import button, button_row, combo, dspin, floats, ints, spin, tab_page


@dataclass(frozen=True)
class Field:
    """One setting: ``config[section][key]`` <-> the widget at ``attr`` of the training widget.

    ``read(widget)`` gives the config value; ``write(widget, value)`` shows a config value (it may
    raise TypeError/ValueError for a value of the wrong kind: the field is then left as it is)."""

    section: str
    key: str
    attr: str
    read: Callable[[Any], Any]
    write: Callable[[Any, Any], None]


def _int(section: str, key: str, attr: str) -> Field:
    return Field(section, key, attr, lambda w: int(w.value()), lambda w, v: w.setValue(v))


def _float(section: str, key: str, attr: str) -> Field:
    return Field(section, key, attr, lambda w: float(w.value()), lambda w, v: w.setValue(v))


def _text(section: str, key: str, attr: str) -> Field:
    return Field(section, key, attr, lambda w: w.currentText(), lambda w, v: w.setCurrentText(v))


def _ints(section: str, key: str, attr: str, what: str) -> Field:
    return Field(section, key, attr, lambda w: ints(w.text(), what), lambda w, v: w.setText(" ".join(map(str, v))))


def _floats(section: str, key: str, attr: str, what: str) -> Field:
    return Field(section, key, attr, lambda w: floats(w.text(), what),
                 lambda w, v: w.setText(" ".join(f"{x:g}" for x in ([v] if isinstance(v, (int, float)) else v))))


def _path(section: str, key: str, attr: str) -> Field:
    return Field(section, key, attr, lambda w: w.text().strip(), lambda w, v: w.setText(str(v)))


def _kind_write(w: QComboBox, value: Any) -> None:
    if value != "none":  # an old config's "no augmentation": keep the form's choice
        w.setCurrentText(value)


FIELDS: tuple[Field, ...] = (
    _float("data", "val_fraction", "val_fraction"),
    Field("data", "label_table", "label_table_combo", lambda w: w.currentText().strip() or "auto",
          lambda w, v: w.setCurrentText(v)),
    Field("data", "ndim", "ndim_combo", lambda w: 3 if w.currentText() == "3D" else 2,
          lambda w, v: w.setCurrentText(f"{v}D")),
    _int("data", "slice_axis", "slice_axis"),
    Field("data", "patch_size", "patch_edit", lambda w: ints(w.text(), "patch size") if w.text().strip() else [],
          lambda w, v: w.setText(" ".join(map(str, v)))),
    _int("data", "batch_size", "batch_size"),
    Field("data", "voxel_size", "voxel_size_edit", lambda w: floats(w.text(), "voxel size"),
          lambda w, v: w.setText(" ".join(f"{x:g}" for x in v))),
    Field("augmentation", "kind", "aug_kind", lambda w: w.currentText(), _kind_write),
    _text("augmentation", "noise", "noise_combo"),
    _float("augmentation", "sigma_init", "sigma_init"),
    _floats("augmentation", "sigma_range", "sigma_range_edit", "σ range"),
    Field("augmentation", "inu", "inu_check", lambda w: w.isChecked(), lambda w, v: w.setChecked(v)),
    _ints("augmentation", "inu_nodes", "inu_nodes", "INU nodes M_k"),
    _floats("augmentation", "inu_c_init", "c_init", "c initial"),
    _ints("augmentation", "residual_widths", "residual_widths", "residual widths"),
    _ints("network", "widths", "widths_edit", "UNet widths"),
    _text("network", "norm", "norm_combo"),
    _text("network", "activation", "activation_combo"),
    _text("training", "method", "method_combo"),
    _int("training", "steps", "steps"),
    _float("training", "lr_segmentation", "lr_seg"),
    _float("training", "lr_augmentation", "lr_aug"),
    _text("training", "lr_augmentation_schedule", "lr_aug_schedule"),
    _float("training", "lr_augmentation_final", "lr_aug_final"),
    _path("training", "init_from", "init_from_edit"),
    _path("training", "init_theta_from", "init_theta_from_edit"),
    _text("training", "inner_optimizer", "inner_opt"),
    _text("training", "hypergradient", "hyper_mode"),
    _int("training", "hyper_every", "hyper_every"),
    _int("training", "hyper_start", "hyper_start"),
    _int("training", "seed", "seed"),
    # a device this machine does not offer is not in the (non-editable) combo: the choice stays
    Field("training", "device", "device_combo", lambda w: w.currentText(),
          lambda w, v: w.setCurrentText(str(v)) if v else None),
    _text("training", "precision", "precision"),
    _int("training", "preview_every", "preview_every"),
    _int("training", "val_every", "val_every"),
    _int("training", "checkpoint_every", "checkpoint_every"),
)


class SettingsMixin:
    """The Model and Training tabs of :class:`TrainingWidget` and the config they stand for.

    Uses from the widget: ``device_combo``, the Data tab's ``val_fraction`` and ``label_table_combo``,
    ``synth_list`` / ``add_pair`` / ``_pairs`` (data paths), ``_update_buttons`` and the notifiers."""

    _base_config: dict[str, Any]

    def _build_model_tab(self) -> QWidget:
        page, layout = tab_page()

        box = QGroupBox("Learned augmentation A_θ")
        form = QFormLayout(box)
        self.method_combo = combo(["learn2synth", "synthseg", "supervised"], "learn2synth")
        self.method_combo.setToolTip("learn2synth: learn θ by hypergradients; synthseg: θ fixed at its initial "
                                     "values; supervised: train on the real pairs only")
        form.addRow("method", self.method_combo)
        self.aug_kind = combo(["parametric", "nonparametric"], "parametric")
        form.addRow("augmentation", self.aug_kind)
        self.noise_combo = combo(["fixed", "per_image", "uniform", "none"], "fixed")
        self.noise_combo.setToolTip("fixed: x + σε (eq. 8); per_image: x + σ·s·ε, s ~ N(0,1) (eq. 9); "
                                    "uniform: σ ~ U[σ range] per image, not learned")
        form.addRow("noise", self.noise_combo)
        self.sigma_init = dspin(0.0, 5.0, 0.05, 3, 0.01)
        form.addRow("σ initial", self.sigma_init)
        self.sigma_range_edit = QLineEdit("0.025 0.2")
        self.sigma_range_edit.setToolTip("low high: the per-image σ range of the 'uniform' noise")
        form.addRow("σ range (uniform)", self.sigma_range_edit)
        self.inu_check = QCheckBox("intensity non-uniformity (INU)")
        self.inu_check.setChecked(True)
        form.addRow(self.inu_check)
        self.inu_nodes = QLineEdit("2 4 8")
        self.inu_nodes.setToolTip("M_k for each of the K random fields (K = how many numbers)")
        self.inu_k_label = QLabel()
        row = QHBoxLayout()
        row.addWidget(self.inu_nodes, 1)
        row.addWidget(self.inu_k_label)
        form.addRow("INU nodes M_k", row)
        self.c_init = QLineEdit("0.25")
        self.c_init.setToolTip("Initial INU exponents c_k in [0, c_max]: one value for every field, or one per "
                               "field (K numbers)")
        form.addRow("c initial", self.c_init)
        self.residual_widths = QLineEdit("8 16 16 16")
        self.residual_widths.setToolTip("Channels of the residual network (nonparametric augmentation)")
        form.addRow("residual widths", self.residual_widths)
        layout.addWidget(box)

        box = QGroupBox("Samples and network")
        form = QFormLayout(box)
        self.ndim_combo = combo(["2D", "3D"], "2D")
        form.addRow("dimensions", self.ndim_combo)
        self.slice_axis = spin(0, 2, 1)
        self.slice_axis.setToolTip("Voxel axis orthogonal to the 2D slices (1 is coronal for RAS volumes)")
        form.addRow("slice axis (2D)", self.slice_axis)
        self.patch_edit = QLineEdit("")
        self.patch_edit.setPlaceholderText("whole slice/volume, e.g. 96 96")
        self.patch_edit.setToolTip("Patch size (2 numbers in 2D, 3 in 3D), multiples of 2^(levels-1); "
                                   "empty: the whole slice/volume")
        form.addRow("patch size", self.patch_edit)
        self.batch_size = spin(1, 256, 4)
        form.addRow("batch size", self.batch_size)
        self.voxel_size_edit = QLineEdit("")
        self.voxel_size_edit.setPlaceholderText("each file's own grid, e.g. 1")
        self.voxel_size_edit.setToolTip("Resample every input to this voxel size in mm (one value: isotropic, "
                                        "or three); new scans are resampled the same way when segmented and the "
                                        "labels mapped back. Empty: inputs are used on their own grids")
        form.addRow("voxel size (mm)", self.voxel_size_edit)
        self.widths_edit = QLineEdit("16 24 32 48 64")
        self.widths_edit.setToolTip("UNet channels per level (the number of levels is how many numbers)")
        form.addRow("UNet widths", self.widths_edit)
        self.norm_combo = combo(["none", "instance", "group"])
        self.norm_combo.setToolTip("normalisation after each convolution of the UNet (instance: faster "
                                   "convergence on domain-randomised images)")
        form.addRow("UNet normalisation", self.norm_combo)
        self.activation_combo = combo(["elu", "relu", "leaky_relu"])
        self.activation_combo.setToolTip("UNet activation")
        form.addRow("UNet activation", self.activation_combo)
        layout.addWidget(box)
        layout.addStretch(1)

        self.aug_kind.currentTextChanged.connect(self._update_model_fields)
        self.inu_check.toggled.connect(self._update_model_fields)
        self.noise_combo.currentTextChanged.connect(self._update_model_fields)
        self.inu_nodes.textChanged.connect(self._update_model_fields)
        self.ndim_combo.currentTextChanged.connect(self._update_model_fields)
        self.method_combo.currentTextChanged.connect(self._update_model_fields)
        self._update_model_fields()
        return page

    def _build_training_tab(self) -> QWidget:
        page, layout = tab_page()
        box = QGroupBox("Optimisation")
        form = QFormLayout(box)
        self.steps = spin(1, 10_000_000, 1000, 100)
        self.steps.setToolTip("Total training steps (Resume continues to this total)")
        form.addRow("steps", self.steps)
        self.lr_seg = dspin(1e-6, 1.0, 1e-3, 6, 1e-4)
        form.addRow("learning rate φ (network)", self.lr_seg)
        self.lr_aug = dspin(1e-6, 1.0, 1e-3, 6, 1e-4)
        form.addRow("learning rate θ (augmentation)", self.lr_aug)
        self.lr_aug_schedule = combo(["constant", "cosine"], "constant")
        self.lr_aug_schedule.setToolTip("cosine: θ's learning rate decays from its value at the first hyper-step "
                                        "to (final fraction) × that value at the last step, so θ settles")
        form.addRow("θ rate schedule", self.lr_aug_schedule)
        self.lr_aug_final = dspin(0.001, 1.0, 0.1, 3, 0.05)
        self.lr_aug_final.setToolTip("final fraction of θ's learning rate (cosine schedule)")
        form.addRow("θ rate at the end (×)", self.lr_aug_final)
        self.inner_opt = combo(["adam", "sgd"], "adam")
        form.addRow("inner update", self.inner_opt)
        self.hyper_mode = combo(["exact", "naive", "approx"], "exact")
        self.hyper_mode.setToolTip("exact: forward-over-reverse (fast); naive: double backward (reference); "
                                   "approx: finite differences")
        form.addRow("hypergradient", self.hyper_mode)
        self.hyper_every = spin(1, 1000, 1)
        self.hyper_every.setToolTip("Take the hyper-step (real pass + θ update) every k-th iteration")
        form.addRow("hyper-step every", self.hyper_every)
        self.hyper_start = spin(0, 10_000_000, 0, 50)
        self.hyper_start.setToolTip("Plain iterations (θ fixed) before the first hyper-step")
        form.addRow("hyper-steps from step", self.hyper_start)
        self.seed = spin(0, 2**31 - 1, 0)
        form.addRow("seed", self.seed)
        self.precision = combo(["fp32", "bf16"], "fp32")
        form.addRow("precision", self.precision)
        layout.addWidget(box)
        box = QGroupBox("Start from a model (warm start)")
        form = QFormLayout(box)
        self.init_from_edit = QLineEdit("")
        self.init_from_edit.setPlaceholderText("random")
        self.init_from_edit.setToolTip("A model (.safetensors) or run folder whose network starts this run "
                                       "(same classes, dimensions and UNet settings)")
        form.addRow("network from", self._path_row(self.init_from_edit))
        self.init_theta_from_edit = QLineEdit("")
        self.init_theta_from_edit.setPlaceholderText("the settings")
        self.init_theta_from_edit.setToolTip("A model (.safetensors) or run folder whose learned augmentation "
                                             "(σ, c_k, residual net) starts θ")
        form.addRow("θ from", self._path_row(self.init_theta_from_edit))
        layout.addWidget(box)
        box = QGroupBox("Reporting")
        form = QFormLayout(box)
        self.preview_every = spin(1, 100000, 25)
        form.addRow("preview every", self.preview_every)
        self.val_every = spin(1, 100000, 100)
        form.addRow("validate every", self.val_every)
        self.checkpoint_every = spin(1, 1000000, 250)
        form.addRow("checkpoint every", self.checkpoint_every)
        load = button("Load config…", self._load_config_dialog,
                      "Fill the settings from a YAML/JSON config (data paths included)")
        save = button("Save config…", self._save_config_dialog,
                      "Save these settings as a config for `l2s train` (layers become files on Start only)")
        form.addRow(button_row(load, save))
        layout.addWidget(box)
        layout.addStretch(1)
        return page

    def _path_row(self, edit: QLineEdit) -> QHBoxLayout:
        def browse() -> None:
            path, _ = QFileDialog.getOpenFileName(self, "Model", "", "Model (*.safetensors)")
            if path:
                edit.setText(path)

        edit.setMinimumWidth(60)
        pick = button("…", browse, "Choose a model file (or type a run folder)")
        pick.setMaximumWidth(32)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(pick)
        return row

    def _update_model_fields(self, *_args) -> None:
        parametric = self.aug_kind.currentText() == "parametric"
        self.noise_combo.setEnabled(parametric)
        self.inu_check.setEnabled(parametric)
        inu = parametric and self.inu_check.isChecked()
        self.inu_nodes.setEnabled(inu)
        self.c_init.setEnabled(inu)
        self.sigma_range_edit.setEnabled(parametric and self.noise_combo.currentText() == "uniform")
        self.residual_widths.setEnabled(not parametric)
        try:
            k = len(ints(self.inu_nodes.text(), "INU nodes"))
            self.inu_k_label.setText(f"K = {k}")
        except ValueError:
            self.inu_k_label.setText("K = ?")
        self.slice_axis.setEnabled(self.ndim_combo.currentText() == "2D")

    # ------------------------------------------------------------------------------------ config
    def settings_dict(self) -> dict[str, Any]:
        """The config mapping for the current settings (data paths filled by :meth:`start`).

        Settings the widget does not show (synthesis ranges, recovery, ...) come from the last config
        loaded or opened, so they are kept."""
        widget = self._widget_settings()
        out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v
                               for k, v in copy.deepcopy(self._base_config).items()}
        for section, values in widget.items():
            out.setdefault(section, {}).update(values)
        for key in ("label_maps", "real_images", "real_labels"):
            out.get("data", {}).pop(key, None)
        return out

    def _widget_settings(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for f in FIELDS:
            out.setdefault(f.section, {})[f.key] = f.read(getattr(self, f.attr))
        return out

    def apply_settings(self, data: dict[str, Any]) -> None:
        """Fill the widgets from a config mapping (paths become list entries; settings without a widget
        are kept for the next Start)."""
        self._base_config = copy.deepcopy({k: v for k, v in data.items() if isinstance(v, dict)})
        for f in FIELDS:
            value = (data.get(f.section) or {}).get(f.key)
            if value is not None:
                try:
                    f.write(getattr(self, f.attr), value)
                except (TypeError, ValueError):
                    pass
        d = data.get("data") or {}
        for p in d.get("label_maps") or []:
            self.synth_list.add_path(str(p))
        for scan, labels in zip(d.get("real_images") or [], d.get("real_labels") or []):
            self.add_pair(str(scan), str(labels))
        self._update_model_fields()
        self._update_buttons()

    def _load_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Config", "", "Config (*.yaml *.yml *.json)")
        if not path:
            return
        try:
            from l2s_gui.config import read_config_file

            self.apply_settings(read_config_file(path))
        except Exception as exc:  # noqa: BLE001
            self._notify_error(error_text(exc))

    def _save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save config", "config.yaml", "YAML (*.yaml)")
        if not path:
            return
        try:
            from l2s_gui.config import Config

            data = self.settings_dict()
            data["data"]["label_maps"] = [p for kind, p in self.synth_list.sources() if kind == "path"]
            pairs = [(a[1], b[1]) for a, b in self._pairs() if a[0] == "path" and b[0] == "path"]
            data["data"]["real_images"] = [a for a, _ in pairs]
            data["data"]["real_labels"] = [b for _, b in pairs]
            Config.from_dict(data).save(path)
            self._notify_info(f"config saved to {path}" + (" (layers are not included: they become files on Start)"
                                                           if any(k == "layer" for k, _ in self.synth_list.sources())
                                                           else ""))
        except Exception as exc:  # noqa: BLE001
            self._notify_error(error_text(exc))
