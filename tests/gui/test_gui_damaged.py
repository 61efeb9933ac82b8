"""Opening damaged run folders in napari: nothing read from a run folder may raise in the Qt event
loop (pytest-qt fails a test on any exception raised in a Qt callback), and one malformed line never
drops the good events around it."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys

import numpy as np

from l2s_napari._training_widget import TrainingWidget


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _damages(pid):
    good_step = {"kind": "step", "step": 100, "loss_synth": 0.25, "loss_real": 0.5, "theta": {"sigma": 0.1},
                 "it_per_s": 3.0, "elapsed_s": 1.0}
    lines = [
        json.dumps({"kind": "step", "step": 90, "loss_synth": "abc", "theta": [1, 2], "it_per_s": "fast"}),
        json.dumps({"kind": "start", "step": 0, "total_steps": "many", "label_values": "x"}),
        json.dumps({"kind": "validation", "step": 91, "dice": [0.5], "mean_dice": "high"}),
        json.dumps({"kind": "step", "step": "x"}), json.dumps([1, 2]), json.dumps("text"), "{not json",
        json.dumps({"kind": "done", "step": 92, "reason": 5, "message": None}),
        json.dumps(good_step),
    ]
    zipped = _npz_bytes(step=np.int64(5), synthetic=np.zeros((8, 8), np.float32))
    return {
        "malformed metrics lines": {"metrics.jsonl+": "\n".join(lines) + "\n"},
        "garbage preview": {"previews/latest.npz": b"\x00garbage" * 20},
        "truncated preview": {"previews/latest.npz": zipped[: len(zipped) // 2]},
        "empty preview": {"previews/latest.npz": b""},
        "pickled preview": {"previews/latest.npz": _npz_bytes(step=np.int64(1),
                                                              synthetic=np.array([{"a": 1}], dtype=object))},
        "1D preview": {"previews/latest.npz": _npz_bytes(step=np.int64(1), synthetic=np.zeros(5),
                                                         augmented=np.zeros(5), real=np.zeros(5))},
        "preview step array": {"previews/latest.npz": _npz_bytes(step=np.zeros(3), synthetic=np.zeros((4, 4)),
                                                                 augmented=np.zeros((4, 4)), real=np.zeros((4, 4)))},
        "preview text arrays": {"previews/latest.npz": _npz_bytes(step=np.int64(1), synthetic=np.array(["a", "b"]),
                                                                  augmented=np.zeros((4, 4)), real=np.zeros((4, 4)))},
        "state a list": {"state.json": "[1, 2, 3]"},
        "state wrong types": {"state.json": json.dumps({"status": 3, "step": "x", "total_steps": [1],
                                                        "message": {"a": 1}, "device": 5, "pid": "me"})},
        "state garbage": {"state.json": "\x00\xff{{"},
        "state running, process dead": {"state.json": json.dumps({"status": "running", "step": 4, "total_steps": 4,
                                                                  "pid": pid, "host": socket.gethostname()})},
        "config garbage": {"config.yaml": "data: [unclosed"},
        "config a list": {"config.yaml": "- 1\n- 2\n"},
        "metrics binary": {"metrics.jsonl": b"\xff\xfe\x00\x01\n" * 10},
        "truncated checkpoint": {"checkpoints/step_0000004/state.safetensors": b"\x10\x00"},
        "control garbage": {"control.json": "[["},
        "lock garbage": {"run.lock": "\xff not json"},
    }


def test_opening_damaged_run_folders_raises_nothing(qtbot, make_napari_viewer, tiny_run, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    for name, files in _damages(_dead_pid()).items():
        run = tmp_path / name.replace(" ", "_").replace(",", "")
        shutil.copytree(tiny_run, run)
        for rel, content in files.items():
            append = rel.endswith("+")
            path = run / rel.rstrip("+")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            if append:
                with open(path, "ab") as fh:
                    fh.write(data)
            else:
                path.write_bytes(data)
        widget.open_run(run)
        for _ in range(3):
            widget.watcher.poll()  # raises here, in the test, if anything read is trusted blindly
        qtbot.wait(50)
        widget._update_buttons()
        if name == "malformed metrics lines":
            # the good event after the bad ones of the same batch arrived
            assert widget.plots.last("loss_synth") == 0.25
            assert 100 in widget.plots.series["loss_synth"].x
        if name == "state running, process dead":
            assert widget.state["status"] == "running"
            assert not widget.stop_button.isEnabled()  # not live: nothing to stop ...
            assert widget.resume_button.isEnabled()  # ... but it can be resumed
            assert "process gone" in widget.progress.format()
    widget.watcher.stop()
    assert not any("Traceback" in e for e in errors)
