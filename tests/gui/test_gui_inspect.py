"""Inspecting the learned augmentation: INU field + noise layers, a gallery, applying A_theta."""

from __future__ import annotations

import numpy as np

from l2s_napari._owned_layers import find_role
from l2s_napari._training_widget import TrainingWidget


def test_inspect_components_gallery_and_apply(qtbot, make_napari_viewer, tiny_run, errors):
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    # before a model exists the buttons say why they are disabled
    assert not widget.inspect.components_button.isEnabled() and "model" in widget.inspect.components_button.toolTip()
    assert widget.open_run(tiny_run)
    qtbot.waitUntil(lambda: widget.last_preview is not None, timeout=10_000)
    assert widget.inspect.components_button.isEnabled(), widget.inspect.components_button.toolTip()

    # INU field and noise of one draw on the latest synthetic preview
    widget.inspect.inspect_source.setCurrentText("synthetic preview")
    widget.inspect.show_components()
    qtbot.waitUntil(lambda: find_role(viewer, "inspect_noise") is not None, timeout=30_000)
    inu, noise = find_role(viewer, "inspect_inu_field"), find_role(viewer, "inspect_noise")
    # previews are shown rotated (RAS: superior up), the inspection tiles beside them too
    assert inu is not None and inu.data.shape == np.rot90(widget.last_preview["synthetic"]).shape
    assert float(inu.data.min()) > 0 and np.std(noise.data) > 0
    # again: updated in place
    n_layers = len(viewer.layers)
    widget.inspect.inspect_seed.setValue(5)
    before = noise.data.copy()
    widget.inspect.show_components()
    qtbot.waitUntil(lambda: not np.array_equal(noise.data, before), timeout=30_000)
    assert find_role(viewer, "inspect_noise") is noise and len(viewer.layers) == n_layers

    # gallery of 6 draws (one mosaic layer) on an image layer's current slice
    scan = viewer.open(str(tiny_run.parent / "data" / "sub0_T1.nii.gz"), plugin="l2s-gui")[0]
    widget.inspect.inspect_source.setCurrentText("image layer")
    widget.inspect.inspect_layer.set_layer_name(scan.name)
    widget.inspect.gallery_n.setValue(6)
    widget.inspect.show_gallery()
    qtbot.waitUntil(lambda: find_role(viewer, "inspect_gallery") is not None, timeout=30_000)
    gallery = find_role(viewer, "inspect_gallery").data
    h, w = scan.data.shape[-2:]
    assert gallery.shape == (2 * h + 2, 3 * w + 4)
    tiles = [gallery[:h, :w], gallery[:h, w + 2:2 * w + 2]]
    assert not np.array_equal(tiles[0], tiles[1])  # independent draws

    # apply the saved model's augmentation to a whole scan: a new layer with the scan's geometry
    widget.inspect.apply_to_layer()
    qtbot.waitUntil(lambda: find_role(viewer, f"applied_{scan.name}") is not None, timeout=30_000)
    applied = find_role(viewer, f"applied_{scan.name}")
    assert applied.data.shape == scan.data.shape
    np.testing.assert_allclose(applied.scale, scan.scale)
    np.testing.assert_allclose(applied.translate, scan.translate)
    np.testing.assert_allclose(applied.metadata["affine"], scan.metadata["affine"])
    assert errors == []
