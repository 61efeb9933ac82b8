"""The Inspector: a patch classifier of real vs synthetic images (SynthMix Sec. 2.2-2.3), a live
diagnostic of the domain gap. It never trains the segmenter or theta: every input is detached.

* :func:`random_grid_mask`, :func:`upsample_mask`, :func:`grid_mix`: the random k x k (k^3 in 3D)
  binary mix-up mask and the mix of eq. 2, x~ = M * x_T + (1 - M) * x_S (eq. 3 for label maps),
  batched on the device; public for the SynthMix method too.
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

__all__ = ["DomainInspector", "InspectorNet", "InspectorScores", "grid_mix", "map_on_grid", "patch_targets",
           "random_grid_mask", "upsample_mask"]


def random_grid_mask(shape: Sequence[int], k: int, ratio: float, generator: torch.Generator) -> Tensor:
    """The k x k (k^3 in 3D) random binary mask of SynthMix Sec. 2.2, one per sample.

    ``shape``: the image batch's shape (B, C, *spatial): the number of spatial axes gives 2D or 3D.
    Each cell is 1 with probability ``ratio`` (the share of x_T in the mix), independently. Returns
    a float tensor (B, 1, k, ..., k) of 0/1 on ``generator``'s device; :func:`upsample_mask` or
    :func:`grid_mix` bring it to the image grid."""
    if len(shape) < 4:
        raise ValueError(f"shape must be (B, C, *spatial) with 2 or 3 spatial axes, got {tuple(shape)}")
    if k < 1 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"need k >= 1 and ratio in [0, 1], got k={k}, ratio={ratio}")
    cells = (int(shape[0]), 1) + (k,) * (len(shape) - 2)
    return (torch.rand(cells, generator=generator, device=generator.device) < ratio).float()


def upsample_mask(mask: Tensor, spatial: Sequence[int]) -> Tensor:
    """A cell mask (B, 1, k, ...) nearest-upsampled to ``spatial`` (the interpolated M of eq. 2);
    pixel i of an axis of size n takes cell floor(i * k / n)."""
    spatial = tuple(int(s) for s in spatial)
    if tuple(mask.shape[2:]) == spatial:
        return mask
    return F.interpolate(mask.float(), size=spatial, mode="nearest")


def grid_mix(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Eq. 2 (and eq. 3 for label maps): ``mask * b + (1 - mask) * a``, i.e. ``b`` (x_T) where the
    mask is 1 and ``a`` (x_S) elsewhere.

    ``a``, ``b``: images (B, C, *spatial) or label maps (B, *spatial) of the same shape; ``mask``: a
    0/1 mask (B, 1, *cells) at any resolution (:func:`random_grid_mask`), upsampled to the grid.
    Label maps (and any integer tensor) are mixed by selection, so they stay integers."""
    if a.shape != b.shape:
        raise ValueError(f"grid_mix needs two batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    labels = a.dim() == mask.dim() - 1
    spatial = a.shape[1:] if labels else a.shape[2:]
    full = upsample_mask(mask, spatial).to(a.device)
    if labels:
        full = full[:, 0]
    if not a.is_floating_point():
        return torch.where(full > 0.5, b, a)
    full = full.to(a.dtype)
    return full * b + (1 - full) * a


def patch_targets(mask: Tensor, k: int) -> Tensor:
    """The Inspector's target map: the share of each of its k x k patches taken from x_T (the
    synthetic image), i.e. the mask averaged over the Inspector's adaptive-pooling bins (exactly
    the cell mask when the image size is a multiple of k)."""
    pool = F.adaptive_avg_pool2d if mask.dim() == 4 else F.adaptive_avg_pool3d
    return pool(mask.float(), k)


def map_on_grid(patch_map: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A k x k map nearest-upsampled to an image's grid ``shape`` (the same cells as
    :func:`upsample_mask`), e.g. to lay it over the real preview image."""
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
        cells = random_grid_mask(real[:n].shape, self.grid, self.mix_ratio, self.generator)
        full = upsample_mask(cells, real.shape[2:])
        mixes = grid_mix(real[:n], synthetic[:n], full)
        targets = torch.cat([torch.zeros((real.shape[0], 1) + (self.grid,) * (real.dim() - 2), device=self.device),
                             torch.ones((synthetic.shape[0], 1) + (self.grid,) * (real.dim() - 2), device=self.device),
                             patch_targets(full, self.grid)])
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
