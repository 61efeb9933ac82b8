"""Inference on posteriors: resampling back to the scan's grid (linear), the left/right flipped pass,
the largest-connected-component clean-up, soft volumes, any scan voxel size, the recorded training
voxel size."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2s_gui.augment import build_augmentation
from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.io import Volume
from l2s_gui.labels import LabelTable
from l2s_gui.model_io import build_network, export_model, load_model, read_model_metadata, training_voxel_size
from l2s_gui.nets import UNet
from l2s_gui.resample import resample
from l2s_gui.segment import (
    flip_plan,
    keep_largest_components,
    posteriors_to_grid,
    predict_posteriors,
    segment_files,
    segment_scan,
)

CENTERS = [0.0, 1.0, 0.6, 0.3]
TABLE = LabelTable(values=[0, 2, 3, 41], names=["background", "wm", "gm", "other"], name="test")  # no valid flip
LR_TABLE = LabelTable.from_values([0, 2, 24, 41])  # FreeSurfer ids: 2 <-> 41 swap, 24 (CSF) maps to itself


class NearestCenterNet(nn.Module):
    """Voxel-wise stand-in for a UNet: logits = -scale (x - center_c)^2."""

    def __init__(self, ndim: int, scale: float = 100.0):
        super().__init__()
        self.centers = nn.Parameter(torch.tensor(CENTERS))
        self.ndim, self.scale, self.calls = ndim, scale, 0

    def forward(self, x):
        self.calls += 1
        return -self.scale * (x - self.centers.view(1, -1, *([1] * self.ndim))) ** 2


class ConstantSoftNet(nn.Module):
    """The same soft posteriors everywhere: softmax(log p) = p."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor(probs, dtype=torch.float32)))

    def forward(self, x):
        return self.logits.view(1, -1, *([1] * (x.ndim - 2))).expand(x.shape[0], -1, *x.shape[2:])


def stand_in(net, ndim=3, table=TABLE, slice_axis=1, patch_size=(), voxel_size=(), multiple=1):
    return SimpleNamespace(net=net.eval(), table=table, ndim=ndim, slice_axis=slice_axis, patch_size=list(patch_size),
                           net_multiple=multiple, voxel_size=list(voxel_size))


def classes_image(classes):
    return np.asarray(CENTERS, np.float32)[classes]


# ------------------------------------------------------------------------------------------ resampling
@pytest.mark.parametrize("ndim,scan_sizes,model_size", [
    (3, (1.0, 1.0, 3.0), [1]),        # thick slices: upsampled to the model's 1 mm and back
    (3, (1.0, 1.0, 1.0), [1, 1, 2]),  # a 1 mm scan, a model trained at 2 mm along the last axis
    (2, (1.0, 1.0, 3.0), [1]),        # 2D (coronal) model: thick axial slices are in-plane here
])
def test_block_image_round_trip_is_exact(ndim, scan_sizes, model_size):
    """A block image goes to the model's grid and its posteriors come back (linear) exactly."""
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(9, 7, 6))
    if scan_sizes[2] == 1.0:  # blocks of 2 voxels along the axis the model sees at 2 mm
        classes = np.repeat(rng.integers(0, 4, size=(9, 7, 3)), 2, axis=2)
    classes[0] = 0
    classes[-1, -1, -2:] = 1  # the brightest block: normalisation keeps [0, 1]
    affine = np.diag([*scan_sizes, 1.0])
    m = stand_in(NearestCenterNet(ndim), ndim=ndim, voxel_size=model_size)
    result = segment_scan(m, Volume(classes_image(classes) * 500 + 20, affine, None, None), flip=False)
    assert np.array_equal(result.labels, np.asarray(TABLE.values)[classes])
    assert m.net.calls > 0


def test_thin_structures_kept_better_than_nearest_neighbour():
    """A 2-voxel oblique sheet seen on a coarser grid (partial-volume posteriors): linear posteriors
    resampled back and argmaxed recover it far better than nearest-neighbour labels."""
    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    fine, coarse = (40, 40, 40), (25, 25, 25)
    grid = np.meshgrid(*[np.arange(s) + 0.5 for s in fine], indexing="ij")
    normal = np.array([0.8, 0.5, 0.33]) / np.linalg.norm([0.8, 0.5, 0.33])
    dist = sum(c * k for c, k in zip(grid, normal))
    truth = np.zeros(fine, np.int64)
    truth[dist > 25] = 2
    truth[np.abs(dist - 17) < 1.0] = 1
    onehot = F.one_hot(torch.from_numpy(truth), 3).permute(3, 0, 1, 2).float()
    post = F.adaptive_avg_pool3d(onehot[None], coarse)[0]  # what a perfect net sees at 1.6 mm
    ours, soft = posteriors_to_grid(post, fine, 1.0)
    nearest = resample(post.argmax(0).numpy(), fine, True)
    assert dice(ours == 1, truth == 1) > dice(nearest == 1, truth == 1) + 0.05
    assert (ours == truth).mean() > (nearest == truth).mean()
    assert soft.sum() == pytest.approx(truth.size, rel=1e-5)  # posteriors still sum to 1 per voxel


def test_resampling_in_class_chunks_matches_all_at_once(monkeypatch):
    import l2s_gui.segment as segment

    post = torch.softmax(torch.randn(7, 6, 5, 4, generator=torch.Generator().manual_seed(0)) * 3, 0)
    whole = posteriors_to_grid(post, (11, 9, 8), 2.0)
    monkeypatch.setattr(segment, "CHUNK_BYTES", 4 * 11 * 9 * 8 * 2)  # two classes at a time
    chunked = posteriors_to_grid(post, (11, 9, 8), 2.0)
    assert np.array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1], rtol=1e-6)


# ------------------------------------------------------------------------------------------ soft volumes
@pytest.mark.parametrize("voxel_size", [(), [2.0]])
def test_soft_volumes_sum_the_posteriors(voxel_size):
    probs = [0.1, 0.5, 0.3, 0.1]
    m = stand_in(ConstantSoftNet(probs), ndim=3, voxel_size=voxel_size)
    affine = np.diag([1.0, 1.5, 2.0, 1.0])
    data = np.random.default_rng(0).random((10, 8, 6)).astype(np.float32)
    result = segment_scan(m, Volume(data, affine, None, None), flip=False)
    n_mm3 = data.size * 3.0
    assert result.volumes_mm3 == pytest.approx({2: 0.5 * n_mm3, 3: 0.3 * n_mm3, 41: 0.1 * n_mm3}, rel=1e-5)
    assert (result.labels == 2).all()


# ------------------------------------------------------------------------------------------ flipped pass
class Asymmetric2D(nn.Module):
    """A tiny random UNet plus a left-right ramp: not mirror-equivariant."""

    def __init__(self, ndim, n_classes):
        super().__init__()
        torch.manual_seed(0)
        self.net = UNet(ndim, 1, n_classes, widths=[4, 8])

    def forward(self, x):
        ramp = torch.linspace(-2, 2, x.shape[2]).view(1, 1, -1, *([1] * (x.ndim - 3)))
        return self.net(x) + ramp * torch.tensor([0.0, 1.0, 0.0, -1.0]).view(1, -1, *([1] * (x.ndim - 2)))


@pytest.mark.parametrize("ndim,slice_axis,patch", [(2, 1, ()), (2, 2, ()), (3, 1, (8, 8, 8)), (3, 1, ())])
def test_flip_averaging_is_symmetric_on_a_symmetric_input(ndim, slice_axis, patch):
    """On a left/right symmetric image, the averaged posteriors are mirror images of themselves with
    the left/right classes swapped (2 <-> 41, CSF and background to themselves)."""
    x = np.random.default_rng(0).random((12, 8, 16)).astype(np.float32)
    x = (x + x[::-1]) / 2
    m = stand_in(Asymmetric2D(ndim, 4), ndim=ndim, table=LR_TABLE, slice_axis=slice_axis, patch_size=patch,
                 multiple=2)
    perm, note = flip_plan(m)
    assert perm == [0, 3, 2, 1] and note == ""
    post = predict_posteriors(m, x, flip_classes=perm)
    torch.testing.assert_close(post, post.flip(1)[perm], atol=1e-6, rtol=1e-5)
    single = predict_posteriors(m, x)
    assert (single - single.flip(1)[perm]).abs().max() > 1e-2  # the net alone is not symmetric
    torch.testing.assert_close(post.sum(0), torch.ones_like(post[0]))


def test_no_flip_without_lr_pairs_or_on_sagittal_slices():
    perm, note = flip_plan(stand_in(NearestCenterNet(3)))  # values 2, 3, 41: 3 has no right side
    assert perm is None and "left/right" in note and "'test'" in note
    perm, note = flip_plan(stand_in(NearestCenterNet(2), ndim=2, table=LR_TABLE, slice_axis=0))
    assert perm is None and "sagittal" in note
    net = NearestCenterNet(3)
    m = stand_in(net)
    result = segment_scan(m, Volume(np.random.default_rng(0).random((6, 5, 4)).astype(np.float32), np.eye(4),
                                    None, None))
    assert not result.flipped and len(result.notes) == 1 and net.calls == 1


def test_note_said_once_for_many_inputs(tmp_path, capsys):
    cfg = Config.from_dict({"data": {"ndim": 2, "slice_axis": 1}, "network": {"widths": [4, 8]}})
    table = LabelTable.from_values([0, 2, 3, 41])
    net = build_network(cfg, table.n_classes)
    model = export_model(tmp_path / "m.safetensors", net, build_augmentation(cfg.augmentation, 2), table, cfg,
                         [8, 8], step=1)
    (tmp_path / "in").mkdir()
    for i in range(2):
        data = np.random.default_rng(i).normal(100, 30, (8, 9, 7)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "in" / f"s{i}.nii.gz"))
    notes = []
    segment_files(str(model), [str(tmp_path / "in")], str(tmp_path / "out"), None, "cpu", log=notes.append)
    assert len(notes) == 1 and "flipped pass" in notes[0]
    assert main(["segment", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--device", "cpu"]) == 0
    assert capsys.readouterr().err.count("l2s: note:") == 1
    assert main(["segment", str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out3"), "--device", "cpu",
                 "--no-flip", "--clean", "--vol", str(tmp_path / "v.csv")]) == 0
    assert "note" not in capsys.readouterr().err
    rows = list(csv.reader(open(tmp_path / "v.csv")))
    assert len(rows) == 3 and rows[0][:2] == ["subject", "total"]


def test_flipped_pass_runs_twice_and_is_exact_for_a_voxelwise_net():
    """A voxel-wise net is mirror-equivariant: the flipped pass changes nothing but costs a pass."""
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(8, 6, 5))
    classes[0] = 0
    classes[-1, -1, -1] = 1
    table = LabelTable(values=[0, 2, 3, 41], names=["bg", "a", "b", "c"], lr_pairs=[])  # hemisphere-free
    net = NearestCenterNet(3)
    result = segment_scan(stand_in(net, table=table), Volume(classes_image(classes), np.eye(4), None, None))
    assert result.flipped and net.calls == 2 and result.notes == []
    assert np.array_equal(result.labels, np.asarray(table.values)[classes])


# ------------------------------------------------------------------------------------------ clean-up
def test_largest_component_clean_up_goes_to_the_next_most_probable_class():
    classes = np.zeros((12, 12, 12), np.int64)
    classes[2:7, 2:7, 2:7] = 1       # the structure
    classes[9:11, 9:11, 9:11] = 1    # a stray island of it
    classes[2:7, 8:11, 2:7] = 2      # another structure, one piece
    image = classes_image(classes)
    image[11, 11, 11] = 1.0
    m = stand_in(NearestCenterNet(3, scale=10.0))
    post = predict_posteriors(m, image)
    before = post.argmax(0).numpy()
    assert np.array_equal(before[:11, :11, :11], classes[:11, :11, :11])
    with torch.inference_mode():
        moved = keep_largest_components(post)
    after = post.argmax(0).numpy()
    assert moved == 8 + 1  # the 2x2x2 island and the lone corner voxel (class 1, not touching the big block)
    assert (after[9:11, 9:11, 9:11] == 2).all()  # 1.0 -> next nearest centre 0.6 (class 2)
    assert np.array_equal(after[:9, :9, :9], classes[:9, :9, :9])
    torch.testing.assert_close(post.sum(0), torch.ones_like(post[0]))
    result = segment_scan(m, Volume(image * 100, np.eye(4), None, None), flip=False, clean=True)
    assert result.cleaned_voxels == 9 and (result.labels[9:11, 9:11, 9:11] == 3).all()


# ------------------------------------------------------------------------------------------ training voxel size
def test_every_model_records_its_training_voxel_size(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    affine = np.array([[0, 0, 1.5, 0], [-0.8, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1]])  # voxel axes are not RAS
    for i in range(2):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), affine), str(maps / f"m{i}.nii.gz"))
    cfg = Config.from_dict({"data": {"ndim": 2, "label_maps": [str(maps)]}, "network": {"widths": [4, 8]}})
    assert training_voxel_size(cfg) == pytest.approx([1.5, 0.8, 1.2])  # RAS order: x from voxel axis 2, ...
    table = LabelTable.from_values([0, 2, 41])
    net = build_network(cfg, table.n_classes)
    aug = build_augmentation(cfg.augmentation, 2)
    path = export_model(tmp_path / "a.safetensors", net, aug, table, cfg, [8, 8], step=1)
    assert read_model_metadata(path)["voxel_size_mm"] == pytest.approx([1.5, 0.8, 1.2])
    assert load_model(path).voxel_size == pytest.approx([1.5, 0.8, 1.2])
    # an explicit voxel size (from the trainer's data), and data.voxel_size first of all
    path = export_model(tmp_path / "b.safetensors", net, aug, table, cfg, [8, 8], step=1, voxel_size=[0.9])
    assert load_model(path).voxel_size == [0.9, 0.9, 0.9]
    cfg2 = Config.from_dict({"data": {"ndim": 2, "voxel_size": [2.0], "label_maps": [str(maps)]},
                             "network": {"widths": [4, 8]}})
    path = export_model(tmp_path / "c.safetensors", net, aug, table, cfg2, [8, 8], step=1, voxel_size=[0.9])
    assert load_model(path).voxel_size == [2.0]
    # inputs that moved: nothing recorded, and segmentation stays on the scan's grid
    cfg3 = Config.from_dict({"data": {"ndim": 2, "label_maps": [str(tmp_path / "gone")]},
                             "network": {"widths": [4, 8]}})
    path = export_model(tmp_path / "d.safetensors", net, aug, table, cfg3, [8, 8], step=1)
    assert "voxel_size_mm" not in read_model_metadata(path) and load_model(path).voxel_size == []


def test_older_models_without_voxel_size_keep_working(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = Config.from_dict({"data": {"ndim": 2, "voxel_size": [1.5]}, "network": {"widths": [4, 8]}})
    table = LabelTable.from_values([0, 2, 41])
    path = export_model(tmp_path / "m.safetensors", build_network(cfg, 3), build_augmentation(cfg.augmentation, 2),
                        table, cfg, [8, 8], step=1)
    meta = read_model_metadata(path)
    meta.pop("voxel_size_mm")
    save_file(load_file(str(path)), str(path), metadata={"l2s": json.dumps(meta)})
    assert load_model(path).voxel_size == [1.5]


@pytest.mark.parametrize("ndim", [2, 3])
def test_many_classes_keep_float16_posteriors(monkeypatch, ndim):
    """Above the memory budget the posteriors are kept in float16; the result is the same."""
    import l2s_gui.segment as segment

    rng = np.random.default_rng(1)
    classes = np.repeat(rng.integers(0, 4, size=(9, 7, 3)), 2, axis=2)
    classes[0] = 0
    classes[-1, -1, -2:] = 1
    scan = Volume(classes_image(classes) * 500 + 20, np.eye(4), None, None)
    table = LabelTable(values=[0, 2, 3, 41], names=["bg", "a", "b", "c"], lr_pairs=[])
    m = stand_in(NearestCenterNet(ndim), ndim=ndim, table=table, voxel_size=[1, 1, 2],
                 patch_size=(8, 8, 8) if ndim == 3 else ())
    full = segment_scan(m, scan)
    monkeypatch.setattr(segment, "POSTERIOR_BUDGET", 0)
    half = segment_scan(m, scan)
    assert half.flipped and np.array_equal(half.labels, full.labels)
    assert np.array_equal(full.labels, np.asarray(table.values)[classes])
    assert half.volumes_mm3 == pytest.approx(full.volumes_mm3, rel=1e-2)
