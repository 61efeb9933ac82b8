"""Small generated data for the tests (no network, nothing from ../shared)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

VALUES = [0, 2, 3, 4, 17]


def brain_like_labels(shape, seed):
    """A toy brain whose classes have consistent geometry (so a network can learn them from shape,
    as from real label maps, whatever the random contrast): an ellipsoid of white matter (2) with a
    grey-matter shell (3), a CSF shell outside it (4), a subcortical core (17) and ventricles (4),
    with radii and centre perturbed per seed and a smooth random wobble of the surfaces."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radii = 0.8 * (1 + 0.1 * rng.uniform(-1, 1, 3))
    centre = 0.05 * rng.uniform(-1, 1, 3)
    wobble = F.interpolate(torch.randn((1, 1, 4, 4, 4), generator=g), size=shape, mode="trilinear",
                           align_corners=True)[0, 0].numpy()
    r = np.sqrt(sum(((c - m) / a) ** 2 for c, m, a in zip(grid, centre, radii))) + 0.06 * wobble
    lab = np.zeros(shape, np.int32)
    lab[r < 1.0] = 4          # CSF shell
    lab[r < 0.85] = 3         # cortex
    lab[r < 0.65] = 2         # white matter
    lab[r < 0.3] = 17         # subcortical core
    vent = (np.abs(grid[0] - centre[0]) - 0.12) ** 2 / 0.01 + (grid[1] - centre[1]) ** 2 / 0.15 + \
        (grid[2] - centre[2] - 0.15) ** 2 / 0.01
    lab[(vent < 1) & (r < 0.6)] = 4   # two ventricles
    return lab


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
