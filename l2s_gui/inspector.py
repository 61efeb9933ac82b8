"""The Inspector: a patch classifier of real vs synthetic images (SynthMix Sec. 2.2-2.3), a live
diagnostic of the domain gap. It never trains the segmenter or theta: every input is detached.

* the unaligned mixes use SynthMix's own mask and mix (:mod:`l2s_gui.grid_mix`, eq. 2:
  ``M * synthetic + (1 - M) * real``, M a random k x k (k^3) cell mask at the image's resolution);
  :func:`patch_targets` turns M into the Inspector's target map;
* :class:`InspectorNet`: a PatchGAN-like encoder-decoder producing a k x k map of logits of
  P(synthetic) per patch, plus the global branch (4x4 convolution + global average pooling)
  supervised by the mean of the mask (Sec. 2.3).
* :class:`DomainInspector`: the network, its own Adam optimiser and its random generator; one
  update on real (target 0), synthetic (target 1) and unaligned mixes of both (target: the mask,
  the "real source, real target and unaligned mix" inputs of SynthMix's ablation), and the
  evaluation (patch-wise accuracy, 0.5 = indistinguishable; the map over one real image).

The trainer side (which batches, when, the fixed evaluation set, events) is
:mod:`l2s_gui.inspector_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grid_mix import grid_mix, random_grid_mask

__all__ = ["DomainInspector", "InspectorNet", "InspectorScores", "map_on_grid", "patch_targets"]


def patch_targets(mask: Tensor, k: int) -> Tensor:
    """The Inspector's target map from a mix-up mask (B, 1, *spatial) at the image's resolution (1 =
    synthetic): the share of each of its k x k patches taken from the synthetic image, i.e. the mask
    averaged over the Inspector's adaptive-pooling bins (exactly the k x k cells of
    :func:`~l2s_gui.grid_mix.random_grid_mask` when k divides the image size)."""
    pool = F.adaptive_avg_pool2d if mask.dim() == 4 else F.adaptive_avg_pool3d
    return pool(mask.float(), k)


def map_on_grid(patch_map: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A k x k map nearest-upsampled to an image's grid ``shape`` (pixel i of an axis of size n takes
    patch floor(i * k / n), about the Inspector's pooling bins), e.g. over the real preview image."""
    patch_map = np.asarray(patch_map)
    index = np.ix_(*[np.arange(n) * k // n for n, k in zip(shape, patch_map.shape)])
    return patch_map[index]


class InspectorNet(nn.Module):
    """PatchGAN extended to an encoder-decoder (SynthMix Sec. 2.3), for 2D or 3D images of any size.

    Encoder: one convolution then a stride-2 convolution per width after the first (LeakyReLU 0.2),
    adaptive average pooling to k x k (k^3). Decoder: a stride-2 convolution to ceil(k/2) (context
    of the neighbouring patches), upsampled back to k and joined to the pooled features, then a
    convolution and a 1x1 head: the logits of P(synthetic) per patch (B, 1, k, ...). Global branch:
    a 4x4 convolution and global average pooling of the same features: one logit per image (B,),
    supervised by the mean of the target map."""

    def __init__(self, ndim: int, widths: Sequence[int], grid: int):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.ndim, self.grid = ndim, int(grid)
        widths = [int(w) for w in widths]
        layers: list[nn.Module] = [conv(1, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [conv(w_in, w_out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(self.grid) if ndim == 2 else nn.AdaptiveAvgPool3d(self.grid)
        w = widths[-1]
        self.down = nn.Sequential(conv(w, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.fuse = nn.Sequential(conv(2 * w, w, 3, padding=1), nn.LeakyReLU(0.2))
        self.head = conv(w, 1, 1)
        self.global_branch = conv(w, 1, 4, padding=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.pool(self.encoder(x))
        coarse = F.interpolate(self.down(features), size=features.shape[2:], mode="nearest")
        fused = self.fuse(torch.cat([features, coarse], 1))
        global_logit = self.global_branch(features).flatten(1).mean(1)
        return self.head(fused), global_logit


@dataclass
class InspectorScores:
    """Patch-wise accuracy of the Inspector on an evaluation set: ``accuracy_real`` the share of
    real patches judged real (P(synthetic) < 0.5), ``accuracy_synthetic`` the share of synthetic
    patches judged synthetic, ``accuracy`` their mean (balanced: 0.5 = the two domains cannot be
    told apart, 1 = every patch is); ``loss`` the map's BCE on the set; ``real_map`` P(real) of each
    patch of the chosen real image, (k, k) or (k, k, k)."""

    accuracy: float
    accuracy_real: float
    accuracy_synthetic: float
    loss: float
    real_map: np.ndarray


def _bce(map_logits: Tensor, global_logit: Tensor, target: Tensor) -> Tensor:
    """BCE of the patch map plus BCE of the global branch against the target map's mean."""
    return (F.binary_cross_entropy_with_logits(map_logits, target)
            + F.binary_cross_entropy_with_logits(global_logit, target.flatten(1).mean(1)))


class DomainInspector:
    """The Inspector with its own Adam optimiser and generator (for the mix masks).

    Label convention: 1 = synthetic, 0 = real; the maps it reports are P(real) over real images
    (see :meth:`evaluate`)."""

    def __init__(self, ndim: int, widths: Sequence[int], grid: int, lr: float, mix_ratio: float,
                 device: torch.device | str, seed: int = 0):
        device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # its own seeded weights; the caller's RNG is untouched
            torch.manual_seed(seed)
            self.net = InspectorNet(ndim, widths, grid).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.grid, self.mix_ratio, self.device = int(grid), float(mix_ratio), device

    def update(self, real: Tensor, synthetic: Tensor) -> float:
        """One Adam step on real images (target 0), synthetic ones (target 1) and unaligned mixes
        M * synthetic + (1 - M) * real of eq. 2 (target: M per patch); returns the loss.

        Both batches are detached first: no gradient ever reaches what produced them."""
        real = real.detach().float().to(self.device)
        synthetic = synthetic.detach().float().to(self.device)
        if real.shape[1:] != synthetic.shape[1:]:
            raise ValueError(f"real and synthetic images differ in shape: {tuple(real.shape)} vs "
                             f"{tuple(synthetic.shape)}")
        n = min(real.shape[0], synthetic.shape[0])
        mask = random_grid_mask(real[:n].shape, self.grid, self.mix_ratio, self.generator)  # 1 = synthetic
        mixes = grid_mix(synthetic[:n], real[:n], mask)
        cells = (self.grid,) * (real.dim() - 2)
        targets = torch.cat([torch.zeros((real.shape[0], 1) + cells, device=self.device),
                             torch.ones((synthetic.shape[0], 1) + cells, device=self.device),
                             patch_targets(mask, self.grid)])
        self.net.train()
        map_logits, global_logit = self.net(torch.cat([real, synthetic, mixes]))
        loss = _bce(map_logits, global_logit, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def logits(self, images: Tensor, batch_size: int) -> Tensor:
        """Patch logits of P(synthetic), (N, 1, k, ...), in batches of ``batch_size``."""
        self.net.eval()
        out = [self.net(images[i:i + batch_size].detach().float().to(self.device))[0]
               for i in range(0, images.shape[0], max(batch_size, 1))]
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, real: Tensor, synthetic: Tensor, map_index: int = 0, batch_size: int = 8) -> InspectorScores:
        """Accuracy on real images (every patch should be judged real) and synthetic ones (every
        patch synthetic), the map BCE, and P(real) of the patches of ``real[map_index]``: near 1
        where the Inspector is sure this real patch is real, i.e. where the synthetic images still
        differ from real ones; 0.5 (or below) where they look alike."""
        real_logits, synth_logits = self.logits(real, batch_size), self.logits(synthetic, batch_size)
        acc_real = float((real_logits < 0).float().mean())
        acc_synth = float((synth_logits >= 0).float().mean())
        loss = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.zeros_like(real_logits))
                      + F.binary_cross_entropy_with_logits(synth_logits, torch.ones_like(synth_logits)))
        real_map = torch.sigmoid(-real_logits[map_index, 0]).cpu().numpy().astype(np.float32)
        return InspectorScores(accuracy=0.5 * (acc_real + acc_synth), accuracy_real=acc_real,
                               accuracy_synthetic=acc_synth, loss=float(loss), real_map=real_map)
