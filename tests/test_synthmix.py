"""training.method synthmix (SynthMix Sec. 2.2 with aligned pairs from the real pairs' own label maps):
aligned synthesis, the mixes and their labels, batch composition, recovery mode, validation, CLI."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.errors import ConfigError
from l2s_gui.run_inputs import missing_inputs, prepare_run_inputs
from l2s_gui.synthesis import SynthSegGenerator
from l2s_gui.synthmix import AlignedSynthesis
from l2s_gui.trainer import Trainer

# piecewise-constant synthesis (no GMM spread, no blur) with large spatial ranges that must be ignored
PIECEWISE = {"std_range": [0.0, 0.0], "resolution": False, "blur_max": 0.0, "rotation": 30.0,
             "translation": 3.0, "svf_std": 8.0, "scaling": 0.2, "flip": True}


def config(dataset, synthesis=None, augmentation=None, recovery=None, data=None, **training):
    return Config.from_dict({
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "ndim": 2, "batch_size": 4, "val_fraction": 0.34,
                 **(data or {})},
        "synthesis": synthesis or {},
        "augmentation": augmentation or {},
        "network": {"widths": [4, 8]},
        "recovery": recovery or {},
        "training": {"method": "synthmix", "steps": 2, "val_every": 1000, "preview_every": 1000,
                     "checkpoint_every": 1000, "seed": 1, **training}})


def edges(t: torch.Tensor, axis: int, tol: float | None = None) -> torch.Tensor:
    """Where neighbours along ``axis`` differ: the boundaries of a label map or a piecewise image."""
    n = t.shape[axis]
    diff = t.narrow(axis, 1, n - 1) - t.narrow(axis, 0, n - 1)
    return diff.abs() > tol if tol is not None else diff != 0


def assert_aligned(image: torch.Tensor, labels: torch.Tensor) -> None:
    """The piecewise-constant image (B, 1, *sp) changes exactly where the label map (B, *sp) does."""
    for axis in range(1, labels.dim()):
        assert torch.equal(edges(image[:, 0], axis, 1e-4), edges(labels, axis)), axis


def marked_real_batch(trainer):
    """Real pairs whose image no synthetic image can be: constant 7 (labels kept)."""
    x, y = trainer.sample_real_batch()
    return torch.full_like(x, 7.0), y


def test_aligned_synthesis_keeps_every_class_boundary(dataset):
    trainer = Trainer(config(dataset, synthesis=PIECEWISE, augmentation={"kind": "none"}))
    _, y = trainer.sample_real_batch()
    aligned = AlignedSynthesis(trainer.cfg.synthesis, trainer.n_classes, 2)
    image = aligned(y, torch.Generator().manual_seed(0))
    assert image.shape == (4, 1, 24, 24) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert_aligned(image, y)
    # the trainer's aligned batch: A_theta (here none) of that image, aligned with the real labels
    x_real, x_synth, y_real = trainer.sample_aligned_batch(3)
    assert x_real.shape == x_synth.shape == (3, 1, 24, 24) and y_real.shape == (3, 24, 24)
    assert_aligned(x_synth, y_real)
    # a 3D map too
    labels3d = torch.randint(0, trainer.n_classes, (2, 8, 8, 8)).repeat_interleave(2, 1)
    image3d = AlignedSynthesis(trainer.cfg.synthesis, trainer.n_classes, 3)(labels3d, torch.Generator())
    assert_aligned(image3d, labels3d)


def test_the_augmentation_is_applied_to_the_aligned_image(dataset):
    aug = {"kind": "parametric", "noise": "fixed", "sigma_init": 0.5, "inu": False}
    trainer = Trainer(config(dataset, synthesis=PIECEWISE, augmentation=aug))
    _, x_synth, y = trainer.sample_aligned_batch(2)
    inside = x_synth[:, 0][y == int(y.max())]
    assert float(inside.std()) > 0.2  # A_theta's noise, sigma 0.5, on a constant region


@pytest.mark.parametrize("fraction, n_mixed", [(0.25, 1), (0.5, 2), (0.6, 2), (1.0, 4)])
def test_batches_hold_the_set_share_of_mixes_with_the_real_labels(dataset, fraction, n_mixed):
    trainer = Trainer(config(dataset, synthmix_fraction=fraction, synthmix_ratio=1.0))
    real = marked_real_batch(trainer)
    trainer.real_batches = lambda: real
    x, y, draw = trainer.synthetic_batches()
    mixed_x, mixed_y = trainer.synthmix(x, y)
    whole_real = (mixed_x == 7.0).flatten(1).all(1)
    assert whole_real.tolist() == [True] * n_mixed + [False] * (4 - n_mixed)   # ratio 1: real cells only
    assert torch.equal(mixed_y[:n_mixed], real[1][:n_mixed])                    # eq. 3: the real labels
    assert torch.equal(mixed_x[n_mixed:], x[n_mixed:]) and torch.equal(mixed_y[n_mixed:], y[n_mixed:])
    assert not (x == 7.0).any()  # the synthetic batch itself is untouched


def test_mixes_are_real_and_aligned_synthetic_cells(dataset):
    trainer = Trainer(config(dataset, synthesis=PIECEWISE, augmentation={"kind": "none"}, synthmix_fraction=1.0,
                             synthmix_grid=4, synthmix_ratio=0.5))
    real = marked_real_batch(trainer)
    trainer.real_batches = lambda: real
    x, y, _ = trainer.synthetic_batches()
    mixed_x, mixed_y = trainer.synthmix(x, y)
    assert torch.equal(mixed_y, real[1])
    from_real = mixed_x == 7.0
    cells = from_real[:, 0].unflatten(1, (4, 6)).unflatten(3, (4, 6))   # (B, 4, 6, 4, 6): 6-pixel cells
    assert (cells.all(2).all(3) | (~cells).all(2).all(3)).all()        # every cell from one image
    share = float(from_real.float().mean())
    assert 0.2 < share < 0.8                                            # lambda = 0.5 over 64 cells
    synthetic = mixed_x.masked_fill(from_real, 0.0)                     # the synthetic cells stay aligned
    assert float(mixed_x[~from_real].max()) <= 1.0
    for b in range(4):
        keep = ~from_real[b, 0]
        for axis in (0, 1):
            both = keep.narrow(axis, 1, 23) & keep.narrow(axis, 0, 23)
            assert torch.equal(edges(synthetic[b, 0], axis, 1e-4)[both], edges(mixed_y[b], axis)[both])


def test_synthmix_trains_phi_with_theta_fixed(dataset):
    trainer = Trainer(config(dataset))
    assert not trainer.learns_theta
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    theta = {k: v.clone() for k, v in trainer.aug.state_dict().items()}
    losses = [trainer.train_step()[0] for _ in range(2)]
    assert all(0 < loss < 1 for loss in losses)
    assert any(not torch.equal(trainer.net.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(trainer.aug.state_dict()[k], v) for k, v in theta.items())
    with pytest.raises(ValueError, match="learns no theta"):
        trainer.train_step(hyper=True)


def test_synthmix_runs_in_3d(dataset):
    trainer = Trainer(config(dataset, data={"ndim": 3, "patch_size": [16, 16, 16], "batch_size": 2},
                             synthmix_grid=4))
    x_real, x_synth, y = trainer.sample_aligned_batch(1)
    assert x_real.shape == x_synth.shape == (1, 1, 16, 16, 16)
    events = list(trainer.run())
    assert events[-1].reason == "finished"


def test_recovery_mode_pairs_share_the_deformed_map(dataset):
    cfg = config(dataset, synthesis=PIECEWISE, augmentation={"kind": "none"},
                 recovery={"enabled": True, "sigma": 0.0}, synthmix_fraction=0.5)
    cfg.data.real_images, cfg.data.real_labels = [], []  # recovery needs no real files
    trainer = Trainer(cfg)
    x_real, x_synth, y = trainer.sample_aligned_batch(3)
    assert y.max() < trainer.n_classes  # training classes
    assert_aligned(x_real, y)           # corruption(G(map)): sigma 0 keeps it piecewise constant
    assert_aligned(x_synth, y)          # G'(map): the same geometry...
    assert not torch.allclose(x_real, x_synth)  # ...with its own contrast draw
    events = list(trainer.run())
    assert events[-1].reason == "finished" and trainer.step == 2


def test_generator_geometry_and_render_are_forward_in_two_parts():
    gen = SynthSegGenerator(Config().synthesis, 5, 2)
    labels = torch.randint(0, 5, (2, 24, 24))
    image, deformed = gen(labels, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    deformed2, stripped = gen.geometry(labels, g)
    assert torch.equal(deformed, deformed2) and torch.equal(image, gen.render(deformed2, stripped, g))


def test_synthmix_needs_real_pairs_and_label_maps(dataset, tmp_path):
    cfg = config(dataset)
    cfg.data.real_images, cfg.data.real_labels = [], []
    with pytest.raises(ConfigError, match=r"data.real_images: synthmix needs real scans"):
        Trainer(cfg)
    assert "real scan + labels pair" in missing_inputs("synthmix", 1, 0)
    assert "label map" in missing_inputs("synthmix", 0, 1)
    with pytest.raises(ValueError, match="real scan \\+ labels pair"):
        prepare_run_inputs(tmp_path / "run", {"training": {"method": "synthmix"}}, [dataset / "maps"], [])


def test_config_round_trip_and_ranges(dataset, tmp_path):
    cfg = config(dataset, synthmix_fraction=0.75, synthmix_grid=4, synthmix_ratio=0.3)
    cfg.save(tmp_path / "cfg.yaml")
    again = Config.load(tmp_path / "cfg.yaml")
    assert again == cfg and again.training.synthmix_grid == 4
    base = cfg.to_dict()
    for key, value, words in (("synthmix_fraction", 0.0, "must be in (0, 1]"),
                              ("synthmix_grid", 0, "must be in [1, 1024]"),
                              ("synthmix_ratio", 1.5, "must be in [0, 1]")):
        bad = {**base, "training": {**base["training"], key: value}}
        with pytest.raises(ConfigError, match=rf"training\.{key}: {re.escape(words)}"):
            Config.from_dict(bad)
    rec = {**base, "recovery": {"enabled": True}, "synthesis": {**base["synthesis"], "backend": "cornucopia"}}
    with pytest.raises(ConfigError, match=r"synthesis.backend: synthmix in recovery mode"):
        Config.from_dict(rec)
    Config.from_dict({**base, "recovery": {"enabled": True}})  # recovery mode accepts synthmix


def test_cli_trains_synthmix(dataset, tmp_path):
    cfg = config(dataset, method="synthseg")
    path = tmp_path / "cfg.yaml"
    cfg.save(path)
    run = tmp_path / "run"
    assert main(["train", str(path), "-o", str(run), "--quiet", "--set", "training.method=synthmix",
                 "--set", "training.synthmix_grid=4"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["training"]
    assert saved["method"] == "synthmix" and saved["synthmix_grid"] == 4
    assert (run / "model.safetensors").is_file()
