"""The Inspector (SynthMix Sec. 2.2-2.3): its targets from the mix-up mask, the network in 2D/3D, that it
never touches phi or theta, its accuracy on alike and different domains, the trainer hook with
every method, events and the run folder, and the refusal without real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import VALUES  # noqa: F401  (the `dataset` fixture is in conftest.py)
from l2s_gui.config import Config, check_data_present
from l2s_gui.errors import ConfigError
from l2s_gui.events import InspectorEvent
from l2s_gui.grid_mix import random_grid_mask
from l2s_gui.inspector import DomainInspector, InspectorNet, map_on_grid, patch_targets
from l2s_gui.runs import RunFolder, RunReader, load_inspector_arrays
from l2s_gui.trainer import Trainer


def make_config(dataset, method="learn2synth", **sections) -> Config:
    data = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "ndim": 2, "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False, "sigma_init": 0.05},
        "training": {"method": method, "steps": 4, "val_every": 2, "preview_every": 2, "checkpoint_every": 2,
                     "lr_augmentation": 0.01, "seed": 1},
        "inspector": {"enabled": True, "grid": 4, "widths": [4, 8], "eval_every": 2, "eval_batches": 1},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Config.from_dict(data)


# ------------------------------------------------------------------------------- targets from SynthMix's mask
def test_patch_targets_are_the_mask_cells_and_the_map_goes_back_to_the_grid():
    """The mixes are SynthMix's (l2s_gui.grid_mix, tested in tests/test_grid_mix.py); the Inspector's
    target is the share of each of its k x k patches taken from the synthetic image."""
    gen = torch.Generator().manual_seed(2)
    mask = random_grid_mask((3, 1, 16, 16), 8, 0.5, gen)
    cells = mask[:, :, ::2, ::2]
    assert torch.equal(patch_targets(mask, 8), cells)  # exactly the cells when k divides the size
    assert np.array_equal(map_on_grid(cells[0, 0].numpy(), (16, 16)), mask[0, 0].numpy())
    uneven = patch_targets(random_grid_mask((2, 1, 20, 12), 8, 0.5, gen), 8)
    assert uneven.shape == (2, 1, 8, 8) and 0 <= float(uneven.min()) <= float(uneven.max()) <= 1
    assert patch_targets(random_grid_mask((2, 1, 8, 8, 8), 4, 0.5, gen), 4).shape == (2, 1, 4, 4, 4)
    assert map_on_grid(np.arange(4.0).reshape(2, 2), (3, 5)).tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1],
                                                                          [2, 2, 2, 3, 3]]


# ---------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("shape,k", [((2, 1, 20, 28), 8), ((2, 1, 12, 16, 10), 4), ((1, 1, 16, 16), 2)])
def test_inspector_net_2d_3d_any_size(shape, k):
    net = InspectorNet(len(shape) - 2, [4, 8], k)
    map_logits, global_logit = net(torch.rand(shape))
    assert map_logits.shape == (shape[0], 1) + (k,) * (len(shape) - 2)
    assert global_logit.shape == (shape[0],)


def test_update_trains_only_the_inspector():
    """Gradients reach the Inspector's parameters and never what produced its inputs."""
    theta = torch.nn.Parameter(torch.tensor(0.3))
    phi = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 16, 16)
    synthetic = phi(x) + theta * torch.randn(2, 1, 16, 16)  # carries a graph to phi and theta
    inspector = DomainInspector(2, [4, 8], 4, 1e-2, 0.5, "cpu", seed=0)
    before = [p.detach().clone() for p in inspector.net.parameters()]
    loss = inspector.update(x, synthetic)
    assert np.isfinite(loss)
    assert theta.grad is None and all(p.grad is None for p in phi.parameters())
    assert all(p.grad is not None for p in inspector.net.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, inspector.net.parameters()))


def test_accuracy_separates_different_domains_and_not_alike_ones():
    gen = torch.Generator().manual_seed(3)

    def smooth(n):
        return torch.nn.functional.avg_pool2d(torch.rand(n, 1, 24, 24, generator=gen), 5, 1, 2)

    different = DomainInspector(2, [4, 8], 4, 1e-2, 0.5, "cpu", seed=0)
    alike = DomainInspector(2, [4, 8], 4, 1e-2, 0.5, "cpu", seed=0)
    for _ in range(60):
        different.update(smooth(4), smooth(4) + 0.2 * torch.randn(4, 1, 24, 24, generator=gen))
        alike.update(smooth(4), smooth(4))
    apart = different.evaluate(smooth(8), smooth(8) + 0.2 * torch.randn(8, 1, 24, 24, generator=gen))
    same = alike.evaluate(smooth(8), smooth(8))
    assert apart.accuracy > 0.9 and apart.accuracy_real > 0.8 and apart.accuracy_synthetic > 0.8
    assert abs(same.accuracy - 0.5) < 0.1
    assert apart.real_map.shape == (4, 4) and float(apart.real_map.min()) > 0.5  # real patches: P(real) high


# ------------------------------------------------------------------------------------------ with the trainer
def _weights(trainer):
    return {**{f"net.{k}": v.detach().clone() for k, v in trainer.net.state_dict().items()},
            **{f"aug.{k}": v.detach().clone() for k, v in trainer.aug.state_dict().items()}}


def test_inspector_updates_leave_phi_theta_and_the_training_draws_unchanged(dataset):
    trainer = Trainer(make_config(dataset))
    trainer.train_step(hyper=True)
    trainer.step = 1
    phi_theta, draws = _weights(trainer), (trainer.gen_data.get_state(), trainer.gen_device.get_state())
    inspector_before = [p.detach().clone() for p in trainer.inspector.inspector.net.parameters()]
    assert trainer.inspector.after_step(trainer) is not None
    assert all(torch.equal(v, _weights(trainer)[k]) for k, v in phi_theta.items())
    assert all(p.grad is None for p in list(trainer.net.parameters()) + list(trainer.aug.parameters()))
    assert torch.equal(draws[0], trainer.gen_data.get_state()) and torch.equal(draws[1], trainer.gen_device.get_state())
    assert any(not torch.equal(b, p) for b, p in zip(inspector_before, trainer.inspector.inspector.net.parameters()))
    # and a whole run ends with the same phi and theta as without the Inspector
    with_it, without = Trainer(make_config(dataset)), Trainer(make_config(dataset, inspector={"enabled": False}))
    list(with_it.run()), list(without.run())
    assert without.inspector is None
    assert all(torch.equal(v, _weights(with_it)[k]) for k, v in _weights(without).items())


def test_the_real_side_is_the_real_batches_seam(dataset):
    seen = torch.full((2, 1, 24, 24), 0.25)
    trainer = Trainer(make_config(dataset, "synthseg"), real_batches=lambda: (seen, torch.zeros(2, 24, 24).long()))
    assert torch.equal(trainer.inspector.real_side(trainer), seen)


@pytest.mark.parametrize("method", ["learn2synth", "synthseg", "mixed", "synthmix", "supervised", "finetuned"])
def test_every_method_reports_inspector_events(dataset, tmp_path, method):
    extra = {}
    if method == "finetuned":
        start = Trainer(make_config(dataset, "supervised", inspector={"enabled": False}))
        start.export(tmp_path / "start.safetensors")
        extra = {"training": {"init_from": str(tmp_path / "start.safetensors")}}
    trainer = Trainer(make_config(dataset, method, **extra))
    events = [e for e in trainer.run() if isinstance(e, InspectorEvent)]
    assert [e.step for e in events] == [2, 4]
    for e in events:
        assert 0 <= e.accuracy_real <= 1 and 0 <= e.accuracy_synthetic <= 1
        assert e.accuracy == pytest.approx((e.accuracy_real + e.accuracy_synthetic) / 2)
        assert e.map.shape == (4, 4) and e.map.dtype == np.float32 and 0 <= e.map.min() <= e.map.max() <= 1
        assert e.preview_shape == [24, 24] and np.isfinite(e.loss)
    assert events[-1].updates == 4


def test_recovery_mode_alike_domains_stay_near_chance(dataset):
    """Recovery with "real" = synthetic + the same noise as A_theta: nothing to tell apart."""
    cfg = make_config(dataset, "synthseg", data={"real_images": [], "real_labels": [], "batch_size": 4},
                      recovery={"enabled": True, "sigma": 0.05, "val_batches": 2},
                      training={"steps": 30, "val_every": 30, "preview_every": 30, "checkpoint_every": 30},
                      inspector={"eval_every": 30, "eval_batches": 2, "lr": 3e-3})
    event = [e for e in Trainer(cfg).run() if isinstance(e, InspectorEvent)][-1]
    assert abs(event.accuracy - 0.5) < 0.15


def test_recovery_mode_different_domains_are_told_apart(dataset):
    cfg = make_config(dataset, "synthseg", data={"real_images": [], "real_labels": [], "batch_size": 4},
                      recovery={"enabled": True, "sigma": 0.3, "val_batches": 2},
                      augmentation={"noise": "none", "inu": False},
                      training={"steps": 30, "val_every": 30, "preview_every": 30, "checkpoint_every": 30},
                      inspector={"eval_every": 30, "eval_batches": 2, "lr": 3e-3})
    event = [e for e in Trainer(cfg).run() if isinstance(e, InspectorEvent)][-1]
    assert event.accuracy > 0.9


def test_3d_run_maps_one_slice(dataset):
    cfg = make_config(dataset, "synthseg", data={"ndim": 3, "patch_size": [16, 16, 16], "batch_size": 1},
                      training={"steps": 2, "val_every": 2, "preview_every": 2, "checkpoint_every": 2})
    event = [e for e in Trainer(cfg).run() if isinstance(e, InspectorEvent)][-1]
    assert event.map.shape == (4, 4) and event.preview_shape == [16, 16]


def test_run_folder_round_trip_model_without_inspector_and_resume(dataset, tmp_path):
    cfg = make_config(dataset)
    run = RunFolder(tmp_path / "run")
    run.create(cfg)
    emitted = [e for e in Trainer(cfg, run=run).run() if isinstance(e, InspectorEvent)]
    read = [e for e in RunReader(run.path).new_events()[0] if isinstance(e, InspectorEvent)]
    assert [(e.step, e.accuracy, e.accuracy_real, e.grid, e.preview_shape) for e in read] == \
        [(e.step, e.accuracy, e.accuracy_real, e.grid, e.preview_shape) for e in emitted]
    assert all(e.map is None for e in read)  # the map lives next to the previews
    latest = RunReader(run.path).inspector_map_if_changed()
    assert latest is not None and latest["step"] == 4 and np.allclose(latest["map"], emitted[-1].map)
    assert latest["preview_shape"] == [24, 24]
    from safetensors import safe_open

    with safe_open(str(run.model_path), framework="pt") as fh:
        assert not any("inspector" in k for k in fh.keys())
    resumed = Trainer(Config.from_dict({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "steps": 6}}),
                      run=run, resume=True)
    assert resumed.step == 4
    events = [e for e in resumed.run() if isinstance(e, InspectorEvent)]
    assert [e.step for e in events] == [6] and events[0].updates == 2  # a fresh Inspector after resume


def test_damaged_inspector_file_reads_as_none(tmp_path):
    path = tmp_path / "inspector.npz"
    path.write_bytes(b"not a zip")
    assert load_inspector_arrays(path) is None
    np.savez(path, step=np.int64(3), map=np.full((4, 4), np.nan, np.float32))
    assert load_inspector_arrays(path) is None
    np.savez(path, step=np.int64(3), map=np.full((4, 4), 0.7, np.float32), preview_shape=np.array([-1, 2]))
    assert load_inspector_arrays(path)["preview_shape"] == []


def test_refused_without_real_images_unless_recovery(dataset):
    cfg = make_config(dataset, "synthseg", data={"real_images": [], "real_labels": []})
    with pytest.raises(ConfigError, match=r"^inspector\.enabled: .*synthseg run has no real images"):
        check_data_present(cfg)
    with pytest.raises(ConfigError, match=r"inspector\.enabled"):
        Trainer(cfg)
    check_data_present(make_config(dataset, "synthseg", data={"real_images": [], "real_labels": []},
                                   recovery={"enabled": True}))
    check_data_present(make_config(dataset, "synthseg", data={"real_images": [], "real_labels": []},
                                   inspector={"enabled": False}))


@pytest.mark.parametrize("method", ["finetuned", "supervised"])
def test_real_pair_methods_in_recovery_mode_report_inspector_events(dataset, tmp_path, method):
    """Recovery mode has no real files: the 'synthetic' side of finetuned / supervised is the
    preset-corrupted training pairs, drawn from the Inspector's own generators."""
    extra = {}
    if method == "finetuned":
        start = Trainer(make_config(dataset, "supervised", inspector={"enabled": False}))
        start.export(tmp_path / "start.safetensors")
        extra = {"init_from": str(tmp_path / "start.safetensors")}
    cfg = make_config(dataset, method, data={"real_images": [], "real_labels": [], "batch_size": 4},
                      recovery={"enabled": True, "sigma": 0.1, "val_batches": 1}, training=extra)
    trainer = Trainer(cfg)
    events = [e for e in trainer.run() if isinstance(e, InspectorEvent)]
    assert events and all(0 <= e.accuracy <= 1 for e in events)
    x = trainer.inspector.evaluation_synthetic(trainer)
    assert x.shape[0] == cfg.inspector.eval_batches * 4 and len(torch.unique(x.flatten(1), dim=0)) > 1
