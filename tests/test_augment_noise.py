"""GaussianNoise (Learn2Synth eq. 8-9)."""

import pytest
import torch
from torch.func import functional_call

from helpers import assert_jvp_matches_finite_difference
from l2s_gui.augment import GaussianNoise


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10)])
def test_shapes_and_same_draw(per_image, spatial):
    aug = GaussianNoise(0.1, per_image=per_image)
    x = torch.rand(3, 1, *spatial)
    draw = aug.sample(x, gen(1))
    assert draw["eps"].shape == x.shape
    if per_image:
        assert draw["s"].shape == (3,) + (1,) * (len(spatial) + 1)
    else:
        assert "s" not in draw
    assert all(not v.requires_grad for v in draw.values())
    y1, y2 = aug(x, draw), aug(x, draw)
    assert y1.shape == x.shape and torch.equal(y1, y2)
    # the draw depends only on the generator
    torch.manual_seed(123)
    draw2 = aug.sample(x, gen(1))
    assert all(torch.equal(draw[k], draw2[k]) for k in draw)
    assert not torch.equal(aug.sample(x, gen(2))["eps"], draw["eps"])


@pytest.mark.parametrize("per_image", [False, True])
def test_sigma_zero_is_identity(per_image):
    aug = GaussianNoise(0.0, per_image=per_image)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(aug(x, aug.sample(x, gen())), x)


def test_fixed_noise_formula_and_components():
    aug = GaussianNoise(0.3, per_image=False)
    x = torch.rand(2, 1, 8, 8)
    d = aug.sample(x, gen())
    y = aug(x, d)
    torch.testing.assert_close(y, x + 0.3 * d["eps"])
    torch.testing.assert_close(aug.components(x, d)["noise"], y - x)


def test_per_image_modulation():
    aug = GaussianNoise(0.2, per_image=True)
    x = torch.zeros(4, 1, 64, 64)
    d = aug.sample(x, gen(3))
    y = aug(x, d)
    torch.testing.assert_close(y, 0.2 * d["s"] * d["eps"])
    # per-image noise level sigma*|s|: the ratio noise/eps is constant within an image
    ratio = y / d["eps"]
    torch.testing.assert_close(ratio, (0.2 * d["s"]).expand_as(ratio))
    std = y.flatten(1).std(1)
    torch.testing.assert_close(std, 0.2 * d["s"].abs().flatten(), rtol=0.05, atol=1e-4)
    assert std.max() / std.min() > 1.2  # the levels differ from image to image
    assert aug.components(x, d)["noise"].shape == x.shape


def test_sigma_projection():
    aug = GaussianNoise(0.01)
    opt = torch.optim.SGD(aug.parameters(), lr=1.0)
    x = torch.rand(2, 1, 8, 8)
    d = aug.sample(x, gen())
    (aug(x, d).sum()).backward()  # d/dsigma = sum(eps) -> a step of size |sum eps| >> 0.01
    aug.sigma.grad.fill_(5.0)
    opt.step()
    assert aug.sigma.item() < 0
    aug.constrain_()
    assert aug.sigma.item() == 0.0
    aug.sigma.data.fill_(0.4)
    aug.constrain_()
    assert aug.sigma.item() == pytest.approx(0.4)
    assert aug.theta() == {"sigma": pytest.approx(0.4)}
    with pytest.raises(ValueError):
        GaussianNoise(-0.1)


def test_gradient_is_plain_derivative():
    # no abs()/softplus in forward: d out / d sigma = (s *) eps, also for negative sigma
    aug = GaussianNoise(0.1, per_image=True).double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    d = aug.sample(x, gen())
    with torch.no_grad():
        aug.sigma.fill_(-0.05)
    (aug(x, d).sum()).backward()
    torch.testing.assert_close(aug.sigma.grad, (d["s"] * d["eps"]).sum())


@pytest.mark.parametrize("per_image", [False, True])
def test_jvp_matches_finite_difference(per_image):
    aug = GaussianNoise(0.1, per_image=per_image).double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    assert_jvp_matches_finite_difference(aug, x)


@pytest.mark.parametrize("per_image", [False, True])
def test_gradcheck_and_double_backward(per_image):
    aug = GaussianNoise(0.1, per_image=per_image).double()
    x = torch.rand(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    d = aug.sample(x, gen())
    sigma = aug.sigma.detach().clone().requires_grad_(True)

    def f(s, xx):
        return functional_call(aug, {"sigma": s}, (xx, d)) ** 2

    assert torch.autograd.gradcheck(f, (sigma, x))
    assert torch.autograd.gradgradcheck(f, (sigma, x))
    # double backward: d/dx of (d/dsigma sum f)
    (g,) = torch.autograd.grad(f(sigma, x).sum(), sigma, create_graph=True)
    (gx,) = torch.autograd.grad(g, x)
    eps = d["eps"] * d["s"] if per_image else d["eps"]
    torch.testing.assert_close(gx, 2 * eps)


def test_uniform_range_noise_draws_sigma_per_image_and_learns_nothing():
    from l2s_gui.augment import UniformRangeNoise

    aug = UniformRangeNoise(0.025, 0.2)
    assert list(aug.parameters()) == []
    x = torch.zeros(400, 1, 32, 32)
    y = aug(x, aug.sample(x, torch.Generator().manual_seed(0)))
    per_image = y.flatten(1).std(1)
    assert 0.02 < float(per_image.min()) and float(per_image.max()) < 0.21
    assert float(per_image.mean()) == pytest.approx(0.1125, abs=0.01)   # mean of U[0.025, 0.2]
    assert aug.theta() == {"sigma": pytest.approx(0.1125)}
