"""Sample data: the engine's built-in T1 + labels from the plugin's menu entry, no network."""

from __future__ import annotations

import numpy as np
import pytest

from l2s_gui.sample_data import sample_config
from l2s_napari._training_widget import TrainingWidget


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    """Write the sample once per session (it is derived from nilearn's bundled templates)."""
    root = tmp_path_factory.getbasetemp() / "l2s_cache"
    monkeypatch.setenv("L2S_CACHE_DIR", str(root))


def test_sample_data_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("l2s-gui", "t1_labels")
    kinds = sorted(type(layer).__name__ for layer in layers)
    assert kinds == ["Image", "Labels"]
    scan = next(layer for layer in layers if type(layer).__name__ == "Image")
    labels = next(layer for layer in layers if type(layer).__name__ == "Labels")
    assert scan.data.shape == labels.data.shape and scan.data.ndim == 3
    assert set(np.unique(labels.data).tolist()) == {0, 2, 3, 24}  # FreeSurfer WM / GM / CSF ids
    np.testing.assert_allclose(scan.scale, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(scan.metadata["affine"], labels.metadata["affine"])
    np.testing.assert_allclose(scan.translate, scan.metadata["affine"][:3, 3])


def test_training_widget_uses_the_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    assert not widget.start_button.isEnabled()
    assert widget.use_sample()
    assert widget.data.pairs_table.rowCount() == 3
    assert any(kind == "path" for kind, _ in widget.data.synth_list.sources())
    network = sample_config()["network"]
    assert widget.form["network.widths"].text() == " ".join(map(str, network["widths"]))
    assert widget.form["network.norm"].currentText() == network["norm"]
    assert widget.start_button.isEnabled(), widget.start_button.toolTip()
    # the demo's tissue intensities come from the real pairs (SynthSeg-rule), editable on the form
    assert widget.form.editors["synthesis.intensity_prior"].read() == "real"
    assert widget.form["synthesis.intensity_prior_spread"].isEnabled()
    assert widget.settings_dict()["synthesis"]["intensity_prior"] == "real"
    widget.apply_settings({"synthesis": {"intensity_prior": "uniform"}})
    assert not widget.form["synthesis.intensity_prior_spread"].isEnabled()
    assert widget.settings_dict()["synthesis"]["intensity_prior"] == "uniform"


def test_voxel_size_setting_round_trip(make_napari_viewer):
    widget = TrainingWidget(make_napari_viewer())
    assert widget.settings_dict()["data"]["voxel_size"] == []
    widget.form["data.voxel_size"].setText("1 1 1.5")
    assert widget.settings_dict()["data"]["voxel_size"] == [1.0, 1.0, 1.5]
    widget.apply_settings({"data": {"voxel_size": [2.0]}})
    assert widget.form["data.voxel_size"].text() == "2"
    widget.form["data.voxel_size"].setText("1 mm")
    with pytest.raises(ValueError, match="voxel size"):
        widget.settings_dict()


def test_warm_start_schedule_and_list_settings_round_trip(make_napari_viewer, tmp_path):
    """The engine keys of the recovery work are settable from the widget and valid configs."""
    from l2s_gui.config import Config

    widget = TrainingWidget(make_napari_viewer())
    defaults = Config()
    got = widget.settings_dict()
    assert got["augmentation"]["sigma_init"] == pytest.approx(defaults.augmentation.sigma_init)
    assert got["augmentation"]["inu_c_init"] == defaults.augmentation.inu_c_init
    assert got["training"]["init_from"] == "" and got["training"]["lr_augmentation_schedule"] == "constant"
    model = str(tmp_path / "model.safetensors")
    widget.apply_settings({"augmentation": {"inu_c_init": [0.2, 0.5, 0.8], "noise": "uniform",
                                            "sigma_range": [0.0, 0.3]},
                           "training": {"init_from": model, "init_theta_from": model,
                                        "lr_augmentation_schedule": "cosine", "lr_augmentation_final": 0.2}})
    assert widget.form["augmentation.inu_c_init"].text() == "0.2 0.5 0.8"
    assert widget.form["augmentation.sigma_range"].isEnabled()
    got = widget.settings_dict()
    assert got["augmentation"]["inu_c_init"] == [0.2, 0.5, 0.8]
    assert got["augmentation"]["sigma_range"] == [0.0, 0.3] and got["augmentation"]["noise"] == "uniform"
    assert got["training"]["init_from"] == model == got["training"]["init_theta_from"]
    assert got["training"]["lr_augmentation_schedule"] == "cosine"
    assert got["training"]["lr_augmentation_final"] == pytest.approx(0.2)
    got["training"]["method"] = "synthseg"   # 'uniform' noise learns nothing: a baseline setting
    Config.from_dict(got)
    widget.apply_settings({"augmentation": {"inu_c_init": 0.4}})   # an old config's single value
    assert widget.settings_dict()["augmentation"]["inu_c_init"] == [0.4]
    widget.apply_settings({"augmentation": {"kind": "parametric", "inu": True},
                           "training": {"method": "learn2synth", "lr_inu_scale": 4.0}})
    assert widget.form["training.lr_inu_scale"].isEnabled()
    assert widget.settings_dict()["training"]["lr_inu_scale"] == pytest.approx(4.0)
    widget.apply_settings({"augmentation": {"inu": False}})   # no exponents to learn: the rate is off
    assert not widget.form["training.lr_inu_scale"].isEnabled()
