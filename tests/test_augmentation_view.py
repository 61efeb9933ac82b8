"""A model's learned augmentation applied outside training (l2s_gui.augmentation_view): the scan is
prepared as segmentation prepares it (RAS order, normalisation, the model's voxel size)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from l2s_gui.augment import build_augmentation
from l2s_gui.augmentation_view import augment_scan, components, gallery, mosaic
from l2s_gui.config import AugmentationConfig
from l2s_gui.intensity import normalize_intensities


class Recording(torch.nn.Module):
    """Identity augmentation that records the spatial shapes it is applied to."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def sample(self, x, generator):
        return {}

    def forward(self, x, draw):
        self.seen.append(tuple(x.shape[2:]))
        return x.clone()


def _model(aug, ndim=2, slice_axis=1, voxel_size=()):
    return SimpleNamespace(augmentation=aug, ndim=ndim, slice_axis=slice_axis, voxel_size=list(voxel_size))


def _scan(shape=(20, 24, 16), seed=0):
    return (np.random.default_rng(seed).random(shape) * 300).astype(np.float32)


def test_scan_is_resampled_to_the_models_voxel_size_in_plane_and_back():
    aug = Recording()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    out = augment_scan(_model(aug, 2, slice_axis=1, voxel_size=[2.0]), _scan(), affine)
    # 2D model slicing along axis 1: slices of 20x16 voxels at 1 mm become 10x8 at 2 mm; the slice
    # axis keeps the scan's own spacing (24 slices)
    assert set(aug.seen) == {(10, 8)} and sum(1 for _ in aug.seen) == 2  # 24 slices in batches of 16
    assert out.shape == (20, 24, 16) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_without_a_training_voxel_size_the_scan_grid_is_used_and_orientation_restored():
    aug = Recording()
    scan = _scan()
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: the engine works in RAS order
    out = augment_scan(_model(aug, 2, slice_axis=1), scan, flipped)
    assert set(aug.seen) == {(20, 16)}
    np.testing.assert_allclose(out, normalize_intensities(scan), atol=1e-6)  # identity, back in place


def test_3d_model_sees_the_whole_resampled_volume():
    aug = Recording()
    out = augment_scan(_model(aug, 3, voxel_size=[2.0, 2.0, 2.0]), _scan(), np.eye(4))
    assert aug.seen == [(10, 12, 8)] and out.shape == (20, 24, 16)


def test_real_augmentation_parts_gallery_and_cancel():
    cfg = AugmentationConfig()
    aug = build_augmentation(cfg, 2)
    model = _model(aug, 2, slice_axis=1)
    image = normalize_intensities(_scan((24, 20, 1))[..., 0])
    parts = components(model, image, seed=3, normalized=True)
    assert {"input", "augmented", "inu_field"} <= set(parts) and parts["augmented"].shape == image.shape
    draws = gallery(model, image, n=3, seed=1, normalized=True)
    assert len(draws) == 3 and not np.array_equal(draws[0], draws[1])
    with pytest.raises(ValueError, match="a 2D model needs a 2D image"):
        components(model, _scan())
    assert augment_scan(model, _scan(), np.eye(4), cancelled=lambda: True) is None
    assert mosaic(draws, columns=2, gap=1).shape == (2 * 24 + 1, 2 * 20 + 1)
