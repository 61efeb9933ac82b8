"""Small generated data for the tests (no network, nothing from ../shared)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

VALUES = [0, 2, 3, 4, 17]


def blob_labels(shape, seed):
    """A label map of random smooth blobs with FreeSurfer-like values inside an ellipsoid."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, 4) + tuple(max(s // 4, 2) for s in shape), generator=g)
    up = F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[0]
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(c ** 2 for c in grid) < 0.8
    return np.where(inside, np.array(VALUES)[up.argmax(0).numpy() + 1], 0).astype(np.int32)
