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


def assert_jvp_matches_finite_difference(aug, x):
    """torch.func.jvp of an augmentation (in its parameters and its input, one fixed draw) against a
    float64 central difference along the same random tangent."""
    from torch.func import functional_call, jvp

    d = aug.sample(x, torch.Generator().manual_seed(0))
    params = {k: v.detach() for k, v in aug.named_parameters()}
    tp = {k: torch.randn_like(v) for k, v in params.items()}
    tx = torch.randn_like(x)

    def f(p, xx):
        return (functional_call(aug, p, (xx, d)) ** 2).sum()

    _, out = jvp(f, (params, x), (tp, tx))
    h = 1e-6
    plus = f({k: params[k] + h * tp[k] for k in params}, x + h * tx)
    minus = f({k: params[k] - h * tp[k] for k in params}, x - h * tx)
    torch.testing.assert_close(out, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)
