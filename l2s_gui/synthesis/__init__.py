"""Synthetic images from label maps: the SynthSeg-style generator (Billot et al.) that feeds
Learn2Synth's synthetic pass.

``backend: torch`` (:class:`SynthSegGenerator`) is batched on the training device;
``backend: cornucopia`` (:class:`CornucopiaGenerator`) is the reference code's per-sample cornucopia
route, kept for comparison. Both map ``(labels (B, *spatial) int64, generator)`` to
``(image (B, 1, *spatial) in [0, 1], deformed labels (B, *spatial) int64)``.

Generation vs training labels (SynthSeg Sec. 2.2): the generator draws one intensity per
*generation label* (every original label value); :class:`ToClasses` then maps the deformed maps to
the classes the network learns, so merged or background structures still get their own contrast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import SynthesisConfig
from ..errors import ConfigError
from .cornucopia_backend import CornucopiaGenerator
from .generator import SynthSegGenerator, jacobian_determinant

__all__ = ["SynthSegGenerator", "CornucopiaGenerator", "ToClasses", "build_generator", "jacobian_determinant",
           "set_intensity_prior"]


class ToClasses(nn.Module):
    """A generator whose deformed generation labels come out as training classes."""

    classes: Tensor

    def __init__(self, generator: nn.Module, classes: Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("classes", classes.to(torch.int64))

    def forward(self, labels: Tensor, generator: torch.Generator, **kwargs) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        image, deformed = self.generator(labels, generator, **kwargs)
        return image, self.classes[deformed]


def set_intensity_prior(synth: nn.Module, means: Tensor, stds: Tensor) -> None:
    """Give the batched generator inside ``synth`` (a :func:`build_generator` result) the GMM
    hyperprior of ``synthesis.intensity_prior: real`` (per generation label; see
    :meth:`SynthSegGenerator.set_intensity_prior`)."""
    inner = synth.generator if isinstance(synth, ToClasses) else synth
    if not isinstance(inner, SynthSegGenerator):
        raise ConfigError("synthesis.intensity_prior: 'real' needs synthesis.backend: torch")
    inner.set_intensity_prior(means, stds)


def build_generator(cfg: SynthesisConfig, n_labels: int, ndim: int,
                    classes: Tensor | None = None, flip_permutation: Tensor | None = None,
                    flip_axis: int | None = 0, extracerebral: Tensor | None = None,
                    voxel_size_mm: Sequence[float] | None = None) -> nn.Module:
    """The generator selected by ``cfg.backend`` ('torch' or 'cornucopia') for ``n_labels``
    generation labels; with ``classes`` (generation label -> class) its label output is classes.

    Torch backend only: ``flip_permutation`` (generation label after a left/right flip along
    ``flip_axis``; None: no flip), ``extracerebral`` (bool per generation label, for the skull-strip
    simulation) and ``voxel_size_mm`` of the training grid (resolution randomisation; None: 1 mm).
    The cornucopia backend ignores them (no flip, resolution or skull-strip simulation)."""
    if cfg.backend == "torch":
        gen: nn.Module = SynthSegGenerator(cfg, n_labels, ndim, flip_permutation=flip_permutation,
                                           flip_axis=flip_axis, extracerebral=extracerebral,
                                           voxel_size_mm=voxel_size_mm)
    elif cfg.backend == "cornucopia":
        gen = CornucopiaGenerator(cfg, n_labels, ndim)
    else:
        raise ConfigError(f"synthesis.backend: expected 'torch' or 'cornucopia', got {cfg.backend!r}")
    if classes is None or torch.equal(classes.cpu(), torch.arange(n_labels)):
        return gen
    return ToClasses(gen, classes)
