"""Segmentation of new volumes: geometry equal to the input's, original label values, volumes CSV,
sliding window coverage, cancel, CLI."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.io import load_label_map, load_scan
from l2s_gui.labels import LabelTable
from l2s_gui.model_io import LoadedModel, build_network, export_model, load_model
from l2s_gui.augment import build_augmentation
from l2s_gui.segment import SegmentationCancelled, label_volumes_mm3, segment_array, segment_volume

VALUES = [0, 2, 3, 41]


def make_model(tmp_path, ndim, patch=(16, 16, 16)):
    cfg = Config.from_dict({"data": {"ndim": ndim, "slice_axis": 2}, "network": {"widths": [4, 8]}})
    table = LabelTable.from_values(VALUES)
    torch.manual_seed(0)
    net = build_network(cfg, table.n_classes)
    with torch.no_grad():  # a bias towards class 1 and 3 so that the output is not all background
        net.head.bias.copy_(torch.tensor([0.0, 0.5, -5.0, 0.4]))
    path = export_model(tmp_path / f"model{ndim}.safetensors", net, build_augmentation(cfg.augmentation, ndim),
                        table, cfg, list(patch[:ndim]), step=3)
    return path


def rotated_scan(tmp_path, shape=(20, 18, 11)):
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.array([[0, -s, c, 10.0], [0, c, s, -3.0], [-1.3, 0, 0, 5.5], [0, 0, 0, 1]])
    data = np.random.default_rng(1).random(shape).astype(np.float32) * 100
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, affine


@pytest.mark.parametrize("ndim", [2, 3])
def test_output_geometry_and_label_values(tmp_path, ndim):
    model = load_model(make_model(tmp_path, ndim))
    path, affine = rotated_scan(tmp_path)
    scan = load_scan(path)
    labels = segment_volume(model, scan)
    assert labels.shape == scan.shape
    assert set(np.unique(labels)) <= set(VALUES) and labels.any()
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(tmp_path / f"model{ndim}.safetensors"), str(path), "-o", str(out),
                 "--vol", str(tmp_path / "vol.csv"), "--device", "cpu"]) == 0
    written = load_label_map(out)
    np.testing.assert_array_equal(written.data, labels)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert written.header.get_zooms()[:3] == pytest.approx(scan.header.get_zooms()[:3], abs=1e-5)
    rows = list(csv.reader(open(tmp_path / "vol.csv")))
    assert rows[0][0] == "subject" and len(rows) == 2 and len(rows[0]) == 2 + len(VALUES) - 1
    volumes = label_volumes_mm3(labels, affine, model.table)
    assert float(rows[1][1]) == pytest.approx(sum(volumes.values()), abs=0.1)


def test_segment_refuses_to_overwrite(tmp_path, capsys):
    model = make_model(tmp_path, 2)
    path, _ = rotated_scan(tmp_path)
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"keep me")
    assert main(["segment", str(model), str(path), "-o", str(out)]) == 1
    assert "use --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["segment", str(model), str(path), "-o", str(path), "--overwrite"]) == 1
    assert "never overwritten" in capsys.readouterr().err


def test_volumes_in_mm3():
    table = LabelTable.from_values(VALUES)
    labels = np.zeros((4, 4, 4), np.int32)
    labels[:2] = 2
    labels[3, 0, 0] = 41
    vols = label_volumes_mm3(labels, np.diag([2.0, 1.0, 0.5, 1.0]), table)
    assert vols == {2: 32.0, 3: 0.0, 41: 1.0}


def test_sliding_window_covers_the_volume_and_cancel(tmp_path):
    model = load_model(make_model(tmp_path, 3, patch=(8, 8, 8)))
    image = np.random.default_rng(0).random((21, 13, 9)).astype(np.float32)
    seen = []
    out = segment_array(model, image, progress=seen.append)
    assert out.shape == image.shape and seen[-1] == 1.0
    with pytest.raises(SegmentationCancelled):
        segment_array(model, image, cancelled=lambda: True)


def test_model_file_errors(tmp_path):
    from l2s_gui.errors import InputError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.safetensors: not a readable model file"):
        load_model(bad)
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "none.safetensors")
