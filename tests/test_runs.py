"""The run-folder API watchers use (l2s_gui.runs): incremental typed reads, the inputs/ folder and
its emptiness rule, liveness from the engine's own state.json fields."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from l2s_gui.errors import OutputExistsError
from l2s_gui.events import StartEvent, StepEvent
from l2s_gui.runs import INPUTS_DIR, RunFolder, RunReader


def test_run_reader_is_incremental_and_tolerant(tmp_path):
    run = tmp_path / "run"
    (run / "previews").mkdir(parents=True)
    reader = RunReader(run)
    assert reader.new_events() == ([], False) and reader.state_if_changed() is None
    with open(run / "metrics.jsonl", "w") as fh:
        fh.write(json.dumps({"kind": "start", "step": 0, "total_steps": 5}) + "\n")
        fh.write('{"kind": "step", "step": 1, "loss_')  # a line being written
    events, restarted = reader.new_events()
    assert [e.kind for e in events] == ["start"] and not restarted
    assert isinstance(events[0], StartEvent) and events[0].total_steps == 5
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('synth": 0.5}\n')
    events, _ = reader.new_events()
    assert len(events) == 1 and isinstance(events[0], StepEvent)
    assert (events[0].step, events[0].loss_synth, events[0].loss_real, events[0].theta) == (1, 0.5, None, {})
    assert reader.new_events() == ([], False)
    # a run started anew in the same folder (--overwrite): the file shrinks -> restart
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    events, restarted = reader.new_events()
    assert restarted and events[0].kind == "start"
    # state: only when changed; a half-written file is skipped until it is whole
    (run / "state.json").write_text('{"status": "runn')
    assert reader.state_if_changed() is None
    (run / "state.json").write_text('{"status": "running", "step": 3}')
    assert reader.state_if_changed() == {"status": "running", "step": 3}
    assert reader.state_if_changed() is None
    # previews: reloaded when the file changes, not before
    np.savez(run / "previews" / "latest.npz", step=np.int64(4), synthetic=np.zeros((4, 4), np.float32))
    assert reader.preview_if_changed()["step"] == 4
    assert reader.preview_if_changed() is None
    np.savez(run / "previews" / "latest.npz", step=np.int64(8), synthetic=np.ones((4, 4), np.float32))
    os.utime(run / "previews" / "latest.npz", ns=(1, 10**18))
    assert reader.preview_if_changed()["step"] == 8
    reader.send_control("pause")
    assert json.loads((run / "control.json").read_text())["command"] == "pause"


def test_reader_reads_a_long_history_in_chunks(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"kind": "step", "step": i, "loss_synth": 0.1, "loss_real": None, "theta": {},
                         "it_per_s": 1.0, "elapsed_s": 0.0}) for i in range(200)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(RunReader, "MAX_BYTES_PER_READ", 1000)
    reader = RunReader(run)
    steps = []
    while True:
        events, _ = reader.new_events()
        if not events:
            break
        assert len(events) < 200
        steps += [e.step for e in events]
    assert steps == list(range(200)) and not reader.more_events_pending()


def test_inputs_folder_and_the_emptiness_rule(tmp_path):
    run = RunFolder(tmp_path / "new")
    inputs = run.prepare_inputs()
    assert inputs == tmp_path / "new" / INPUTS_DIR and inputs.is_dir()
    (inputs / "synth_000.nii").write_bytes(b"x")
    # only inputs/ there: an earlier start of ours that failed -> emptied and reused
    assert run.prepare_inputs() == inputs and list(inputs.iterdir()) == []
    (tmp_path / "new" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="new: run folder exists and is not empty"):
        run.prepare_inputs()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not empty"):
        RunFolder(tmp_path / "file").prepare_inputs()


def test_liveness_from_the_state_the_engine_writes(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_state(status="running", step=1, pid=os.getpid())
    state = run.read_state()
    assert state["host"] == socket.gethostname() and state["heartbeat"] > 0   # the engine writes both
    alive, who = run.writer_alive(state)
    assert not alive and "no longer running" in who   # same host, no lock held: the writer is gone
    remote = dict(state, host="gpu-server-01")
    assert run.writer_alive(remote)[0]                # another host with a fresh heartbeat: alive
    remote["heartbeat"] = remote["updated"] = 1.0
    alive, who = run.writer_alive(remote)
    assert not alive and "has not written" in who
    assert run.looks_like_run() and not run.has_checkpoint()
