"""UNet for 2D/3D segmentation."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from l2s_gui.augment import GaussianNoise, IntensityNonUniformity, ParametricAugmentation
from l2s_gui.losses import soft_dice_loss
from l2s_gui.nets import UNet


@pytest.mark.parametrize("ndim,size", [(2, 32), (3, 16)])
def test_shapes(ndim, size):
    net = UNet(ndim, 1, 5, widths=(4, 6, 8))
    x = torch.rand(2, 1, *([size] * ndim))
    assert net(x).shape == (2, 5) + (size,) * ndim
    x = torch.rand(1, 1, *([12] * ndim))  # multiple of 4
    assert net(x).shape == (1, 5) + (12,) * ndim
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 1, *([10] * ndim)))
    assert net.factor == 4


@pytest.mark.parametrize("widths,convs", [((16, 24, 32, 48, 64), 2), ((5, 7, 11), 3), ((8,), 1)])
def test_widths_used_exactly(widths, convs):
    net = UNet(2, 3, 4, widths=widths, convs_per_level=convs)
    for level, w in zip(net.encoder, widths):
        cs = [m for m in level if isinstance(m, nn.Conv2d)]
        assert len(cs) == convs and all(c.out_channels == w for c in cs)
    assert net.encoder[0][0].in_channels == 3
    dec_widths = [c.out_channels for blk in net.decoder for c in blk if isinstance(c, nn.Conv2d)]
    assert dec_widths == [w for w in reversed(widths[:-1]) for _ in range(convs)]
    assert [u.out_channels for u in net.up] == list(reversed(widths[:-1]))
    assert net.head.in_channels == widths[0] and net.head.out_channels == 4
    assert net.n_parameters() == sum(p.numel() for p in net.parameters())
    assert not list(net.buffers())


def test_default_size():
    net = UNet(2, 1, 24)
    assert net.widths == (16, 24, 32, 48, 64)
    assert 200_000 < net.n_parameters() < 350_000


@pytest.mark.parametrize("norm", ["none", "instance", "group"])
@pytest.mark.parametrize("activation", ["elu", "relu", "leaky_relu"])
def test_norm_and_activation(norm, activation):
    net = UNet(3, 1, 2, widths=(4, 8), norm=norm, activation=activation)
    assert net(torch.rand(2, 1, 4, 4, 4)).shape == (2, 2, 4, 4, 4)
    assert not list(net.buffers())
    with pytest.raises(ValueError):
        UNet(2, 1, 2, norm="batch")


@pytest.mark.parametrize("ndim,norm", [(2, "none"), (2, "instance"), (3, "group"), (3, "none")])
def test_jvp_matches_finite_difference(ndim, norm):
    torch.manual_seed(0)
    net = UNet(ndim, 1, 3, widths=(4, 6), norm=norm).double()
    x = torch.rand(2, 1, *([4] * ndim), dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    tp = {k: torch.randn_like(v) for k, v in params.items()}
    tx = torch.randn_like(x)

    def f(p, xx):
        return functional_call(net, p, (xx,))

    out, tan = jvp(f, (params, x), (tp, tx))
    torch.testing.assert_close(out, net(x))
    h = 1e-6
    fd = (f({k: params[k] + h * tp[k] for k in params}, x + h * tx)
          - f({k: params[k] - h * tp[k] for k in params}, x - h * tx)) / (2 * h)
    torch.testing.assert_close(tan, fd, rtol=1e-5, atol=1e-7)


def test_double_backward_and_gradgradcheck():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, widths=(2, 3), norm="instance").double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    fixed = {k: v.detach() for k, v in net.named_parameters()}
    w = fixed["encoder.0.0.weight"].clone().requires_grad_(True)

    def f(xx, ww):
        return functional_call(net, {**fixed, "encoder.0.0.weight": ww}, (xx,))

    assert torch.autograd.gradgradcheck(f, (x, w), fast_mode=True)


def test_forward_over_reverse_hypergradient_matches_double_backward():
    """The lead's use case: mixed second derivative d/dtheta <dL_synth/dphi, v> through
    augmentation + UNet + soft Dice, by jvp-of-grad and by double backward (float64)."""
    torch.manual_seed(0)
    aug = ParametricAugmentation(IntensityNonUniformity((2, 3)), GaussianNoise(0.1, per_image=True)).double()
    net = UNet(2, 1, 3, widths=(3, 4)).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 8, 8))
    draw = aug.sample(x, torch.Generator().manual_seed(0))
    phi = {k: v.detach() for k, v in net.named_parameters()}
    theta = {k: v.detach() for k, v in aug.named_parameters()}
    v = {k: torch.randn_like(p) for k, p in phi.items()}

    def loss(ph, th):
        return soft_dice_loss(functional_call(net, ph, (functional_call(aug, th, (x, draw)),)), y)

    # forward-over-reverse: grad wrt theta of <dL/dphi, v> == jvp (in phi, direction v) of dL/dtheta
    _, hyper = jvp(lambda ph: grad(loss, argnums=1)(ph, theta), (phi,), (v,))
    # double backward
    ph = {k: p.clone().requires_grad_(True) for k, p in phi.items()}
    th = {k: p.clone().requires_grad_(True) for k, p in theta.items()}
    g = torch.autograd.grad(loss(ph, th), list(ph.values()), create_graph=True)
    dot = sum((gi * v[k]).sum() for gi, k in zip(g, ph))
    ref = torch.autograd.grad(dot, list(th.values()))
    for k, r in zip(th, ref):
        torch.testing.assert_close(hyper[k], r, rtol=1e-9, atol=1e-12)
    assert any(r.abs().max() > 0 for r in ref)
