"""Segmentation of new volumes: geometry equal to the input's, original label values, volumes CSV,
sliding window coverage, cancel, CLI."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from l2s_gui.augment import build_augmentation
from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.errors import DeviceMemoryError, InputError, OutputExistsError
from l2s_gui.intensity import normalize_intensities
from l2s_gui.io import Volume, load_label_map, load_scan
from l2s_gui.labels import LabelTable
from l2s_gui.model_io import build_network, export_model, load_model
from l2s_gui.segment import (
    SegmentationCancelled,
    label_volumes_mm3,
    segment_array,
    segment_files,
    segment_scan,
    segment_volume,
    write_volumes_csv,
)

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
    volumes = segment_scan(model, scan).volumes_mm3  # --vol: soft volumes (posteriors), as SynthSeg's
    assert float(rows[1][1]) == pytest.approx(sum(volumes.values()), abs=0.1)
    assert [float(x) for x in rows[1][2:]] == pytest.approx([volumes[v] for v in VALUES[1:]], abs=0.051)


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


# ------------------------------------------------------------------------------------------ exact stand-in nets
TABLE = LabelTable(values=[0, 2, 3, 41], names=["background", "wm", "gm", "other"], name="test")
CENTERS = [0.0, 1.0, 0.6, 0.3]  # class c is predicted where the normalised intensity is nearest CENTERS[c]


class NearestCenterNet(nn.Module):
    """Voxel-wise stand-in for a UNet: logits = -(x - center_c)^2; checks the input sizes."""

    def __init__(self, multiple: int, ndim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.tensor(CENTERS))
        self.multiple, self.ndim, self.shapes = multiple, ndim, []

    def forward(self, x):
        assert x.ndim == 2 + self.ndim and x.shape[1] == 1
        assert all(s % self.multiple == 0 for s in x.shape[2:]), x.shape
        self.shapes.append(tuple(x.shape))
        return -100 * (x - self.centers.view(1, -1, *([1] * self.ndim))) ** 2


class ConstantNet(NearestCenterNet):
    """Predicts class 1 wherever it is run (shows which voxels the sliding window reaches)."""

    def forward(self, x):
        super().forward(x)
        out = torch.zeros((x.shape[0], len(CENTERS), *x.shape[2:]))
        out[:, 1] = 5.0
        return out


def stand_in(ndim=2, slice_axis=1, patch_size=(), multiple=4, net_cls=NearestCenterNet, voxel_size=()):
    return SimpleNamespace(net=net_cls(multiple, ndim).eval(), table=TABLE, ndim=ndim, slice_axis=slice_axis,
                           patch_size=list(patch_size), net_multiple=multiple, voxel_size=list(voxel_size))


def banded_image(shape=(10, 13, 11), seed=0):
    """Intensities drawn from the centres, so the expected segmentation is known exactly."""
    classes = np.random.default_rng(seed).integers(0, 4, size=shape)
    classes[0] = 0
    classes[-1, -1, -1] = 1  # the brightest voxel: normalisation keeps [0, 1] as is
    return np.asarray(CENTERS, np.float32)[classes], classes


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_slicewise_exact(slice_axis):
    image, classes = banded_image()
    m = stand_in(2, slice_axis)
    progress = []
    out = segment_array(m, image, "cpu", batch_size=3, progress=progress.append)
    assert out.shape == image.shape and np.array_equal(out, classes)
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_2d_skips_empty_slices():
    image, _ = banded_image()
    image[:, 3] = 0
    m = stand_in(2, 1)
    segment_array(m, image, "cpu", batch_size=100)
    assert m.net.shapes[0][0] == image.shape[1] - 1


@pytest.mark.parametrize("shape,patch", [((20, 18, 13), (8, 8, 8)), ((6, 7, 5), (8, 8, 8)), ((9, 9, 9), ())])
def test_3d_window_reaches_every_voxel(shape, patch):
    m = stand_in(3, patch_size=patch, net_cls=ConstantNet)
    out = segment_array(m, np.random.default_rng(0).random(shape).astype(np.float32), "cpu", overlap=0.5)
    assert out.shape == shape and (out == 1).all()
    if patch:
        assert all(s[2:] == tuple(patch) for s in m.net.shapes)


@pytest.mark.parametrize("blend,overlap", [("gaussian", 0.25), ("uniform", 0.5)])
def test_3d_matches_voxelwise_truth(blend, overlap):
    image, classes = banded_image((19, 17, 15))
    out = segment_array(stand_in(3, patch_size=(8, 8, 8)), image, "cpu", overlap=overlap, blend=blend)
    assert np.array_equal(out, classes)


def test_cancel_2d_after_first_batch():
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(SegmentationCancelled):
        segment_array(stand_in(2), banded_image((16, 16, 16))[0], "cpu", batch_size=4, cancelled=cancelled)


def test_out_of_memory_is_a_user_error():
    class Boom(nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    m = stand_in(2)
    m.net = Boom()
    with pytest.raises(DeviceMemoryError, match="out of memory on cpu while segmenting.*smaller batch size"):
        segment_array(m, banded_image()[0], "cpu")


def test_segment_volume_original_values_and_voxel_order():
    image, classes = banded_image((12, 10, 9))
    scan_data = image * 800 + 50  # raw intensities; segment_volume normalises like training
    assert np.allclose(normalize_intensities(scan_data), image, atol=1e-5)
    a = np.radians(30)
    affine = np.eye(4)  # voxel axes far from RAS: permuted, flipped, rotated, anisotropic
    rotation = np.array([[0, -1, 0], [np.cos(a), 0, -np.sin(a)], [np.sin(a), 0, np.cos(a)]])
    affine[:3, :3] = rotation @ np.diag([1.1, 0.8, 2])
    out = segment_volume(stand_in(2, slice_axis=1), Volume(scan_data, affine, None, None), "cpu")
    assert out.shape == scan_data.shape and np.array_equal(out, np.asarray(TABLE.values)[classes])


def test_volumes_csv_contents_and_overwrite(tmp_path):
    labels = np.zeros((4, 5, 6), np.int32)
    labels[0, :2] = 2      # 12 voxels
    labels[1] = 41         # 30 voxels
    vols = label_volumes_mm3(labels, np.diag([1.0, 2.0, 3.0, 1.0]), TABLE)
    assert vols == {2: 72.0, 3: 0.0, 41: 180.0}
    path = write_volumes_csv(tmp_path / "vol.csv", [("sub-01", vols), ("sub-02", {2: 1.0, 3: 2.0, 41: 3.0})], TABLE)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["subject", "total", "wm (2)", "gm (3)", "other (41)"]
    assert rows[1] == ["sub-01", "252.0", "72.0", "0.0", "180.0"] and len(rows) == 3
    with pytest.raises(OutputExistsError, match="use --overwrite"):
        write_volumes_csv(path, [], TABLE)
    write_volumes_csv(path, [], TABLE, overwrite=True)
    assert len(list(csv.reader(path.open()))) == 1


def _scan_file(path, shape=(11, 9, 7), seed=0, affine=None):
    data = np.random.default_rng(seed).normal(100, 30, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 1.5, 1.0]) if affine is None else affine), str(path))
    return path


def test_segment_files_folder_naming(tmp_path):
    model = make_model(tmp_path, 2)
    (tmp_path / "in").mkdir()
    a = _scan_file(tmp_path / "in" / "a.nii.gz", seed=1)
    b = tmp_path / "in" / "b.mgz"
    nib.save(nib.MGHImage(np.random.default_rng(2).normal(100, 30, (8, 12, 6)).astype(np.float32),
                          np.diag([1.0, -1.0, 1.5, 1.0])), str(b))
    progress = []
    written = segment_files(str(model), [str(tmp_path / "in")], str(tmp_path / "segs"), None, "cpu", False,
                            progress=progress.append)
    assert [p.name for p in written] == ["a_seg.nii.gz", "b_seg.nii.gz"] and progress[-1] == pytest.approx(1.0)
    for src, out in zip((a, b), written):
        s, o = load_scan(src), nib.load(str(out))
        assert o.shape == s.data.shape and np.allclose(o.affine, s.affine, atol=1e-4)
    with pytest.raises(InputError, match="need an output folder"):
        segment_files(str(model), [str(a), str(b)], str(tmp_path / "x.nii.gz"), None, "cpu", False)
    (tmp_path / "in2").mkdir()
    c = _scan_file(tmp_path / "in2" / "a.nii.gz")
    with pytest.raises(InputError, match="both would be written"):
        segment_files(str(model), [str(a), str(c)], str(tmp_path / "segs2"), None, "cpu", False)
    assert not (tmp_path / "segs2").exists()  # every output is checked before any work


@pytest.mark.parametrize("ndim", [2, 3])
def test_segment_on_the_training_voxel_size_and_back(ndim):
    """A model trained at 2 mm along the last axis segments a 1 mm scan on a 2 mm grid, and the
    result comes back on the scan's own grid (blocks of 4 voxels: exact both ways)."""
    rng = np.random.default_rng(0)
    classes = np.repeat(rng.integers(0, 4, size=(8, 6, 3)), 4, axis=2)  # (8, 6, 12)
    classes[0] = 0
    classes[-1, -1, -4:] = 1
    image = np.asarray(CENTERS, np.float32)[classes]
    m = stand_in(ndim, slice_axis=1, patch_size=(8, 8, 8)[:ndim] if ndim == 3 else (), voxel_size=(1, 1, 2))
    out = segment_volume(m, Volume(image * 300 + 20, np.eye(4), None, None), "cpu")
    assert out.shape == image.shape and np.array_equal(out, np.asarray(TABLE.values)[classes])
    sizes = {tuple(s[2:]) for s in m.net.shapes}
    assert all(sz[-1] <= 8 for sz in sizes)  # the network saw the 6-voxel (2 mm) axis, padded
    if ndim == 2:
        assert {sz for sz in sizes} == {(8, 8)}  # (8, 6 -> 8 padded) slices along axis 1


def test_exported_model_carries_its_voxel_size(tmp_path):
    cfg = Config.from_dict({"data": {"ndim": 2, "voxel_size": [1.5]}, "network": {"widths": [4, 8]}})
    table = LabelTable.from_values(VALUES)
    net = build_network(cfg, table.n_classes)
    path = export_model(tmp_path / "m.safetensors", net, build_augmentation(cfg.augmentation, 2), table, cfg, [8, 8],
                        step=1)
    model = load_model(path)
    assert model.voxel_size == [1.5]
    path_scan, affine = rotated_scan(tmp_path)
    labels = segment_volume(model, load_scan(path_scan))
    assert labels.shape == load_scan(path_scan).shape


def test_segment_image_of_a_viewer_layer_and_its_volume_table(tmp_path):
    """A 2D or 3D array in voxel order (a napari layer) -> labels in its shape and dtype uint8, the
    hard volumes per label of the table (0 when absent) and the engine's one CSV format."""
    from l2s_gui.segment import label_volumes, segment_image

    image, classes = banded_image((10, 13, 11))
    affine = np.diag([2.0, 1.0, 0.5, 1.0])
    result = segment_image(stand_in(2, slice_axis=1), image, affine, "cpu", source="scan layer", flip=False)
    expected = np.asarray(TABLE.values)[classes]
    assert result.labels.dtype == np.uint8 and np.array_equal(result.labels, expected)
    volumes = label_volumes(result.labels, affine, TABLE)
    assert sorted(volumes) == [2, 3, 41]
    for value, (count, mm3) in volumes.items():
        assert count == int((expected == value).sum()) and mm3 == pytest.approx(count * 1.0)
    flat = segment_image(stand_in(2, slice_axis=2), image[:, :, 4], affine, "cpu", flip=False)
    assert flat.labels.shape == (10, 13) and np.array_equal(flat.labels, expected[:, :, 4])
    with pytest.raises(InputError, match="scan layer: expected a 2D or 3D scan"):
        segment_image(stand_in(2), np.zeros((2, 2, 2, 2)), affine, source="scan layer")
    out = write_volumes_csv(tmp_path / "v.csv", [("scan layer", result.volumes_mm3)], TABLE)
    assert out.read_text().splitlines()[0] == "subject,total,wm (2),gm (3),other (41)"
