"""Self-training on unlabelled scans (GBA Sec. II-D): the masked loss, the inputs and refusals, the
stopping rule, pseudo-labels and their threshold, and a tiny two-round run read back from its folder."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.errors import ConfigError, InputError
from l2s_gui.events import DoneEvent, RoundEvent, StartEvent
from l2s_gui.losses import ignore_masked_dice_loss, soft_dice_loss
from l2s_gui.model_io import LoadedModel
from l2s_gui.runs import RunFolder, RunReader
from l2s_gui.segment import flip_plan, predict_posteriors
from l2s_gui.self_training import SelfTraining, check_resumable, load_unlabelled_scans, pseudo_labels, stop_reason


@pytest.fixture(scope="module")
def unlabelled(dataset, tmp_path_factory):
    """A folder of two unlabelled scans (copies of the dataset's scans, other names)."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for i, path in enumerate(sorted((dataset / "images").iterdir())[:2]):
        shutil.copy(path, folder / f"u{1 - i}.nii.gz")
    return folder


def make_config(dataset, unlabelled, **sections) -> Config:
    data = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "unlabelled_images": [str(unlabelled)], "ndim": 2,
                 "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False},
        "training": {"steps": 3, "val_every": 3, "preview_every": 3, "checkpoint_every": 100, "seed": 1},
        "self_training": {"rounds": 2, "steps": 2, "confidence": 0.3},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Config.from_dict(data)


# the masked loss
def test_masked_soft_dice_ignores_masked_voxels_and_all_ones_is_unmasked():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 3, 8, 8), generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    ones = torch.ones_like(labels, dtype=torch.bool)
    torch.testing.assert_close(soft_dice_loss(logits, labels, mask=ones), soft_dice_loss(logits, labels))
    mask = torch.rand((2, 8, 8), generator=g) > 0.5
    other = torch.where(mask, labels, (labels + 1) % 3)  # differs only where masked out
    torch.testing.assert_close(soft_dice_loss(logits, labels, mask=mask), soft_dice_loss(logits, other, mask=mask))
    assert not torch.isclose(soft_dice_loss(logits, labels), soft_dice_loss(logits, other))
    soft_dice_loss(logits, labels, mask=mask).backward()
    grad = logits.grad.abs().sum(1)
    assert torch.all(grad[~mask] == 0) and torch.all(grad[mask] > 0)
    ignored = torch.where(mask, labels, torch.full_like(labels, 3))
    torch.testing.assert_close(ignore_masked_dice_loss(3)(logits, ignored), soft_dice_loss(logits, labels, mask=mask))
    with pytest.raises(ValueError, match="mask and labels"):
        soft_dice_loss(logits, labels, mask=mask[:, :4])


# inputs and refusals
def test_a_folder_expands_to_its_scans_in_sorted_order(dataset, unlabelled):
    cfg = make_config(dataset, unlabelled)
    scans = load_unlabelled_scans(cfg)
    assert [name.rsplit("/", 1)[1] for name, _ in scans] == ["u0.nii.gz", "u1.nii.gz"]
    image = scans[0][1]
    assert image.shape == (24, 24, 24) and image.dtype == torch.float32
    assert 0 <= float(image.min()) < float(image.max()) <= 1


def test_refusals_name_the_path_or_setting(dataset, unlabelled, tmp_path):
    with pytest.raises(InputError, match=r"data.unlabelled_images: .*nowhere not found"):
        SelfTraining(make_config(dataset, unlabelled, data={"unlabelled_images": [str(tmp_path / "nowhere")]}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"data.unlabelled_images: folder .*empty holds no"):
        SelfTraining(make_config(dataset, unlabelled, data={"unlabelled_images": [str(tmp_path / "empty")]}))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a volume")
    with pytest.raises(InputError, match="bad.nii.gz"):
        SelfTraining(make_config(dataset, unlabelled, data={"unlabelled_images": [str(bad)]}))
    with pytest.raises(ConfigError, match=r"self_training: .*validation Dice.*data.val_fraction"):
        SelfTraining(make_config(dataset, unlabelled, data={"val_fraction": 0.0}))
    with pytest.raises(ConfigError, match=r"training.method: self-training"):
        make_config(dataset, unlabelled, training={"method": "supervised"})
    with pytest.raises(InputError, match="resuming self-training after round 0"):
        check_resumable(make_config(dataset, unlabelled), 3)
    check_resumable(make_config(dataset, unlabelled), 2)


def test_cli_refuses_a_missing_unlabelled_folder_in_one_line(dataset, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    make_config(dataset, dataset / "images").save(config)
    code = main(["train", str(config), "-o", str(tmp_path / "run"), "--unlabelled", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("l2s: error: data.unlabelled_images:") and "missing not found" in err
    assert not (tmp_path / "run").exists()


# the stopping rule
def test_stop_rule_on_a_fake_dice_sequence():
    def stopping_round(dice, tolerance, rounds):
        for r in range(len(dice)):
            why = stop_reason(r, None if r == 0 else dice[r] - dice[r - 1], tolerance, rounds)
            if why:
                return r, why
        return None

    assert stopping_round([0.70, 0.75, 0.7520, 0.80], 0.003, 5) == (
        2, "converged: the mean Dice changed by +0.0020 (tolerance 0.003)")
    assert stopping_round([0.70, 0.75, 0.7460], 0.003, 5) is None  # a drop of 0.004 is a change: goes on
    assert stopping_round([0.70, 0.75, 0.80, 0.85], 0.003, 3) == (3, "3 rounds done (self_training.rounds)")
    assert stopping_round([0.70, 0.75], 0.003, 1)[0] == 1


# pseudo-labels
def test_pseudo_labels_respect_the_threshold(dataset, unlabelled):
    cfg = make_config(dataset, unlabelled)
    trainer = SelfTraining(cfg).teacher
    image = load_unlabelled_scans(cfg)[0][1]
    ignore = trainer.n_classes
    loose, kept_loose = pseudo_labels(trainer, image, 0.0, ignore)
    assert kept_loose.all() and int(loose.max()) < ignore
    model = LoadedModel(net=trainer.net, augmentation=trainer.aug, table=trainer.table, config=cfg,
                        spatial_shape=list(trainer.data.spatial_shape), step=0)
    best = predict_posteriors(model, image, flip_classes=flip_plan(model)[0]).max(0).values
    threshold = float(best.median())
    trainer.net.train()  # predict_posteriors leaves it in eval mode; pseudo_labels must not
    strict, kept = pseudo_labels(trainer, image, threshold, ignore)
    assert torch.equal(kept, best >= threshold) and 0 < int(kept.sum()) < kept.numel()
    assert torch.equal(strict == ignore, ~kept)
    assert torch.equal(strict[kept], loose[kept])
    assert trainer.net.training  # pseudo-labelling leaves the network in training mode


# a tiny run
def test_tiny_run_writes_rounds_that_the_reader_reads_back(dataset, unlabelled, tmp_path):
    cfg = make_config(dataset, unlabelled, self_training={"tolerance": 0.0})  # never converged: 2 rounds
    run = RunFolder(tmp_path / "run")
    selftrain = SelfTraining(cfg, run=run)
    run.create(cfg)
    events = list(selftrain.run())
    assert [e.reason for e in events if isinstance(e, DoneEvent)] == ["finished"]
    read, _ = RunReader(run.path).new_events()
    rounds = [e for e in read if isinstance(e, RoundEvent)]
    assert [(r.round, r.step) for r in rounds] == [(0, 3), (1, 5), (2, 7)]
    assert rounds[0].change is None and rounds[0].kept_fraction is None
    for previous, r in zip(rounds, rounds[1:]):
        assert r.change == pytest.approx(r.mean_dice - previous.mean_dice)
        assert 0 < r.kept_fraction <= 1 and set(r.dice) <= {"2", "3", "4", "17"}
    assert [r.stop for r in rounds] == ["", "", "2 rounds done (self_training.rounds)"]
    assert [e.kind for e in read].count("done") == 1 and read[-1].kind == "done"
    assert [e.total_steps for e in read if isinstance(e, StartEvent)] == [3, 5, 7]
    state = run.read_state()
    assert state["status"] == "finished" and state["step"] == 7
    assert RunFolder(run.path).checkpoint_step(run.latest_checkpoint()) == 7


def test_tiny_run_stops_by_the_tolerance_rule(dataset, unlabelled, tmp_path):
    cfg = make_config(dataset, unlabelled, self_training={"tolerance": 1.0, "rounds": 3})
    events = list(SelfTraining(cfg).run())
    rounds = [e for e in events if isinstance(e, RoundEvent)]
    assert [r.round for r in rounds] == [0, 1] and rounds[-1].stop.startswith("converged")


def test_in_memory_images_and_stop_during_the_student_round(dataset, unlabelled):
    cfg = make_config(dataset, unlabelled, self_training={"student_init": "initial", "tolerance": 0.0})
    scan = nib.load(sorted((dataset / "images").iterdir())[0]).get_fdata().astype(np.float32)
    images = [torch.from_numpy(scan[:, 12]).clamp(0, 1)]  # one (H, W) slice
    calls = {"n": 0}

    def control():  # stop once the first student round has started
        calls["n"] += 1
        return "stop" if calls["n"] > 4 else None

    selftrain = SelfTraining(cfg, control=control, unlabelled_images=images)
    assert selftrain.scans[0][1].shape == (24, 1, 24)
    events = list(selftrain.run())
    done = [e for e in events if isinstance(e, DoneEvent)]
    assert [d.reason for d in done] == ["stopped"]
    assert [r.round for r in events if isinstance(r, RoundEvent)] == [0]


def test_cli_train_with_unlabelled_folder_self_trains(dataset, unlabelled, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    cfg = make_config(dataset, unlabelled, self_training={"rounds": 1})
    cfg.data.unlabelled_images = []
    cfg.save(config)
    code = main(["train", str(config), "-o", str(tmp_path / "run"), "--quiet", "--unlabelled", str(unlabelled)])
    assert code == 0, capsys.readouterr().err
    rounds = [e for e in RunFolder(tmp_path / "run").iter_events() if isinstance(e, RoundEvent)]
    assert [r.round for r in rounds] == [0, 1] and rounds[-1].stop
    assert RunFolder(tmp_path / "run").load_config().data.unlabelled_images == [str(unlabelled.resolve())]
