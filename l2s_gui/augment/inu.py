"""Learnable intensity non-uniformity (Learn2Synth eq. 6-7)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Augmentation, rand

__all__ = ["IntensityNonUniformity"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class IntensityNonUniformity(Augmentation):
    """Multiplicative bias field ``alpha = prod_k alpha_k ** c_k`` (eq. 6-7).

    Field ``k`` has ``M_k = nodes[k]`` nodes per spatial axis with values
    ``beta_k ~ U(0.5, 2)`` drawn independently per image and node; it is upsampled to the image with
    a first-order B-spline (linear interpolation with ``align_corners=True``, i.e. node spacing
    ``(N - 1) / (M_k - 1)``): ``alpha_k = B_k beta_k``. The field is applied as ``x * alpha``.

    ``alpha`` is computed as ``exp(sum_k c_k * log(B_k beta_k))`` (upsample, then log: faithful to
    eq. 6-7, not ``B_k log(beta_k)``), which is smooth in ``c`` including at ``c_k = 0``.
    Each ``alpha_k`` lies in ``[0.5, 2]`` so ``alpha`` lies in ``[0.5 ** sum(c), 2 ** sum(c)]``.

    ``c`` is one ``nn.Parameter`` of shape ``(K,)`` kept in ``[0, c_max]`` by projection in
    :meth:`constrain_`. The draw holds the node values ``"beta_k"`` ``(B, 1, M_k, ..., M_k)``
    (small); the upsampling happens in :meth:`forward`.
    """

    def __init__(self, nodes: Sequence[int] = (2, 4, 8), c_init: float | Sequence[float] = 0.5,
                 c_max: float = 2.0):
        super().__init__()
        nodes = tuple(int(m) for m in nodes)
        if not nodes or any(m < 2 for m in nodes):
            raise ValueError(f"nodes must be a non-empty list of node counts >= 2, got {nodes}")
        if c_max <= 0:
            raise ValueError(f"c_max must be > 0, got {c_max}")
        c = torch.as_tensor(c_init, dtype=torch.get_default_dtype()).flatten()
        if c.numel() == 1:
            c = c.expand(len(nodes))
        if c.numel() != len(nodes):
            raise ValueError(f"c_init has {c.numel()} values for {len(nodes)} fields")
        if (c < 0).any() or (c > c_max).any():
            raise ValueError(f"c_init must be in [0, c_max={c_max}], got {c.tolist()}")
        self.nodes = nodes
        self.c_max = float(c_max)
        self.c = nn.Parameter(c.clone())

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        ndim = x.dim() - 2
        return {
            f"beta_{k}": 0.5 + 1.5 * rand((x.shape[0], 1) + (m,) * ndim, generator, x)
            for k, m in enumerate(self.nodes)
        }

    def _log_fields(self, x: Tensor, draw: dict[str, Tensor]) -> list[Tensor]:
        ndim = x.dim() - 2
        size = tuple(x.shape[2:])
        return [
            torch.log(F.interpolate(draw[f"beta_{k}"], size=size, mode=_MODES[ndim], align_corners=True))
            for k in range(len(self.nodes))
        ]

    def log_field(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:
        """``log(alpha) = sum_k c_k * log(B_k beta_k)``, shape ``(B, 1, *spatial)``."""
        logs = self._log_fields(x, draw)
        out = self.c[0] * logs[0]
        for k in range(1, len(logs)):
            out = out + self.c[k] * logs[k]
        return out

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return x * torch.exp(self.log_field(x, draw))

    @torch.no_grad()
    def constrain_(self) -> None:
        self.c.clamp_(min=0.0, max=self.c_max)

    def theta(self) -> dict[str, float | list[float]]:
        return {"c": [float(v) for v in self.c.detach().cpu()]}

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"inu_field": torch.exp(self.log_field(x, draw)).detach()}

    def extra_repr(self) -> str:
        return f"nodes={self.nodes}, c_max={self.c_max}"
