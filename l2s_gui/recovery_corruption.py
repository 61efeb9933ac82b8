"""Known corruptions that make "real" images for the synthetic-recovery experiments (Learn2Synth
Sec. 4.1): x_real = A_theta_hat(x_synth) with preset parameters theta_hat, so that the learned
theta can be compared with theta_hat.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .augment.base import rand, randn
from .augment.inu import IntensityNonUniformity
from .config import RecoveryConfig


class PresetCorruption(nn.Module):
    """INU with preset exponents c_k (eq. 6-7), then Gaussian noise with a preset sigma (eq. 8) or
    with sigma ~ U[low, high] drawn per image (the paper's "U[0.025, 0.2]" setting)."""

    def __init__(self, cfg: RecoveryConfig):
        super().__init__()
        self.sigma = float(cfg.sigma)
        self.sigma_range = [float(v) for v in cfg.sigma_range]
        self.inu = (IntensityNonUniformity(cfg.inu_nodes[:len(cfg.inu_c)], cfg.inu_c, max(2.0, max(cfg.inu_c)))
                    if cfg.inu_c else None)
        if self.inu is not None:
            self.inu.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.inu is not None:
            x = self.inu(x, self.inu.sample(x, generator))
        eps = randn(x.shape, generator, x)
        sigma: Tensor | float
        if self.sigma_range:
            low, high = self.sigma_range
            sigma = low + (high - low) * rand((x.shape[0],) + (1,) * (x.dim() - 1), generator, x)
        else:
            sigma = self.sigma
        return x + sigma * eps
