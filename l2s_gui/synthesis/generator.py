"""Batched SynthSeg-style image synthesis on the training device.

Implements the generative model of SynthSeg (Billot et al. 2023, ``papers/synthseg.txt``,
Sec. 2.2 and Algorithm 1) for a whole batch at once, with no Python loop over samples or classes.
Noise and bias field are deliberately left out: in Learn2Synth they belong to the learnable
augmentation A_theta that follows this generator.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SynthesisConfig
from ..errors import InputError

__all__ = ["SynthSegGenerator"]

_INTERP = {2: "bilinear", 3: "trilinear"}


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator,
             device: torch.device) -> Tensor:
    """U(low, high) float32 draw from ``generator`` (on its device), returned on ``device``."""
    u = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return (low + (high - low) * u).to(device)


def _normal(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """N(0, 1) float32 draw from ``generator`` (on its device), returned on ``device``."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device,
                       dtype=torch.float32).to(device)


def _minmax(x: Tensor) -> Tensor:
    """Per-image min-max normalisation of ``(B, 1, *spatial)`` to [0, 1] (constant image -> 0)."""
    flat = x.flatten(1)
    lo = flat.amin(1).view(-1, *([1] * (x.dim() - 1)))
    hi = flat.amax(1).view(-1, *([1] * (x.dim() - 1)))
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp_(0.0, 1.0)


class SynthSegGenerator(nn.Module):
    """Random-contrast images from label maps, SynthSeg style, for a whole batch on its device.

    ``forward(labels (B, *spatial) int64 with ids in 0..n_classes-1, generator)`` returns
    ``(image (B, 1, *spatial) float32 in [0, 1], deformed labels (B, *spatial) int64)``.

    Steps (SynthSeg Algorithm 1; all parameters drawn independently per sample):

    1. **Deformation** (Sec. 2.2, eq. 3) ``phi = phi_aff o phi_v``. ``phi_v(p) = p + u(p)``: the
       displacement ``u`` has ``cfg.elastic_nodes`` nodes per axis with values
       ``~ N(0, (cfg.elastic * N_i)^2)`` along axis ``i`` of size ``N_i`` (a fraction of the field
       of view), upsampled to the image by (bi/tri)linear interpolation as in SynthSeg (not integrated
       as an SVF: no scaling and squaring). ``phi_aff`` rotates (``U(-rotation, rotation)`` degrees
       about each axis: one angle in 2D, three in 3D), scales (``U(1-scaling, 1+scaling)`` per axis),
       shears (``U(-shear, shear)`` for each of the ``ndim(ndim-1)/2`` upper off-diagonal terms) about
       the image centre, and translates (``U(-translation, translation)`` voxels per axis). The labels
       are resampled once with ``grid_sample`` (nearest, border padding) on this single grid:
       ``L = S o phi``. With all ranges zero the grid is the identity.
    2. **Gaussian mixture** (Sec. 2.2): per sample and class (background included)
       ``mu_k ~ U(mean_range)``, ``sigma_k ~ U(std_range)``; ``G = mu[L] + sigma[L] * eps`` with
       ``eps ~ N(0, 1)`` voxel-wise (gather, no loop over classes).
    3. **Blur** (partial volume, Sec. 2.2): Gaussian of std ``sigma_blur ~ U(0, blur_max)`` voxels,
       separable, one kernel per sample (grouped convolution), replicate padding.
    4. **Gamma** (eq. 4): min-max normalise to [0, 1], then ``x ** gamma`` with
       ``log(gamma) ~ N(0, gamma_std^2)`` (SynthSeg draws ``log gamma`` uniformly; the normal
       matches cornucopia's ``LogNormal``).
    5. Final per-image min-max normalisation to [0, 1].

    All randomness comes from the ``generator`` passed to :meth:`forward` (draws happen on the
    generator's device, results live on ``labels.device``), so a seed reproduces a batch exactly.
    ``deformation=False`` (or ``forward(..., deform=False)``) skips step 1.
    """

    def __init__(self, cfg: SynthesisConfig, n_classes: int, ndim: int, deformation: bool = True):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.cfg = cfg
        self.n_classes = int(n_classes)
        self.ndim = int(ndim)
        self.deformation = bool(deformation)

    # ------------------------------------------------------------------ deformation (step 1)
    def _affine(self, batch: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """Linear part ``(B, d, d)`` (rotation @ shear @ scaling) and translation ``(B, d)`` in voxels."""
        c, d = self.cfg, self.ndim
        n_rot = 1 if d == 2 else 3
        n_shear = d * (d - 1) // 2
        angles = _uniform((batch, n_rot), -c.rotation, c.rotation, generator, device) * (math.pi / 180)
        scales = _uniform((batch, d), 1.0 - c.scaling, 1.0 + c.scaling, generator, device)
        shears = _uniform((batch, n_shear), -c.shear, c.shear, generator, device)
        shift = _uniform((batch, d), -c.translation, c.translation, generator, device)

        eye = torch.eye(d, device=device).expand(batch, d, d)
        rot = eye.clone()
        pairs = [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]  # about axes 0, 1, 2
        for k, (i, j) in enumerate(pairs):
            cos, sin = torch.cos(angles[:, k]), torch.sin(angles[:, k])
            r = eye.clone()
            r[:, i, i], r[:, j, j], r[:, i, j], r[:, j, i] = cos, cos, -sin, sin
            rot = rot @ r
        shear = eye.clone()
        iu = torch.triu_indices(d, d, offset=1, device=device)
        shear[:, iu[0], iu[1]] = shears
        return rot @ shear @ torch.diag_embed(scales), shift

    def _elastic(self, batch: int, spatial: Sequence[int], generator: torch.Generator,
                 device: torch.device) -> Tensor:
        """Smooth displacement ``(B, *spatial, d)`` in voxels (coarse Gaussian nodes, upsampled)."""
        c, d = self.cfg, self.ndim
        nodes = _normal((batch, d) + (c.elastic_nodes,) * d, generator, device)
        std = torch.tensor([c.elastic * n for n in spatial], device=device, dtype=torch.float32)
        nodes = nodes * std.view(1, d, *([1] * d))
        field = F.interpolate(nodes, size=tuple(spatial), mode=_INTERP[d], align_corners=True)
        return field.movedim(1, -1)

    def sampling_grid(self, batch: int, spatial: Sequence[int], generator: torch.Generator,
                      device: torch.device) -> Tensor:
        """The ``grid_sample`` grid ``(B, *spatial, d)`` of ``phi = phi_aff o phi_v`` (align_corners=True)."""
        d = self.ndim
        spatial = tuple(int(n) for n in spatial)
        linear, shift = self._affine(batch, generator, device)
        elastic = self._elastic(batch, spatial, generator, device)
        centre = torch.tensor([(n - 1) / 2 for n in spatial], device=device, dtype=torch.float32)
        axes = [torch.arange(n, device=device, dtype=torch.float32) for n in spatial]
        base = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - centre  # (*sp, d), centred
        points = (base + elastic).reshape(batch, -1, d)                              # phi_v
        coords = points @ linear.transpose(1, 2) + (centre + shift).unsqueeze(1)     # phi_aff
        scale = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], device=device, dtype=torch.float32)
        grid = coords * scale - 1.0
        return grid.flip(-1).reshape(batch, *spatial, d)  # grid_sample wants (x, y[, z]) = reversed axes

    def deform_labels(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Step 1 only: ``labels`` ``(B, *spatial)`` resampled on a random deformation (nearest)."""
        grid = self.sampling_grid(labels.shape[0], labels.shape[1:], generator, labels.device)
        out = F.grid_sample(labels.unsqueeze(1).to(torch.float32), grid, mode="nearest",
                            padding_mode="border", align_corners=True)
        return out.squeeze(1).round_().to(torch.int64)

    # ------------------------------------------------------------------ intensities (steps 2-5)
    def _gmm(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        c, batch, device = self.cfg, labels.shape[0], labels.device
        means = _uniform((batch, self.n_classes), *c.mean_range, generator, device)
        stds = _uniform((batch, self.n_classes), *c.std_range, generator, device)
        flat = labels.reshape(batch, -1)
        eps = _normal(flat.shape, generator, device)
        image = means.gather(1, flat) + stds.gather(1, flat) * eps
        return image.view(batch, 1, *labels.shape[1:])

    def _blur(self, image: Tensor, generator: torch.Generator) -> Tensor:
        c, d, batch = self.cfg, self.ndim, image.shape[0]
        sigma = _uniform((batch,), 0.0, c.blur_max, generator, image.device)
        if c.blur_max <= 0:
            return image
        radius = max(1, math.ceil(3 * c.blur_max))
        x = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / sigma.clamp_min(1e-6).unsqueeze(1)) ** 2)  # sigma -> 0: delta
        kernel = (kernel / kernel.sum(1, keepdim=True)).view(batch, 1, 2 * radius + 1)
        conv = F.conv2d if d == 2 else F.conv3d
        out = F.pad(image.transpose(0, 1), (radius,) * (2 * d), mode="replicate")  # (1, B, *sp)
        for axis in range(d):
            shape = [batch, 1] + [1] * d
            shape[2 + axis] = 2 * radius + 1
            out = conv(out, kernel.view(shape), groups=batch)
        return out.transpose(0, 1)

    def _gamma(self, image: Tensor, generator: torch.Generator) -> Tensor:
        batch = image.shape[0]
        gamma = torch.exp(self.cfg.gamma_std * _normal((batch,), generator, image.device))
        return _minmax(image) ** gamma.view(batch, *([1] * (image.dim() - 1)))

    def synthesize_intensities(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Steps 2-5 on (already deformed) ``labels``: ``(B, 1, *spatial)`` float32 in [0, 1]."""
        image = self._gmm(labels, generator)
        image = self._blur(image, generator)
        image = self._gamma(image, generator)
        return _minmax(image)

    def forward(self, labels: Tensor, generator: torch.Generator,  # type: ignore[override]
                deform: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(image (B, 1, *spatial) in [0, 1], deformed labels (B, *spatial) int64)``."""
        if labels.dim() != self.ndim + 1:
            raise ValueError(f"labels must be (B, *spatial) with {self.ndim} spatial axes, "
                             f"got shape {tuple(labels.shape)}")
        if labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64 class indices, got {labels.dtype}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.n_classes:
            raise InputError(f"label map holds class ids {lo}..{hi}, outside 0..{self.n_classes - 1}: "
                             f"relabel to contiguous classes first")
        with torch.no_grad():
            if self.deformation if deform is None else deform:
                labels = self.deform_labels(labels, generator)
            image = self.synthesize_intensities(labels, generator)
        return image, labels
