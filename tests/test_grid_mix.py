"""SynthMix's grid mask and mix (SynthMix Sec. 2.2, eq. 2-3): statistics, cell structure, 2D/3D."""

from __future__ import annotations

import math

import pytest
import torch

from l2s_gui.grid_mix import grid_mix, random_grid_mask


def cell_grid(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The mask's value at the first voxel of each cell (cells of ceil(n / k) voxels)."""
    index = tuple(slice(None, None, math.ceil(n / k)) for n in mask.shape[2:])
    return mask[(slice(None), slice(None)) + index]


def upsample(cells: torch.Tensor, spatial: tuple[int, ...], k: int) -> torch.Tensor:
    out = cells
    for axis, n in enumerate(spatial):
        out = out.repeat_interleave(math.ceil(n / k), dim=axis + 2).narrow(axis + 2, 0, n)
    return out


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_share_of_cells_from_a_is_the_ratio(ratio):
    mask = random_grid_mask((64, 1, 32, 32), 8, ratio, torch.Generator().manual_seed(0))
    cells = cell_grid(mask, 8)
    assert cells.shape == (64, 1, 8, 8)
    # 4096 independent cells: the mean is within 5 standard errors of lambda
    assert abs(float(cells.mean()) - ratio) < 5 * math.sqrt(ratio * (1 - ratio) / cells.numel())
    # the masks differ between samples (drawn per sample)
    assert len({tuple(c.flatten().tolist()) for c in cells}) == 64


@pytest.mark.parametrize("spatial, k", [((32, 32), 8), ((10, 13), 4), ((7, 5), 8), ((9, 10, 11), 3), ((16, 16, 16), 8)])
def test_mask_is_constant_on_cells_of_ceil_size_over_k(spatial, k):
    mask = random_grid_mask((3, 1) + spatial, k, 0.5, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1) + spatial and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    cells = cell_grid(mask, k)
    assert cells.shape[2:] == tuple(math.ceil(n / math.ceil(n / k)) for n in spatial)
    assert all(m <= k for m in cells.shape[2:])
    assert torch.equal(mask, upsample(cells, spatial, k))


def test_extremes_and_reproducibility():
    shape = (4, 1, 12, 12)
    assert random_grid_mask(shape, 4, 0.0, torch.Generator().manual_seed(0)).eq(0).all()
    assert random_grid_mask(shape, 4, 1.0, torch.Generator().manual_seed(0)).eq(1).all()
    a = random_grid_mask(shape, 4, 0.5, torch.Generator().manual_seed(3))
    b = random_grid_mask(shape, 4, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        random_grid_mask((4, 12, 12), 4, 0.5, torch.Generator())
    with pytest.raises(ValueError, match="ratio"):
        random_grid_mask(shape, 4, 1.5, torch.Generator())


def test_mix_takes_a_where_the_mask_is_one_for_images_and_labels():
    g = torch.Generator().manual_seed(0)
    mask = random_grid_mask((2, 1, 9, 9, 9), 3, 0.5, g)
    a, b = torch.full((2, 1, 9, 9, 9), 7.0), torch.rand((2, 1, 9, 9, 9), generator=g)
    mixed = grid_mix(a, b, mask)
    assert torch.equal(mixed, mask * a + (1 - mask) * b)  # eq. 2
    la, lb = torch.ones((2, 9, 9, 9), dtype=torch.long), torch.zeros((2, 9, 9, 9), dtype=torch.long)
    assert torch.equal(grid_mix(la, lb, mask), mask[:, 0].long())  # eq. 3 on label maps
    with pytest.raises(ValueError, match="one shape"):
        grid_mix(a, b[:1], mask)
