"""A first run without friction: the sample opens ready to train, pickers start on a layer of the
right kind, and the starter model is offered (disabled with a reason when it is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

import l2s_gui.starter as starter
from l2s_napari._segment_widget import CURRENT_RUN, STARTER_MODEL, SegmentWidget
from l2s_napari._training_widget import TrainingWidget


@pytest.fixture(autouse=True)
def _shared_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("L2S_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "l2s_cache"))


def test_sample_then_widget_is_ready_to_start(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("l2s-gui", "t1_labels")
    _, widget = viewer.window.add_plugin_dock_widget("l2s-gui", "Learn2Synth training")
    assert widget.start_button.isEnabled(), widget.start_button.toolTip()
    assert widget.data.pairs_table.rowCount() == 1
    # pickers start on a layer of the right kind
    assert type(widget.data.labels_combo.layer()).__name__ == "Labels"
    assert type(widget.data.scan_combo.layer()).__name__ == "Image"
    assert [kind for kind, _ in widget.data.synth_list.sources()] == ["layer"]


def test_labels_picker_prefers_labels_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4, 4), np.float32), name="T1")
    widget = TrainingWidget(viewer)
    assert widget.data.labels_combo.currentText() == "T1"  # an image is accepted when nothing else is open
    viewer.add_labels(np.zeros((4, 4, 4), np.int32), name="aseg")
    widget.data.labels_combo.setCurrentIndex(0)
    assert widget.data.labels_combo.itemText(0) == "aseg"  # a Labels layer is listed first


def test_l2s_gui_opens_the_sample_with_the_demo_settings(qtbot):
    from l2s_gui.sample_data import sample_config
    from l2s_napari._gui_launcher import open_viewer

    viewer, widget, segment = open_viewer(show=False, size="1280x800")
    try:
        assert len(viewer.layers) == 2
        assert widget.start_button.isEnabled(), widget.start_button.toolTip()
        assert widget.settings_dict()["training"]["steps"] == sample_config()["training"]["steps"]
        # no run yet: the shipped starter model segments at once (a training run, once started, wins)
        assert starter.starter_model_path() is not None
        assert segment.model_source.currentText() == STARTER_MODEL
    finally:
        widget.shutdown()
        viewer.close()


def test_starter_model_absent_is_disabled_with_a_reason(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(starter, "starter_model_path", lambda: None)
    viewer = make_napari_viewer()
    segment = SegmentWidget(viewer)
    item = segment.model_source.model().item(segment.model_source.findText(STARTER_MODEL))
    assert not item.isEnabled() and "not installed" in item.toolTip()
    assert segment.model_source.currentText() == CURRENT_RUN
    widget = TrainingWidget(viewer)
    choice = widget.form["training.init_from"]
    assert not choice.combo.model().item(choice.STARTER).isEnabled()
    assert not choice.choose_starter() and widget.settings_dict()["training"]["init_from"] == ""


def test_starter_model_present_is_the_default_and_the_warm_start(qtbot, make_napari_viewer, tiny_run,
                                                                 monkeypatch, errors):
    model = tiny_run / "model.safetensors"
    monkeypatch.setattr(starter, "starter_model_path", lambda: model)
    viewer = make_napari_viewer()
    [scan] = viewer.open(str(tiny_run.parent / "data" / "sub0_T1.nii.gz"), plugin="l2s-gui")
    segment = SegmentWidget(viewer)  # no training widget, no model of the user's own: the starter
    assert segment.model_source.currentText() == STARTER_MODEL
    assert segment.model_file() == model
    segment.image_combo.set_layer_name(scan.name)
    segment._update_buttons()
    assert segment.segment_button.isEnabled(), segment.segment_button.toolTip()
    assert segment.segment()
    qtbot.waitUntil(lambda: segment._worker is None, timeout=120_000)
    assert errors == [] and segment.result_layer is not None
    # the training widget offers it as the warm start; a run it opens becomes the Segment default
    widget = TrainingWidget(viewer)
    choice = widget.form["training.init_from"]
    assert choice.choose_starter()
    assert widget.settings_dict()["training"]["init_from"] == str(model)
    widget.apply_settings({"training": {"init_from": "starter"}})
    assert choice.combo.currentIndex() == choice.STARTER
    assert widget.open_run(tiny_run)
    assert segment.model_source.currentText() == CURRENT_RUN and segment.model_file() == model
    widget.shutdown()


def test_gui_process_draws_with_one_software_rasteriser_thread_unless_the_user_set_it():
    from l2s_napari._gui_launcher import apply_rendering_defaults

    environ = {"DISPLAY": ":99"}
    apply_rendering_defaults(environ)
    assert environ == {"DISPLAY": ":99", "LP_NUM_THREADS": "1"}
    environ = {"LP_NUM_THREADS": "4"}
    apply_rendering_defaults(environ)
    assert environ == {"LP_NUM_THREADS": "4"}
