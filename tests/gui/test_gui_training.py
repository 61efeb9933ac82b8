"""The training widget drives a real (tiny, CPU) training in a subprocess and follows its run folder."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import l2s_napari._training_widget as tw
from l2s_napari._owned_layers import find_role
from l2s_napari._training_widget import TrainingWidget

TIMEOUT_MS = 240_000
# A guard against a hung training process, not a speed check: each wait ends as soon as its condition
# holds. A 12-step training subprocess (torch import included) took over 90 s on the 2-core machine
# while two other trainings ran.


def _tiny(widget: TrainingWidget, run_dir, steps: int = 5000) -> None:
    widget.run_edit.setText(str(run_dir))
    widget.form["network.widths"].setText("4 8")
    widget.form["data.batch_size"].setValue(2)
    widget.form["training.steps"].setValue(steps)
    widget.form["training.preview_every"].setValue(4)
    widget.form["training.val_every"].setValue(10)
    widget.form["training.checkpoint_every"].setValue(50)
    widget.device_combo.setCurrentText("cpu")


@pytest.fixture
def loaded(make_napari_viewer, volumes):
    viewer = make_napari_viewer()
    layers = {}
    for scan, labels in volumes:
        [s] = viewer.open(str(scan), plugin="l2s-gui")
        [lab] = viewer.open(str(labels), plugin="l2s-gui")
        layers[s.name] = s
        layers[lab.name] = lab
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Learn2Synth training")
    yield viewer, widget, layers
    widget.shutdown()


def _state(run_dir) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def test_train_pause_resume_stop(qtbot, loaded, tmp_path, errors):
    viewer, widget, layers = loaded
    assert not widget.start_button.isEnabled()
    assert "real scan" in widget.start_button.toolTip()  # says what is missing
    assert not widget.stop_button.isEnabled() and widget.stop_button.toolTip()
    for i in range(3):
        widget.add_pair(layers[f"sub{i}_T1"], layers[f"sub{i}_labels"])
    assert widget.start_button.isEnabled()
    run_dir = tmp_path / "run"
    _tiny(widget, run_dir)

    assert widget.start()
    assert widget.process.is_running()
    assert not widget.start_button.isEnabled()
    # layers were written as NIfTI inputs for the subprocess
    written = sorted(p.name for p in (run_dir / "inputs").iterdir())
    assert any(n.startswith("synth_") for n in written) and any("_scan_" in n for n in written)

    # previews and plots update live
    qtbot.waitUntil(lambda: find_role(viewer, "preview_synthetic") is not None, timeout=TIMEOUT_MS)
    n_layers = len(viewer.layers)
    synthetic = find_role(viewer, "preview_synthetic")
    first = synthetic.data.copy()
    first_step = widget.previews.step
    qtbot.waitUntil(lambda: widget.previews.step is not None and widget.previews.step > first_step,
                    timeout=TIMEOUT_MS)
    assert find_role(viewer, "preview_synthetic") is synthetic  # updated in place
    assert len(viewer.layers) == n_layers                      # no pile of new layers
    assert not np.array_equal(synthetic.data, first)
    prediction = find_role(viewer, "preview_prediction")
    assert prediction is not None and prediction.data.shape == synthetic.data.shape
    assert set(np.unique(prediction.data)) <= {0, 1, 2, 3}
    step_text = viewer.canvas.overlays["text"]  # the preview's step, under the user's data
    assert step_text.visible and step_text.text.startswith("Learn2Synth preview · step ")
    qtbot.waitUntil(lambda: len(widget.plots.series.get("loss_synth", ()).x) >= 5, timeout=TIMEOUT_MS)
    assert widget.plots.series["sigma"].y and len(widget.plots.series["c_1"].y) >= 5
    assert widget.plots.curves["loss_synth"].getData()[0].size >= 5
    assert "cpu" in widget.device_label.text()
    assert "it/s" in widget.progress.format()

    # pause: the process keeps running but steps stop
    widget.pause()
    qtbot.waitUntil(lambda: widget.state.get("status") == "paused", timeout=TIMEOUT_MS)
    assert widget.resume_button.isEnabled() and not widget.pause_button.isEnabled()
    paused_at = _state(run_dir)["step"]
    qtbot.wait(1500)
    assert _state(run_dir)["step"] == paused_at and widget.process.is_running()

    # resume
    widget.resume()
    qtbot.waitUntil(lambda: widget.state.get("status") == "running", timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget._step > paused_at + 3, timeout=TIMEOUT_MS)

    # stop: checkpoint + model, process gone
    widget.stop()
    qtbot.waitUntil(lambda: not widget.process.is_running(), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.state.get("status") == "stopped", timeout=10_000)
    assert (run_dir / "model.safetensors").is_file()
    assert any((run_dir / "checkpoints").glob("step_*"))
    assert widget.resume_button.isEnabled()  # continue later from the checkpoint
    assert widget.start_button.isEnabled()
    assert errors == []


def test_open_past_run_and_resume(qtbot, loaded, tmp_path, errors, make_napari_viewer):
    viewer, widget, layers = loaded
    widget.add_pair(layers["sub0_T1"], layers["sub0_labels"])
    widget.add_pair(layers["sub1_T1"], layers["sub1_labels"])
    run_dir = tmp_path / "past"
    _tiny(widget, run_dir, steps=12)
    widget.form["training.checkpoint_every"].setValue(5)
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.process.is_running(), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.state.get("status") == "finished", timeout=10_000)
    assert errors == []

    # a fresh viewer opens the finished run: plots and previews restored
    viewer2 = make_napari_viewer()
    other = TrainingWidget(viewer2)
    assert other.open_run(run_dir)
    qtbot.waitUntil(lambda: len(other.plots.series.get("loss_synth", ()).x) == 12, timeout=10_000)
    qtbot.waitUntil(lambda: find_role(viewer2, "preview_real") is not None, timeout=10_000)
    assert other.state["status"] == "finished"
    assert other.form["network.widths"].text() == "4 8"  # settings restored from the run's config
    assert not other.stop_button.isEnabled()
    # resume to a larger step count in a new process (`l2s resume --steps`)
    other.form["training.steps"].setValue(16)
    assert other.resume_button.isEnabled()
    other.resume()
    assert other.process.is_running()
    qtbot.waitUntil(lambda: not other.process.is_running(), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: other.state.get("status") == "finished" and other.state.get("step") == 16,
                    timeout=10_000)
    qtbot.waitUntil(lambda: other.plots.series["loss_synth"].x[-1] == 16, timeout=10_000)
    other.shutdown()
    assert errors == []


def test_bad_inputs_notify_and_keep_viewer_usable(qtbot, loaded, tmp_path, errors):
    viewer, widget, layers = loaded
    # mismatched shapes
    small = viewer.add_labels(np.ones((8, 8, 8), np.int32), name="small_labels")
    widget.data.scan_combo.set_layer_name("sub0_T1")
    widget.data.labels_combo.set_layer_name("small_labels")
    widget.data._add_layer_pair()
    assert errors and "shapes differ" in errors[-1]
    assert widget.data.pairs_table.rowCount() == 0
    # non-label data chosen as labels
    viewer.add_image(np.random.default_rng(0).random((32, 40, 36)).astype(np.float32), name="float_img")
    widget.data.labels_combo.set_layer_name("float_img")
    widget.data._add_layer_pair()
    assert "not a label map" in errors[-1]
    assert widget.data.pairs_table.rowCount() == 0
    viewer.layers.remove(small)

    # an unreadable label map given as a file: the subprocess fails, the GUI reports its message
    bad = tmp_path / "bad_labels.nii.gz"
    bad.write_bytes(b"garbage")
    widget.data.synth_list.add_path(str(bad))
    widget.add_pair(layers["sub0_T1"], layers["sub0_labels"])
    _tiny(widget, tmp_path / "badrun", steps=5)
    for i in range(widget.data.synth_list.count()):  # only the bad file
        item = widget.data.synth_list.item(i)
        if "bad_labels" not in item.text():
            item.setCheckState(tw.Qt.CheckState.Unchecked)
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.process.is_running(), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: len(errors) >= 3, timeout=10_000)
    assert "bad_labels.nii.gz" in errors[-1]
    assert widget.start_button.isEnabled()
    viewer.add_points(np.zeros((1, 3)))  # viewer still usable
    # the failed start can be retried in the same folder (only our inputs/ were written there) ...
    assert [p.name for p in (tmp_path / "badrun").iterdir()] == ["inputs"]
    # ... but a folder holding anything else is refused before anything starts
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    widget.run_edit.setText(str(other))
    assert not widget.start()
    assert "not empty" in errors[-1] and not widget.process.is_running()


def test_close_during_training_stops_cleanly(qtbot, loaded, tmp_path, errors):
    viewer, widget, layers = loaded
    widget.add_pair(layers["sub0_T1"], layers["sub0_labels"])
    run_dir = tmp_path / "closing"
    _tiny(widget, run_dir)
    assert widget.start()
    qtbot.waitUntil(lambda: widget._step >= 3, timeout=TIMEOUT_MS)
    from qtpy.QtGui import QCloseEvent

    widget.confirm_close_answer = False  # "No": napari stays open, training goes on
    event = QCloseEvent()
    assert widget._close_guard.eventFilter(viewer.window._qt_window, event) is True
    assert widget.process.is_running()
    widget.confirm_close_answer = True  # "Yes": stop cleanly, then let napari close
    t0 = time.perf_counter()
    event = QCloseEvent()
    assert widget._close_guard.eventFilter(viewer.window._qt_window, event) is False
    assert not widget.process.is_running()
    assert time.perf_counter() - t0 < 15
    assert _state(run_dir).get("status") == "stopped"
    assert (run_dir / "model.safetensors").is_file()


def test_crashed_process_is_reported(qtbot, loaded, tmp_path, errors):
    """A training process that dies (e.g. the kernel's out-of-memory killer) -> a notification."""
    import os
    import signal

    viewer, widget, layers = loaded
    widget.add_pair(layers["sub0_T1"], layers["sub0_labels"])
    _tiny(widget, tmp_path / "crash")
    assert widget.start()
    qtbot.waitUntil(lambda: widget._step >= 2, timeout=TIMEOUT_MS)
    os.kill(widget.process.pid(), signal.SIGKILL)
    qtbot.waitUntil(lambda: not widget.process.is_running(), timeout=TIMEOUT_MS)
    assert errors and "killed" in errors[-1]
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    viewer.add_points(np.zeros((1, 3)))  # viewer still usable
