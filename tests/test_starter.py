"""The shipped starter model: what it is, that it segments the MNI152 sample, and that the CLI and warm
start use it by name (``l2s segment SCAN -o OUT`` without a model, ``training.init_from: starter``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import l2s_gui.starter as starter
from l2s_gui.augment import build_augmentation
from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.errors import InputError
from l2s_gui.io import Volume, load_label_map
from l2s_gui.labels import LabelTable, load_label_table
from l2s_gui.model_io import build_network, export_model, load_model, resolve_model_path
from l2s_gui.sample_data import CSF, GM, WM, make_sample_arrays
from l2s_gui.segment import segment_scan
from l2s_gui.trainer import Trainer


def tiny_model(tmp_path, lt=None):
    lt = lt or load_label_table("brain_4class")
    cfg = Config.from_dict({"data": {"ndim": 2}, "network": {"widths": [4, 8]}})
    torch.manual_seed(0)
    net = build_network(cfg, lt.n_classes)
    return export_model(tmp_path / "tiny.safetensors", net, build_augmentation(cfg.augmentation, 2), lt, cfg, [16, 16],
                        step=1)


def scan_file(tmp_path):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((12, 10, 8)).astype(np.float32), np.eye(4)), path)
    return path


def test_segment_without_a_model_uses_the_starter(tmp_path, monkeypatch, capsys):
    model = tiny_model(tmp_path)
    monkeypatch.setattr(starter, "starter_model_path", lambda: model)
    scan = scan_file(tmp_path)
    assert main(["segment", str(scan), "-o", str(tmp_path / "seg.nii.gz"), "--device", "cpu"]) == 0
    assert "starter model" in capsys.readouterr().err
    assert load_label_map(tmp_path / "seg.nii.gz").shape == (12, 10, 8)
    # --model starter and the older positional form name the same model
    assert main(["segment", "-m", "starter", str(scan), "-o", str(tmp_path / "seg2.nii.gz")]) == 0
    assert main(["segment", str(model), str(scan), "-o", str(tmp_path / "seg3.nii.gz")]) == 0
    for name in ("seg2", "seg3"):
        np.testing.assert_array_equal(load_label_map(tmp_path / f"{name}.nii.gz").data,
                                      load_label_map(tmp_path / "seg.nii.gz").data)


def test_a_missing_starter_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(starter, "starter_model_path", lambda: None)
    assert main(["segment", str(scan_file(tmp_path)), "-o", str(tmp_path / "seg.nii.gz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l2s: error: the starter model") and "Traceback" not in err[0]
    with pytest.raises(InputError, match="starter model"):
        resolve_model_path("starter")


def test_init_from_starter_starts_the_network(dataset, tmp_path, monkeypatch):
    model = tiny_model(tmp_path, LabelTable.from_values([0, 2, 3, 4, 17]))  # the dataset's label values
    cfg = Config.from_dict({"data": {"label_maps": [str(dataset / "maps")], "ndim": 2, "batch_size": 2,
                                     "label_table": "auto"},
                            "network": {"widths": [4, 8]}, "training": {"method": "synthseg", "steps": 1,
                                                                        "init_from": "starter"}})
    monkeypatch.setattr(starter, "starter_model_path", lambda: model)
    trainer = Trainer(cfg)
    for k, v in load_model(model).net.state_dict().items():
        assert torch.equal(trainer.net.state_dict()[k], v), k


def test_the_shipped_starter_model_segments_the_sample():
    path = starter.starter_model_path()
    assert path is not None, "resources/models/ must hold the starter model (scripts/train_starter_model.py)"
    assert path.stat().st_size < 10e6
    model = load_model(path)
    assert model.ndim == 2 and model.table.name == "brain_4class" and model.voxel_size == [2.0]
    assert model.table.names[1:] == ["white matter", "cortical grey matter", "subcortical grey matter",
                                     "ventricles/CSF"]
    t1, labels, affine, _ = make_sample_arrays(resolution=2)
    pred = segment_scan(model, Volume(t1, affine), "cpu").labels
    tissue = np.array([0, WM, GM, GM, CSF])[pred]
    dice = [2 * ((tissue == v) & (labels == v)).sum() / ((tissue == v).sum() + (labels == v).sum())
            for v in (WM, GM, CSF)]
    assert np.mean(dice) > STARTER_MIN_SAMPLE_DICE, dice


# mean tissue Dice floor on the 2 mm sample: fails for random or barely trained weights
STARTER_MIN_SAMPLE_DICE = 0.45  # measured 0.508; a 40-step network scores 0.35
