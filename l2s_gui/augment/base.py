"""Base class of the learnable augmentations A_theta (Learn2Synth Sec. 3.3-3.4).

Contract shared by every augmentation, needed by the hypergradient code (a second backward
through the synthetic pass, a forward-over-reverse ``torch.func.jvp`` of a gradient, or a double
backward through the update, all through ``torch.func.functional_call``):

* all randomness is drawn once by :meth:`Augmentation.sample` (no grad, only from the given
  ``torch.Generator``) and passed to :meth:`Augmentation.forward`, which is deterministic given the
  draw, so that several passes (synthetic loss, its gradient, the JVP) see the same image;
* learnable parameters are plain ``nn.Parameter`` s, used as they are in ``forward`` (no ``.data``,
  no in-place ops on tensors that carry gradients, no buffers mutated in ``forward``);
* valid ranges are kept by projection (:meth:`Augmentation.constrain_`, called after each optimiser
  step), i.e. projected gradient descent, not by a reparametrisation in ``forward``.

Tensor conventions: images ``(B, 1, *spatial)``, ``ndim = len(spatial)`` in {2, 3}.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Augmentation", "Identity", "randn", "rand"]


def _draw(fn, shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    out = fn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return out.to(like.device)


def randn(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draw from ``generator`` (on the generator's device), returned on
    ``like.device`` in ``like``'s floating dtype."""
    return _draw(torch.randn, shape, generator, like)


def rand(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Uniform [0, 1) draw from ``generator``, returned on ``like.device`` in ``like``'s dtype."""
    return _draw(torch.rand, shape, generator, like)


class Augmentation(nn.Module):
    """Abstract learnable augmentation ``x -> A_theta(x; draw)``.

    Subclasses implement :meth:`sample`, :meth:`forward`, and, when they have parameters,
    :meth:`constrain_`, :meth:`theta` and :meth:`components`.
    """

    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The random draw for a batch ``x`` of shape ``(B, 1, *spatial)``.

        Uses only ``generator``; returns tensors on ``x.device`` without grad.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, draw: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        """The augmented image, deterministic given ``draw``, differentiable in the parameters
        and in ``x`` (also in forward mode and to second order)."""
        raise NotImplementedError

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project the parameters into their valid ranges, in place (after an optimiser step)."""

    def theta(self) -> dict[str, float | list[float]]:
        """Summary of the learnable parameters for logs, e.g. ``{"sigma": 0.1, "c": [...]}``."""
        return {}

    @torch.no_grad()
    def components(self, x: Tensor, draw: dict[str, Tensor]) -> dict[str, Tensor]:
        """Detached parts of the augmentation for inspection (e.g. ``"inu_field"``, ``"noise"``,
        ``"residual"``), each ``(B, 1, *spatial)``."""
        return {}

    @staticmethod
    def _merge(*draws: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for d in draws:
            clash = set(out) & set(d)
            if clash:
                raise ValueError(f"augmentation draws share keys {sorted(clash)}")
            out.update(d)
        return out


class Identity(Augmentation):
    """No augmentation (kind 'none'): no parameters, empty draw, ``forward(x) == x``."""

    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {}

    def forward(self, x: Tensor, draw: dict[str, Tensor] | None = None) -> Tensor:  # type: ignore[override]
        return x
