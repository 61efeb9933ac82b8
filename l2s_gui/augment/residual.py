"""Nonparametric learnable augmentation (Learn2Synth eq. 10-11, then eq. 9)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nets.unet import UNet
from .base import Augmentation, randn
from .noise import GaussianNoise

__all__ = ["ResidualAugmentation"]


class ResidualAugmentation(Augmentation):
    """``x + r`` with ``r = net([x, xi])``, ``xi ~ N(0, 1)`` (eq. 10-11), then the noise of eq. 9.

    The residual is added exactly once (the public reference code added the input twice).
    ``net`` is a small UNet (``len(widths)`` levels with the given widths, ELU, no norm, one
    convolution per level, 2 input channels ``[x, xi]``, 1 output) whose final 1x1 convolution is
    initialised to zero, so that the augmentation starts as identity + noise. Inputs whose spatial
    sizes are not multiples of ``net.factor`` are zero-padded at the end of each axis for the net
    and the residual is cropped back.

    The draw holds ``"xi"`` ``(B, 1, *spatial)`` and the noise module's draw.
    """

    def __init__(self, ndim: int, widths: Sequence[int] = (8, 16), noise: GaussianNoise | None = None,
                 convs_per_level: int = 1):
        super().__init__()
        self.net = UNet(ndim, 2, 1, widths=widths, activation="elu", norm="none", convs_per_level=convs_per_level)
        with torch.no_grad():
            self.net.head.weight.zero_()
            self.net.head.bias.zero_()
        self.noise = noise

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        draw = {"xi": randn(x.shape, generator, x)}
        if self.noise is not None:
            draw = self._merge(draw, self.noise.sample(x, generator))
        return draw

    def residual(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:
        """``r = net([x, xi])``, shape ``(B, 1, *spatial)``."""
        inp = torch.cat([x, draw["xi"]], dim=1)
        spatial = tuple(x.shape[2:])
        f = self.net.factor
        pad = [(-s) % f for s in spatial]
        if any(pad):
            padding: list[int] = []
            for p in reversed(pad):
                padding += [0, p]
            inp = F.pad(inp, padding)
        r = self.net(inp)
        if any(pad):
            r = r[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
        return r

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        y = x + self.residual(x, draw)
        if self.noise is not None:
            y = self.noise(y, draw)
        return y

    @torch.no_grad()
    def constrain_(self) -> None:
        if self.noise is not None:
            self.noise.constrain_()

    def theta(self) -> dict[str, float | list[float]]:
        out: dict[str, float | list[float]] = {}
        if self.noise is not None:
            out.update(self.noise.theta())
        squares = [(p.detach() ** 2).sum() for p in self.net.parameters()]
        out["residual_weight_norm"] = float(torch.sqrt(functools.reduce(operator.add, squares)))
        return out

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {"residual": self.residual(x, draw).detach()}
        if self.noise is not None:
            out.update(self.noise.components(x, draw))
        return out
