"""training.method synthmix in the training widget: offered by the schema's method list, its three
settings shown (enabled only for synthmix), validated, and its missing inputs named."""

from __future__ import annotations

import pytest

from l2s_gui.config import Config
from l2s_gui.errors import L2SError
from l2s_napari._settings_tabs import SYNTHMIX_KEYS
from l2s_napari._training_widget import TrainingWidget


def test_synthmix_is_offered_with_its_settings(make_napari_viewer):
    widget = TrainingWidget(make_napari_viewer())
    method = widget.form["training.method"]
    choices = [method.itemData(i) for i in range(method.count())]
    assert "synthmix" in choices
    assert all(not widget.form[key].isEnabled() for key in SYNTHMIX_KEYS)  # learn2synth by default
    method.setCurrentIndex(choices.index("synthmix"))
    assert all(widget.form[key].isEnabled() for key in SYNTHMIX_KEYS)
    assert not widget.form["training.lr_augmentation"].isEnabled()       # theta is not learnt
    assert "real scan + labels pair" in widget.missing_inputs()
    assert not widget.start_button.isEnabled()
    widget.form["training.synthmix_grid"].setValue(4)
    widget.form["training.synthmix_ratio"].setValue(0.25)
    cfg = Config.from_dict(widget.settings_dict())
    assert (cfg.training.method, cfg.training.synthmix_grid, cfg.training.synthmix_ratio) == ("synthmix", 4, 0.25)
    assert widget.form["training.synthmix_fraction"].minimum() > 0    # the schema's (0, 1]
    settings = widget.settings_dict()
    settings["training"]["synthmix_fraction"] = 0.0
    with pytest.raises(L2SError, match="training.synthmix_fraction"):
        Config.from_dict(settings)
    widget.shutdown()
