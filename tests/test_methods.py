"""The paper's other baselines (Learn2Synth Sec. 4.2.1): Mixed SynthSeg (real pairs mixed into the
synthetic batches) and Finetuned SynthSeg (a model trained further on the real pairs)."""

from __future__ import annotations

import pytest
import torch

from l2s_gui.config import Config
from l2s_gui.errors import ConfigError
from l2s_gui.model_io import load_model
from l2s_gui.runs import RunFolder
from l2s_gui.trainer import Trainer


def config(dataset, **training):
    return Config.from_dict({
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "ndim": 2, "batch_size": 4, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "training": {"steps": 2, "val_every": 1000, "preview_every": 1000, "checkpoint_every": 1000, "seed": 1,
                     **training}})


def marked_real_batch(trainer):
    """A real batch that no synthetic image can be: constant 7, labels all class 1."""
    x, y = trainer.sample_real_batch()
    return torch.full_like(x, 7.0), torch.ones_like(y)


@pytest.mark.parametrize("fraction, n_real", [(0.25, 1), (0.5, 2), (0.1, 1)])
def test_mixed_batches_hold_the_set_share_of_real_pairs(dataset, fraction, n_real):
    trainer = Trainer(config(dataset, method="mixed", mixed_real_fraction=fraction))
    trainer.real_batches = lambda: marked_real_batch(trainer)
    x, y, draw = trainer.synthetic_batches()
    mixed_x, mixed_y = trainer.mix_real(x, y)
    real = (mixed_x == 7.0).flatten(1).all(1)
    assert real.tolist() == [True] * n_real + [False] * (4 - n_real)
    assert (mixed_y[:n_real] == 1).all() and torch.equal(mixed_y[n_real:], y[n_real:])
    assert torch.equal(mixed_x[n_real:], x[n_real:]) and not (x == 7.0).any()  # inputs untouched
    assert not trainer.learns_theta   # theta fixed, as naive SynthSeg
    loss, loss_real = trainer.train_step()
    assert loss_real is None and 0 < loss < 1


def test_mixed_needs_real_pairs(dataset):
    cfg = config(dataset, method="mixed")
    cfg.data.real_images, cfg.data.real_labels = [], []
    with pytest.raises(ConfigError, match=r"data.real_images: mixed needs real scans"):
        Trainer(cfg)


def test_finetuned_starts_from_the_model_and_trains_on_real_pairs_only(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"training.init_from: method finetuned fine-tunes a model"):
        Config.from_dict({**config(dataset).to_dict(), "training": {"method": "finetuned"}})
    run = RunFolder(tmp_path / "naive")
    cfg = config(dataset, method="synthseg")
    run.create(cfg)
    list(Trainer(cfg, run=run).run())
    model = load_model(run.model_path)

    def no_synthesis():
        raise AssertionError("finetuned never synthesises")

    trainer = Trainer(config(dataset, method="finetuned", init_from=str(run.model_path)),
                      synthetic_batches=no_synthesis)
    for k, v in model.net.state_dict().items():
        assert torch.equal(trainer.net.state_dict()[k], v), k
    loss, loss_real = trainer.train_step()
    assert loss_real is None and 0 < loss < 1
    assert any(not torch.equal(trainer.net.state_dict()[k], v) for k, v in model.net.state_dict().items())


@pytest.mark.parametrize("method", ["mixed", "finetuned", "supervised"])
def test_real_pair_methods_train_on_the_preset_corruption_in_recovery_mode(dataset, tmp_path, method):
    """Recovery mode (no real files): the real pairs of every method are the preset-corrupted images."""
    init = {}
    if method == "finetuned":
        run = RunFolder(tmp_path / "naive")
        cfg = config(dataset, method="synthseg")
        run.create(cfg)
        list(Trainer(cfg, run=run).run())
        init = {"init_from": str(run.model_path)}
    cfg = Config.from_dict({**config(dataset, method=method, **init).to_dict(),
                            "recovery": {"enabled": True, "sigma": 0.3, "val_batches": 1}})
    cfg.data.real_images, cfg.data.real_labels = [], []
    trainer = Trainer(cfg)
    assert trainer.corruption is not None
    x_real, y_real = trainer.real_batches()
    assert x_real.shape[0] == 4 and y_real.shape[0] == 4
    loss, loss_real = trainer.train_step()
    assert loss_real is None and 0 < loss < 1
    assert trainer.validate() is not None
