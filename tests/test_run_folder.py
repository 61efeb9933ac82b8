"""The run folder's writer side (l2s_gui/runs.py, RunFolder) on its own: create, events read
incrementally, previews, checkpoints, metrics truncation, state and the control file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l2s_gui.config import Config
from l2s_gui.errors import OutputExistsError
from l2s_gui.events import CheckpointEvent, LogEvent, PreviewEvent, StepEvent
from l2s_gui.runs import RunFolder, check_checkpoint


def step_event(step: int) -> StepEvent:
    return StepEvent(step=step, loss_synth=0.5, loss_real=None, theta={"sigma": 0.1}, it_per_s=2.0, elapsed_s=1.0)


def preview(step: int) -> PreviewEvent:
    rng = np.random.default_rng(step)
    image = rng.random((8, 6)).astype(np.float32)
    labels = rng.integers(0, 3, (8, 6)).astype(np.int32)
    return PreviewEvent(step=step, synthetic=image, augmented=image + 1, real=image + 2, prediction=labels,
                        real_labels=labels + 1)


def fill_checkpoint(run: RunFolder, step: int, keep: int = 2):
    tmp, final = run.new_checkpoint_dir(step)
    run.save_tensors({"net.w": torch.ones(2), "rng.data": torch.zeros(3, dtype=torch.uint8),
                      "rng.device": torch.zeros(3, dtype=torch.uint8)}, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "inner_t": step, "label_table": {}}))
    run.commit_checkpoint(tmp, final, keep)
    return final


def test_create_writes_the_config_and_refuses_a_used_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    cfg = Config.from_dict({"training": {"steps": 7}})
    run.create(cfg)
    assert run.exists() and run.load_config() == cfg
    run.append_event(step_event(1))
    with pytest.raises(OutputExistsError, match="already exists"):
        RunFolder(tmp_path / "run").create(cfg)
    run.create(Config.from_dict({"training": {"steps": 9}}), overwrite=True)
    assert run.load_config().training.steps == 9 and not run.metrics_path.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        RunFolder(tmp_path / "file").create(cfg)


def test_a_run_that_died_before_its_first_checkpoint_is_restartable(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create(Config())
    run.write_state(status="running", step=3)
    assert run.restartable()
    run.create(Config())  # no --overwrite needed
    fill_checkpoint(run, 5)
    run.write_state(status="error")
    assert not run.restartable()


def test_events_are_read_incrementally_and_only_in_whole_lines(tmp_path):
    run = RunFolder(tmp_path)
    run.append_event(step_event(1))
    run.append_event(LogEvent(step=1, level="info", message="hello"))
    events, offset = run.read_events()
    assert [type(e) for e in events] == [StepEvent, LogEvent] and events[0] == step_event(1)
    assert run.read_events(offset) == ([], offset)
    with open(run.metrics_path, "a") as fh:  # a writer caught mid-line, and a damaged line
        fh.write("not json\n" + json.dumps(step_event(2).to_json())[:10])
    events, offset2 = run.read_events(offset)
    assert events == [] and offset2 == offset + len("not json\n")
    with open(run.metrics_path, "a") as fh:
        fh.write(json.dumps(step_event(2).to_json())[10:] + "\n")
    assert run.read_events(offset2)[0] == [step_event(2)]
    assert [e.step for e in run.iter_events()] == [1, 1, 2]


def test_previews_go_to_their_own_file_and_come_back_equal(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_preview() is None
    run.append_event(preview(3))
    run.append_event(preview(4))
    back = run.read_preview()
    expected = preview(4)
    assert back.step == 4
    for key, value in expected.arrays().items():
        assert np.array_equal(getattr(back, key), value) and getattr(back, key).dtype == value.dtype
    assert not run.metrics_path.exists()  # previews are not metrics lines


def test_checkpoints_are_committed_pruned_and_damaged_ones_skipped(tmp_path):
    run = RunFolder(tmp_path)
    for step in (10, 20, 30):
        fill_checkpoint(run, step, keep=2)
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000020", "step_0000030"]
    assert run.latest_checkpoint().name == "step_0000030"
    (run.checkpoints_dir / "step_0000030" / "state.safetensors").write_bytes(b"truncated")
    assert "damaged" in check_checkpoint(run.checkpoints_dir / "step_0000030")
    latest, damaged = run.resume_checkpoint()
    assert latest.name == "step_0000020" and [p.name for p, _ in damaged] == ["step_0000030"]
    assert not list(run.checkpoints_dir.glob(".tmp_step_*"))


def test_truncate_metrics_keeps_whole_valid_lines_up_to_a_step(tmp_path):
    run = RunFolder(tmp_path)
    for step in (1, 2, 3):
        run.append_event(step_event(step))
    run.append_event(CheckpointEvent(step=2, path="x"))
    with open(run.metrics_path, "a") as fh:
        fh.write('{"kind": "step", "st')  # half-written last line
    assert run.truncate_metrics(2) == 2  # step 3 and the broken line
    assert [(e.kind, e.step) for e in run.iter_events()] == [("step", 1), ("step", 2), ("checkpoint", 2)]
    assert run.truncate_metrics(2) == 0


def test_control_commands_round_trip_and_bad_ones_are_ignored(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_control() is None
    for command in ("pause", "resume", "stop"):
        run.send_control(command)
        assert run.read_control() == command
    with pytest.raises(ValueError, match="unknown control command"):
        run.send_control("reboot")
    run.control_path.write_text('{"command": "reboot"}')
    assert run.read_control() is None
    run.control_path.write_text("{broken")
    assert run.read_control() is None
    run.clear_control()
    assert not run.control_path.exists()
    run.clear_control()  # nothing to clear: no error


def test_state_records_host_and_heartbeat_and_survives_damage(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_state() == {}
    run.write_state(status="running", step=2, pid=123)
    state = run.read_state()
    assert state["status"] == "running" and state["step"] == 2 and state["pid"] == 123
    assert state["host"] and state["heartbeat"] > 0
    run.write_state(step=3)  # an update keeps the other keys
    assert run.read_state()["status"] == "running" and run.read_state()["step"] == 3
    run.state_path.write_text("[1, 2")
    assert run.read_state() == {}
