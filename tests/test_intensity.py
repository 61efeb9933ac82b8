"""Intensity normalisation (l2s_gui/intensity.py): robust min-max at the 0.5th / 99.5th percentiles,
the same for numpy arrays and torch tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2s_gui.intensity import HIGH_PERCENTILE, LOW_PERCENTILE, normalize_intensities


def test_the_percentiles_map_to_0_and_1_and_the_tails_are_clipped():
    x = np.random.default_rng(0).normal(100, 20, (30, 40, 5)).astype(np.float32)
    out = normalize_intensities(x)
    lo, hi = np.percentile(x, [LOW_PERCENTILE, HIGH_PERCENTILE])
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() == 0 and out.max() == 1
    inside = (x > lo) & (x < hi)
    np.testing.assert_allclose(out[inside], (x[inside] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert np.mean(out == 0) == pytest.approx(0.005, abs=0.002) and np.mean(out == 1) == pytest.approx(0.005, abs=0.002)


@pytest.mark.parametrize("shape", [(7,), (13, 11), (9, 8, 7), (2, 1)])
def test_numpy_and_torch_agree(shape):
    x = np.random.default_rng(1).gamma(2.0, 3.0, shape).astype(np.float32)
    a = normalize_intensities(x)
    b = normalize_intensities(torch.from_numpy(x))
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float32 and tuple(b.shape) == shape
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


def test_order_is_kept_and_other_percentiles_can_be_asked():
    x = np.linspace(-5, 5, 1001, dtype=np.float32)
    out = normalize_intensities(x, low=10, high=90)
    assert np.all(np.diff(out) >= 0)
    assert out[100] == pytest.approx(0.0, abs=1e-6) and out[900] == pytest.approx(1.0, abs=1e-6)
    assert out[500] == pytest.approx(0.5, abs=1e-6)


def test_degenerate_images():
    constant = np.full((4, 4), 3.0, np.float32)
    assert np.array_equal(normalize_intensities(constant), np.zeros((4, 4), np.float32))
    assert torch.equal(normalize_intensities(torch.full((4, 4), 3.0)), torch.zeros(4, 4))
    spike = np.zeros(1000, np.float32)
    spike[0] = 1.0  # both percentiles 0: falls back to min-max
    out = normalize_intensities(spike)
    assert out[0] == 1 and out[1:].max() == 0
    assert normalize_intensities(np.zeros(0, np.float32)).size == 0
    assert normalize_intensities(torch.zeros(0)).numel() == 0
    ints = normalize_intensities(np.arange(10, dtype=np.int16))
    assert ints.dtype == np.float32 and ints.min() == 0 and ints.max() == 1
