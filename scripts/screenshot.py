"""Start napari with the Learn2Synth plugin, train briefly on the built-in sample, save a screenshot.

Run under Xvfb on a headless machine::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshot.py [--steps 120] [--out docs/screenshot.png]

The sample T1 + labels are opened from the plugin's sample-data menu entry, the "Learn2Synth
training" and "Segment" widgets are docked, a short CPU training runs in its subprocess (live
previews and plots), the learned INU field and noise are shown, the sample scan is segmented with
the trained model, and the whole window is saved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        loop = QEventLoop()
        QTimer.singleShot(100, loop.quit)
        loop.exec()


def fit_visible(viewer, margin: float = 0.04) -> None:
    """Centre and zoom the 2D view on the visible layers only (reset_view also counts hidden ones)."""
    import numpy as np

    boxes = [np.asarray(layer.extent.world, float)[:, -2:] for layer in viewer.layers if layer.visible]
    if not boxes:
        return
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    size = np.maximum(hi - lo, 1e-6) * (1 + 2 * margin)
    canvas = np.asarray(viewer.window._qt_viewer.canvas.size, float)  # (height, width) in pixels
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = tuple(list(camera.center[:-2]) + list((lo + hi) / 2))
    camera.zoom = float(np.min(canvas / size))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--size", default="1680x1050", help="window size WxH")
    p.add_argument("--run-dir", help="run folder (default: a temporary folder)")
    p.add_argument("--theme", default="dark")
    p.add_argument("--timeout-min", type=float, default=60, help="give up on the training after this long")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import napari

    import l2s_napari._training_widget as training_widget
    from l2s_napari._layers import find_role

    training_widget.notify_info = lambda message: print(f"screenshot: {message}")  # no toast in the picture

    viewer = napari.Viewer(title="napari · Learn2Synth", show=True)
    viewer.theme = args.theme
    window = viewer.window._qt_window
    window.resize(width, height)

    layers = viewer.open_sample("l2s-gui", "t1_labels")
    scan = next(layer for layer in layers if type(layer).__name__ == "Image")
    labels = next(layer for layer in layers if type(layer).__name__ == "Labels")

    _, seg_widget = viewer.window.add_plugin_dock_widget("l2s-gui", "Segment", tabify=False)
    _, widget = viewer.window.add_plugin_dock_widget("l2s-gui", "Learn2Synth training", tabify=True)
    # the sample's files: deformed label maps for synthesis, three real pairs (train + validation)
    if not widget.use_sample():
        widget.add_pair(scan, labels)
    widget.steps.setValue(args.steps)
    widget.preview_every.setValue(10)
    widget.val_every.setValue(25)
    widget.checkpoint_every.setValue(max(10, args.steps // 2))
    widget.device_combo.setCurrentText("cpu")
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="l2s_screenshot_")) / "run"
    widget.run_edit.setText(str(run_dir))
    widget.tabs.setCurrentIndex(1)  # show the augmentation settings

    if not widget.start():
        print("screenshot: training did not start", file=sys.stderr)
        return 1
    try:
        wait_until(lambda: not widget.process.is_running(), args.timeout_min * 60, "the training")
    except TimeoutError:
        widget.shutdown()  # stop the training process cleanly (checkpoint), then give up
        raise
    wait_until(lambda: widget.state.get("status") in ("finished", "stopped", "error"), 30, "the final state")
    if widget.state.get("status") == "error":
        print(f"screenshot: training failed: {widget.state.get('message')}", file=sys.stderr)
        return 1

    # inspect the learned augmentation: INU field and noise of one draw on the synthetic preview
    widget.inspect_source.setCurrentText("synthetic preview")
    widget.show_components()
    wait_until(lambda: find_role(viewer, "inspect_noise") is not None, 120, "the INU field and noise")

    # segment the sample scan with the trained model
    seg_widget.image_combo.set_layer_name(scan.name)
    seg_widget._update_buttons()
    if seg_widget.segment():
        wait_until(lambda: seg_widget._worker is None, 600, "the segmentation")

    scan.visible = False
    labels.visible = False
    if seg_widget.result_layer is not None:
        seg_widget.result_layer.visible = False
    widget.plots.flush()
    augmented = find_role(viewer, "preview_augmented")
    if augmented is not None:
        viewer.layers.selection.active = augmented  # image controls on the left
    widget.tabs.setCurrentIndex(3)  # the Inspect tab
    fit_visible(viewer)
    wait_until(lambda: True, 1, "")
    loop_end = time.perf_counter() + 1.5
    wait_until(lambda: time.perf_counter() > loop_end, 5, "the last repaint")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(out)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
