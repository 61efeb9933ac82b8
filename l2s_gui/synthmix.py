"""SynthMix-style aligned mix-up as a training method (``training.method: synthmix``).

SynthMix (Sec. 2.2) mixes an image with a synthetic image *of the same content* on a random
k x k grid: ``x~ = M * x_T + (1 - M) * x_S`` (eq. 2), ``y~ = M * y_T + (1 - M) * y_S`` (eq. 3). Users of
this tool have real (scan, labels) pairs, so aligned pairs are free: a synthetic image generated
from a real scan's own label map without any spatial transform is aligned with that scan, and both
labels of eq. 3 are that map.

- :class:`AlignedSynthesis`: ``G'(y)``, the generator's intensity steps (GMM, resolution, gamma,
  normalisation; no flip, skull strip, deformation or shift) on a real pair's label map. The real
  maps are kept as training classes, so each class is one generation label here.
- :func:`recovery_aligned_pairs`: in recovery mode the "real" image is itself synthetic; the pair is
  ``corruption(G(map))`` and ``G'(map)`` rendered from one deformed generation-label map (same
  geometry, independent contrast draws).
- :func:`aligned_mix`: eq. 2 with the mask of :func:`~l2s_gui.grid_mix.random_grid_mask`.

The trainer applies ``A_theta`` to ``G'(y)`` before the mix, with theta fixed (no hyper-step: it is
set by the augmentation settings or by a learnt Learn2Synth model, ``training.init_theta_from``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import SynthesisConfig
from .errors import ConfigError
from .grid_mix import grid_mix, random_grid_mask
from .synthesis import SynthSegGenerator, ToClasses

__all__ = ["AlignedSynthesis", "aligned_mix", "mix_count", "recovery_aligned_pairs"]


def mix_count(fraction: float, batch: int) -> int:
    """Samples of a batch of ``batch`` that are aligned mixes: ``round(fraction * batch)``, at least
    one and at most the batch."""
    return min(batch, max(1, round(fraction * batch)))


class AlignedSynthesis(nn.Module):
    """``G'(y)``: a random-contrast image aligned with the label map ``y`` ``(B, *spatial)`` (training
    classes 0..n_classes-1, each its own generation label): steps 2-5 of
    :class:`~l2s_gui.synthesis.SynthSegGenerator` only, so every class boundary stays where it is."""

    def __init__(self, cfg: SynthesisConfig, n_classes: int, ndim: int,
                 voxel_size_mm: Sequence[float] | None = None):
        super().__init__()
        self.generator = SynthSegGenerator(cfg, n_classes, ndim, deformation=False, voxel_size_mm=voxel_size_mm)

    @torch.no_grad()
    def forward(self, labels: Tensor, generator: torch.Generator) -> Tensor:  # type: ignore[override]
        """``(B, 1, *spatial)`` float32 in [0, 1] on ``labels.device``."""
        return self.generator.render(labels.long(), None, generator)


def _torch_generator(synth: nn.Module) -> tuple[SynthSegGenerator, Tensor | None]:
    """The batched generator inside ``synth`` (a trainer's ``synth``) and its generation label ->
    class map (None: the labels are classes)."""
    if isinstance(synth, ToClasses) and isinstance(synth.generator, SynthSegGenerator):
        return synth.generator, synth.classes
    if isinstance(synth, SynthSegGenerator):
        return synth, None
    raise ConfigError("synthesis.backend: synthmix in recovery mode renders two images of one deformed map, "
                      "which only the 'torch' backend can do; set synthesis.backend: torch")


@torch.no_grad()
def recovery_aligned_pairs(synth: nn.Module, corruption: nn.Module, labels: Tensor,
                           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Recovery mode's aligned pairs from generation-label maps ``labels`` ``(B, *spatial)``:
    ``(x_real, x_aligned, y)`` with ``x_real = corruption(G(map))`` (the recovery experiment's "real"
    image), ``x_aligned = G'(map)`` (a second, independent contrast draw of the same deformed map,
    not yet augmented) and ``y`` its training classes."""
    gen, classes = _torch_generator(synth)
    deformed, stripped = gen.geometry(labels, generator)
    x_real = corruption(gen.render(deformed, stripped, generator), generator)
    x_aligned = gen.render(deformed, stripped, generator)
    y = classes.to(deformed.device)[deformed] if classes is not None else deformed
    return x_real, x_aligned, y


def aligned_mix(x_real: Tensor, x_synth: Tensor, k: int, ratio: float, generator: torch.Generator) -> Tensor:
    """SynthMix eq. 2 for aligned pairs: ``M * x_real + (1 - M) * x_synth``, ``M`` a random k x k
    (x k) grid mask with P(cell from ``x_real``) = ``ratio``, drawn per sample. The labels of eq. 3
    are the pair's one label map."""
    mask = random_grid_mask(x_real.shape, k, ratio, generator)
    return grid_mix(x_real, x_synth.to(x_real.dtype), mask)
