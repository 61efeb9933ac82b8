"""The Model and Training tabs of the training widget: the schema-driven editors of
:class:`~._config_form.ConfigForm`, laid out in groups (the rarely changed ones in collapsible
sections), and which editors apply to the current choices (e.g. σ range only for 'uniform' noise)."""

from __future__ import annotations

from qtpy.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from ._config_form import ConfigForm, model_choice_editor
from ._form_widgets import tab_page

AUGMENTATION_KEYS = ["training.method", "augmentation.kind", "augmentation.noise", "augmentation.sigma_init",
                     "augmentation.sigma_range", "augmentation.inu", "augmentation.inu_nodes",
                     "augmentation.inu_c_init", "augmentation.inu_c_max", "augmentation.residual_widths"]
SAMPLE_KEYS = ["data.ndim", "data.slice_axis", "data.patch_size", "data.batch_size", "data.voxel_size",
               "synthesis.intensity_prior", "synthesis.intensity_prior_spread"]
NETWORK_KEYS = ["network.widths", "network.norm", "network.activation"]
OPTIMISATION_KEYS = ["training.steps", "training.lr_segmentation", "training.lr_segmentation_schedule",
                     "training.lr_segmentation_final", "training.lr_augmentation",
                     "training.lr_augmentation_schedule", "training.lr_augmentation_final", "training.lr_inu_scale"]
ADVANCED_KEYS = ["training.inner_optimizer", "training.hypergradient", "training.hypergradient_route",
                 "training.hyper_every",
                 "training.hyper_start", "training.seed", "training.precision"]
REPORTING_KEYS = ["training.preview_every", "training.val_every", "training.checkpoint_every"]
WARM_START_KEYS = ["training.init_from", "training.init_theta_from"]
DATA_KEYS = ["data.val_fraction", "data.label_table"]
SYNTHMIX_KEYS = ["training.synthmix_fraction", "training.synthmix_grid", "training.synthmix_ratio"]
INSPECTOR_KEYS = ["inspector.enabled", "inspector.grid", "inspector.update_every", "inspector.eval_every",
                  "inspector.lr", "inspector.widths", "inspector.mix_ratio", "inspector.eval_batches"]
FORM_KEYS = (AUGMENTATION_KEYS + SAMPLE_KEYS + NETWORK_KEYS + OPTIMISATION_KEYS + ADVANCED_KEYS + REPORTING_KEYS
             + SYNTHMIX_KEYS + INSPECTOR_KEYS)


def build_form() -> ConfigForm:
    """The form of every setting the training widget shows (the Data tab adds its own two)."""
    form = ConfigForm(FORM_KEYS)
    form.add("training.init_from", editor=model_choice_editor("training.init_from", "random"))
    form.add("training.init_theta_from", editor=model_choice_editor("training.init_theta_from", "the settings"))
    return form


def _group(title: str, form: ConfigForm, keys: list[str]) -> QGroupBox:
    box = QGroupBox(title)
    rows = QFormLayout(box)
    form.rows(rows, keys)
    return box


def _collapsible(title: str, form: ConfigForm, keys: list[str]) -> QCollapsible:
    section = QCollapsible(title)
    inner = QWidget()
    rows = QFormLayout(inner)
    rows.setContentsMargins(0, 0, 0, 0)
    form.rows(rows, keys)
    section.addWidget(inner)
    return section


class ModelTab(QWidget):
    """The learned augmentation A_θ, the training samples and the network."""

    def __init__(self, form: ConfigForm, parent=None):
        super().__init__(parent)
        self.form = form
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        page, layout = tab_page()
        outer.addWidget(page)
        layout.addWidget(_group("Learned augmentation A_θ", form, AUGMENTATION_KEYS))
        self.inu_k_label = QLabel()
        layout.addWidget(self.inu_k_label)
        layout.addWidget(_group("SynthMix mix-up (method synthmix)", form, SYNTHMIX_KEYS))
        layout.addWidget(_group("Samples", form, SAMPLE_KEYS))
        layout.addWidget(_group("Network", form, NETWORK_KEYS))
        layout.addStretch(1)
        for key in ("augmentation.kind", "augmentation.noise", "data.ndim", "training.method",
                    "synthesis.intensity_prior"):
            form[key].currentIndexChanged.connect(self.update_fields)
        form["augmentation.inu"].toggled.connect(self.update_fields)
        form["augmentation.inu_nodes"].textChanged.connect(self.update_fields)
        self.update_fields()

    def update_fields(self, *_args) -> None:
        """Enable the editors that apply to the current choices."""
        form = self.form
        kind = form.editors["augmentation.kind"].read()
        parametric = kind == "parametric"
        form["augmentation.noise"].setEnabled(parametric)
        form["augmentation.inu"].setEnabled(parametric)
        inu = parametric and form["augmentation.inu"].isChecked()
        form["augmentation.inu_nodes"].setEnabled(inu)
        form["augmentation.inu_c_init"].setEnabled(inu)
        form["augmentation.inu_c_max"].setEnabled(inu)
        uniform = form.editors["augmentation.noise"].read() == "uniform"
        form["augmentation.sigma_range"].setEnabled(parametric and uniform)
        form["augmentation.sigma_init"].setEnabled(parametric and not uniform)
        form["augmentation.residual_widths"].setEnabled(kind == "nonparametric")
        try:
            k = len(form.editors["augmentation.inu_nodes"].read())
            self.inu_k_label.setText(f"INU fields: K = {k} (c initial: one value or K values)")
        except ValueError:
            self.inu_k_label.setText("INU fields: K = ?")
        form["data.slice_axis"].setEnabled(form.editors["data.ndim"].read() == 2)
        form["synthesis.intensity_prior_spread"].setEnabled(form.editors["synthesis.intensity_prior"].read() == "real")
        learned = form.editors["training.method"].read() == "learn2synth"
        for key in ("training.lr_augmentation", "training.lr_augmentation_schedule", "training.hypergradient",
                    "training.hyper_every", "training.hyper_start"):
            if key in form.editors:
                form[key].setEnabled(learned)
        if "training.lr_inu_scale" in form.editors:
            form["training.lr_inu_scale"].setEnabled(learned and inu)
        synthmix = form.editors["training.method"].read() == "synthmix"
        for key in SYNTHMIX_KEYS:
            form[key].setEnabled(synthmix)


class TrainingTab(QWidget):
    """Optimisation, warm start and reporting (advanced settings collapsed)."""

    def __init__(self, form: ConfigForm, parent=None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        page, layout = tab_page()
        outer.addWidget(page)
        layout.addWidget(_group("Optimisation", form, OPTIMISATION_KEYS))
        layout.addWidget(_group("Start from a model (warm start)", form, WARM_START_KEYS))
        layout.addWidget(_collapsible("Hypergradient, seed and precision", form, ADVANCED_KEYS))
        layout.addWidget(_collapsible("Reporting", form, REPORTING_KEYS))
        layout.addWidget(_collapsible("Inspector: live domain-gap map", form, INSPECTOR_KEYS))
        self.buttons_layout = QVBoxLayout()
        layout.addLayout(self.buttons_layout)
        layout.addStretch(1)
        for which in ("segmentation", "augmentation"):
            schedule, final = f"training.lr_{which}_schedule", f"training.lr_{which}_final"

            def follow(*_args, schedule=schedule, final=final):
                form[final].setEnabled(form.editors[schedule].read() == "cosine")

            form[schedule].currentIndexChanged.connect(follow)
            follow()

        def inspector_fields(*_args):
            on = form["inspector.enabled"].isChecked()
            for key in INSPECTOR_KEYS[1:]:
                form[key].setEnabled(on)

        form["inspector.enabled"].toggled.connect(inspector_fields)
        inspector_fields()
