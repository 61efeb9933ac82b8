"""Model files (l2s_gui/model_io.py): one .safetensors file with weights, config and label table;
round trip, recorded voxel size, refusal of files that are not (or no longer) l2s models, warm starts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from l2s_gui.augment import build_augmentation
from l2s_gui.config import Config
from l2s_gui.errors import InputError
from l2s_gui.labels import LabelTable
from l2s_gui.model_io import (
    build_network,
    export_model,
    load_model,
    load_warm_start,
    read_model_metadata,
    resolve_model_path,
    training_voxel_size,
)

VALUES = [0, 2, 3, 41]


def small(**data) -> Config:
    return Config.from_dict({"data": {"ndim": 2, **data}, "network": {"widths": [4, 8]}})


def exported(tmp_path, cfg=None, name="m.safetensors", seed=0):
    cfg = cfg or small()
    torch.manual_seed(seed)
    table = LabelTable.from_values(VALUES)
    net, aug = build_network(cfg, table.n_classes), build_augmentation(cfg.augmentation, cfg.data.ndim)
    path = export_model(tmp_path / name, net, aug, table, cfg, [16, 16], step=12, theta={"sigma": 0.05})
    return path, net, aug


def test_export_then_load_gives_the_same_model(tmp_path):
    cfg = small(voxel_size=[1.5])
    path, net, aug = exported(tmp_path, cfg)
    model = load_model(path)
    assert model.config == cfg and model.table.values == VALUES and model.step == 12 and model.patch_size == [16, 16]
    assert model.voxel_size == [1.5] and model.ndim == 2 and model.net_multiple == 2 and model.path == path
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.net(x), net.eval()(x))
    assert all(torch.equal(a, b) for a, b in zip(model.augmentation.state_dict().values(), aug.state_dict().values()))
    meta = read_model_metadata(path)
    assert json.loads(path.with_suffix(".json").read_text()) == meta
    assert meta["theta"] == {"sigma": 0.05} and meta["voxel_size_mm"] == [1.5]


def test_the_training_voxel_size_is_the_median_of_the_inputs(tmp_path):
    for i, zooms in enumerate([(1, 1, 2), (1, 1, 3), (1, 1, 3)]):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([*zooms, 1.0])), tmp_path / f"m{i}.nii.gz")
    assert training_voxel_size(small(label_maps=[str(tmp_path)])) == [1.0, 1.0, 3.0]
    assert training_voxel_size(small(label_maps=[str(tmp_path)], voxel_size=[2.0])) == [2.0]
    assert training_voxel_size(small(label_maps=[str(tmp_path / "gone")])) is None


def test_files_that_are_not_l2s_models_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(tmp_path / "text.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InputError, match="not an l2s model"):
        load_model(tmp_path / "plain.safetensors")
    path, _, _ = exported(tmp_path)
    future = json.dumps({**read_model_metadata(path), "format_version": 99})
    save_file({"net.x": torch.zeros(1)}, str(tmp_path / "future.safetensors"), metadata={"l2s": future})
    with pytest.raises(InputError, match="update l2s-gui"):
        load_model(tmp_path / "future.safetensors")


def test_nan_weights_are_refused(tmp_path):
    cfg = small()
    table = LabelTable.from_values(VALUES)
    net = build_network(cfg, table.n_classes)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    path = export_model(tmp_path / "nan.safetensors", net, build_augmentation(cfg.augmentation, 2), table, cfg,
                        [16, 16], step=1)
    with pytest.raises(InputError, match="NaN or Inf"):
        load_model(path)


def test_a_run_folder_stands_for_its_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputError, match="without model.safetensors"):
        resolve_model_path(run)
    path, _, _ = exported(run, name="model.safetensors")
    assert resolve_model_path(run) == path and resolve_model_path(path) == path


def test_warm_start_copies_weights_and_refuses_mismatches(tmp_path):
    path, source, _ = exported(tmp_path, seed=1)
    cfg = small()
    table = LabelTable.from_values(VALUES)
    net = build_network(cfg, table.n_classes)
    load_warm_start(path, table, cfg, net=net)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    with pytest.raises(InputError, match=r"training.init_from: .*label values"):
        load_warm_start(path, LabelTable.from_values([0, 2, 3]), cfg, net=net)
    wider = Config.from_dict({"data": {"ndim": 2}, "network": {"widths": [8, 8]}})
    with pytest.raises(InputError, match=r"network.widths is \[4, 8\]"):
        load_warm_start(path, table, wider, net=build_network(wider, table.n_classes))
    three_d = Config.from_dict({"data": {"ndim": 3}, "network": {"widths": [4, 8]}})
    with pytest.raises(InputError, match="a 2D model, but this run trains in 3D"):
        load_warm_start(path, table, three_d, augmentation=build_augmentation(three_d.augmentation, 3))
