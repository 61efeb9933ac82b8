"""Batched SynthSeg-style image synthesis on the training device.

Implements the generative model of SynthSeg (Billot et al. 2023, ``papers/synthseg.txt``,
Sec. 2.2 and Algorithm 1, with the defaults of its code: flipping, randomised resolution, SVF
elastic field, log-normal gamma) for a whole batch at once, with no Python loop over samples or
classes.
Noise and bias field are deliberately left out: in Learn2Synth they belong to the learnable
augmentation A_theta that follows this generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SynthesisConfig
from ..errors import InputError

__all__ = ["SynthSegGenerator", "jacobian_determinant"]

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


def _gaussian_smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing (std ``sigma`` voxels, zero padding) of ``(B, 1, *spatial)``."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    d = x.dim() - 2
    conv = F.conv2d if d == 2 else F.conv3d
    for axis in range(d):
        shape = [1, 1] + [1] * d
        shape[2 + axis] = 2 * radius + 1
        pad = [0] * d
        pad[axis] = radius
        x = conv(x, kernel.view(shape), padding=tuple(pad))
    return x


def _acquisition_matrix(res: Tensor, sigma: Tensor, n: int) -> Tensor:
    """``(B, n, n)``: blur (std ``sigma``), sample at ``0, r, 2r, ...`` and linearly interpolate back."""
    device = res.device
    j = torch.arange(n, device=device, dtype=torch.float32)
    # Gaussian, rows renormalised (border voxels average what lies inside the grid)
    diff2 = (j.view(n, 1) - j.view(1, n)).square_()
    gauss = torch.exp(diff2 * (-0.5 / sigma.clamp_min(1e-3).square()).view(-1, 1, 1))
    gauss = gauss / gauss.sum(2, keepdim=True)
    # voxel x lies between lattice nodes y0 = k r and y1 = min((k + 1) r, n - 1): weights 1 - a, a;
    # f(y) is itself linear interpolation between floor(y) and floor(y) + 1: four weights per row
    r = res.view(-1, 1)
    y0 = torch.floor(j.view(1, n) / r + 1e-4) * r
    y1 = (y0 + r).clamp_max(n - 1.0)
    a = ((j.view(1, n) - y0) / (y1 - y0).clamp_min(1e-6)).clamp(0.0, 1.0)
    i0, i1 = y0.floor(), y1.floor()
    f0, f1 = y0 - i0, y1 - i1
    index = torch.stack([i0, i0 + 1, i1, i1 + 1], dim=-1).clamp_max(n - 1).long()
    weight = torch.stack([(1 - a) * (1 - f0), (1 - a) * f0, a * (1 - f1), a * f1], dim=-1)
    resample = torch.zeros((res.shape[0], n, n), device=device).scatter_add_(2, index, weight)
    return torch.bmm(resample, gauss)


def jacobian_determinant(coords: Tensor) -> Tensor:
    """Jacobian determinant ``(B, *(spatial - 1))`` of a map given as voxel coordinates
    ``(B, *spatial, d)`` (forward differences); ``<= 0`` where the map folds."""
    d = coords.shape[-1]
    cols = []
    for axis in range(d):
        n = coords.shape[axis + 1] - 1
        diff = coords.narrow(axis + 1, 1, n) - coords.narrow(axis + 1, 0, n)
        cols.append(diff)
    crop = [min(c.shape[i + 1] for c in cols) for i in range(d)]
    cols = [c[(slice(None),) + tuple(slice(0, m) for m in crop)] for c in cols]
    return torch.linalg.det(torch.stack(cols, dim=-1))


class SynthSegGenerator(nn.Module):
    """Random-contrast images from label maps, SynthSeg style, for a whole batch on its device.

    ``forward(labels (B, *spatial) int64 with ids in 0..n_classes-1, generator)`` returns
    ``(image (B, 1, *spatial) float32 in [0, 1], deformed labels (B, *spatial) int64)``.

    Steps (SynthSeg Algorithm 1 and its code, ``brain_generator.py`` / ``labels_to_image_model.py``;
    all parameters drawn independently per sample, every step batched, no loop over samples):

    0. **Left/right flip** (``cfg.flip``, SynthSeg ``flipping``): with probability 0.5 the label map
       is mirrored along :attr:`flip_axis` (RAS x) and its ids swapped by :attr:`flip_permutation`
       (left id <-> right id), so the image and the returned labels stay consistent. Only with a
       permutation (the caller knows the L/R pairs: :meth:`TrainingData.generation_flip_permutation`).
       **Skull strip** (``cfg.skull_strip_probability``, default off): with that probability the
       :attr:`extracerebral` labels become background 0, and with ``cfg.skull_strip_sharp`` the
       final image of such a sample is 0 outside the (deformed) brain, as a scan stripped after its
       acquisition is: a sharp edge where the synthetic blur would smear the brain into the
       background.
    1. **Deformation** (Sec. 2.2, eq. 3) ``phi = phi_aff o phi_v``, ``phi_v(p) = p + u(p)``.
       ``elastic_kind: svf`` (default): ``u`` is the exponential of a stationary velocity field
       (:meth:`_svf`: nodes at ``svf_scale`` = 1/25 of the image, std ``~ U(0, svf_std)`` voxels,
       scaling and squaring in ``svf_steps`` steps), diffeomorphic, so the warped maps do not fold
       (tests: folded fraction 0 over 100 draws). ``elastic_kind: displacement`` (before issue 9): ``u``
       has ``cfg.elastic_nodes`` nodes per axis ``~ N(0, (cfg.elastic * N_i)^2)`` along axis ``i``,
       upsampled by (bi/tri)linear interpolation, not integrated (folds above ``elastic`` ~0.02).
       ``phi_aff`` rotates (``U(-rotation, rotation)`` degrees about each axis: one angle in 2D, three
       in 3D), scales (``U(1-scaling, 1+scaling)`` per axis), shears (``U(-shear, shear)`` for each of
       the ``ndim(ndim-1)/2`` upper off-diagonal terms) about the image centre, and translates
       (``U(-translation, translation)`` voxels per axis; 0 by default as SynthSeg's
       ``translation_bounds=False``). The labels are resampled once with ``grid_sample`` (nearest,
       border padding) on this single grid: ``L = S o phi``. With all ranges zero it is the identity.
       **Random crop**: SynthSeg crops the deformed map at a random position to the output shape;
       here :class:`~l2s_gui.data.TrainingData` already cuts 2D slices / 3D patches at random
       positions (patches centred on a random foreground voxel 80% of the time, uniform otherwise)
       before synthesis, and ``translation`` adds a random shift of the content within the sample.
    2. **Gaussian mixture** (Sec. 2.2): per sample and class (background included)
       ``mu_k ~ U(mean_range)``, ``sigma_k ~ U(std_range)``; ``G = mu[L] + sigma[L] * eps`` with
       ``eps ~ N(0, 1)`` voxel-wise (gather, no loop over classes). With an intensity prior
       (:meth:`set_intensity_prior`, SynthSeg-rule) ``mu_k ~ N(m_k, intensity_prior_spread^2)`` and
       ``sigma_k ~ U(0, s_k)`` instead, for the labels it covers.
    3. **Resolution and partial volume** (``cfg.resolution``, SynthSeg ``randomise_res``;
       :meth:`_acquisition`): a random isotropic or thick-slice acquisition (up to ``max_res_iso`` =
       4 mm / ``max_res_aniso`` = 8 mm, in mm relative to :attr:`voxel_size_mm`, the training grid
       taken as 1 mm unless given), blur matched to it, down- and up-sampling back to the grid.
       With ``resolution: false`` (before issue 9): Gaussian blur of std ``U(0, blur_max)`` voxels,
       separable, one kernel per sample (grouped convolution), replicate padding.
    2b. **Contrast blending** (``cfg.contrast_blend_probability``, default off;
       :meth:`contrast_blend`): GBA's per-structure contrast scaling blended through a dilated,
       smoothed mask (GBA eq. 5 and 7, without the SinGAN), before the acquisition blur.
    4. **Gamma** (eq. 4): min-max normalise to [0, 1], then ``x ** gamma`` with
       ``log(gamma) ~ N(0, gamma_std^2)`` (SynthSeg's code: ``gamma_std = 0.5``).
    5. Final per-image min-max normalisation to [0, 1].

    Every part that is off draws nothing, so the pre-issue-9 keys (``flip: false``,
    ``resolution: false``, ``elastic_kind: displacement``, ``gamma_std: 0.25``) reproduce the old
    generator's batches bit for bit.

    All randomness comes from the ``generator`` passed to :meth:`forward` (draws happen on the
    generator's device, results live on ``labels.device``), so a seed reproduces a batch exactly.
    ``deformation=False`` (or ``forward(..., deform=False)``) skips step 1. :meth:`geometry` (steps
    0-1) and :meth:`render` (steps 2-5) are ``forward`` in two halves, with the same draws.
    """

    flip_permutation: Tensor | None
    extracerebral: Tensor | None

    def __init__(self, cfg: SynthesisConfig, n_classes: int, ndim: int, deformation: bool = True,
                 flip_permutation: Tensor | Sequence[int] | None = None, flip_axis: int | None = 0,
                 extracerebral: Tensor | Sequence[bool] | None = None,
                 voxel_size_mm: Sequence[float] | float | None = None):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.cfg = cfg
        self.n_classes = int(n_classes)
        self.ndim = int(ndim)
        self.deformation = bool(deformation)
        perm, axis = None, None
        if flip_permutation is not None and flip_axis is not None:
            perm = torch.as_tensor(flip_permutation, dtype=torch.int64).flatten()
            if perm.numel() != self.n_classes or not torch.equal(perm.sort().values, torch.arange(self.n_classes)):
                raise ValueError(f"flip_permutation must be a permutation of 0..{self.n_classes - 1}")
            if not 0 <= int(flip_axis) < self.ndim:
                raise ValueError(f"flip_axis must be in 0..{self.ndim - 1}, got {flip_axis}")
            axis = int(flip_axis)
        self.flip_axis = axis
        self.register_buffer("flip_permutation", perm, persistent=False)
        mask = None
        if extracerebral is not None:
            mask = torch.as_tensor(extracerebral, dtype=torch.bool).flatten()
            if mask.numel() != self.n_classes:
                raise ValueError(f"extracerebral needs one flag per label ({self.n_classes}), got {mask.numel()}")
            mask = mask.clone()
            mask[0] = False
            if not mask.any():
                mask = None
        self.register_buffer("extracerebral", mask, persistent=False)
        vs = [1.0] * self.ndim if voxel_size_mm is None else [float(v) for v in
                                                               (voxel_size_mm if isinstance(voxel_size_mm, Sequence)
                                                                else [voxel_size_mm])]
        if len(vs) == 1:
            vs = vs * self.ndim
        if len(vs) != self.ndim or any(v <= 0 for v in vs):
            raise ValueError(f"voxel_size_mm needs 1 or {self.ndim} positive sizes, got {voxel_size_mm}")
        self.voxel_size_mm = vs
        # per generation label (mean, std) of the GMM's hyperprior (``set_intensity_prior``); None: U(mean_range)
        self.register_buffer("prior_mean", None, persistent=False)
        self.register_buffer("prior_std", None, persistent=False)

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
        """Smooth displacement ``(B, *spatial, d)`` in voxels: the SVF's exponential
        (``elastic_kind: svf``) or coarse Gaussian nodes upsampled (``displacement``)."""
        if self.cfg.elastic_kind == "svf":
            return self._svf(batch, spatial, generator, device)
        c, d = self.cfg, self.ndim
        nodes = _normal((batch, d) + (c.elastic_nodes,) * d, generator, device)
        std = torch.tensor([c.elastic * n for n in spatial], device=device, dtype=torch.float32)
        nodes = nodes * std.view(1, d, *([1] * d))
        field = F.interpolate(nodes, size=tuple(spatial), mode=_INTERP[d], align_corners=True)
        return field.movedim(1, -1)

    def _svf(self, batch: int, spatial: Sequence[int], generator: torch.Generator,
             device: torch.device) -> Tensor:
        """Diffeomorphic displacement ``(B, *spatial, d)`` in voxels (SynthSeg's nonlinear field).

        Velocity nodes ``(B, d, *n)``, ``n_i = max(2, ceil(svf_scale * N_i))``, ``~ N(0, s^2)`` voxels with
        ``s ~ U(0, svf_std)`` per sample; upsampled (linear) to half the image size (at most 8 points
        per node spacing: the velocity is linear between nodes ~25 voxels apart), integrated by
        scaling and squaring (``u <- v / 2^steps``; ``steps`` times ``u <- u + u o (id + u)``, linear
        ``grid_sample``) and upsampled to the image. Computed in ``grid_sample``'s normalised units,
        which do not depend on the lattice, then converted to voxels."""
        c, d = self.cfg, self.ndim
        spatial = tuple(int(n) for n in spatial)
        nodes = tuple(max(2, math.ceil(c.svf_scale * n)) for n in spatial)
        std = _uniform((batch,), 0.0, c.svf_std, generator, device)
        v = _normal((batch, d) + nodes, generator, device)
        # voxels -> normalised units, channels reversed to grid_sample's (x, y[, z]) order
        to_norm = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], device=device, dtype=torch.float32)
        scale = (to_norm / (2 ** c.svf_steps)).flip(0).view(1, d, *([1] * d)) * std.view(batch, 1, *([1] * d))
        v = v.flip(1) * scale
        # integration lattice: half the image (SynthSeg), at most 8 points per node spacing
        fine = tuple(max(m, 2, min(n // 2, 8 * m)) for n, m in zip(spatial, nodes))
        u = F.interpolate(v, size=fine, mode=_INTERP[d], align_corners=True)
        if c.svf_steps:
            axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in fine]
            ident = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)  # (*fine, d), x first
            for _ in range(c.svf_steps):
                u = u + F.grid_sample(u, ident + u.movedim(1, -1), mode="bilinear", padding_mode="border",
                                      align_corners=True)
        u = F.interpolate(u, size=spatial, mode=_INTERP[d], align_corners=True)
        return u.movedim(1, -1).flip(-1) / to_norm

    def sampling_coords(self, batch: int, spatial: Sequence[int], generator: torch.Generator,
                        device: torch.device) -> Tensor:
        """``phi`` as voxel coordinates ``(B, *spatial, d)`` (axis order): the point each output voxel
        samples. Its Jacobian determinant (:func:`jacobian_determinant`) is > 0 where it does not fold."""
        d = self.ndim
        spatial = tuple(int(n) for n in spatial)
        linear, shift = self._affine(batch, generator, device)
        elastic = self._elastic(batch, spatial, generator, device)
        centre = torch.tensor([(n - 1) / 2 for n in spatial], device=device, dtype=torch.float32)
        axes = [torch.arange(n, device=device, dtype=torch.float32) for n in spatial]
        base = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - centre
        points = (base + elastic).reshape(batch, -1, d)
        coords = points @ linear.transpose(1, 2) + (centre + shift).unsqueeze(1)
        return coords.reshape(batch, *spatial, d)

    def sampling_grid(self, batch: int, spatial: Sequence[int], generator: torch.Generator,
                      device: torch.device) -> Tensor:
        """The ``grid_sample`` grid ``(B, *spatial, d)`` of ``phi = phi_aff o phi_v`` (align_corners=True)."""
        spatial = tuple(int(n) for n in spatial)
        coords = self.sampling_coords(batch, spatial, generator, device)
        scale = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], device=device, dtype=torch.float32)
        return (coords * scale - 1.0).flip(-1)  # grid_sample wants (x, y[, z]) = reversed axes

    def flip(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Left/right flip along :attr:`flip_axis` with probability 0.5 per sample, labels swapped by
        :attr:`flip_permutation` (left id <-> right id). No-op (and no draw) when ``cfg.flip`` is off
        or the generator has no permutation (no L/R pairs known, or no left/right axis)."""
        if not self.cfg.flip or self.flip_permutation is None or self.flip_axis is None:
            return labels
        batch = labels.shape[0]
        flipped = self.flip_permutation.to(labels.device)[labels.flip(self.flip_axis + 1)]
        chosen = _uniform((batch,), 0.0, 1.0, generator, labels.device) < 0.5
        return torch.where(chosen.view(batch, *([1] * self.ndim)), flipped, labels)

    def skull_strip(self, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """With probability ``cfg.skull_strip_probability`` per sample, the extra-cerebral labels
        (:attr:`extracerebral`) become background 0. Returns the labels and which samples were
        stripped (``(B,)`` bool; None, and no draw, when off, or when no extra-cerebral labels are
        known and ``cfg.skull_strip_sharp`` is off)."""
        p = self.cfg.skull_strip_probability
        if p <= 0 or (self.extracerebral is None and not self.cfg.skull_strip_sharp):
            return labels, None
        batch = labels.shape[0]
        chosen = _uniform((batch,), 0.0, 1.0, generator, labels.device) < p
        if self.extracerebral is None:
            return labels, chosen
        strip = self.extracerebral.to(labels.device)[labels] & chosen.view(batch, *([1] * self.ndim))
        return labels.masked_fill(strip, 0), chosen

    def deform_labels(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Step 1 only: ``labels`` ``(B, *spatial)`` resampled on a random deformation (nearest)."""
        grid = self.sampling_grid(labels.shape[0], labels.shape[1:], generator, labels.device)
        out = F.grid_sample(labels.unsqueeze(1).to(torch.float32), grid, mode="nearest",
                            padding_mode="border", align_corners=True)
        return out.squeeze(1).round_().to(torch.int64)

    # ------------------------------------------------------------------ intensities (steps 2-5)
    def set_intensity_prior(self, means: Tensor | Sequence[float], stds: Tensor | Sequence[float]) -> None:
        """Draw the GMM of step 2 from a hyperprior (``synthesis.intensity_prior: real``,
        :mod:`~l2s_gui.synthesis.intensity_prior`): ``mu_k ~ N(means[k], intensity_prior_spread^2)``
        clipped to [0, 1], ``sigma_k ~ U(0, stds[k])``; labels whose mean is NaN keep U(mean_range) /
        U(std_range)."""
        m = torch.as_tensor(means, dtype=torch.float32).flatten()
        sd = torch.as_tensor(stds, dtype=torch.float32).flatten()
        if m.numel() != self.n_classes or sd.numel() != self.n_classes:
            raise ValueError(f"the intensity prior needs one mean and one std per label ({self.n_classes}), "
                             f"got {m.numel()} and {sd.numel()}")
        self.prior_mean, self.prior_std = m, sd.nan_to_num(0.0).clamp_min(0)

    def _gmm(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        c, batch, device = self.cfg, labels.shape[0], labels.device
        (mean_low, mean_high), (std_low, std_high) = c.mean_range, c.std_range
        means = _uniform((batch, self.n_classes), mean_low, mean_high, generator, device)
        stds = _uniform((batch, self.n_classes), std_low, std_high, generator, device)
        if self.prior_mean is not None and self.prior_std is not None:  # SynthSeg-rule hyperprior
            prior_mean = self.prior_mean.to(device)  # a no-op once the module is on the device
            known = ~torch.isnan(prior_mean)
            drawn = (prior_mean.nan_to_num(0.5)
                     + c.intensity_prior_spread * _normal((batch, self.n_classes), generator, device)).clamp(0, 1)
            spread = self.prior_std.to(device) * _uniform((batch, self.n_classes), 0.0, 1.0, generator, device)
            means = torch.where(known, drawn, means)
            stds = torch.where(known, spread, stds)
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

    def contrast_blend(self, image: Tensor, labels: Tensor, generator: torch.Generator
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """GBA-style contrast augmentation (Generative Blending Augmentation, eq. 5 and 7, with the
        identity in place of its SinGAN): per sample with probability ``contrast_blend_probability``
        one foreground label ``l`` present in the sample is chosen and ``x <- (1 - w) x + w * lambda x``
        with ``lambda ~ U(contrast_blend_lambda)`` and ``w`` the mask of ``l`` dilated by
        ``contrast_blend_dilation`` voxels and smoothed by a Gaussian of std ``contrast_blend_smoothing``
        (``w`` = 1 deep inside the structure, 0 away from it). Returns the image, the chosen label per
        sample (-1: none) and lambda. Batched: one mask per sample, no loop over samples or labels."""
        c, batch, device = self.cfg, image.shape[0], image.device
        chosen = _uniform((batch,), 0.0, 1.0, generator, device) < c.contrast_blend_probability
        low, high = c.contrast_blend_lambda
        lam = _uniform((batch,), low, high, generator, device)
        # a random label among those present (background excluded): argmax of random keys
        present = torch.zeros((batch, self.n_classes), dtype=torch.bool, device=device)
        present.scatter_(1, labels.flatten(1), True)
        present[:, 0] = False
        keys = _uniform((batch, self.n_classes), 0.0, 1.0, generator, device).masked_fill(~present, -1.0)
        label = keys.argmax(1)
        chosen &= present.any(1)
        mask = (labels == label.view(-1, *([1] * self.ndim))).unsqueeze(1).to(image.dtype)
        r = c.contrast_blend_dilation
        pool = F.max_pool2d if self.ndim == 2 else F.max_pool3d
        if r > 0:
            mask = pool(mask, 2 * r + 1, stride=1, padding=r)
        if c.contrast_blend_smoothing > 0:
            mask = _gaussian_smooth(mask, c.contrast_blend_smoothing)
        weight = mask * chosen.view(-1, *([1] * (self.ndim + 1))).to(image.dtype)
        scale = 1 + weight * (lam.view(-1, *([1] * (self.ndim + 1))) - 1)
        return image * scale, torch.where(chosen, label, torch.full_like(label, -1)), lam

    def sample_resolution(self, batch: int, generator: torch.Generator,
                          device: torch.device) -> tuple[Tensor, Tensor]:
        """Acquisition ``(resolution, thickness)``, each ``(B, d)`` in training-grid voxels (SynthSeg
        ``SampleResolution``): isotropic ``U(1, max_res_iso)`` mm with probability ``prob_iso``, else one
        random axis ``U(1, max_res_aniso)`` mm and the others at the grid resolution; with probability
        ``prob_min`` the grid resolution itself. Thickness ``~ U(1, resolution)`` per axis. In mm
        relative to :attr:`voxel_size_mm` (the training grid is taken as 1 mm unless given), never
        finer than the grid."""
        c, d = self.cfg, self.ndim
        vs = torch.tensor(self.voxel_size_mm, device=device, dtype=torch.float32)
        u_iso = _uniform((batch, 1), 0.0, 1.0, generator, device)
        u_res = _uniform((batch, d), 0.0, 1.0, generator, device)
        axis = torch.randint(0, d, (batch,), generator=generator, device=generator.device).to(device)
        u_min = _uniform((batch, 1), 0.0, 1.0, generator, device)
        u_thick = _uniform((batch, d), 0.0, 1.0, generator, device)
        lo = vs.expand(batch, d)
        iso = lo + (torch.clamp(torch.tensor(c.max_res_iso, device=device) - vs, min=0) * u_res[:, :1])
        aniso_val = lo + torch.clamp(torch.tensor(c.max_res_aniso, device=device) - vs, min=0) * u_res
        thick_axis = F.one_hot(axis, d).bool()
        aniso = torch.where(thick_axis, aniso_val, lo)
        res_mm = torch.where(u_iso < c.prob_iso, iso, aniso)
        res_mm = torch.where(u_min < c.prob_min, lo, res_mm)
        res = (res_mm / vs).clamp_min(1.0)
        thickness = 1.0 + (res - 1.0) * u_thick
        return res, thickness

    def _acquisition(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """Partial volume at a random resolution: blur matched to it, down- then up-sampling.

        Per sample and axis ``i`` (resolution ``r``, thickness ``t`` in grid voxels,
        :meth:`sample_resolution`): Gaussian blur of std ``0.75 * t`` (``0.5`` at ``t = 1``, SynthSeg's
        ``blurring_sigma_for_downsampling``) times ``U(1/1.03, 1.03)``; sampling on the lattice
        ``0, r, 2r, ...`` (linear interpolation) and linear interpolation back to every voxel. All three
        are linear along each axis, so each sample gets one ``(N_i, N_i)`` matrix per axis (Gaussian
        rows renormalised at the borders) applied with batched matmuls: no loop over samples."""
        d, batch, device = self.ndim, image.shape[0], image.device
        res, thick = self.sample_resolution(batch, generator, device)
        jitter = _uniform((batch, d), 1.0 / 1.03, 1.03, generator, device)
        sigma = torch.where(thick <= 1.0 + 1e-6, torch.full_like(thick, 0.5), 0.75 * thick) * jitter
        out = image[:, 0]
        for axis, n in enumerate(image.shape[2:]):
            mat = _acquisition_matrix(res[:, axis], sigma[:, axis], int(n))       # (B, n, n)
            moved = out.movedim(axis + 1, 1)                                       # (B, n, ...)
            flat = moved.reshape(batch, n, -1)
            out = torch.bmm(mat, flat).view(moved.shape).movedim(1, axis + 1)
        return out.unsqueeze(1)

    def _gamma(self, image: Tensor, generator: torch.Generator) -> Tensor:
        batch = image.shape[0]
        gamma = torch.exp(self.cfg.gamma_std * _normal((batch,), generator, image.device))
        return _minmax(image) ** gamma.view(batch, *([1] * (image.dim() - 1)))

    def synthesize_intensities(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Steps 2-5 on (already deformed) ``labels``: ``(B, 1, *spatial)`` float32 in [0, 1]."""
        image = self._gmm(labels, generator)
        if self.cfg.contrast_blend_probability > 0:
            image = self.contrast_blend(image, labels, generator)[0]
        image = self._acquisition(image, generator) if self.cfg.resolution else self._blur(image, generator)
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
            labels, stripped = self.geometry(labels, generator, deform)
            image = self.render(labels, stripped, generator)
        return image, labels

    @torch.no_grad()
    def geometry(self, labels: Tensor, generator: torch.Generator,
                 deform: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """Steps 0-1 of :meth:`forward`: flip, skull strip and deformation of ``labels``; returns the
        labels and which samples were stripped (see :meth:`skull_strip`). :meth:`render` them twice
        for two images of one geometry with independent contrasts (SynthMix's aligned pairs)."""
        labels = self.flip(labels, generator)
        labels, stripped = self.skull_strip(labels, generator)
        if self.deformation if deform is None else deform:
            labels = self.deform_labels(labels, generator)
        return labels, stripped

    @torch.no_grad()
    def render(self, labels: Tensor, stripped: Tensor | None, generator: torch.Generator) -> Tensor:
        """Steps 2-5 of :meth:`forward` on the labels of :meth:`geometry`, with the sharp skull-strip
        edge: ``(B, 1, *spatial)`` in [0, 1]; the geometry is left as it is."""
        image = self.synthesize_intensities(labels, generator)
        if stripped is not None and self.cfg.skull_strip_sharp:
            # a skull-stripped scan is masked after its acquisition: a sharp edge, black outside
            outside = (labels == 0) & stripped.view(-1, *([1] * self.ndim))
            image = _minmax(image.masked_fill(outside.unsqueeze(1), 0.0))
        return image
