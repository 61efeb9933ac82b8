"""Synthesis: the batched SynthSeg-style generator and the cornucopia backend (fast, CPU)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from l2s_gui.config import SynthesisConfig
from l2s_gui.errors import InputError
from l2s_gui.synthesis import CornucopiaGenerator, SynthSegGenerator, build_generator, cornucopia_backend
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


# ----------------------------------------------------------------------------- issue 9 generator parts
from l2s_gui.synthesis import ToClasses, jacobian_determinant  # noqa: E402
from l2s_gui.synthesis.generator import _acquisition_matrix  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("spatial", [(16, 12), (8, 10, 6)])
def test_flip_swaps_labels_exactly(spatial):
    """Half the samples (binomial) are flipped along axis 0 with left <-> right swapped exactly;
    the others are untouched; ToClasses turns the swapped ids into the flipped classes."""
    n = 400
    labels = blobs(1, spatial, 5).expand(n, *spatial).contiguous()
    perm = torch.tensor([0, 2, 1, 4, 3])  # 1 <-> 2, 3 <-> 4
    g = SynthSegGenerator(SynthesisConfig(**STILL), 5, len(spatial), flip_permutation=perm)
    out = g.flip(labels, gen(0))
    flipped = perm[labels.flip(1)]
    is_flipped = (out == flipped).flatten(1).all(1)
    is_same = (out == labels).flatten(1).all(1)
    assert bool((is_flipped | is_same).all())  # exact: either the swapped mirror or the original
    frac = is_flipped.float().mean().item()
    assert 0.5 - 4 * 0.025 < frac < 0.5 + 4 * 0.025  # p = 0.5, binomial std 0.025 at n = 400
    # through the whole generator (no deformation): labels out = the flipped generation labels
    _, deformed = g(labels[:8], gen(1), deform=False)
    assert all(torch.equal(d, labels[0]) or torch.equal(d, flipped[0]) for d in deformed)
    classes = torch.tensor([0, 1, 2, 1, 2])  # generation labels 3/4 are more of classes 1/2
    _, cls = ToClasses(g, classes)(labels[:8], gen(1), deform=False)
    assert torch.equal(cls, classes[deformed])
    # off: no flip and no draw (the old generator's stream)
    off = SynthSegGenerator(SynthesisConfig(**STILL, flip=False), 5, len(spatial), flip_permutation=perm)
    assert torch.equal(off.flip(labels, gen(0)), labels)
    with pytest.raises(ValueError, match="permutation"):
        SynthSegGenerator(SynthesisConfig(), 5, 2, flip_permutation=[0, 1, 1, 3, 4])


def _training_data(values, table, ndim=3, slice_axis=2):
    from l2s_gui.data import TrainingData

    values = np.asarray(sorted(set(values) | {0}))
    classes = torch.from_numpy(table.to_classes(values)).long()
    gmap = torch.arange(len(values)).repeat(4).view(-1, 1, 1)[: 4 * len(values)].expand(-1, 4, 4).clone()
    return TrainingData(table, ndim, slice_axis, [4, 4] if ndim == 2 else list(gmap.shape), False,
                        [gmap.to(torch.uint8)], [], [], [], generation_classes=classes,
                        generation_values=values.tolist())


def test_generation_flip_permutation_freesurfer():
    """FreeSurfer generation labels: left id <-> right id (merged into 4 classes, which map to
    themselves); extra-cerebral labels flagged for the skull strip."""
    from l2s_gui.labels import load_label_table

    table = load_label_table("freesurfer_4class")
    vals = [0, 2, 3, 4, 17, 24, 41, 42, 43, 53, 165, 258, 259]
    data = _training_data(vals, table)
    perm = data.generation_flip_permutation()
    values = data.generation_values
    swapped = {values[i]: values[j] for i, j in enumerate(perm.tolist())}
    assert swapped[2] == 41 and swapped[41] == 2 and swapped[3] == 42 and swapped[4] == 43
    assert swapped[17] == 53 and swapped[0] == 0 and swapped[24] == 24
    assert torch.equal(data.generation_classes[perm], data.generation_classes)  # 4 classes: symmetric
    extra = {values[i] for i in torch.nonzero(data.generation_extracerebral()).flatten().tolist()}
    assert extra == {v for v in vals if v and int(table.to_classes(np.array([v]))[0]) == 0}
    assert 0 not in extra and 2 not in extra
    assert data.flip_axis == 0
    assert _training_data(vals, table, ndim=2, slice_axis=0).flip_axis is None
    assert _training_data(vals, table, ndim=2, slice_axis=2).flip_axis == 0


def test_generation_flip_permutation_sided_classes():
    """A table with sided classes: the left generation label becomes the right one and its class
    the right class; a map with one side only allows no flip."""
    from l2s_gui.labels import LabelTable

    table = LabelTable.from_values([0, 2, 3, 41, 42])
    data = _training_data([0, 2, 3, 41, 42], table)
    perm = data.generation_flip_permutation()
    assert torch.equal(data.generation_classes[perm], torch.tensor(table.flip_classes())[data.generation_classes])
    assert perm.tolist() != list(range(5))
    one_sided = LabelTable(values=[0, 2, 3], names=["bg", "wm", "ctx"])
    assert _training_data([0, 2, 3], one_sided).generation_flip_permutation() is None


def test_resolution_draw_statistics():
    """SynthSeg SampleResolution: 5% at the grid resolution, ~9.5% isotropic U(1, 4), the rest
    one thick axis U(1, 8) chosen uniformly; thickness U(1, resolution)."""
    g = SynthSegGenerator(SynthesisConfig(), 3, 3)
    n = 20000
    res, thick = g.sample_resolution(n, gen(0), CPU)
    above = res > 1.0
    n_above = above.sum(1)
    at_min = (n_above == 0).float().mean().item()
    iso = (n_above == 3) & (res[:, 0] == res[:, 1]) & (res[:, 1] == res[:, 2])
    aniso = n_above == 1
    assert abs(at_min - 0.05) < 0.01
    assert abs(iso.float().mean().item() - 0.95 * 0.1) < 0.012
    assert abs(aniso.float().mean().item() - 0.95 * 0.9) < 0.015
    assert res[iso].max() <= 4.0 and abs(res[iso][:, 0].mean().item() - 2.5) < 0.1
    thick_vals = res[aniso].max(1).values
    assert thick_vals.max() <= 8.0 and abs(thick_vals.mean().item() - 4.5) < 0.1
    axis_freq = above[aniso].float().mean(0)
    assert torch.allclose(axis_freq, torch.full((3,), 1 / 3), atol=0.02)
    assert bool((thick >= 1.0).all() and (thick <= res + 1e-6).all())
    # a 2 mm training grid: in voxels at most 2 (isotropic) and 4 (thick)
    coarse = SynthSegGenerator(SynthesisConfig(), 3, 3, voxel_size_mm=2.0)
    res2, _ = coarse.sample_resolution(n, gen(1), CPU)
    assert res2.max() <= 4.0 and res2.min() >= 1.0 and res2.max() > 3.5


def test_acquisition_matrix():
    """Rows sum to 1 (constants kept); r = 1 and no blur is the identity; r = 4 without blur keeps
    the lattice voxels and interpolates linearly between them; blur smooths."""
    n = 21
    res = torch.tensor([1.0, 4.0, 3.3])
    sigma = torch.tensor([1e-4, 1e-4, 2.0])
    m = _acquisition_matrix(res, sigma, n)
    assert torch.allclose(m.sum(2), torch.ones(3, n), atol=1e-5)
    assert torch.allclose(m[0], torch.eye(n), atol=1e-5)
    x = torch.randn(n, generator=gen(0))
    y = m[1] @ x
    nodes = torch.arange(0, n, 4)
    assert torch.allclose(y[nodes], x[nodes], atol=1e-5)
    assert torch.allclose(y[2], 0.5 * (x[0] + x[4]), atol=1e-5)
    assert (m[2] @ x).std() < x.std()


@pytest.mark.parametrize("spatial", [(32, 28), (12, 14, 10)])
def test_acquisition_in_generator(spatial):
    """resolution on: images stay in [0, 1], per-sample different, reproducible; a thick axis
    leaves the image smoother along it than across."""
    labels = blobs(4, spatial, 5)
    g = SynthSegGenerator(SynthesisConfig(**{**FLAT, "resolution": True}), 5, len(spatial))
    a, _ = g(labels, gen(3), deform=False)
    b, _ = g(labels, gen(3), deform=False)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    img = torch.randn((64, 1) + spatial, generator=gen(4))
    g.cfg.prob_iso, g.cfg.prob_min = 0.0, 0.0
    out = g._acquisition(img, gen(5))
    assert out.std() < img.std()
    const = torch.full((2, 1) + spatial, 0.25)
    assert torch.allclose(g._acquisition(const, gen(6)), const, atol=1e-5)


@pytest.mark.parametrize("spatial,n", [((64, 64), 100), ((32, 32, 32), 100)])
def test_svf_never_folds(spatial, n):
    """Folded fraction (Jacobian determinant <= 0) over n default draws: 0. The pre-issue-9
    displacement field folds at a large std, so the measure does see folds."""
    g = SynthSegGenerator(SynthesisConfig(), 4, len(spatial))
    jac = torch.cat([jacobian_determinant(g.sampling_coords(20, spatial, gen(s), CPU)) for s in range(n // 20)])
    assert jac.shape[0] == n
    assert (jac <= 0).float().mean().item() == 0.0
    old = SynthSegGenerator(SynthesisConfig(elastic_kind="displacement", elastic=0.05), 4, len(spatial))
    assert (jacobian_determinant(old.sampling_coords(20, spatial, gen(0), CPU)) <= 0).any()


def test_svf_draw_statistics():
    """The displacement grows with svf_std (std ~ U(0, svf_std) per sample: zero gives the
    identity, twice the std about twice the mean displacement), per sample different."""
    spatial = (64, 64)
    base = dict(STILL)
    rms = {}
    for s in (0.0, 2.0, 4.0):
        g = SynthSegGenerator(SynthesisConfig(**{**base, "svf_std": s}), 4, 2)
        disp = g._svf(200, spatial, gen(0), CPU)
        per = disp.pow(2).sum(-1).mean((1, 2)).sqrt()
        rms[s] = per.mean().item()
        if s:
            assert per.std() > 0.2 * per.mean()  # the std itself is random per sample
    assert rms[0.0] == 0.0
    assert 1.6 < rms[4.0] / rms[2.0] < 2.4
    assert 0.5 < rms[4.0] < 8.0  # voxels


def test_gamma_draw_statistics():
    """log(gamma) ~ N(0, gamma_std^2) with SynthSeg's default gamma_std = 0.5."""
    assert SynthesisConfig().gamma_std == 0.5
    g = SynthSegGenerator(SynthesisConfig(), 2, 2)
    n = 4000
    ramp = torch.linspace(0, 1, 5).view(1, 1, 5, 1).expand(n, 1, 5, 2).contiguous()
    out = g._gamma(ramp, gen(0))
    log_gamma = torch.log(torch.log(out[:, 0, 2, 0]) / math.log(0.5))
    assert abs(log_gamma.mean().item()) < 0.03
    assert abs(log_gamma.std().item() - 0.5) < 0.03


def test_translation_draw_statistics():
    """translation t: a uniform shift in [-t, t] voxels per axis (SynthSeg: none by default)."""
    assert SynthesisConfig().translation == 0.0
    g = SynthSegGenerator(SynthesisConfig(**{**STILL, "translation": 6.0}), 2, 3)
    coords = g.sampling_coords(4000, (4, 4, 4), gen(0), CPU)
    ident = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1)
    shift = (coords - ident)[:, 0, 0, 0]
    assert torch.allclose(coords - ident, shift.view(-1, 1, 1, 1, 3).expand_as(coords), atol=1e-4)
    assert shift.abs().max() <= 6.0
    assert torch.allclose(shift.mean(0), torch.zeros(3), atol=0.2)
    assert torch.allclose(shift.std(0), torch.full((3,), 6.0 / math.sqrt(3)), atol=0.15)


def test_skull_strip_statistics():
    """With probability p per sample every extra-cerebral label becomes 0, nothing else changes;
    off (p = 0, the default) it draws nothing."""
    assert SynthesisConfig().skull_strip_probability == 0.0
    n, p = 2000, 0.3
    labels = blobs(1, (12, 12), 5).expand(n, 12, 12).contiguous()
    extra = torch.tensor([False, False, False, True, True])
    g = SynthSegGenerator(SynthesisConfig(skull_strip_probability=p), 5, 2, extracerebral=extra)
    out = g.skull_strip(labels, gen(0))
    stripped = (out != labels).flatten(1).any(1)
    assert abs(stripped.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(out[stripped], labels[stripped].masked_fill(extra[labels[stripped]], 0))
    assert torch.equal(out[~stripped], labels[~stripped])
    off = SynthSegGenerator(SynthesisConfig(), 5, 2, extracerebral=extra)
    assert torch.equal(off.skull_strip(labels, gen(0)), labels)


def test_old_generator_reproduced_by_pinned_keys():
    """The keys that turn the issue-9 parts off give the pre-issue-9 draws (same stream)."""
    old = dict(gamma_std=0.25, elastic_kind="displacement", flip=False, resolution=False,
               skull_strip_probability=0.0)
    labels = blobs(3, (24, 20), 4)
    g = SynthSegGenerator(SynthesisConfig(**old), 4, 2, flip_permutation=[0, 2, 1, 3],
                          extracerebral=[False, False, False, True])
    image, deformed = g(labels, gen(0))
    ref = SynthSegGenerator(SynthesisConfig(**old), 4, 2)
    image2, deformed2 = ref(labels, gen(0))
    assert torch.equal(image, image2) and torch.equal(deformed, deformed2)
