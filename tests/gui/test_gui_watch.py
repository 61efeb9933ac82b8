"""Following run folders: incremental reads, a run started with the CLI elsewhere, control from the GUI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import yaml
from gui_support import make_volumes

from l2s_napari._layers import find_role
from l2s_napari._training_widget import TrainingWidget
from l2s_napari._watcher import RunReader


def test_run_reader_is_incremental_and_tolerant(tmp_path):
    run = tmp_path / "run"
    (run / "previews").mkdir(parents=True)
    reader = RunReader(run)
    assert reader.new_events() == ([], False) and reader.state_if_changed() is None
    with open(run / "metrics.jsonl", "w") as fh:
        fh.write(json.dumps({"kind": "start", "step": 0, "total_steps": 5}) + "\n")
        fh.write('{"kind": "step", "step": 1, "loss_')  # a line being written
    events, restarted = reader.new_events()
    assert [e["kind"] for e in events] == ["start"] and not restarted
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('synth": 0.5}\n')
    events, _ = reader.new_events()
    assert events == [{"kind": "step", "step": 1, "loss_synth": 0.5}]
    assert reader.new_events() == ([], False)
    # a run started anew in the same folder (--overwrite): the file shrinks -> restart
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    events, restarted = reader.new_events()
    assert restarted and events[0]["kind"] == "start"
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


def test_watch_and_stop_a_run_started_with_the_cli(qtbot, make_napari_viewer, tmp_path):
    pairs = make_volumes(tmp_path / "data")
    config = {
        "data": {"label_maps": [str(p[1]) for p in pairs[:2]], "real_images": [str(p[0]) for p in pairs],
                 "real_labels": [str(p[1]) for p in pairs], "batch_size": 2},
        "network": {"widths": [4, 8]},
        "training": {"steps": 100000, "preview_every": 3, "val_every": 10, "checkpoint_every": 1000,
                     "device": "cpu"},
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = tmp_path / "server_run"
    proc = subprocess.Popen([sys.executable, "-m", "l2s_gui.cli", "train", str(cfg), "-o", str(run), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        viewer = make_napari_viewer()
        widget = TrainingWidget(viewer)
        qtbot.waitUntil(lambda: (run / "config.yaml").is_file(), timeout=60_000)
        assert widget.open_run(run)
        qtbot.waitUntil(lambda: widget.state.get("status") == "running", timeout=60_000)
        qtbot.waitUntil(lambda: find_role(viewer, "preview_augmented") is not None, timeout=60_000)
        steps_seen = len(widget.plots.series["loss_synth"].x)
        qtbot.waitUntil(lambda: len(widget.plots.series["loss_synth"].x) > steps_seen + 3, timeout=60_000)
        assert not widget.process.is_running()          # not our process ...
        assert widget.stop_button.isEnabled()           # ... but it can be controlled through the folder
        assert widget.pause_button.isEnabled()
        assert "cpu" in widget.device_label.text()
        widget.stop()
        assert proc.wait(timeout=60) == 0
        qtbot.waitUntil(lambda: widget.state.get("status") == "stopped", timeout=10_000)
        assert not widget.stop_button.isEnabled()
        assert widget.resume_button.isEnabled()         # continue it here from its checkpoint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
