"""The training form is generated from the engine's config schema: ranges, choices, defaults and
help texts come from l2s_gui.config.config_fields(), not from a table of the GUI's own."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from l2s_gui.config import Config, config_fields
from l2s_napari._training_widget import TrainingWidget


def test_every_editor_follows_the_schema(make_napari_viewer):
    widget = TrainingWidget(make_napari_viewer())
    specs = {f.key: f for f in config_fields()}
    assert len(widget.form.editors) >= 35
    for key, editor in widget.form.editors.items():
        spec, w = specs[key], editor.widget
        assert editor.spec is spec
        if key == "training.device":
            continue  # the devices this machine offers
        assert spec.key in w.toolTip() or key in ("data.label_table",)
        if spec.choices is not None and isinstance(w, QComboBox):
            assert [w.itemData(i) for i in range(w.count())] == list(spec.choices)
        elif isinstance(w, QSpinBox):
            assert spec.min is None or w.minimum() >= spec.min
            assert spec.max is None or w.maximum() <= spec.max
        elif isinstance(w, QDoubleSpinBox):
            assert spec.min is None or w.minimum() >= spec.min and (not spec.min_exclusive or w.minimum() > spec.min)
            high = spec.upper_bound()
            assert high is None or w.maximum() <= high
        elif isinstance(w, QCheckBox):
            assert w.isChecked() == spec.default
        elif isinstance(w, QLineEdit) and spec.is_list:
            assert editor.read() == spec.default
    # the form's values are a valid config at the defaults (data lists aside) and round-trip
    settings = widget.settings_dict()
    Config.from_dict(settings)
    assert settings["training"]["hypergradient_route"] == Config().training.hypergradient_route
    # the bound the old hand-written table got wrong: c initial is capped by c max, the schema's max_key
    assert "inu_c_max" in widget.form["augmentation.inu_c_init"].toolTip()
    widget.form["augmentation.inu_c_init"].setText("5")
    from l2s_gui.errors import L2SError

    with pytest.raises(L2SError, match="augmentation.inu_c_init"):
        Config.from_dict(widget.settings_dict())
