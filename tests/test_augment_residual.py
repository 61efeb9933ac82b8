"""ResidualAugmentation (eq. 10-11 followed by the noise of eq. 9)."""

import pytest
import torch
from torch.func import functional_call

from helpers import assert_jvp_matches_finite_difference
from l2s_gui.augment import GaussianNoise, ResidualAugmentation


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturb_(aug, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in aug.net.head.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return aug


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10), (9, 7), (5, 6, 7)])
def test_shapes_and_same_draw(spatial):
    ndim = len(spatial)
    aug = perturb_(ResidualAugmentation(ndim, (4, 8), GaussianNoise(0.1, per_image=True)))
    x = torch.rand(2, 1, *spatial)
    d = aug.sample(x, gen(1))
    assert set(d) == {"xi", "eps", "s"} and d["xi"].shape == x.shape
    y = aug(x, d)
    assert y.shape == x.shape and torch.equal(y, aug(x, d))
    d2 = aug.sample(x, gen(1))
    assert all(torch.equal(d[k], d2[k]) for k in d)
    comp = aug.components(x, d)
    assert comp["residual"].shape == x.shape and comp["noise"].shape == x.shape


def test_zero_init_is_identity_plus_noise_exactly():
    noise = GaussianNoise(0.1, per_image=True)
    aug = ResidualAugmentation(2, (8, 16), noise)
    x = torch.rand(3, 1, 16, 16)
    d = aug.sample(x, gen())
    y = aug(x, d)
    assert torch.equal(y, noise(x, d))  # x + r with r == 0 exactly, then the eq. 9 noise
    torch.testing.assert_close(y, x + noise.sigma * d["s"] * d["eps"])
    assert torch.equal(aug.components(x, d)["residual"], torch.zeros_like(x))
    no_noise = ResidualAugmentation(2, (8, 16), None)
    assert torch.equal(no_noise(x, no_noise.sample(x, gen())), x)


def test_residual_added_exactly_once():
    aug = perturb_(ResidualAugmentation(2, (4, 8), GaussianNoise(0.0, per_image=True)), scale=0.5)
    x = torch.rand(2, 1, 8, 8) + 1.0
    d = aug.sample(x, gen())
    r = aug.net(torch.cat([x, d["xi"]], 1))
    assert r.abs().max() > 1e-3
    y = aug(x, d)
    torch.testing.assert_close(y, x + r)
    torch.testing.assert_close(aug.components(x, d)["residual"], y - x)
    assert not torch.allclose(y, 2 * x + r)


def test_noise_applied_after_residual():
    noise = GaussianNoise(0.2, per_image=True)
    aug = perturb_(ResidualAugmentation(2, (4, 8), noise), scale=0.5)
    x = torch.rand(2, 1, 8, 8)
    d = aug.sample(x, gen())
    r = aug.components(x, d)["residual"]
    torch.testing.assert_close(aug(x, d), x + r + 0.2 * d["s"] * d["eps"])


def test_widths_and_zero_head():
    aug = ResidualAugmentation(3, (8, 16), GaussianNoise(0.1, True))
    convs = [m for m in aug.net.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [m.out_channels for m in convs] == [8, 16] and convs[0].in_channels == 2
    assert aug.net.head.out_channels == 1
    assert torch.count_nonzero(aug.net.head.weight) == 0
    assert set(aug.theta()) == {"sigma", "residual_weight_norm"}


def test_constrain_projects_sigma():
    aug = ResidualAugmentation(2, (4,), GaussianNoise(0.1, True))
    with torch.no_grad():
        aug.noise.sigma.fill_(-0.3)
    aug.constrain_()
    assert aug.noise.sigma.item() == 0.0


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_jvp_matches_finite_difference(spatial):
    aug = perturb_(ResidualAugmentation(len(spatial), (3, 4), GaussianNoise(0.1, True))).double()
    x = torch.rand(2, 1, *spatial, dtype=torch.float64)
    assert_jvp_matches_finite_difference(aug, x)


def test_gradcheck_and_double_backward():
    aug = perturb_(ResidualAugmentation(2, (2, 3), GaussianNoise(0.1, True)), scale=0.3).double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    d = aug.sample(x, gen())
    names = ["net.head.weight", "noise.sigma", "net.encoder.0.0.weight"]
    fixed = {k: v.detach() for k, v in aug.named_parameters()}
    ps = [fixed[n].clone().requires_grad_(True) for n in names]

    def f(xx, *p):
        return functional_call(aug, {**fixed, **dict(zip(names, p))}, (xx, d))

    assert torch.autograd.gradcheck(f, (x, *ps))
    assert torch.autograd.gradgradcheck(f, (x, *ps))
