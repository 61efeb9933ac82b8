"""Synthetic images from label maps: the SynthSeg-style generator (Billot et al.) that feeds
Learn2Synth's synthetic pass.

``backend: torch`` (:class:`SynthSegGenerator`) is batched on the training device;
``backend: cornucopia`` (:class:`CornucopiaGenerator`) is the reference code's per-sample cornucopia
route, kept for comparison. Both map ``(labels (B, *spatial) int64, generator)`` to
``(image (B, 1, *spatial) in [0, 1], deformed labels (B, *spatial) int64)``.
"""

from __future__ import annotations

from torch import nn

from ..config import SynthesisConfig
from ..errors import ConfigError
from .cornucopia_backend import CornucopiaGenerator
from .generator import SynthSegGenerator

__all__ = ["SynthSegGenerator", "CornucopiaGenerator", "build_generator"]


def build_generator(cfg: SynthesisConfig, n_classes: int, ndim: int) -> nn.Module:
    """The generator selected by ``cfg.backend`` ('torch' or 'cornucopia')."""
    if cfg.backend == "torch":
        return SynthSegGenerator(cfg, n_classes, ndim)
    if cfg.backend == "cornucopia":
        return CornucopiaGenerator(cfg, n_classes, ndim)
    raise ConfigError(f"synthesis.backend: expected 'torch' or 'cornucopia', got {cfg.backend!r}")
