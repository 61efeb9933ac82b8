"""Parametric learnable augmentation: INU (eq. 6-7) then Gaussian noise (eq. 8 or 9)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Augmentation
from .inu import IntensityNonUniformity
from .noise import GaussianNoise, UniformRangeNoise

__all__ = ["ParametricAugmentation"]


class ParametricAugmentation(Augmentation):
    """``x -> (x * alpha) + noise``: INU first (eq. 7), then noise (eq. 8/9); theta = [c, sigma].

    Either part may be ``None``. The draw is the union of both parts' draws.
    """

    def __init__(self, inu: IntensityNonUniformity | None = None,
                 noise: GaussianNoise | UniformRangeNoise | None = None):
        super().__init__()
        self.inu = inu
        self.noise = noise

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        draws = []
        if self.inu is not None:
            draws.append(self.inu.sample(x, generator))
        if self.noise is not None:
            draws.append(self.noise.sample(x, generator))
        return self._merge(*draws)

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        if self.inu is not None:
            x = self.inu(x, draw)
        if self.noise is not None:
            x = self.noise(x, draw)
        return x

    @torch.no_grad()
    def constrain_(self) -> None:
        if self.inu is not None:
            self.inu.constrain_()
        if self.noise is not None:
            self.noise.constrain_()

    def theta(self) -> dict[str, float | list[float]]:
        out: dict[str, float | list[float]] = {}
        if self.inu is not None:
            out.update(self.inu.theta())
        if self.noise is not None:
            out.update(self.noise.theta())
        return out

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.inu is not None:
            out.update(self.inu.components(x, draw))
        if self.noise is not None:
            out.update(self.noise.components(x, draw))
        return out
