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


def test_shipped_default_config_equals_the_dataclass_defaults():
    from importlib.resources import files

    shipped = Config.load(files("l2s_gui.resources") / "configs" / "default.yaml").to_dict()
    defaults = Config().to_dict()
    for key in ("label_maps", "real_images", "real_labels"):   # example paths in the shipped file
        shipped["data"].pop(key)
        defaults["data"].pop(key)
    assert shipped == defaults


def test_no_default_starts_theta_at_the_recovery_preset():
    cfg = Config()
    assert abs(cfg.augmentation.sigma_init - cfg.recovery.sigma) >= 0.04
    assert all(abs(c - 0.5) >= 0.04 for c in cfg.augmentation.inu_c_init)   # the paper's c preset


def test_inu_c_init_takes_one_value_or_one_per_field():
    assert Config.from_dict({"augmentation": {"inu_c_init": 0.3}}).augmentation.inu_c_init == [0.3]
    cfg = Config.from_dict({"augmentation": {"inu_c_init": [0.1, 0.2, 0.3], "inu_nodes": [2, 4, 8]}})
    assert cfg.augmentation.inu_c_init == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="augmentation.inu_c_init"):
        Config.from_dict({"augmentation": {"inu_c_init": [0.1, 0.2], "inu_nodes": [2, 4, 8]}})
    with pytest.raises(ConfigError, match="augmentation.inu_c_init"):
        Config.from_dict({"augmentation": {"inu_c_init": [3.0]}})


def test_new_training_and_noise_keys_are_validated():
    with pytest.raises(ConfigError, match="training.lr_augmentation_final"):
        Config.from_dict({"training": {"lr_augmentation_final": 0}})
    with pytest.raises(ConfigError, match="training.lr_augmentation_schedule"):
        Config.from_dict({"training": {"lr_augmentation_schedule": "linear"}})
    with pytest.raises(ConfigError, match="augmentation.sigma_range"):
        Config.from_dict({"augmentation": {"sigma_range": [0.2, 0.1]}})
    with pytest.raises(ConfigError, match="augmentation"):   # nothing to learn
        Config.from_dict({"augmentation": {"noise": "uniform", "inu": False}})
