"""Warm start (training.init_from / init_theta_from), theta's learning-rate schedule, and the
recovery-mode validation images drawn only from held-out label maps."""

from __future__ import annotations

import math

import pytest
import torch

from l2s_gui.config import Config
from l2s_gui.errors import InputError
from l2s_gui.events import StepEvent
from l2s_gui.model_io import load_model
from l2s_gui.runs import RunFolder
from l2s_gui.trainer import Trainer


def recovery_config(dataset, **training):
    data = {
        "data": {"label_maps": [str(dataset / "maps")], "ndim": 2, "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": True, "inu_nodes": [2, 4], "sigma_init": 0.07, "inu_c_init": [0.3, 0.6]},
        "training": {"steps": 4, "val_every": 1000, "preview_every": 1000, "checkpoint_every": 1000,
                     "lr_augmentation": 0.01, "seed": 3, **training},
        "recovery": {"enabled": True, "sigma": 0.1, "val_batches": 1},
    }
    return Config.from_dict(data)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A short Learn2Synth run exported to a run folder (its model is the warm start)."""
    run = RunFolder(tmp_path_factory.mktemp("warm") / "run")
    cfg = recovery_config(dataset)
    run.create(cfg)
    list(Trainer(cfg, run=run).run())
    return run


def test_init_from_starts_the_network_and_init_theta_from_starts_theta(dataset, trained):
    model = load_model(trained.model_path)
    cfg = recovery_config(dataset, init_from=str(trained.path), seed=9)   # a run folder works too
    fresh = Trainer(cfg)
    for k, v in model.net.state_dict().items():
        assert torch.equal(fresh.net.state_dict()[k], v), k
    assert fresh.theta()["sigma"] == pytest.approx(0.07)   # theta from the settings
    cfg = recovery_config(dataset, init_from=str(trained.model_path), init_theta_from=str(trained.model_path))
    both = Trainer(cfg)
    want = model.augmentation.theta()
    assert both.theta()["sigma"] == pytest.approx(want["sigma"]) and both.theta()["c"] == pytest.approx(want["c"])
    assert both.theta()["sigma"] != pytest.approx(0.07)   # the model's learned sigma, not the setting


def test_init_from_refuses_another_network_or_dimensionality(dataset, trained):
    cfg = recovery_config(dataset, init_from=str(trained.model_path))
    cfg.network.widths = [4, 8, 16]
    with pytest.raises(InputError, match=r"init_from: .*model.safetensors: the model's network.widths is \[4, 8\]"):
        Trainer(cfg)
    cfg = recovery_config(dataset, init_from=str(trained.model_path))
    cfg.data.ndim = 3
    cfg.data.patch_size = [16, 16, 16]
    with pytest.raises(InputError, match="a 2D model, but this run trains in 3D"):
        Trainer(cfg)
    cfg = recovery_config(dataset, init_theta_from=str(trained.model_path))
    cfg.augmentation.inu = False
    with pytest.raises(InputError, match="init_theta_from: .*augmentation"):
        Trainer(cfg)
    cfg = recovery_config(dataset, init_from=str(trained.path / "nothing.safetensors"))
    with pytest.raises(InputError, match="init_from: .*not found"):
        Trainer(cfg)


def test_init_from_is_skipped_when_resuming_from_a_checkpoint(dataset, tmp_path, trained):
    cfg = recovery_config(dataset, init_from=str(trained.model_path), checkpoint_every=2)
    run = RunFolder(tmp_path / "r")
    run.create(cfg)
    list(Trainer(cfg, run=run).run())
    resumed = Trainer(cfg, run=run, resume=True)
    assert resumed.step == 4


def test_cosine_schedule_of_theta_learning_rate(dataset):
    cfg = recovery_config(dataset, steps=12, hyper_start=1, lr_augmentation=0.02,
                          lr_augmentation_schedule="cosine", lr_augmentation_final=0.1)
    tr = Trainer(cfg)
    assert tr.theta_learning_rate(0) == pytest.approx(0.02)
    assert tr.theta_learning_rate(1) == pytest.approx(0.02)          # first hyper-step (iteration index 1)
    assert tr.theta_learning_rate(6) == pytest.approx(0.02 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert tr.theta_learning_rate(11) == pytest.approx(0.002)         # last iteration
    rates = [tr.theta_learning_rate(s) for s in range(1, 12)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    events = list(tr.run())
    assert [g["lr"] for g in tr.outer.param_groups] == [pytest.approx(0.002)]   # set at each hyper-step
    assert sum(isinstance(e, StepEvent) for e in events) == 12
    constant = Trainer(recovery_config(dataset, steps=5))
    assert {constant.theta_learning_rate(s) for s in range(5)} == {0.01}


def test_lr_inu_scale_multiplies_the_exponents_rate_only(dataset, tmp_path):
    # Adam's first step moves every parameter by its learning rate (m_hat / sqrt(v_hat) = sign(g)),
    # so after one hyper-step sigma has moved by lr and each exponent by lr * lr_inu_scale.
    cfg = recovery_config(dataset, steps=1, hyper_start=0, lr_augmentation=0.004, lr_inu_scale=5.0)
    tr = Trainer(cfg)
    before = tr.theta()
    list(tr.run())
    after = tr.theta()
    assert abs(after["sigma"] - before["sigma"]) == pytest.approx(0.004, rel=1e-3)
    assert [abs(a - b) for a, b in zip(after["c"], before["c"])] == [pytest.approx(0.02, rel=1e-3)] * 2
    assert sorted(g["lr"] for g in tr.outer.param_groups) == [pytest.approx(0.004), pytest.approx(0.02)]
    # the schedule scales both groups, and a run with two groups resumes from its checkpoint
    cfg = recovery_config(dataset, steps=6, hyper_start=1, lr_augmentation=0.02, lr_inu_scale=3.0,
                          lr_augmentation_schedule="cosine", lr_augmentation_final=0.1, checkpoint_every=3)
    run = RunFolder(tmp_path / "r")
    run.create(cfg)
    list(Trainer(cfg, run=run).run())
    resumed = Trainer(cfg, run=run, resume=True)
    assert resumed.step == 6 and len(resumed.outer.param_groups) == 2
    assert sorted(g["lr"] for g in resumed.outer.param_groups) == [pytest.approx(0.002), pytest.approx(0.006)]
    single = Trainer(recovery_config(dataset, lr_inu_scale=1.0))
    assert len(single.outer.param_groups) == 1   # checkpoints written before the key resume unchanged


def test_recovery_validation_never_sees_a_synthesis_map(dataset):
    tr = Trainer(recovery_config(dataset))
    held = {str(p) for p in tr.data.held_out_map_paths}
    synth = {str(p) for p in tr.data.label_map_paths}
    assert held and synth and not held & synth
    assert len(held) + len(synth) == 3
    # every validation label comes from a held-out map: draw many synthesis batches and compare the
    # label maps the generator sees with the held-out ones (slices are distinct across the blob maps)
    g = torch.Generator().manual_seed(0)
    seen = {tuple(m.flatten().tolist()) for _ in range(20) for m in tr.data.sample_generation_batch(4, g)}
    g = torch.Generator().manual_seed(1)
    held_draws = {tuple(m.flatten().tolist()) for _ in range(20)
                  for m in tr.data.sample_generation_batch(4, g, held_out=True)}
    assert not seen & held_draws
    images, labels = tr.validation_set()
    assert images.shape[0] == labels.shape[0] == 2


def test_recovery_with_one_label_map_asks_for_held_out_maps(dataset):
    cfg = recovery_config(dataset)
    cfg.data.label_maps = [str(dataset / "maps" / "map0.nii.gz")]
    with pytest.raises(InputError, match="held out from synthesis"):
        Trainer(cfg)
    cfg.recovery.val_label_maps = [str(dataset / "maps" / "map1.nii.gz")]
    tr = Trainer(cfg)
    assert [p.name for p in tr.data.held_out_map_paths] == ["map1.nii.gz"]
    cfg.recovery.val_label_maps = [str(dataset / "maps" / "map0.nii.gz")]
    with pytest.raises(InputError, match="also in data.label_maps"):
        Trainer(cfg)


def test_cosine_schedule_of_the_segmentation_learning_rate(dataset):
    cfg = recovery_config(dataset, steps=11, lr_segmentation=0.01, lr_segmentation_schedule="cosine",
                          lr_segmentation_final=0.05)
    tr = Trainer(cfg)
    assert tr.segmentation_learning_rate(0) == pytest.approx(0.01)
    assert tr.segmentation_learning_rate(5) == pytest.approx(0.01 * (0.05 + 0.95 * 0.5))
    assert tr.segmentation_learning_rate(10) == pytest.approx(0.0005)
    list(tr.run())
    assert tr.inner.lr == pytest.approx(0.0005)   # the update of eq. 2 used the scheduled rate
