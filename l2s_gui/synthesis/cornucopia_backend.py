"""The reference code's synthesis route: cornucopia's ``SynthFromLabelTransform`` per sample.

Slow (a Python loop over the batch; cornucopia's GMM smooths one full image per class), kept as a
comparison backend (``synthesis.backend: cornucopia``). Importing this module patches a device bug
of cornucopia 0.5.1 (see :func:`_patch_elastic_device`).
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Iterator
from contextlib import contextmanager

import cornucopia
import torch
from cornucopia.geometric import ElasticTransform
from cornucopia.utils.py import make_vector
from torch import Tensor, nn

from ..config import SynthesisConfig
from ..errors import InputError

__all__ = ["CornucopiaGenerator", "ELASTIC_DEVICE_PATCHED"]

# --------------------------------------------------------------------------- cornucopia 0.5.1 bug
# ``cornucopia.geometric.ElasticTransform._unroll`` (reached from ``RandomElasticTransform`` and from
# ``AffineElasticTransform``, hence from ``SynthFromLabelTransform``) does, in 0.5.1:
#
#     dmax = make_vector(self.dmax, ndim)                       # <- a CPU tensor, always
#     if self.unit == 'fov':
#         dmax = dmax * torch.as_tensor(fullshape, device=backend['device'])   # <- on x's device
#
# so any input on CUDA fails with "Expected all tensors to be on the same device" (every non-CPU
# device fails the same way). The fix below converts ``self.dmax`` to a tensor on the transform's
# device (``device=`` given to the transform, else the input's) before the original method runs,
# and restores the attribute afterwards. ``Tensor.to`` keeps a ``requires_grad`` dmax differentiable.
# It is applied only when the installed source still has the unplaced ``make_vector`` call.

_BUGGY_LINE = "make_vector(self.dmax, ndim)"


def _needs_elastic_patch() -> bool:
    try:
        source = inspect.getsource(ElasticTransform._unroll)
    except (OSError, TypeError):  # no source available: fall back on the known-bad version
        return cornucopia.__version__ == "0.5.1"
    return _BUGGY_LINE in source


def _patch_elastic_device() -> bool:
    """Wrap ``ElasticTransform._unroll`` so that ``dmax`` lives on the input's device. Idempotent."""
    original = ElasticTransform._unroll
    if getattr(original, "_l2s_device_patch", False):
        return True
    if not _needs_elastic_patch():
        return False

    @functools.wraps(original)
    def _unroll(self, x, *args, **kwargs):
        device = self.backend.get("device", None) or x.device
        dmax = self.dmax
        self.dmax = make_vector(dmax, x.dim() - 1).to(device)
        try:
            return original(self, x, *args, **kwargs)
        finally:
            self.dmax = dmax

    _unroll._l2s_device_patch = True  # type: ignore[attr-defined]
    _unroll._l2s_original = original  # type: ignore[attr-defined]
    ElasticTransform._unroll = _unroll
    return True


ELASTIC_DEVICE_PATCHED = _patch_elastic_device()
"""Whether the cornucopia ``ElasticTransform`` device patch is in place."""


# --------------------------------------------------------------------------- backend
@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed Python's ``random`` and torch's global RNG (CPU, and ``device`` if CUDA) with ``seed``,
    restoring the caller's RNG states on exit."""
    py_state = random.getstate()
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(devices[0]):
                    torch.cuda.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)


class CornucopiaGenerator(nn.Module):
    """Same interface as :class:`~l2s_gui.synthesis.SynthSegGenerator`, through cornucopia.

    One ``cornucopia.SynthFromLabelTransform(order=1, resolution=False, snr=False, bias=False)``
    (the reference code's call) is applied to each sample in turn. Settings of ``cfg`` that have a
    cornucopia counterpart are passed on: ``rotation`` (degrees), ``scaling`` (``zooms``),
    ``shear`` (``shears``), ``translation`` (voxels, converted to cornucopia's fraction of the mean
    field of view), ``elastic`` / ``elastic_nodes`` (cornucopia reads ``elastic`` as the upper bound
    of a uniform maximum displacement, not a std), ``gamma_std`` (``LogNormal(0, gamma_std)``) and
    ``blur_max`` (as the upper bound of the FWHM: ``2.3548 * blur_max``). ``mean_range`` and
    ``std_range`` are not used: cornucopia's GMM keeps its own ranges, its per-class texture
    smoothing (``gmm_fwhm=10``) and a zero background, as in the reference code. The image is
    min-max normalised per sample to [0, 1].

    cornucopia draws from Python's ``random`` and torch's global RNG: both are seeded from one
    integer drawn from ``generator`` (and the caller's RNG states are restored afterwards), so a
    seed reproduces a batch.
    """

    def __init__(self, cfg: SynthesisConfig, n_classes: int, ndim: int):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        self.cfg = cfg
        self.n_classes = int(n_classes)
        self.ndim = int(ndim)
        self._transforms: dict[tuple[int, ...], nn.Module] = {}

    def _transform(self, spatial: tuple[int, ...]) -> nn.Module:
        if spatial not in self._transforms:
            c = self.cfg
            fov = sum(spatial) / len(spatial)
            self._transforms[spatial] = cornucopia.SynthFromLabelTransform(
                order=1, resolution=False, snr=False, bias=False,
                rotation=c.rotation or False,
                zooms=c.scaling or False,
                shears=c.shear or False,
                translations=(c.translation / fov) or False,
                elastic=c.elastic or False,
                elastic_nodes=c.elastic_nodes,
                gamma=c.gamma_std or False,
                motion_fwhm=(2.3548 * c.blur_max) or False,
            )
        return self._transforms[spatial]

    def forward(self, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """``(image (B, 1, *spatial) in [0, 1], deformed labels (B, *spatial) int64)``."""
        if labels.dim() != self.ndim + 1:
            raise ValueError(f"labels must be (B, *spatial) with {self.ndim} spatial axes, "
                             f"got shape {tuple(labels.shape)}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.n_classes:
            raise InputError(f"label map holds class ids {lo}..{hi}, outside 0..{self.n_classes - 1}: "
                             f"relabel to contiguous classes first")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        transform = self._transform(tuple(labels.shape[1:]))
        images, targets = [], []
        with torch.no_grad(), _seeded(seed, labels.device):
            for sample in labels.to(torch.int64):
                out = transform(sample.unsqueeze(0))  # (1, *spatial): cornucopia has no batch axis
                images.append(out["image"].to(torch.float32))
                targets.append(out["label"][0].to(torch.int64))
        image = torch.stack(images)
        flat = image.flatten(1)
        lo_ = flat.amin(1).view(-1, *([1] * (image.dim() - 1)))
        hi_ = flat.amax(1).view(-1, *([1] * (image.dim() - 1)))
        image = ((image - lo_) / (hi_ - lo_).clamp_min(1e-12)).clamp_(0.0, 1.0)
        return image, torch.stack(targets)
