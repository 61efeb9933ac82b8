"""Hypergradient (Learn2Synth eq. 4) against central finite differences, and the routes against
each other, on a tiny 2D problem."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from l2s_gui.augment import build_augmentation
from l2s_gui.config import AugmentationConfig
from l2s_gui.hypergrad import (
    InnerOptimizer,
    hyper_step,
    loss_and_grads,
)
from l2s_gui.losses import soft_dice_loss
from l2s_gui.nets import UNet

AUGMENTATIONS = {
    "noise_fixed": AugmentationConfig(kind="parametric", noise="fixed", inu=False, sigma_init=0.1),
    "noise_per_image": AugmentationConfig(kind="parametric", noise="per_image", inu=False, sigma_init=0.1),
    "inu_noise": AugmentationConfig(kind="parametric", noise="fixed", inu=True, inu_nodes=[2, 4], sigma_init=0.05),
    "nonparametric": AugmentationConfig(kind="nonparametric", residual_widths=[4], sigma_init=0.05),
}


class SmoothNet(torch.nn.Module):
    """A twice-differentiable stand-in for the UNet: finite differences of the hypergradient need
    a smooth L_real(phi*(theta)), and max-pooling switches and ELU's kink in its second derivative
    make the UNet's only piecewise smooth (the exact routes are still compared on the UNet below)."""

    def __init__(self, ndim: int, n_classes: int):
        super().__init__()
        conv = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
        self.a = conv(1, 6, 3, padding=1)
        self.b = conv(6, n_classes, 3, padding=1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def tiny_problem(aug_name: str, inner_kind: str, dtype=torch.float64, ndim: int = 2, seed: int = 0,
                 smooth: bool = False, norm: str = "none"):
    torch.manual_seed(seed)
    n_classes, shape = 3, (12,) * ndim
    net = (SmoothNet(ndim, n_classes) if smooth else UNet(ndim, 1, n_classes, widths=[4, 6], activation="elu",
                                                          norm=norm)).to(dtype)
    aug = build_augmentation(AUGMENTATIONS[aug_name], ndim).to(dtype)
    if aug_name == "nonparametric":  # leave the zero-initialised identity start to get a generic point
        with torch.no_grad():
            for p in aug.parameters():
                p.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (2, *shape), generator=gen)
    x = (y.to(dtype) / n_classes + 0.1 * torch.rand((2, *shape), generator=gen, dtype=dtype)).unsqueeze(1)
    y_real = torch.randint(0, n_classes, (2, *shape), generator=gen)
    x_real = (y_real.to(dtype) / n_classes + 0.2 * torch.rand((2, *shape), generator=gen, dtype=dtype)).unsqueeze(1)
    draw = aug.sample(x, gen)
    inner = InnerOptimizer(inner_kind, lr=0.05 if inner_kind == "sgd" else 1e-2)
    if inner_kind == "adam":  # give Adam a moment history (at t=0 its update is ~sign(g): D ~ 0)
        phi = dict(net.named_parameters())
        inner.commit({k: 0.5 * torch.randn_like(p) for k, p in phi.items()})
    return net, aug, inner, x, draw, y, x_real, y_real


def real_loss_of_theta(net, aug, inner, x, draw, y, x_real, y_real, theta):
    """L_real(update(phi, dL_synth/dphi(phi, theta))) as a function of theta (eq. 1-3)."""
    phi = {k: p.detach().requires_grad_(True) for k, p in net.named_parameters()}
    with torch.enable_grad():
        loss = soft_dice_loss(functional_call(net, phi, (functional_call(aug, theta, (x, draw)),)), y)
        grads = torch.autograd.grad(loss, list(phi.values()))
    phi_star = inner.update({k: p.detach() for k, p in phi.items()}, dict(zip(phi, grads)))
    with torch.no_grad():
        return soft_dice_loss(functional_call(net, phi_star, (x_real,)), y_real)


def exact_hypergradient(net, aug, inner, x, draw, y, x_real, y_real):
    return hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="exact")[4]


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads.values()])


@pytest.mark.parametrize("inner_kind", ["sgd", "adam"])
@pytest.mark.parametrize("aug_name", list(AUGMENTATIONS))
def test_exact_hypergradient_matches_finite_differences_float64(aug_name, inner_kind):
    problem = tiny_problem(aug_name, inner_kind, smooth=True)
    aug = problem[1]
    hyper = exact_hypergradient(*problem)
    theta = {k: p.detach() for k, p in aug.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    direction = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in theta.items()}
    norm = torch.sqrt(sum((d * d).sum() for d in direction.values()))
    direction = {k: d / norm for k, d in direction.items()}
    h = 1e-4
    plus = real_loss_of_theta(*problem, {k: theta[k] + h * direction[k] for k in theta})
    minus = real_loss_of_theta(*problem, {k: theta[k] - h * direction[k] for k in theta})
    fd = float((plus - minus) / (2 * h))
    analytic = float(sum((hyper[k] * direction[k]).sum() for k in theta))
    assert abs(fd) > 1e-10, "degenerate test: the hypergradient is ~0"
    assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("inner_kind", ["sgd", "adam"])
@pytest.mark.parametrize("aug_name", ["inu_noise", "nonparametric"])
def test_exact_equals_naive_double_backward_float32(aug_name, inner_kind):
    net, aug, inner, x, draw, y, x_real, y_real = tiny_problem(aug_name, inner_kind, dtype=torch.float32)
    exact = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="exact")[4])
    naive = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="naive")[4])
    assert torch.linalg.norm(exact - naive) <= 1e-4 * torch.linalg.norm(naive)


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_exact_equals_naive_with_normalisation_layers(norm):
    net, aug, inner, x, draw, y, x_real, y_real = tiny_problem("inu_noise", "adam", dtype=torch.float32, norm=norm)
    exact = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="exact")[4])
    naive = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="naive")[4])
    assert torch.linalg.norm(naive) > 0
    assert torch.linalg.norm(exact - naive) <= 1e-4 * torch.linalg.norm(naive)


@pytest.mark.parametrize("aug_name", ["inu_noise", "nonparametric"])
def test_reverse_route_skips_the_gradients_no_pass_asks_for(monkeypatch, aug_name):
    """The hypergradient's second backward asks for theta only: no convolution of S_phi computes a
    weight gradient there (nor the synthetic pass the first layer's input gradient), and every value
    is bit for bit the one computed without the pruning."""
    from l2s_gui import hypergrad

    problem = tiny_problem(aug_name, "adam", dtype=torch.float32, norm="instance")
    n_convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in problem[0].modules())
    real, asked = hypergrad._engine_needs, []

    def recording(t):
        asked.append(real(t))
        return asked[-1]

    monkeypatch.setattr(hypergrad, "_engine_needs", recording)
    pruned = hyper_step(*problem, soft_dice_loss, mode="exact")
    assert asked.count(False) == n_convs + 1
    monkeypatch.setattr(hypergrad, "_engine_needs", lambda t: True)
    full = hyper_step(*problem, soft_dice_loss, mode="exact")
    for a, b in ((pruned[2], full[2]), (pruned[3], full[3]), (pruned[4], full[4])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(pruned[1], full[1]) and flat(full[4]).abs().sum() > 0


@pytest.mark.parametrize("inner_kind", ["sgd", "adam"])
def test_approximation_against_exact_in_float32_runs(inner_kind):
    net, aug, inner, x, draw, y, x_real, y_real = tiny_problem("inu_noise", inner_kind, dtype=torch.float32)
    exact = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="exact")[4])
    approx = flat(hyper_step(net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="approx")[4])
    assert torch.linalg.norm(approx - exact) <= 1e-3 * torch.linalg.norm(exact)


def test_hyper_step_returns_the_inner_update_and_changes_nothing():
    net, aug, inner, x, draw, y, x_real, y_real = tiny_problem("noise_fixed", "sgd")
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    theta_before = {k: p.detach().clone() for k, p in aug.named_parameters()}
    loss_synth, loss_real, grads, phi_star, hyper = hyper_step(
        net, aug, inner, x, draw, y, x_real, y_real, soft_dice_loss, mode="exact")
    for k, p in net.named_parameters():
        assert torch.equal(p, before[k])
        assert torch.allclose(phi_star[k], before[k] - inner.lr * grads[k])
    for k, p in aug.named_parameters():
        assert torch.equal(p, theta_before[k])
    assert inner.t == 0
    # L_real is evaluated at phi*, not at phi
    loss_at_phi, _ = loss_and_grads(net, dict(net.named_parameters()), x_real, y_real, soft_dice_loss)
    assert float(loss_real) != pytest.approx(float(loss_at_phi), abs=1e-12)


def test_exact_hypergradient_3d():
    problem = tiny_problem("inu_noise", "sgd", ndim=3)
    exact = flat(hyper_step(*problem[:3], *problem[3:], soft_dice_loss, mode="exact")[4])
    naive = flat(hyper_step(*problem[:3], *problem[3:], soft_dice_loss, mode="naive")[4])
    assert torch.linalg.norm(exact - naive) <= 1e-10 * torch.linalg.norm(naive)


def test_inner_tangent_is_the_update_jacobian():
    gen = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(5, generator=gen, dtype=torch.float64)}
    grads = {"w": torch.randn(5, generator=gen, dtype=torch.float64)}
    direction = {"w": torch.randn(5, generator=gen, dtype=torch.float64)}
    opt = InnerOptimizer("adam", lr=0.1)
    opt.commit({"w": torch.randn(5, generator=gen, dtype=torch.float64)})
    h = 1e-6
    fd = (opt.update(params, {"w": grads["w"] + h * direction["w"]})["w"]
          - opt.update(params, {"w": grads["w"] - h * direction["w"]})["w"]) / (2 * h)
    assert torch.allclose(opt.tangent(params, grads, direction)["w"], fd, rtol=1e-6)
