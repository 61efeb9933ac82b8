"""Synthesis: the batched SynthSeg-style generator and the cornucopia backend (fast, CPU)."""

from __future__ import annotations

import random

import pytest
import torch

from l2s_gui.config import SynthesisConfig
from l2s_gui.errors import InputError
from l2s_gui.synthesis import CornucopiaGenerator, SynthSegGenerator, build_generator
from l2s_gui.synthesis import cornucopia_backend
from l2s_gui.synthesis.generator import _minmax

# issue 9: the default elastic field is an SVF (svf_std) and the default blur is the resolution
# randomisation, so "no deformation" also zeroes svf_std and "flat" also turns resolution off
STILL = dict(rotation=0.0, scaling=0.0, shear=0.0, translation=0.0, elastic=0.0, svf_std=0.0)
FLAT = dict(std_range=[0.0, 0.0], blur_max=0.0, gamma_std=0.0, resolution=False)


def blobs(batch: int, spatial: tuple[int, ...], n_classes: int, seed: int = 0) -> torch.Tensor:
    """Smooth random label maps (B, *spatial) int64 with ids 0..n_classes-1 (argmax of smooth noise)."""
    g = torch.Generator().manual_seed(seed)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    coarse = torch.randn((batch, n_classes) + (4,) * len(spatial), generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=spatial, mode=mode, align_corners=True)
    return fine.argmax(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spatial", [(32, 28), (16, 20, 12)])
def test_shapes_dtypes_range(spatial):
    labels = blobs(3, spatial, 5)
    image, deformed = SynthSegGenerator(SynthesisConfig(), 5, len(spatial))(labels, gen(0))
    assert image.shape == (3, 1) + spatial and image.dtype == torch.float32
    assert deformed.shape == (3,) + spatial and deformed.dtype == torch.int64
    assert image.min() >= 0 and image.max() <= 1
    assert torch.isfinite(image).all()
    assert set(deformed.unique().tolist()) <= set(labels.unique().tolist())
    assert not torch.equal(deformed, labels)  # the default config deforms


@pytest.mark.parametrize("spatial", [(32, 28), (12, 16, 10)])
def test_seed_reproduces_batch(spatial):
    labels = blobs(2, spatial, 4)
    g = SynthSegGenerator(SynthesisConfig(translation=3.0), 4, len(spatial))
    a, la = g(labels, gen(7))
    b, lb = g(labels, gen(7))
    c, lc = g(labels, gen(8))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c) and not torch.equal(la, lc)
    assert not torch.equal(a[0], a[1])  # samples of a batch differ


@pytest.mark.parametrize("spatial", [(24, 20), (10, 12, 8)])
def test_zero_deformation_is_identity(spatial):
    labels = blobs(2, spatial, 6)
    cfg = SynthesisConfig(**STILL)
    _, deformed = SynthSegGenerator(cfg, 6, len(spatial))(labels, gen(0))
    assert torch.equal(deformed, labels)
    _, skipped = SynthSegGenerator(SynthesisConfig(), 6, len(spatial))(labels, gen(0), deform=False)
    assert torch.equal(skipped, labels)
    _, skipped = SynthSegGenerator(SynthesisConfig(), 6, len(spatial), deformation=False)(labels, gen(0))
    assert torch.equal(skipped, labels)


@pytest.mark.parametrize("spatial,shift", [((20, 24), (3.0, -2.0)), ((10, 12, 14), (2.0, -1.0, 3.0))])
def test_grid_axis_order(monkeypatch, spatial, shift):
    """A pure translation t (pull-back) gives out[p] = in[p + t] along the right axes."""
    d = len(spatial)
    g = SynthSegGenerator(SynthesisConfig(**STILL), 2, d)
    monkeypatch.setattr(g, "_affine", lambda b, gen_, dev: (torch.eye(d).expand(b, d, d),
                                                            torch.tensor([shift] * b)))
    labels = torch.randint(0, 2, (1,) + spatial, generator=gen(0))
    out = g.deform_labels(labels, gen(0))
    t = [int(s) for s in shift]
    src = tuple(slice(max(0, s), n + min(0, s)) for s, n in zip(t, spatial))
    dst = tuple(slice(max(0, -s), n + min(0, -s)) for s, n in zip(t, spatial))
    assert torch.equal(out[(0,) + dst], labels[(0,) + src])


@pytest.mark.parametrize("spatial", [(32, 28), (12, 10, 14)])
def test_flat_intensities_per_class(spatial):
    """std 0, no blur, no gamma: each class has one intensity, the min-max normalised class mean."""
    labels = blobs(3, spatial, 5)
    image, deformed = SynthSegGenerator(SynthesisConfig(**FLAT), 5, len(spatial))(labels, gen(3))
    for b in range(3):
        values = []
        for k in deformed[b].unique().tolist():
            v = image[b, 0][deformed[b] == k]
            assert torch.equal(v, v[:1].expand_as(v)), f"class {k} not constant"
            values.append(float(v[0]))
        assert min(values) == 0.0 and max(values) == 1.0


def test_gmm_uses_class_means():
    """Without deformation the first draw is the (B, K) class means: image = minmax(mu[labels])."""
    labels = blobs(2, (16, 16), 4)
    g = SynthSegGenerator(SynthesisConfig(**FLAT), 4, 2)
    image, _ = g(labels, gen(5), deform=False)
    means = torch.rand((2, 4), generator=gen(5))
    expected = _minmax(means.gather(1, labels.flatten(1)).view(2, 1, 16, 16))
    assert torch.allclose(image, expected, atol=1e-6)


def test_noise_blur_gamma_change_the_image():
    labels = blobs(2, (32, 32), 4)
    flat, _ = SynthSegGenerator(SynthesisConfig(**FLAT), 4, 2)(labels, gen(1), deform=False)
    for key, value in (("std_range", [0.05, 0.1]), ("blur_max", 2.0), ("gamma_std", 0.5)):
        cfg = SynthesisConfig(**{**FLAT, key: value})
        other, _ = SynthSegGenerator(cfg, 4, 2)(labels, gen(1), deform=False)
        assert not torch.allclose(other, flat), key


def test_tiny_blur_is_identity():
    labels = blobs(2, (24, 24), 4)
    g = SynthSegGenerator(SynthesisConfig(**STILL), 4, 2)
    image = g._gmm(labels, gen(0))
    g.cfg.blur_max = 1e-3
    assert torch.allclose(g._blur(image, gen(1)), image, atol=1e-6)


def test_blur_preserves_constant_and_smooths():
    g = SynthSegGenerator(SynthesisConfig(blur_max=2.0), 2, 3)
    const = torch.full((2, 1, 8, 9, 10), 0.3)
    assert torch.allclose(g._blur(const, gen(0)), const, atol=1e-6)
    noise = torch.randn((2, 1, 8, 9, 10), generator=gen(1))
    assert g._blur(noise, gen(2)).std() < noise.std()


def test_rejects_bad_labels():
    g = SynthSegGenerator(SynthesisConfig(), 3, 2)
    with pytest.raises(InputError, match="0..2"):
        g(torch.full((1, 8, 8), 3, dtype=torch.int64), gen(0))
    with pytest.raises(ValueError, match="int64"):
        g(torch.zeros((1, 8, 8), dtype=torch.int32), gen(0))
    with pytest.raises(ValueError, match="spatial"):
        g(torch.zeros((1, 8, 8, 8), dtype=torch.int64), gen(0))


def test_build_generator():
    assert isinstance(build_generator(SynthesisConfig(), 3, 2), SynthSegGenerator)
    assert isinstance(build_generator(SynthesisConfig(backend="cornucopia"), 3, 3), CornucopiaGenerator)


# ----------------------------------------------------------------------------- cornucopia backend
@pytest.mark.parametrize("spatial", [(32, 28), (16, 12, 14)])
def test_cornucopia_backend(spatial):
    labels = blobs(2, spatial, 4)
    g = CornucopiaGenerator(SynthesisConfig(), 4, len(spatial))
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    image, deformed = g(labels, gen(0))
    assert random.getstate() == py_state and torch.equal(torch.get_rng_state(), torch_state)
    assert image.shape == (2, 1) + spatial and image.dtype == torch.float32
    assert deformed.shape == (2,) + spatial and deformed.dtype == torch.int64
    assert image.min() >= 0 and image.max() <= 1
    assert set(deformed.unique().tolist()) <= set(labels.unique().tolist())
    again, deformed_again = g(labels, gen(0))
    assert torch.equal(image, again) and torch.equal(deformed, deformed_again)
    other, _ = g(labels, gen(1))
    assert not torch.equal(image, other)


def test_cornucopia_elastic_device_patch():
    """cornucopia 0.5.1 builds ElasticTransform's dmax on the CPU; the patch puts it on the input's
    device. The 'meta' device stands in for CUDA: the unpatched method fails on it as on CUDA."""
    from cornucopia.geometric import ElasticTransform

    assert cornucopia_backend.ELASTIC_DEVICE_PATCHED
    patched = ElasticTransform._unroll
    assert patched._l2s_device_patch
    original = patched._l2s_original
    assert cornucopia_backend._patch_elastic_device()  # idempotent
    assert ElasticTransform._unroll is patched

    x = torch.empty((1, 12, 10), device="meta")
    with pytest.raises(RuntimeError, match="device"):
        original(ElasticTransform(dmax=0.1, unit="fov", shape=4), x, flow=False)
    for kwargs in ({"flow": False}, {}):
        xform = ElasticTransform(dmax=0.1, unit="fov", shape=4)
        out = xform.final(x, **kwargs)
        assert out.controls.device.type == "meta"
        assert xform.dmax == 0.1  # attribute restored
    # on the CPU the patched method gives exactly the original result
    x = torch.rand((1, 12, 10))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = original(ElasticTransform(dmax=[0.1, 0.05], unit="fov", shape=4), x)
        torch.manual_seed(0)
        b = ElasticTransform(dmax=[0.1, 0.05], unit="fov", shape=4).final(x)
    assert torch.equal(a.controls, b.controls) and torch.equal(a.flow, b.flow)


# ----------------------------------------------------------------------------- CUDA (when present)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "cornucopia"])
@pytest.mark.parametrize("spatial", [(32, 28), (16, 12, 14)])
def test_cuda(backend, spatial):
    labels = blobs(2, spatial, 4).cuda()
    g = build_generator(SynthesisConfig(backend=backend), 4, len(spatial))
    generator = torch.Generator(device="cuda").manual_seed(0)
    image, deformed = g(labels, generator)
    assert image.is_cuda and deformed.is_cuda
    assert image.shape == (2, 1) + spatial and deformed.shape == (2,) + spatial
    again, deformed_again = g(labels, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(deformed, deformed_again)
    assert torch.allclose(image, again, atol=1e-6)  # cuDNN may pick another conv algorithm
