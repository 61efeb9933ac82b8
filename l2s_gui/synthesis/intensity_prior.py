"""Intensity priors of the generator's Gaussian mixture estimated from real labelled scans.

SynthSeg draws every class mean from ``U(mean_range)``: any contrast. Its "SynthSeg-rule" variant
(Billot et al., ``papers/synthseg.txt`` Sec. 3.2, Fig. 3) draws them instead from a Gaussian
hyperprior built from real scans and their ground-truth labels, so that the synthetic images have
the contrast of the scans to be segmented. ``synthesis.intensity_prior: real`` does this from the
run's real *training* pairs (never the validation pairs): per class, the mean ``m_c`` and standard
deviation ``s_c`` of the normalised intensities under that class; each synthetic sample then draws
``mu_k ~ N(m_c, intensity_prior_spread^2)`` (clipped to [0, 1]) and ``sigma_k ~ U(0, s_c)`` for
every generation label ``k`` of class ``c``. Classes absent from the real pairs keep SynthSeg's
uniform draws. The network is still trained on synthetic images only (Learn2Synth Sec. 3); the real
pairs shape the generator, as they shape the learned augmentation through the hypergradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ClassIntensities", "class_intensities", "generation_prior", "describe"]


@dataclass(frozen=True)
class ClassIntensities:
    """Per class: ``mean``, ``std`` of the intensities and ``count`` of voxels (0: absent)."""

    mean: Tensor   # (n_classes,) float32, NaN where absent
    std: Tensor    # (n_classes,) float32, NaN where absent
    count: Tensor  # (n_classes,) int64


def class_intensities(images: Sequence[Tensor], labels: Sequence[Tensor], n_classes: int) -> ClassIntensities:
    """Mean, std and voxel count of ``images`` (normalised scans) under each class of ``labels``
    (class maps of the same shapes), pooled over all the pairs."""
    total = torch.zeros(n_classes, dtype=torch.float64)
    square = torch.zeros(n_classes, dtype=torch.float64)
    count = torch.zeros(n_classes, dtype=torch.int64)
    for image, lab in zip(images, labels, strict=True):
        if image.shape != lab.shape:
            raise ValueError(f"image {tuple(image.shape)} and labels {tuple(lab.shape)} differ in shape")
        x, y = image.reshape(-1).to(torch.float64), lab.reshape(-1).long()
        total += torch.bincount(y, weights=x, minlength=n_classes)[:n_classes]
        square += torch.bincount(y, weights=x * x, minlength=n_classes)[:n_classes]
        count += torch.bincount(y, minlength=n_classes)[:n_classes]
    n = count.to(torch.float64)
    mean = torch.where(count > 0, total / n.clamp_min(1), torch.nan)
    var = torch.where(count > 1, (square - n * mean.square()) / (n - 1).clamp_min(1), torch.nan)
    return ClassIntensities(mean.float(), var.clamp_min(0).sqrt().float(), count)


def generation_prior(stats: ClassIntensities, generation_classes: Tensor) -> tuple[Tensor, Tensor]:
    """``(means, stds)`` per generation label (``generation_classes``: generation label -> class),
    NaN for the labels whose class the real pairs do not hold."""
    classes = generation_classes.long().cpu()
    return stats.mean[classes].clone(), stats.std[classes].clone()


def describe(stats: ClassIntensities, names: Sequence[str]) -> str:
    """One line for the run log: ``white matter 0.93 +- 0.05, ...`` (absent classes said once)."""
    parts, absent = [], []
    for c, name in enumerate(names):
        if int(stats.count[c]) > 0:
            parts.append(f"{name} {float(stats.mean[c]):.2f} ± {float(stats.std[c]):.2f}")
        else:
            absent.append(name)
    text = "intensity prior from the real training pairs (mean ± std per class): " + ", ".join(parts)
    if absent:
        text += f"; not in the real pairs, so drawn uniformly: {', '.join(absent)}"
    return text
