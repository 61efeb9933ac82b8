"""Config loading and validation: every bad value is reported with its dotted key."""

import json

import pytest

from l2s_gui.config import Config, apply_overrides, read_config_file
from l2s_gui.errors import ConfigError


@pytest.mark.parametrize("data, key", [
    ({"training": {"lr_segmentation": -1}}, "training.lr_segmentation"),
    ({"training": {"steps": "many"}}, "training.steps"),
    ({"training": {"inner_optimizer": "rmsprop"}}, "training.inner_optimizer"),
    ({"training": {"device": "tpu"}}, "training.device"),
    ({"data": {"ndim": 4}}, "data.ndim"),
    ({"data": {"patch_size": [30, 32]}}, "data.patch_size"),
    ({"data": {"ndim": 3, "patch_size": [32, 32]}}, "data.patch_size"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
    ({"augmentation": {"sigma_init": -0.1}}, "augmentation.sigma_init"),
    ({"augmentation": {"inu_nodes": [1]}}, "augmentation.inu_nodes"),
    ({"network": {"widths": []}}, "network.widths"),
    ({"network": {"wdths": [8]}}, "network.wdths"),
    ({"synthesis": {"std_range": [0.2, 0.1]}}, "synthesis.std_range"),
    ({"recovery": {"sigma_range": [0.2]}}, "recovery.sigma_range"),
    ({"training": "fast"}, "training"),
])
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    assert str(info.value).startswith(key)


def test_defaults_round_trip_through_yaml_and_json(tmp_path):
    cfg = Config.from_dict({"training": {"steps": 7}, "data": {"label_maps": "maps"}})
    assert cfg.data.label_maps == ["maps"]
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == cfg
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert Config.load(tmp_path / "c.json") == cfg


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_config_file(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_config_file(listed)


def test_overrides():
    data = apply_overrides({}, ["training.steps=12", "data.patch_size=[32, 32]", "training.device=cpu"])
    cfg = Config.from_dict(data)
    assert cfg.training.steps == 12 and cfg.data.patch_size == [32, 32] and cfg.training.device == "cpu"
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["steps"])


def test_shipped_default_config_is_valid():
    from importlib.resources import files

    Config.load(files("l2s_gui.resources") / "configs" / "default.yaml")
