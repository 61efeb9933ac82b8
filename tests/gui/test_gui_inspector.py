"""The Inspector in napari: its map as a layer over the real preview tile, updated in place as new
maps arrive, its accuracy plotted against step, and its settings in the form."""

from __future__ import annotations

import numpy as np

from gui_support import make_volumes
from l2s_gui.config import Config
from l2s_gui.events import InspectorEvent
from l2s_gui.runs import RunFolder
from l2s_gui.trainer import Trainer
from l2s_napari._inspector_layer import COLORMAP, LAYER_NAME, ROLE
from l2s_napari._owned_layers import find_role
from l2s_napari._training_widget import TrainingWidget


def _inspector_run(folder) -> RunFolder:
    pairs = make_volumes(folder / "data")
    cfg = Config.from_dict({
        "data": {"label_maps": [str(p[1]) for p in pairs[:2]], "real_images": [str(p[0]) for p in pairs],
                 "real_labels": [str(p[1]) for p in pairs], "batch_size": 2},
        "network": {"widths": [4, 8]},
        "training": {"steps": 4, "preview_every": 2, "val_every": 2, "checkpoint_every": 4, "device": "cpu"},
        "inspector": {"enabled": True, "grid": 4, "widths": [4, 8], "eval_every": 2, "eval_batches": 1},
    })
    run = RunFolder(folder / "run")
    run.create(cfg)
    list(Trainer(cfg, run=run).run())
    return run


def test_inspector_layer_over_the_real_tile_and_accuracy_plot(qtbot, make_napari_viewer, tmp_path, errors):
    run = _inspector_run(tmp_path)
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    assert widget.open_run(run.path)
    qtbot.waitUntil(lambda: find_role(viewer, ROLE) is not None, timeout=20_000)
    layer, real = find_role(viewer, ROLE), find_role(viewer, "preview_real")
    assert layer.name == LAYER_NAME and layer.colormap.name == COLORMAP
    assert list(layer.contrast_limits) == [0.0, 1.0] and 0 < layer.opacity < 1
    assert layer.data.shape == real.data.shape  # upsampled to the preview's grid, on its tile
    assert np.allclose(layer.translate, real.translate)
    assert list(viewer.layers).index(layer) > list(viewer.layers).index(real)  # drawn over the real image
    first = run.read_inspector_map()
    assert np.isclose(layer.data.max(), first["map"].max())

    # the accuracy against step, in its own plot with the 0.5 line
    qtbot.waitUntil(lambda: len(widget.plots.series.get("inspector_accuracy", ()).x) == 2, timeout=10_000)
    widget.plots.flush()
    assert widget.plots.series["inspector_accuracy"].x == [2.0, 4.0]
    assert widget.plots.inspector_plot is not None and widget.plots.chance_line.value() == 0.5
    assert "inspector_real" in widget.plots.curves and "inspector_synthetic" in widget.plots.curves

    # a new map (e.g. a later evaluation) replaces the layer's data in place
    patch_map = np.zeros((4, 4), np.float32)
    patch_map[:2] = 0.9
    run.write_inspector_map(InspectorEvent(step=6, accuracy=0.7, accuracy_real=0.8, accuracy_synthetic=0.6,
                                           loss=0.5, grid=4, map=patch_map, preview_shape=first["preview_shape"]))
    widget.watcher.poll()
    qtbot.waitUntil(lambda: widget.inspector_layer.step == 6, timeout=10_000)
    assert find_role(viewer, ROLE) is layer
    assert set(np.unique(layer.data).tolist()) == {0.0, np.float32(0.9)}
    widget.shutdown()
    assert errors == []


def test_inspector_settings_come_from_the_schema(make_napari_viewer):
    widget = TrainingWidget(make_napari_viewer())
    form = widget.form
    assert form.editors["inspector.enabled"].read() is False
    assert form.editors["inspector.grid"].read() == 8
    assert not form["inspector.grid"].isEnabled()
    form["inspector.enabled"].setChecked(True)
    assert form["inspector.grid"].isEnabled()
    assert form.settings()["inspector"]["enabled"] is True
    widget.shutdown()
