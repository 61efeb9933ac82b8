"""IntensityNonUniformity (eq. 6-7), ParametricAugmentation, Identity and build_augmentation."""

import pytest
import torch
from torch.func import functional_call, jvp

from helpers import assert_jvp_matches_finite_difference
from l2s_gui.augment import (
    GaussianNoise,
    Identity,
    IntensityNonUniformity,
    ParametricAugmentation,
    ResidualAugmentation,
    build_augmentation,
)
from l2s_gui.config import AugmentationConfig


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10)])
def test_shapes_and_same_draw(spatial):
    aug = IntensityNonUniformity((2, 4, 8))
    x = torch.rand(3, 1, *spatial)
    d = aug.sample(x, gen(1))
    assert sorted(d) == ["beta_0", "beta_1", "beta_2"]
    for k, m in enumerate((2, 4, 8)):
        assert d[f"beta_{k}"].shape == (3, 1) + (m,) * len(spatial)
        assert d[f"beta_{k}"].min() >= 0.5 and d[f"beta_{k}"].max() <= 2.0
    y = aug(x, d)
    assert y.shape == x.shape and torch.equal(y, aug(x, d))
    d2 = aug.sample(x, gen(1))
    assert all(torch.equal(d[k], d2[k]) for k in d)
    field = aug.components(x, d)["inu_field"]
    assert field.shape == x.shape
    torch.testing.assert_close(y, x * field)


def test_c_zero_is_identity():
    aug = IntensityNonUniformity((2, 4), c_init=0.0)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(aug(x, aug.sample(x, gen())), x)


@pytest.mark.parametrize("spatial", [(20, 17), (7, 9, 11)])
def test_field_bounds(spatial):
    x = torch.ones(4, 1, *spatial)
    # one field at c = c_max: within [0.5**c_max, 2**c_max], and the extremes are nearly reached
    one = IntensityNonUniformity((3,), c_init=2.0, c_max=2.0)
    f = one.components(x, one.sample(x, gen()))["inu_field"]
    assert f.min() >= 0.5 ** 2 - 1e-6 and f.max() <= 2.0 ** 2 + 1e-6
    # K fields: alpha in [0.5 ** sum(c), 2 ** sum(c)]
    aug = IntensityNonUniformity((2, 4, 8), c_init=[0.5, 1.0, 2.0], c_max=2.0)
    f = aug.components(x, aug.sample(x, gen()))["inu_field"]
    s = 3.5
    assert f.min() >= 0.5 ** s - 1e-6 and f.max() <= 2.0 ** s + 1e-5
    assert (f > 0).all()


def test_upsample_then_log_is_faithful():
    # M = 2 nodes along each axis of a 3 x 3 image: corners are the nodes, the centre is the mean
    aug = IntensityNonUniformity((2,), c_init=0.7)
    x = torch.ones(1, 1, 3, 3)
    beta = torch.tensor([[[[0.5, 2.0], [1.0, 1.5]]]])
    f = aug.components(x, {"beta_0": beta})["inu_field"][0, 0]
    torch.testing.assert_close(f[0, 0], torch.tensor(0.5 ** 0.7))
    torch.testing.assert_close(f[0, 2], torch.tensor(2.0 ** 0.7))
    torch.testing.assert_close(f[2, 0], torch.tensor(1.0 ** 0.7))
    torch.testing.assert_close(f[0, 1], torch.tensor(1.25 ** 0.7))  # (B beta)^c, not B(beta^c)
    torch.testing.assert_close(f[1, 1], torch.tensor(1.25 ** 0.7))


def test_c_projection():
    aug = IntensityNonUniformity((2, 4, 8), c_init=0.5, c_max=2.0)
    opt = torch.optim.SGD(aug.parameters(), lr=1.0)
    aug.c.grad = torch.tensor([1.0, -3.0, 0.2])
    opt.step()
    assert aug.c.detach().tolist() == pytest.approx([-0.5, 3.5, 0.3])
    aug.constrain_()
    assert aug.c.detach().tolist() == pytest.approx([0.0, 2.0, 0.3])
    assert aug.theta() == {"c": pytest.approx([0.0, 2.0, 0.3])}
    with pytest.raises(ValueError):
        IntensityNonUniformity((2,), c_init=3.0, c_max=2.0)
    with pytest.raises(ValueError):
        IntensityNonUniformity((1,))


@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 3)])
def test_jvp_matches_finite_difference(spatial):
    aug = IntensityNonUniformity((2, 3)).double()
    x = torch.rand(2, 1, *spatial, dtype=torch.float64)
    assert_jvp_matches_finite_difference(aug, x)


@pytest.mark.parametrize("spatial", [(4, 3), (3, 3, 2)])
def test_gradcheck_and_double_backward(spatial):
    aug = IntensityNonUniformity((2, 3)).double()
    x = torch.rand(2, 1, *spatial, dtype=torch.float64, requires_grad=True)
    d = aug.sample(x, gen())
    c = aug.c.detach().clone().requires_grad_(True)

    def f(cc, xx):
        return functional_call(aug, {"c": cc}, (xx, d))

    assert torch.autograd.gradcheck(f, (c, x))
    assert torch.autograd.gradgradcheck(f, (c, x))


def test_parametric_inu_then_noise():
    inu, noise = IntensityNonUniformity((2, 4), c_init=0.8), GaussianNoise(0.1, per_image=True)
    aug = ParametricAugmentation(inu, noise)
    x = torch.rand(2, 1, 16, 16)
    d = aug.sample(x, gen())
    assert set(d) == {"beta_0", "beta_1", "eps", "s"}
    y = aug(x, d)
    torch.testing.assert_close(y, noise(inu(x, d), d))
    comp = aug.components(x, d)
    torch.testing.assert_close(y, x * comp["inu_field"] + comp["noise"])
    assert aug.theta() == {"c": pytest.approx([0.8, 0.8]), "sigma": pytest.approx(0.1)}
    with torch.no_grad():
        inu.c.fill_(-1.0)
        noise.sigma.fill_(-1.0)
    aug.constrain_()
    assert aug.theta() == {"c": [0.0, 0.0], "sigma": 0.0}
    # only INU, only noise
    assert torch.equal(ParametricAugmentation(None, noise)(x, d), noise(x, d))
    assert torch.equal(ParametricAugmentation(inu, None)(x, d), inu(x, d))


def test_parametric_jvp_and_gradcheck():
    aug = ParametricAugmentation(IntensityNonUniformity((2, 3)), GaussianNoise(0.1, per_image=False)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    d = aug.sample(x, gen())
    params = {k: v.detach() for k, v in aug.named_parameters()}
    assert set(params) == {"inu.c", "noise.sigma"}
    tp = {k: torch.randn_like(v) for k, v in params.items()}

    def f(p):
        return (functional_call(aug, p, (x, d)) ** 2).sum()

    _, out = jvp(f, (params,), (tp,))
    h = 1e-6
    fd = (f({k: params[k] + h * tp[k] for k in params}) - f({k: params[k] - h * tp[k] for k in params})) / (2 * h)
    torch.testing.assert_close(out, fd, rtol=1e-6, atol=1e-8)
    c = params["inu.c"].clone().requires_grad_(True)
    s = params["noise.sigma"].clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda cc, ss: functional_call(aug, {"inu.c": cc, "noise.sigma": ss}, (x, d)),
                                        (c, s))


def test_identity():
    aug = Identity()
    x = torch.rand(2, 1, 8, 8)
    d = aug.sample(x, gen())
    assert d == {} and aug(x, d) is x
    assert aug.theta() == {} and aug.components(x, d) == {} and not list(aug.parameters())
    aug.constrain_()


def test_build_augmentation():
    a = build_augmentation(AugmentationConfig(), 2)
    assert isinstance(a, ParametricAugmentation)
    assert a.inu.nodes == (2, 4, 8) and not a.noise.per_image
    assert a.theta() == {"c": pytest.approx([0.25] * 3), "sigma": pytest.approx(0.05)}   # the defaults
    a = build_augmentation(AugmentationConfig(inu_c_init=[0.1, 0.2, 0.3]), 2)
    assert a.theta()["c"] == pytest.approx([0.1, 0.2, 0.3])
    a = build_augmentation(AugmentationConfig(noise="per_image", inu=False, sigma_init=0.2), 3)
    assert a.inu is None and a.noise.per_image and a.theta() == {"sigma": pytest.approx(0.2)}
    a = build_augmentation(AugmentationConfig(noise="none", inu_nodes=[3, 5], inu_c_init=0.25, inu_c_max=1.0), 2)
    assert a.noise is None and a.inu.nodes == (3, 5) and a.inu.c_max == 1.0
    assert a.theta() == {"c": pytest.approx([0.25, 0.25])}
    a = build_augmentation(AugmentationConfig(kind="nonparametric", residual_widths=[4, 8, 8]), 3)
    assert isinstance(a, ResidualAugmentation) and a.noise.per_image and a.net.widths == (4, 8, 8)
    assert a.net.ndim == 3
    assert isinstance(build_augmentation(AugmentationConfig(kind="none"), 2), Identity)
    a = build_augmentation(AugmentationConfig(noise="uniform", sigma_range=[0.0, 0.3], inu=False), 2)
    assert a.inu is None and not list(a.parameters()) and a.theta() == {"sigma": pytest.approx(0.15)}
