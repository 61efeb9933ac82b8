"""Learnable Gaussian noise (Learn2Synth eq. 8 and 9)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Augmentation, rand, randn

__all__ = ["GaussianNoise", "UniformRangeNoise"]


class GaussianNoise(Augmentation):
    """Additive Gaussian noise with a learnable standard deviation ``sigma``.

    * ``per_image=False`` (eq. 8): ``x + sigma * eps``, ``eps ~ N(0, 1)`` per voxel;
    * ``per_image=True`` (eq. 9): ``x + sigma * s * eps``, with in addition ``s ~ N(0, 1)`` drawn
      once per image, so the noise level varies from image to image (``sigma`` is then a
      hyper-standard-deviation; note that ``s`` may be negative, which does not change the noise
      distribution since ``eps`` is symmetric).

    ``sigma`` is stored directly as a 0-dim ``nn.Parameter`` and kept ``>= 0`` by projection in
    :meth:`constrain_` after each optimiser step (projected gradient descent). The forward pass uses
    ``sigma`` as it is (no ``abs``/``softplus``), so its gradient is the plain derivative of eq. 8-9.

    The draw holds ``"eps"`` ``(B, 1, *spatial)`` and, when ``per_image``, ``"s"``
    ``(B, 1, 1, ..., 1)``.
    """

    def __init__(self, sigma_init: float = 0.1, per_image: bool = False):
        super().__init__()
        if sigma_init < 0:
            raise ValueError(f"sigma_init must be >= 0, got {sigma_init}")
        self.per_image = bool(per_image)
        self.sigma = nn.Parameter(torch.tensor(float(sigma_init)))

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        draw = {"eps": randn(x.shape, generator, x)}
        if self.per_image:
            draw["s"] = randn((x.shape[0],) + (1,) * (x.dim() - 1), generator, x)
        return draw

    def _noise(self, draw: dict[str, Tensor]) -> Tensor:
        eps = draw["eps"]
        if self.per_image:
            eps = draw["s"] * eps
        return self.sigma * eps

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return x + self._noise(draw)

    @torch.no_grad()
    def constrain_(self) -> None:
        self.sigma.clamp_(min=0.0)

    def theta(self) -> dict[str, float | list[float]]:
        return {"sigma": float(self.sigma.detach())}

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"noise": self._noise(draw).detach().expand_as(x).clone()}

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"


class UniformRangeNoise(Augmentation):
    """Gaussian noise whose standard deviation is drawn per image, ``sigma_i ~ U[low, high]``:
    ``x + sigma_i * eps``. Nothing is learned (it has no parameters): this is the fixed augmentation
    of naive SynthSeg at the paper's ``U[0.025, 0.2]`` setting, which eq. 8 cannot express.

    The draw holds ``"eps"`` ``(B, 1, *spatial)`` and ``"u"`` ``(B, 1, 1, ..., 1)`` in [0, 1).
    """

    def __init__(self, low: float, high: float):
        super().__init__()
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got [{low}, {high}]")
        self.low, self.high = float(low), float(high)

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {"eps": randn(x.shape, generator, x),
                "u": rand((x.shape[0],) + (1,) * (x.dim() - 1), generator, x)}

    def _noise(self, draw: dict[str, Tensor]) -> Tensor:
        return (self.low + (self.high - self.low) * draw["u"]) * draw["eps"]

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return x + self._noise(draw)

    def theta(self) -> dict[str, float | list[float]]:
        return {"sigma": 0.5 * (self.low + self.high)}

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"noise": self._noise(draw).expand_as(x).clone()}

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"
