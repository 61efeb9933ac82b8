"""The bilevel trainer: recovery of a preset sigma, baselines, resume equal to an uninterrupted run,
stop/pause control, events and the run folder."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from helpers import VALUES, blob_labels  # noqa: F401  (the `dataset` fixture is in conftest.py)
from l2s_gui.config import Config
from l2s_gui.events import CheckpointEvent, DoneEvent, PreviewEvent, StartEvent, StepEvent, ValidationEvent
from l2s_gui.model_io import load_model
from l2s_gui.runs import RunFolder
from l2s_gui.trainer import Trainer


def make_config(dataset, **sections) -> Config:
    data = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "ndim": 2, "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False, "sigma_init": 0.05},
        "training": {"steps": 6, "val_every": 3, "preview_every": 3, "checkpoint_every": 3,
                     "lr_augmentation": 0.01, "seed": 1},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Config.from_dict(data)


def final_sigma(events):
    return [e for e in events if isinstance(e, StepEvent)][-1].theta["sigma"]


@pytest.mark.slow
@pytest.mark.parametrize("sigma_init", [0.02, 0.25])
def test_learned_sigma_moves_toward_the_preset_real_sigma(dataset, sigma_init):
    """Recovery (Learn2Synth Sec. 4.1): "real" = synthetic + N(0, 0.1^2) noise; sigma starts
    below or above 0.1 and must move toward it. The network is first trained for 100 plain steps
    (the hypergradient of an untrained network carries little information), then 100 hyper-steps;
    batch 16 keeps the one-draw hypergradient's variance low enough for so short a run."""
    cfg = make_config(dataset, data={"batch_size": 16}, network={"widths": [8, 16]},
                      training={"steps": 200, "hyper_start": 100, "lr_segmentation": 1e-2, "lr_augmentation": 3e-3,
                                "val_every": 1000, "preview_every": 1000, "checkpoint_every": 1000},
                      recovery={"enabled": True, "sigma": 0.1},
                      augmentation={"inu": False, "sigma_init": sigma_init})
    events = list(Trainer(cfg).run())
    sigma = final_sigma(events)
    assert abs(sigma - 0.1) < abs(sigma_init - 0.1)
    assert (sigma > sigma_init) if sigma_init < 0.1 else (sigma < sigma_init)


def test_events_and_run_folder(dataset, tmp_path):
    cfg = make_config(dataset, augmentation={"inu": True, "inu_nodes": [2, 4]})
    run = RunFolder(tmp_path / "run")
    run.create(cfg)
    events = list(Trainer(cfg, run=run).run())
    kinds = [type(e) for e in events]
    assert kinds[0] is StartEvent and kinds[-1] is DoneEvent and events[-1].reason == "finished"
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == list(range(1, 7))
    assert all(e.loss_real is not None for e in steps)  # hyper_every = 1
    assert set(steps[-1].theta) == {"sigma", "c"} and len(steps[-1].theta["c"]) == 2
    assert any(isinstance(e, ValidationEvent) for e in events)
    assert any(isinstance(e, CheckpointEvent) for e in events)
    preview = [e for e in events if isinstance(e, PreviewEvent)][-1]
    assert preview.synthetic.shape == preview.augmented.shape == preview.real.shape == preview.prediction.shape
    assert set(np.unique(preview.prediction)) <= set(VALUES)
    # the run folder holds the same story
    recorded, _ = run.read_events()
    assert [e.kind for e in recorded] == [e.kind for e in events if not isinstance(e, PreviewEvent)]
    assert run.read_preview().step == preview.step
    assert run.read_state()["status"] == "finished"
    model = load_model(run.model_path)
    assert model.table.values == VALUES and model.step == 6


def test_hyper_every_k(dataset):
    cfg = make_config(dataset, training={"hyper_every": 3})
    steps = [e for e in Trainer(cfg).run() if isinstance(e, StepEvent)]
    assert [e.loss_real is not None for e in steps] == [False, False, True, False, False, True]


def test_synthseg_baseline_keeps_theta_fixed(dataset):
    cfg = make_config(dataset, training={"method": "synthseg"}, augmentation={"sigma_init": 0.07})
    steps = [e for e in Trainer(cfg).run() if isinstance(e, StepEvent)]
    assert all(e.theta["sigma"] == pytest.approx(0.07) and e.loss_real is None for e in steps)


def test_supervised_baseline_trains_on_real_pairs(dataset):
    cfg = make_config(dataset, training={"method": "supervised", "steps": 4})
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    events = list(trainer.run())
    assert events[-1].reason == "finished"
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.net.parameters()))


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_resume_equals_an_uninterrupted_run(dataset, tmp_path, inner):
    cfg = make_config(dataset, training={"steps": 8, "checkpoint_every": 4, "inner_optimizer": inner},
                      augmentation={"inu": True, "inu_nodes": [2, 4]})
    straight = RunFolder(tmp_path / "straight")
    straight.create(cfg)
    list(Trainer(cfg, run=straight).run())

    split = RunFolder(tmp_path / "split")
    split.create(cfg)
    first = Trainer(cfg, run=split)
    for event in first.run():
        if isinstance(event, StepEvent) and event.step == 5:
            first.request_stop()  # stops before step 6, checkpoint at step 5
    assert split.read_state()["status"] == "stopped"
    resumed = Trainer(cfg, run=split, resume=True)
    assert resumed.step == 5
    list(resumed.run())

    a, b = load_model(straight.model_path), load_model(split.model_path)
    assert a.step == b.step == 8
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    for p, q in zip(a.augmentation.state_dict().values(), b.augmentation.state_dict().values()):
        assert torch.equal(p, q)


def test_pause_and_stop_through_the_control_file(dataset, tmp_path):
    cfg = make_config(dataset, training={"steps": 1000, "checkpoint_every": 1000})
    run = RunFolder(tmp_path / "run")
    run.create(cfg)
    trainer = Trainer(cfg, run=run)
    seen = []
    for event in trainer.run():
        seen.append(event)
        if isinstance(event, StepEvent) and event.step == 2:
            run.send_control("pause")
            threading.Timer(0.6, run.send_control, args=("stop",)).start()
    messages = [getattr(e, "message", "") for e in seen]
    assert "paused" in messages
    assert seen[-1].reason == "stopped" and seen[-1].step == 2
    assert run.read_state()["status"] == "stopped"
    assert run.latest_checkpoint().name == "step_0000002"


def test_bad_data_ends_with_a_clear_error(tmp_path):
    cfg = Config.from_dict({"data": {"label_maps": [str(tmp_path / "missing")]}, "training": {"method": "synthseg"}})
    from l2s_gui.errors import L2SError

    with pytest.raises(L2SError, match="missing"):
        Trainer(cfg)


def test_three_d_training_runs(dataset):
    cfg = make_config(dataset, data={"ndim": 3, "patch_size": [16, 16, 16], "batch_size": 1},
                      training={"steps": 2, "val_every": 2, "preview_every": 2})
    events = list(Trainer(cfg).run())
    assert events[-1].reason == "finished"
    preview = [e for e in events if isinstance(e, PreviewEvent)][-1]
    assert preview.synthetic.ndim == 2


# ------------------------------------------------------------------------------------------------ seams
def test_injected_batches_schedule_and_hook_replace_the_defaults(dataset):
    cfg = make_config(dataset, training={"steps": 4})
    calls = {"synthetic": 0, "real": 0}
    fixed: dict = {}

    def synthetic():
        calls["synthetic"] += 1
        return fixed["synthetic"]

    def real():
        calls["real"] += 1
        return fixed["real"]

    seen = []
    trainer = Trainer(cfg, synthetic_batches=synthetic, real_batches=real, hyper_schedule=lambda step: step == 2,
                      on_step=lambda tr, loss, loss_real: seen.append((tr.step, loss_real is not None)))
    fixed["synthetic"], fixed["real"] = trainer.sample_synthetic_batch(), trainer.sample_real_batch()
    steps = [e for e in trainer.run() if isinstance(e, StepEvent)]
    assert [e.loss_real is not None for e in steps] == [False, False, True, False]
    assert seen == [(1, False), (2, False), (3, True), (4, False)]
    assert calls == {"synthetic": 4, "real": 1}


def test_train_step_can_force_or_skip_the_hyper_step(dataset):
    trainer = Trainer(make_config(dataset))
    assert trainer.train_step(hyper=False)[1] is None
    assert trainer.train_step(hyper=True)[1] is not None
    synthseg = Trainer(make_config(dataset, training={"method": "synthseg"}))
    with pytest.raises(ValueError, match="no hyper-step"):
        synthseg.train_step(hyper=True)


def test_injected_learning_rates_and_augmentation(dataset):
    from l2s_gui.augment import build_augmentation

    cfg = make_config(dataset)
    augmentation = build_augmentation(cfg.augmentation, cfg.data.ndim)
    trainer = Trainer(cfg, augmentation=augmentation, segmentation_lr=lambda step: 0.0,
                      theta_lr=lambda step: 0.0)
    assert trainer.aug is augmentation
    before = [p.detach().clone() for p in list(trainer.net.parameters()) + list(trainer.aug.parameters())]
    for _ in range(2):
        trainer.train_step()
        trainer.step += 1
    after = list(trainer.net.parameters()) + list(trainer.aug.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # rate 0: nothing moves
    moving = Trainer(cfg)
    moving.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, moving.net.parameters()))


def test_the_hypergradient_route_is_a_config_key_with_the_same_result(dataset):
    thetas = {}
    for route in ("reverse", "jvp"):
        trainer = Trainer(make_config(dataset, training={"steps": 3, "hypergradient_route": route}))
        steps = [e for e in trainer.run() if isinstance(e, StepEvent)]
        thetas[route] = steps[-1].theta["sigma"]
    assert thetas["reverse"] == pytest.approx(thetas["jvp"], rel=1e-4)
    assert thetas["reverse"] != pytest.approx(0.05, abs=1e-6)  # theta moved


def test_preview_shows_the_synthetic_sample_with_the_most_foreground(dataset):
    """Not the batch's first sample, which may be a slice at the pole of the brain."""
    trainer = Trainer(make_config(dataset, training={"method": "synthseg"}))
    x, y, draw = trainer.sample_synthetic_batch()
    y = y.clone()
    y[0] = 0
    y[0, :2, :2] = 1          # the first sample: almost no foreground
    y[1] = 1                  # the second: all foreground
    trainer.synthetic_batches = lambda: (x, y, draw)
    trainer.train_step()
    event = trainer.preview()
    np.testing.assert_array_equal(event.synthetic, x[1, 0].numpy())
    assert not np.array_equal(event.synthetic, x[0, 0].numpy())


def test_validation_mean_averages_the_classes_the_labels_hold(dataset):
    """A class the network predicts but the validation labels lack is an error of the true class
    (its Dice), not a Dice of 0 of its own that would count the same voxels twice."""
    trainer = Trainer(make_config(dataset))
    labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    labels[:, 2:6, 2:6] = 1                               # classes 0 and 1 only
    trainer._val_cache = (torch.zeros(2, 1, 8, 8), labels)
    pred = labels.clone()
    pred[:, 2, 2:6] = 2                                   # 4 of 16 class-1 pixels predicted as class 2

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(pred, trainer.n_classes).permute(0, 3, 1, 2).float()

    trainer.net = Fixed()
    event = trainer.validate()
    value = str(trainer.table.values[1])
    assert list(event.dice) == [value]
    assert event.dice[value] == pytest.approx(2 * 12 / (12 + 16))
    assert event.mean_dice == pytest.approx(event.dice[value])
