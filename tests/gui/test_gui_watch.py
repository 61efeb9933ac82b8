"""Following a run started with the CLI elsewhere, and controlling it from the GUI (the run-folder
reader itself is tested headless in tests/test_runs.py)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from gui_support import make_volumes
from l2s_napari._owned_layers import find_role
from l2s_napari._training_widget import TrainingWidget


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
