"""TrainingData: seeded split, sample shapes, padding, fixed validation set, reproducibility."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from l2s_gui.config import DataConfig
from l2s_gui.data import TrainingData, split_pairs
from l2s_gui.errors import InputError


def label_volume(shape, seed, values=(2, 3, 17)):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    c = [s // 2 for s in shape]
    r = [max(s // 3, 2) for s in shape]
    lab[tuple(slice(ci - ri, ci + ri) for ci, ri in zip(c, r))] = values[0]
    lab[tuple(slice(ci - ri // 2, ci + ri // 2) for ci, ri in zip(c, r))] = values[1]
    i = tuple(int(rng.integers(ci - ri, ci + ri)) for ci, ri in zip(c, r))
    lab[i] = values[2]
    return lab


def make_dataset(root, n_pairs=5, map_shapes=((20, 24, 18), (22, 24, 16)), pair_shape=(20, 22, 18),
                 affine=None):
    affine = np.eye(4) if affine is None else affine
    (root / "maps").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, shape in enumerate(map_shapes):
        nib.save(nib.Nifti1Image(label_volume(shape, i), affine), str(root / "maps" / f"m{i}.nii.gz"))
    rng = np.random.default_rng(1)
    for i in range(n_pairs):
        lab = label_volume(pair_shape, 100 + i, values=(2, 3, 41))
        img = (lab * 10 + rng.normal(0, 1, lab.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, affine), str(root / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labels" / f"s{i}_seg.nii.gz"))
    return root


def config(root, **kw) -> DataConfig:
    base = dict(label_maps=[str(root / "maps")], real_images=[str(root / "images")],
                real_labels=[str(root / "labels")], val_fraction=0.4)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("d"))


def val_names(td):
    return [p.image_path.name for p in td.val_pairs]


def test_split_reproducible_and_independent_of_listing_order(root):
    a = TrainingData.from_config(config(root), seed=3, need_label_maps=False, need_real=True, pad_multiple=4)
    b = TrainingData.from_config(config(root), seed=3, need_label_maps=False, need_real=True, pad_multiple=4)
    assert val_names(a) == val_names(b) and a.n_val == 2 and a.n_train == 3
    images = sorted((root / "images").iterdir())
    labels = sorted((root / "labels").iterdir())
    rev = config(root, real_images=[str(p) for p in reversed(images)], real_labels=[str(p) for p in reversed(labels)])
    c = TrainingData.from_config(rev, seed=3, need_label_maps=False, need_real=True, pad_multiple=4)
    assert sorted(val_names(c)) == sorted(val_names(a))
    # pairs stay paired: each validation scan comes with its own label map
    for p in c.val_pairs + c.train_pairs:
        assert p.label_path.name == p.image_path.name.replace(".nii.gz", "_seg.nii.gz")
    splits = {tuple(split_pairs([(f"s{i}", f"l{i}") for i in range(5)], 0.4, s)[1]) for s in range(10)}
    assert len(splits) > 1  # the seed matters


def test_split_sizes():
    pairs = [(f"/x/s{i}", f"/x/l{i}") for i in range(10)]
    assert split_pairs(pairs[:1], 0.5, 0) == ([0], [])
    tr, va = split_pairs(pairs[:2], 0.1, 0)
    assert len(tr) == 1 and len(va) == 1
    tr, va = split_pairs(pairs[:3], 0.99, 0)
    assert len(tr) == 1 and len(va) == 2
    tr, va = split_pairs(pairs, 0.0, 0)
    assert len(tr) == 10 and va == []
    tr, va = split_pairs(pairs, 0.25, 0)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))


def test_2d_shapes_padding_and_sampling(root):
    td = TrainingData.from_config(config(root, ndim=2, slice_axis=1), seed=0, need_label_maps=True,
                                  need_real=True, pad_multiple=8)
    # slices along axis 1: (20,18), (22,16), (20,18) -> max (22, 18) -> multiple of 8: (24, 24)
    assert td.spatial_shape == [24, 24]
    assert td.table.values == [0, 2, 3, 17, 41]  # auto: union over label maps and real labels
    g = torch.Generator().manual_seed(0)
    labels = td.sample_label_batch(6, g, "cpu")
    assert labels.shape == (6, 24, 24) and labels.dtype == torch.int64
    assert all(int(lab.ne(0).sum()) > 0 for lab in labels)  # slices with foreground only
    images, real = td.sample_real_batch(3, g, "cpu")
    assert images.shape == (3, 1, 24, 24) and images.dtype == torch.float32 and real.shape == (3, 24, 24)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    # same seed, same samples
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(td.sample_label_batch(4, g1), td.sample_label_batch(4, g2))
    assert torch.equal(td.sample_real_batch(4, g1)[0], td.sample_real_batch(4, g2)[0])


def test_2d_patch_size(root):
    td = TrainingData.from_config(config(root, ndim=2, slice_axis=2, patch_size=[8, 16]), seed=0,
                                  need_label_maps=True, need_real=True, pad_multiple=8)
    g = torch.Generator().manual_seed(0)
    assert td.sample_label_batch(5, g).shape == (5, 8, 16)
    assert td.sample_real_batch(2, g)[0].shape == (2, 1, 8, 16)


def test_3d_whole_volume_and_patches(root):
    td = TrainingData.from_config(config(root, ndim=3), seed=0, need_label_maps=True, need_real=True,
                                  pad_multiple=4)
    assert td.spatial_shape == [24, 24, 20]
    g = torch.Generator().manual_seed(0)
    assert td.sample_label_batch(2, g).shape == (2, 24, 24, 20)
    td = TrainingData.from_config(config(root, ndim=3, patch_size=[8, 8, 8]), seed=0, need_label_maps=True,
                                  need_real=True, pad_multiple=4)
    batch = td.sample_label_batch(8, g)
    assert batch.shape == (8, 8, 8, 8)
    assert int((batch.flatten(1).ne(0).any(1)).sum()) >= 4  # biased towards foreground
    images, labels = td.sample_real_batch(2, g)
    assert images.shape == (2, 1, 8, 8, 8) and labels.shape == (2, 8, 8, 8)


def test_validation_batch_fixed(root):
    td = TrainingData.from_config(config(root, ndim=2), seed=1, need_label_maps=False, need_real=True,
                                  pad_multiple=4)
    a = td.validation_batch("cpu", max_items=5)
    g = torch.Generator().manual_seed(0)
    td.sample_real_batch(4, g)  # sampling in between does not change it
    b = td.validation_batch("cpu", max_items=5)
    assert a[0].shape == (5, 1, *td.spatial_shape) and a[1].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    td2 = TrainingData.from_config(config(root, ndim=2), seed=1, need_label_maps=False, need_real=True,
                                   pad_multiple=4)
    assert torch.equal(td2.validation_batch("cpu", max_items=5)[0], a[0])  # and across loads
    # validation samples come from the validation pairs only
    val_images = [p.image for p in td.val_pairs]
    for img in a[0][:, 0]:
        assert any(torch.isclose(img.sum(), v.select(1, s).sum(), atol=1e-3)
                   for v in val_images for s in range(v.shape[1]))
    td3 = TrainingData.from_config(config(root, ndim=3, patch_size=[8, 8, 8]), seed=1, need_label_maps=False,
                                   need_real=True, pad_multiple=4)
    v1, v2 = td3.validation_batch(max_items=3), td3.validation_batch(max_items=3)
    assert v1[0].shape == (3, 1, 8, 8, 8) and torch.equal(v1[0], v2[0])


def test_no_validation_pairs(root):
    td = TrainingData.from_config(config(root, val_fraction=0.0), seed=0, need_label_maps=False, need_real=True,
                                  pad_multiple=4)
    assert td.n_val == 0 and td.validation_batch("cpu") is None and td.n_train == 5


def test_fixed_table_merges(root):
    td = TrainingData.from_config(config(root, label_table="freesurfer_4class"), seed=0, need_label_maps=True,
                                  need_real=True, pad_multiple=4)
    assert td.n_classes == 5
    g = torch.Generator().manual_seed(0)
    assert set(td.sample_label_batch(8, g).unique().tolist()) <= {0, 1, 2, 3}


def test_merged_structures_keep_their_own_generation_labels(tmp_path):
    """SynthSeg's generation vs segmentation labels: with a merge table, structures merged into one
    class (left/right white matter 2/41) are still separate generation labels with their own random
    intensities, and the generator's label output is the merged classes."""
    from l2s_gui.config import SynthesisConfig
    from l2s_gui.synthesis import build_generator

    (tmp_path / "maps").mkdir()
    nib.save(nib.Nifti1Image(label_volume((16, 16, 16), 0, values=(2, 41, 17)), np.eye(4)),
             str(tmp_path / "maps" / "m.nii.gz"))
    cfg = DataConfig(label_maps=[str(tmp_path / "maps")], label_table="freesurfer_4class", ndim=2,
                     slice_axis=1, batch_size=2)
    td = TrainingData.from_config(cfg, seed=0, need_label_maps=True, need_real=False)
    assert td.n_classes == 5 and td.n_generation_labels == 4           # values 0, 2, 17, 41
    assert td.generation_classes.tolist() == [0, 1, 3, 1]               # 2 and 41 -> white matter
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    gen = td.sample_generation_batch(4, g1)
    assert torch.equal(td.sample_label_batch(4, g2), td.generation_classes[gen])
    flat = SynthesisConfig(rotation=0, scaling=0, shear=0, elastic=0, std_range=[0.0, 0.0], gamma_std=0.0,
                           blur_max=0.0, svf_std=0.0, resolution=False)  # issue 9: SVF and resolution defaults
    synth = build_generator(flat, td.n_generation_labels, 2, td.generation_classes)
    image, classes = synth(gen, torch.Generator().manual_seed(0))
    assert set(classes.unique().tolist()) <= {0, 1, 3} and torch.equal(classes, td.generation_classes[gen])
    for b in range(gen.shape[0]):  # one intensity per generation label: 2 and 41 differ
        wm_left, wm_right = image[b, 0][gen[b] == 1], image[b, 0][gen[b] == 3]
        if wm_left.numel() and wm_right.numel():
            assert wm_left.unique().numel() == 1 and wm_right.unique().numel() == 1
            assert not torch.equal(wm_left.unique(), wm_right.unique())


def test_errors(root, tmp_path):
    bad = config(root, real_labels=[str(p) for p in sorted((root / "labels").iterdir())[:3]])
    with pytest.raises(InputError, match="data.real_images lists 5 scans but data.real_labels lists 3"):
        TrainingData.from_config(bad, seed=0, need_label_maps=False, need_real=True, pad_multiple=4)
    with pytest.raises(InputError, match="data.label_maps"):
        TrainingData.from_config(config(root, label_maps=[]), seed=0, need_label_maps=True, need_real=False)
    other = make_dataset(tmp_path / "other", n_pairs=2, pair_shape=(10, 10, 10))
    mixed = config(root, real_images=[str(root / "images" / "s0.nii.gz")],
                   real_labels=[str(other / "labels" / "s0_seg.nii.gz")])
    with pytest.raises(InputError, match="shapes differ"):
        TrainingData.from_config(mixed, seed=0, need_label_maps=False, need_real=True)
    with pytest.raises(InputError, match="not in the label table"):
        TrainingData.from_config(config(root, label_table=_table_file(tmp_path)), seed=0, need_label_maps=True,
                                 need_real=False)


def _table_file(tmp_path):
    import json
    p = tmp_path / "small.json"
    p.write_text(json.dumps({"labels": [{"value": 0, "name": "bg"}, {"value": 2, "name": "wm"}]}))
    return str(p)


def test_volumes_are_reoriented_to_ras(tmp_path):
    # stored with voxel axes (S, R, A): axis 0 of the file is superior-inferior
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    lab = np.zeros((6, 10, 14), np.int32)  # (S, R, A)
    lab[1:5, 2:8, 3:11] = 2
    (tmp_path / "m").mkdir()
    nib.save(nib.Nifti1Image(lab, affine), str(tmp_path / "m" / "x.nii.gz"))
    cfg = DataConfig(label_maps=[str(tmp_path / "m")], ndim=2, slice_axis=1)  # coronal: (R, S) slices
    td = TrainingData.from_config(cfg, seed=0, need_label_maps=True, need_real=False, pad_multiple=1)
    assert td.spatial_shape == [10, 6]
