"""Segment widget: model + image layer -> Labels layer on the image's grid, original label values,
per-label volumes, save as NIfTI; cancel; disabled until a model and an image exist."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from l2s_napari._segment_widget import CURRENT_RUN, MODEL_FILE, STARTER_MODEL, SegmentWidget
from l2s_napari._training_widget import TrainingWidget

VALUES = (2, 41, 17)  # the tiny model's label values (conftest.TINY_VALUES): classes 1..3 stand for these


def test_segment_adds_labels_with_geometry_and_values(qtbot, make_napari_viewer, tiny_run, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert not widget.segment_button.isEnabled()
    # the shipped starter model is the default model, so what is missing is the scan
    assert widget.model_source.currentText() == STARTER_MODEL
    assert "image layer" in widget.segment_button.toolTip()
    [scan] = viewer.open(str(tiny_run.parent / "data" / "sub2_T1.nii.gz"), plugin="l2s-gui")
    widget.model_path.setText(str(tiny_run / "model.safetensors"))
    assert widget.model_source.currentText() == MODEL_FILE
    widget.image_combo.set_layer_name(scan.name)
    widget._update_buttons()
    assert widget.segment_button.isEnabled(), widget.segment_button.toolTip()
    assert "2D" in widget.model_info.text()

    assert widget.segment()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert errors == []
    seg = widget.result_layer
    assert type(seg).__name__ == "Labels" and seg.data.shape == scan.data.shape
    np.testing.assert_allclose(seg.scale, scan.scale)
    np.testing.assert_allclose(seg.translate, scan.translate)
    np.testing.assert_allclose(seg.metadata["affine"], scan.metadata["affine"])
    assert set(np.unique(seg.data).tolist()) <= {0, *VALUES}  # original label values, not classes
    # volume table: one row per label of the model, mm^3 = voxels x voxel volume (0 when absent)
    voxel = abs(np.linalg.det(scan.metadata["affine"][:3, :3]))
    assert widget.table.rowCount() == len(VALUES)
    assert sorted(widget.volumes) == sorted(VALUES)
    for value in VALUES:
        count, mm3 = widget.volumes[value]
        assert count == int((seg.data == value).sum())
        assert mm3 == pytest.approx(count * voxel)
    # save as NIfTI with the scan's affine; CSV of volumes
    out = widget.save_labels(tmp_path / "seg.nii.gz")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, scan.metadata["affine"], atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), seg.data)
    assert widget.save_csv(tmp_path / "volumes.csv")
    # the engine's one volumes CSV (as `l2s segment --vol`): subject, total, one column per label
    assert (tmp_path / "volumes.csv").read_text().startswith("subject,total,")

    # again: the same layer is updated in place
    n_layers = len(viewer.layers)
    assert widget.segment()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert len(viewer.layers) == n_layers and widget.result_layer is seg


def test_segment_uses_the_current_run_and_cancels(qtbot, make_napari_viewer, tiny_run, errors):
    viewer = make_napari_viewer()
    [scan] = viewer.open(str(tiny_run.parent / "data" / "sub0_T1.nii.gz"), plugin="l2s-gui")
    trainer = TrainingWidget(viewer)
    widget = SegmentWidget(viewer)
    assert widget.model_source.currentText() == CURRENT_RUN
    assert not widget.segment_button.isEnabled()
    assert trainer.open_run(tiny_run)
    widget._update_buttons()
    assert widget.model_file() == tiny_run / "model.safetensors"
    assert widget.segment_button.isEnabled(), widget.segment_button.toolTip()
    # cancel right away: no labels layer
    widget._cancel.set()  # as if Cancel was clicked before the first slice
    orig = widget._cancel.clear
    widget._cancel.clear = lambda: None
    try:
        assert widget.segment()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    finally:
        widget._cancel.clear = orig
    assert widget.result_layer is None and widget.progress.format() == "cancelled"
    assert errors == []
    assert widget.segment_button.isEnabled()


def test_segment_bad_model_file_is_reported(qtbot, make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), name="scan")
    widget = SegmentWidget(viewer)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model")
    widget.model_path.setText(str(bad))
    widget.image_combo.set_layer_name("scan")
    widget._update_buttons()
    assert widget.segment()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert errors and "model.safetensors" in errors[-1]
    assert widget.result_layer is None


def test_segment_options_flip_note_clean_and_soft_volumes(qtbot, make_napari_viewer, tiny_run, tmp_path, errors,
                                                         monkeypatch):
    """The flipped pass is on by default; the tiny model's table (2, 17, 41: a left hippocampus without
    its right side) allows none, which is said once per segmentation, not as an error; soft volumes
    fill their own column; the clean-up runs when ticked."""
    import l2s_napari._notify as notify

    infos: list[str] = []
    monkeypatch.setattr(notify, "notify_info", infos.append)
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.flip_check.isChecked() and not widget.clean_check.isChecked()
    [scan] = viewer.open(str(tiny_run.parent / "data" / "sub2_T1.nii.gz"), plugin="l2s-gui")
    widget.model_path.setText(str(tiny_run / "model.safetensors"))
    widget.image_combo.set_layer_name(scan.name)
    assert widget.segment()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert errors == []
    assert len(infos) == 1 and "left/right" in infos[0] and widget.notes == infos
    voxel = abs(np.linalg.det(scan.metadata["affine"][:3, :3]))
    assert sorted(widget.soft_volumes) == sorted(VALUES)
    assert 0 <= sum(widget.soft_volumes.values()) <= scan.data.size * voxel * (1 + 1e-6)
    assert widget.table.columnCount() == 5 and widget.table.item(0, 4) is not None
    assert widget.save_csv(tmp_path / "v.csv")
    header = (tmp_path / "v.csv").read_text().splitlines()[0]
    assert header.split(",")[:2] == ["subject", "total"] and len(header.split(",")) == 2 + len(VALUES)

    infos.clear()
    widget.flip_check.setChecked(False)
    widget.clean_check.setChecked(True)
    assert widget.segment()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert errors == [] and infos == [] and widget.result_layer is not None
