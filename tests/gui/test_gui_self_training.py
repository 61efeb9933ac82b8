"""Self-training in the GUI: the unlabelled-scans chooser and round settings of the Data tab, and each
round's Dice on the validation plot of a watched run."""

from __future__ import annotations

import yaml
from qtpy.QtCore import Qt

from gui_support import make_volumes
from l2s_gui.config import Config
from l2s_gui.events import RoundEvent
from l2s_gui.run_inputs import prepare_run_inputs
from l2s_gui.runs import RunFolder
from l2s_gui.self_training import SelfTraining
from l2s_napari._training_widget import TrainingWidget


def test_unlabelled_chooser_and_round_settings_reach_the_run_inputs(qtbot, make_napari_viewer, tmp_path):
    pairs = make_volumes(tmp_path / "data")
    viewer = make_napari_viewer()
    [scan_layer] = viewer.open(str(pairs[2][0]), plugin="l2s-gui")
    widget = TrainingWidget(viewer)
    data = widget.data
    assert data.unlabelled_sources() == []  # image layers are not unlabelled scans until checked
    for i in range(data.unlabelled_list.count()):
        item = data.unlabelled_list.item(i)
        if item.text().endswith(scan_layer.name):
            item.setCheckState(Qt.CheckState.Checked)
    data.unlabelled_list.add_path(str(tmp_path / "data"))
    widget.form["self_training.rounds"].setValue(2)
    widget.form["self_training.confidence"].setValue(0.8)
    sources = data.unlabelled_sources()
    assert [getattr(s, "name", s) for s in sources] == [scan_layer.name, str(tmp_path / "data")]
    assert data.file_paths()["unlabelled_images"] == [str(tmp_path / "data")]
    settings = widget.settings_dict()
    assert settings["self_training"]["rounds"] == 2 and settings["self_training"]["confidence"] == 0.8
    config_path = prepare_run_inputs(tmp_path / "run", settings, [str(pairs[0][1])], [tuple(map(str, pairs[0]))],
                                     unlabelled=sources)
    listed = yaml.safe_load(config_path.read_text())["data"]["unlabelled_images"]
    assert len(listed) == 2 and "unlabelled_000" in listed[0] and listed[1].endswith("data")
    widget.shutdown()


def test_each_rounds_dice_is_shown_on_the_validation_plot(qtbot, make_napari_viewer, tmp_path):
    pairs = make_volumes(tmp_path / "data", n=4, shape=(20, 24, 20))
    config = Config.from_dict({
        "data": {"label_maps": [str(p[1]) for p in pairs[:2]], "real_images": [str(p[0]) for p in pairs[:3]],
                 "real_labels": [str(p[1]) for p in pairs[:3]], "unlabelled_images": [str(pairs[3][0])],
                 "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "training": {"steps": 2, "val_every": 2, "preview_every": 2, "device": "cpu"},
        "self_training": {"rounds": 2, "steps": 1, "confidence": 0.0, "tolerance": 0.0},
    })
    run = RunFolder(tmp_path / "run")
    selftrain = SelfTraining(config, run=run)
    run.create(config)
    rounds = [e for e in selftrain.run() if isinstance(e, RoundEvent)]
    assert [r.round for r in rounds] == [0, 1, 2]
    widget = TrainingWidget(make_napari_viewer())
    assert widget.open_run(run.path)
    qtbot.waitUntil(lambda: len(widget.plots.rounds) == 3, timeout=20_000)
    widget.plots.flush()
    x, y = widget.plots.series["round_dice"].arrays()
    assert list(x) == [2, 3, 4] and list(y) == [r.mean_dice for r in rounds]
    assert "round_dice" in widget.plots.curves
    title = widget.plots.dice_plot.titleLabel.text
    assert f"r0 {rounds[0].mean_dice:.3f}" in title and f"r2 {rounds[2].mean_dice:.3f} ({rounds[2].change:+.3f})" in title
    widget.shutdown()


def test_file_and_folder_dialogs_add_to_their_own_list(qtbot, make_napari_viewer, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    widget = TrainingWidget(make_napari_viewer())
    data = widget.data
    titles = []
    files = [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        lambda parent, title, *_: (titles.append(title), (files, ""))[1])
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda parent, title, *_: (titles.append(title), str(tmp_path))[1])

    def paths(source_list):
        return [item for kind, item in source_list.sources() if kind == "path"]

    before = paths(data.synth_list)
    data._add_unlabelled_files()
    data._add_unlabelled_folder()
    assert paths(data.unlabelled_list) == [*files, str(tmp_path)]
    assert paths(data.synth_list) == before
    data._add_synth_files()
    data._add_synth_folder()
    assert paths(data.synth_list) == [*before, *files, str(tmp_path)]
    assert titles == ["Unlabelled scans", "Folder of unlabelled scans", "Label maps", "Folder of label maps"]
    widget.shutdown()
