"""synthesis.intensity_prior ('real', SynthSeg-rule): class intensities estimated from the real
training pairs only, the GMM drawn around them, the refusals that name the setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import blob_labels  # noqa: F401  (the `dataset` fixture is in conftest.py)
from l2s_gui.config import Config, SynthesisConfig
from l2s_gui.errors import ConfigError
from l2s_gui.events import LogEvent
from l2s_gui.synthesis import SynthSegGenerator, ToClasses, build_generator
from l2s_gui.synthesis.intensity_prior import class_intensities, describe, generation_prior
from l2s_gui.trainer import Trainer


def test_class_intensities_match_numpy_per_class():
    rng = np.random.default_rng(0)
    labels = [torch.from_numpy(rng.integers(0, 3, (10, 12))), torch.from_numpy(rng.integers(0, 3, (7, 9)))]
    images = [torch.from_numpy(rng.random(lab.shape).astype(np.float32)) for lab in labels]
    stats = class_intensities(images, labels, n_classes=4)
    x = np.concatenate([i.numpy().ravel() for i in images])
    y = np.concatenate([lab.numpy().ravel() for lab in labels])
    for c in range(3):
        assert int(stats.count[c]) == (y == c).sum()
        assert float(stats.mean[c]) == pytest.approx(x[y == c].mean(), abs=1e-6)
        assert float(stats.std[c]) == pytest.approx(x[y == c].std(ddof=1), abs=1e-6)
    assert int(stats.count[3]) == 0 and torch.isnan(stats.mean[3]) and torch.isnan(stats.std[3])
    text = describe(stats, ["bg", "a", "b", "absent"])
    assert "a " in text and "drawn uniformly: absent" in text


def test_generation_prior_follows_the_generation_label_classes():
    stats = class_intensities([torch.tensor([0.0, 0.9, 0.5])], [torch.tensor([0, 1, 2])], n_classes=3)
    means, stds = generation_prior(stats, torch.tensor([0, 1, 1, 2]))
    assert means.tolist() == pytest.approx([0.0, 0.9, 0.9, 0.5])
    assert stds.isnan().all()  # one voxel per class: no spread estimated (the generator draws std 0)


def _blocks(batch: int) -> torch.Tensor:
    """(B, 32, 32) with four 16x16 blocks of labels 0..3."""
    lab = torch.zeros(32, 32, dtype=torch.int64)
    lab[:16, 16:], lab[16:, :16], lab[16:, 16:] = 1, 2, 3
    return lab.expand(batch, 32, 32).clone()


def test_gmm_means_are_drawn_around_the_prior_and_unknown_labels_stay_uniform():
    cfg = SynthesisConfig(intensity_prior="real", intensity_prior_spread=0.05, std_range=[0.0, 0.0])
    gen = SynthSegGenerator(cfg, n_classes=4, ndim=2, deformation=False)
    gen.set_intensity_prior([0.0, 0.9, 0.6, float("nan")], [0.0, 0.0, 0.0, float("nan")])
    g = torch.Generator().manual_seed(0)
    image = gen._gmm(_blocks(400), g)[:, 0]
    per_sample = torch.stack([image[:, :16, 16:].mean((1, 2)), image[:, 16:, :16].mean((1, 2)),
                              image[:, 16:, 16:].mean((1, 2))], 1)
    assert per_sample[:, 0].mean() == pytest.approx(0.9, abs=0.01)
    assert per_sample[:, 1].mean() == pytest.approx(0.6, abs=0.01)
    assert per_sample[:, 1].std() == pytest.approx(0.05, abs=0.01)
    assert per_sample[:, 0].max() <= 1.0  # clipped to [0, 1]
    # label 3 has no prior: U(mean_range) = U(0, 1), mean 0.5 and std 1/sqrt(12)
    assert per_sample[:, 2].mean() == pytest.approx(0.5, abs=0.05)
    assert per_sample[:, 2].std() == pytest.approx(12 ** -0.5, abs=0.03)


def test_the_prior_fixes_the_contrast_of_whole_images():
    """With the prior (T1-like: 1 > 2 > 3 > 0), nearly every synthesised image keeps that order;
    SynthSeg's uniform means give each of the 24 orders about equally often."""
    plain = SynthesisConfig(resolution=False, blur_max=0.0, flip=False, std_range=[0.0, 0.0])
    labels = _blocks(200)

    def order_kept(cfg, prior):
        gen = build_generator(cfg, 4, 2)
        gen.deformation = False
        if prior:
            gen.set_intensity_prior([0.0, 0.9, 0.6, 0.3], [0.0, 0.02, 0.02, 0.02])
        image, _ = gen(labels, torch.Generator().manual_seed(1))
        m = [image[:, 0, :16, :16], image[:, 0, :16, 16:], image[:, 0, 16:, :16], image[:, 0, 16:, 16:]]
        m = torch.stack([b.mean((1, 2)) for b in m], 1)
        return float(((m[:, 1] > m[:, 2]) & (m[:, 2] > m[:, 3]) & (m[:, 3] > m[:, 0])).float().mean())

    assert order_kept(SynthesisConfig(**{**plain.__dict__, "intensity_prior": "real",
                                            "intensity_prior_spread": 0.05}), True) > 0.98
    assert order_kept(plain, False) < 0.2


def _config(dataset, **synthesis) -> Config:
    return Config.from_dict({
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "ndim": 2, "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "synthesis": {"intensity_prior": "real", **synthesis},
        "augmentation": {"inu": False},
        "training": {"steps": 2, "val_every": 2, "preview_every": 2, "checkpoint_every": 2},
    })


def test_trainer_estimates_the_prior_from_the_training_pairs_only(dataset):
    trainer = Trainer(_config(dataset))
    pairs = trainer.data.train_pairs
    assert pairs and trainer.data.n_val  # some pairs are held out for validation
    expected = class_intensities([p.image for p in pairs], [p.labels for p in pairs], trainer.n_classes)
    gen = trainer.synth.generator if isinstance(trainer.synth, ToClasses) else trainer.synth
    want = expected.mean[trainer.data.generation_classes]
    assert torch.allclose(gen.prior_mean.cpu(), want, equal_nan=True)
    with_val = class_intensities([p.image for p in pairs + trainer.data.val_pairs],
                                 [p.labels for p in pairs + trainer.data.val_pairs], trainer.n_classes)
    assert not torch.allclose(expected.mean, with_val.mean, equal_nan=True)  # the test can tell them apart
    events = list(trainer.run())
    logs = [e.message for e in events if isinstance(e, LogEvent)]
    assert any(m.startswith("intensity prior from the real training pairs") for m in logs)


@pytest.mark.parametrize(("extra", "words"), [
    ({"data": {"real_images": [], "real_labels": []}, "training": {"method": "synthseg"}}, "list data.real_images"),
    ({"recovery": {"enabled": True}}, "recovery run"),
    ({"synthesis": {"backend": "cornucopia"}}, "backend: torch"),
])
def test_real_prior_without_real_pairs_or_with_cornucopia_is_refused_by_name(dataset, extra, words):
    data = _config(dataset).to_dict()
    for section, values in extra.items():
        data[section].update(values)
    with pytest.raises(ConfigError, match="synthesis.intensity_prior") as err:
        Trainer(Config.from_dict(data))
    assert words in str(err.value)



def test_synthmix_aligned_images_get_the_class_prior(dataset):
    data = _config(dataset).to_dict()
    data["training"]["method"] = "synthmix"
    trainer = Trainer(Config.from_dict(data))
    assert trainer.aligned is not None
    pairs = trainer.data.train_pairs
    expected = class_intensities([p.image for p in pairs], [p.labels for p in pairs], trainer.n_classes)
    assert torch.allclose(trainer.aligned.generator.prior_mean, expected.mean, equal_nan=True)
