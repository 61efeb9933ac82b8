"""GBA-style contrast blending (synthesis.contrast_blend_*): draw statistics, the blend of eq. 7
(lambda inside the structure, untouched away from it, smooth in between), and off = no draw."""

from __future__ import annotations

import math

import torch

from l2s_gui.config import SynthesisConfig
from l2s_gui.synthesis.generator import SynthSegGenerator


def gen(seed):
    return torch.Generator().manual_seed(seed)


def square_labels(batch=1, size=32, lo=10, hi=22, second=True):
    labels = torch.zeros((batch, size, size), dtype=torch.int64)
    labels[:, lo:hi, lo:hi] = 1
    if second:
        labels[:, :4] = 2   # a second structure, away from the square
    return labels


def test_draw_statistics():
    n, p = 4000, 0.4
    labels = square_labels(n, 16, 5, 11)
    g = SynthSegGenerator(SynthesisConfig(contrast_blend_probability=p, contrast_blend_lambda=[0.5, 1.5]), 3, 2)
    _, chosen, lam = g.contrast_blend(torch.ones((n, 1, 16, 16)), labels, gen(0))
    picked = chosen >= 0
    assert abs(picked.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert set(chosen[picked].tolist()) == {1, 2}   # present foreground labels only, both drawn
    assert abs((chosen[picked] == 1).float().mean().item() - 0.5) < 0.05
    assert lam.min() >= 0.5 and lam.max() <= 1.5 and abs(lam.mean().item() - 1.0) < 0.02


def test_blend_is_lambda_inside_identity_away_and_smooth_between():
    labels = square_labels(second=False)
    cfg = SynthesisConfig(contrast_blend_probability=1.0, contrast_blend_lambda=[2.0, 2.0],
                          contrast_blend_dilation=2, contrast_blend_smoothing=1.0)
    g = SynthSegGenerator(cfg, 3, 2)
    out, chosen, _ = g.contrast_blend(torch.ones((1, 1, 32, 32)), labels, gen(3))
    assert int(chosen) == 1
    row = out[0, 0, 16]           # a line through the square's centre (columns 10..21 inside)
    assert torch.allclose(row[12:20], torch.full((8,), 2.0), atol=1e-5)   # deep inside: lambda x
    assert torch.allclose(row[:3], torch.ones(3)) and torch.allclose(row[-3:], torch.ones(3))  # away: x
    left = row[:16]
    assert bool((left[1:] >= left[:-1] - 1e-6).all())    # monotone, no step: a smoothed, dilated mask
    assert row[8] > 1.0                                   # the dilation reaches outside the structure
    assert (left[1:] - left[:-1]).max() < 0.6


def test_off_draws_nothing_and_the_generator_uses_it_when_on():
    labels = square_labels(4)
    base = SynthSegGenerator(SynthesisConfig(), 3, 2)
    same = SynthSegGenerator(SynthesisConfig(contrast_blend_lambda=[0.1, 0.2]), 3, 2)   # probability 0
    assert torch.equal(base(labels, gen(5))[0], same(labels, gen(5))[0])
    on = SynthSegGenerator(SynthesisConfig(contrast_blend_probability=1.0), 3, 2)
    image, deformed = on(labels, gen(5))
    assert image.shape == (4, 1, 32, 32) and float(image.min()) >= 0 and float(image.max()) <= 1
    assert not torch.equal(image, base(labels, gen(5))[0])
