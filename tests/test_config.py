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


def _bounded_specs():
    from l2s_gui.config import config_fields

    return [s for s in config_fields() if s.item_type in (int, float) and not s.choices
            and (s.min is not None or s.upper_bound() is not None)]


def _with(spec, item):
    """A value of ``spec``'s type holding ``item`` (a list of the longest allowed length, else of one)."""
    if not spec.is_list:
        return item
    n = max(spec.lengths) if spec.lengths else max(spec.min_length, 1)
    if spec.key == "data.patch_size":
        n = Config().data.ndim
    return [item] * n


def test_every_setting_has_a_spec_with_its_default_and_help():
    import dataclasses

    from l2s_gui.config import config_fields, field_spec

    specs = config_fields()
    keys = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config)
            for f in dataclasses.fields(getattr(Config(), s.name))]
    assert [s.key for s in specs] == keys
    defaults = Config()
    for spec in specs:
        assert spec.help and spec.doc.startswith(spec.help), spec.key
        assert spec.value(defaults) == spec.default, spec.key
        spec.check(spec.default, defaults)  # every default is in its range
    assert field_spec("training.hypergradient").choices == ("exact", "naive", "approx")
    assert field_spec("data.voxel_size").item_type is float and field_spec("data.voxel_size").lengths == (0, 1, 3)
    with pytest.raises(KeyError):
        field_spec("training.nope")


@pytest.mark.parametrize("spec", _bounded_specs(), ids=lambda s: s.key)
def test_validation_rejects_just_outside_each_spec_range_and_accepts_its_ends(spec):
    """The ranges the GUI shows (config_fields) are the ones validation applies."""
    from l2s_gui.config import config_fields

    step = 1 if spec.item_type is int else 1e-3
    cases = []
    if spec.min is not None:
        cases.append((spec.min if spec.min_exclusive else spec.min - step, spec.min + step if spec.min_exclusive
                      else spec.min))
    high = spec.upper_bound()
    if high is not None:
        cases.append((high if spec.max_exclusive else high + step, high - step if spec.max_exclusive else high))
    for bad, good in cases:
        bad, good = spec.item_type(bad), spec.item_type(good)
        with pytest.raises(ConfigError) as info:
            Config.from_dict({spec.section: {spec.name: _with(spec, bad)}})
        assert str(info.value).startswith(spec.key), str(info.value)
        if spec.key != "data.patch_size":  # sizes must also be multiples of 16
            data = {spec.section: {spec.name: _with(spec, good)}}
            for user in config_fields():  # settings bounded by this one: at their lowest
                if user.max_key == spec.key:
                    data.setdefault(user.section, {})[user.name] = _with(user, user.min)
            Config.from_dict(data)


def test_the_inu_exponents_upper_bound_is_inu_c_max():
    from l2s_gui.config import field_spec

    spec = field_spec("augmentation.inu_c_init")
    cfg = Config.from_dict({"augmentation": {"inu_c_max": 0.5, "inu_c_init": [0.5]}})
    assert spec.upper_bound(cfg) == 0.5 and spec.upper_bound() == Config().augmentation.inu_c_max
    assert spec.range_text(cfg) == "in [0, inu_c_max=0.5]"
    with pytest.raises(ConfigError, match=r"augmentation.inu_c_init: each value must be in \[0, inu_c_max=0.5\]"):
        Config.from_dict({"augmentation": {"inu_c_max": 0.5, "inu_c_init": [0.6]}})


def test_list_lengths_come_from_the_spec():
    with pytest.raises(ConfigError, match=r"data.voxel_size: must have 0, 1 or 3 values"):
        Config.from_dict({"data": {"voxel_size": [1.0, 1.0]}})
    with pytest.raises(ConfigError, match=r"network.widths: must have at least 1 value"):
        Config.from_dict({"network": {"widths": []}})


def test_default_yaml_and_readme_table_are_generated_from_the_schema():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "config_docs.py"
    spec = importlib.util.spec_from_file_location("config_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run python scripts/config_docs.py"
    table = module.readme_table()
    from l2s_gui.config import config_fields

    for field in config_fields():
        assert f"| `{field.key}` |" in table
