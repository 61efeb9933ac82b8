"""Resampling to data.voxel_size (l2s_gui.resample) and its use when loading training data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from l2s_gui.config import Config, DataConfig
from l2s_gui.data import TrainingData
from l2s_gui.errors import ConfigError
from l2s_gui.resample import resample, resampled_affine, target_shape, voxel_sizes


def test_voxel_sizes_and_target_shape():
    affine = np.diag([1.0, 0.5, 3.0, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])  # permuted, flipped
    assert voxel_sizes(affine) == pytest.approx([0.5, 1.0, 3.0])
    assert target_shape((40, 20, 10), [0.5, 1.0, 3.0], [1.0]) == [20, 20, 30]
    assert target_shape((40, 20, 10), [1.0, 1.0, 1.0], [2.0, 1.0, 0.5]) == [20, 20, 20]


def test_resampled_grid_covers_the_same_field_of_view():
    affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, 4], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    shape, new = (10, 8, 6), (10, 8, 12)
    new_affine = resampled_affine(affine, shape, new)
    assert voxel_sizes(new_affine) == pytest.approx([1.0, 1.0, 1.0])
    # the outer faces of the first and last voxels coincide in world space
    lo_old = affine @ np.array([-0.5, -0.5, -0.5, 1])
    lo_new = new_affine @ np.array([-0.5, -0.5, -0.5, 1])
    hi_old = affine @ np.array([s - 0.5 for s in shape] + [1])
    hi_new = new_affine @ np.array([s - 0.5 for s in new] + [1])
    np.testing.assert_allclose(lo_old, lo_new)
    np.testing.assert_allclose(hi_old, hi_new)


def test_labels_are_never_blended_and_images_are_linear():
    labels = np.zeros((6, 6, 6), np.int16)
    labels[:, :, 3:] = 41
    labels[2:4, 2:4, :] = 17
    up = resample(labels, (12, 12, 12), labels=True)
    assert up.dtype == np.int16 and set(np.unique(up)) == {0, 17, 41}
    np.testing.assert_array_equal(resample(up, (6, 6, 6), labels=True), labels)  # back exactly
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32), (4, 4, 8)).copy()
    half = resample(ramp, (4, 4, 4), labels=False)
    np.testing.assert_allclose(half[0, 0], [0.5, 2.5, 4.5, 6.5])  # centres of voxel pairs
    assert resample(ramp, ramp.shape, labels=False) is ramp


def test_training_data_on_a_common_voxel_size(tmp_path):
    """Label maps at 1 x 1 x 2 mm and 1 mm meet on the same 1 mm grid."""
    (tmp_path / "maps").mkdir()
    coarse = np.zeros((16, 16, 8), np.int32)
    coarse[4:12, 4:12, 2:6] = 2
    fine = np.zeros((16, 16, 16), np.int32)
    fine[4:12, 4:12, 4:12] = 3
    nib.save(nib.Nifti1Image(coarse, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "maps" / "a.nii.gz"))
    nib.save(nib.Nifti1Image(fine, np.eye(4)), str(tmp_path / "maps" / "b.nii.gz"))
    cfg = DataConfig(label_maps=[str(tmp_path / "maps")], ndim=3, voxel_size=[1.0])
    td = TrainingData.from_config(cfg, seed=0, need_label_maps=True, need_real=False)
    assert td.spatial_shape == [16, 16, 16]
    native = TrainingData.from_config(DataConfig(label_maps=[str(tmp_path / "maps")], ndim=3), seed=0,
                                      need_label_maps=True, need_real=False)
    assert native.spatial_shape == [16, 16, 16]  # padded to the largest, but map a stays 8 voxels deep
    assert [tuple(m.shape) for m in td._maps.labels] == [(16, 16, 16), (16, 16, 16)]
    assert [tuple(m.shape) for m in native._maps.labels] == [(16, 16, 8), (16, 16, 16)]


@pytest.mark.parametrize("bad", [[0.0], [1.0, 1.0], [-1, 1, 1]])
def test_voxel_size_errors_name_the_key(bad):
    with pytest.raises(ConfigError, match="data.voxel_size"):
        Config.from_dict({"data": {"voxel_size": bad}})
