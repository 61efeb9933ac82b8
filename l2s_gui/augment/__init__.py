"""Learnable augmentations A_theta (Learn2Synth Sec. 3.3-3.4)."""

from __future__ import annotations

from ..config import AugmentationConfig
from .base import Augmentation, Identity
from .inu import IntensityNonUniformity
from .noise import GaussianNoise, UniformRangeNoise
from .parametric import ParametricAugmentation
from .residual import ResidualAugmentation

__all__ = [
    "Augmentation",
    "Identity",
    "GaussianNoise",
    "UniformRangeNoise",
    "IntensityNonUniformity",
    "ParametricAugmentation",
    "ResidualAugmentation",
    "build_augmentation",
    "theta_groups",
]


def build_augmentation(cfg: AugmentationConfig, ndim: int) -> Augmentation:
    """The augmentation described by ``cfg`` for ``ndim``-D images.

    * 'parametric': INU (if ``cfg.inu``) then noise ('fixed': eq. 8, 'per_image': eq. 9,
      'uniform': sigma ~ U[sigma_range] per image, not learned; 'none': no noise);
    * 'nonparametric': residual net (eq. 10-11) followed by per-image noise (eq. 9) as in the paper
      (``cfg.noise`` is ignored; ``cfg.sigma_init`` sets the initial sigma);
    * 'none': :class:`Identity`.
    """
    if cfg.kind == "none":
        return Identity()
    if cfg.kind == "nonparametric":
        return ResidualAugmentation(ndim, widths=cfg.residual_widths,
                                    noise=GaussianNoise(cfg.sigma_init, per_image=True))
    if cfg.kind == "parametric":
        inu = IntensityNonUniformity(cfg.inu_nodes, cfg.inu_c_init, cfg.inu_c_max) if cfg.inu else None
        noise: GaussianNoise | UniformRangeNoise | None
        if cfg.noise == "none":
            noise = None
        elif cfg.noise == "uniform":
            noise = UniformRangeNoise(*cfg.sigma_range)
        else:
            noise = GaussianNoise(cfg.sigma_init, per_image=cfg.noise == "per_image")
        return ParametricAugmentation(inu, noise)
    raise ValueError(f"augmentation.kind must be 'parametric', 'nonparametric' or 'none', got {cfg.kind!r}")


def theta_groups(aug: Augmentation, inu_scale: float) -> list[dict]:
    """theta's Adam parameter groups: the INU exponents c (eq. 6-7) in a group of their own whose
    rate is ``inu_scale`` times theta's (``training.lr_inu_scale``); one group when the scale is 1
    (so that checkpoints written before the key existed resume unchanged)."""
    learnable = [p for p in aug.parameters() if p.requires_grad]
    inu = {id(m.c) for m in aug.modules() if isinstance(m, IntensityNonUniformity)}
    exponents = [p for p in learnable if id(p) in inu]
    rest = [p for p in learnable if id(p) not in inu]
    if inu_scale == 1.0 or not exponents:
        return [{"params": learnable, "lr_scale": 1.0}]
    return ([{"params": rest, "lr_scale": 1.0}] if rest else []) + [{"params": exponents, "lr_scale": float(inu_scale)}]
