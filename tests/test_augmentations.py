"""Every augmentation that ``build_augmentation`` can build, in 2D and 3D: it runs (shape, finite,
deterministic given its draw) and its gradients reach theta (cornucopia's run/backward test pair)."""

from __future__ import annotations

import itertools

import pytest
import torch

from l2s_gui.augment import build_augmentation
from l2s_gui.config import AugmentationConfig, field_spec

SETTINGS = [{"kind": "none"}, {"kind": "nonparametric", "residual_widths": [4, 4]}] + [
    {"kind": "parametric", "noise": noise, "inu": inu}
    for noise, inu in itertools.product(field_spec("augmentation.noise").choices, (True, False))]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_run_and_backward(settings, ndim):
    torch.manual_seed(0)
    aug = build_augmentation(AugmentationConfig(**settings), ndim)
    x = torch.rand((2, 1) + (12,) * ndim)
    draw = aug.sample(x, torch.Generator().manual_seed(1))
    out = aug(x, draw)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, aug(x, draw))  # deterministic given the draw
    theta = [p for p in aug.parameters() if p.requires_grad]
    learnable = settings["kind"] != "none" and not (settings.get("noise") in ("none", "uniform")
                                                     and not settings.get("inu", True))
    assert bool(theta) == learnable
    if theta:
        (out - x.flip(0)).square().sum().backward()
        reached = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in theta]
        assert any(reached)
        names = {name.split(".")[0] for name, p in aug.named_parameters() if p.requires_grad}
        for top in names:  # each learnable part (INU, noise, residual net) gets a gradient
            grads = [p.grad for name, p in aug.named_parameters() if name.split(".")[0] == top and p.requires_grad]
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), top
