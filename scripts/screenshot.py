"""Start napari with the Learn2Synth plugin, train briefly on the built-in sample, save a screenshot.

Run under Xvfb on a headless machine::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshot.py [--steps 120] [--out docs/screenshot.png]

napari opens as ``l2s gui`` opens it (the sample loaded, the "Learn2Synth training" and "Segment"
widgets docked with the demo's settings), a short CPU training runs in its subprocess (live
previews and plots), the learned INU field and noise are shown, the sample scan is segmented with
the trained model, and the whole window is saved. ``--live``: save the window while training runs
(at its first previews) instead.
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


def save_window(viewer, out: Path, settle_s: float) -> None:
    """Let the last repaints land, then save the whole window to ``out`` and print its path."""
    settle = time.perf_counter() + settle_s
    wait_until(lambda: time.perf_counter() > settle, settle_s + 5, "the last repaint")
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(out)


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
    p.add_argument("--live", action="store_true", help="save the window during training, then stop it")
    p.add_argument("--inspector", action="store_true",
                   help="train the Inspector too and show its map over the real preview")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import l2s_napari._notify as notify
    from l2s_napari._gui_launcher import open_viewer
    from l2s_napari._owned_layers import find_role

    notify.notify_info = lambda message: print(f"screenshot: {message}")  # no toast in the picture

    viewer, widget, seg_widget = open_viewer(sample=True, size=f"{width}x{height}")
    viewer.theme = args.theme
    scan = next(layer for layer in viewer.layers if type(layer).__name__ == "Image")
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    form = widget.form
    form["training.steps"].setValue(args.steps)
    form["training.preview_every"].setValue(10)
    form["training.val_every"].setValue(25)
    form["training.checkpoint_every"].setValue(max(10, args.steps // 2))
    widget.device_combo.setCurrentText("cpu")
    if args.inspector:
        form["inspector.enabled"].setChecked(True)
        form["inspector.eval_every"].setValue(10)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="l2s_screenshot_")) / "run"
    widget.run_edit.setText(str(run_dir))
    widget.tabs.setCurrentIndex(1)  # show the augmentation settings

    if not widget.start():
        print("screenshot: training did not start", file=sys.stderr)
        return 1
    if args.live:
        wait_until(lambda: widget.previews.step is not None and widget.previews.step >= 20, args.timeout_min * 60,
                   "the first previews")
        wait_until(lambda: widget.plots is not None and len(widget.plots.series.get("loss_synth", ())
                                                            .x if "loss_synth" in widget.plots.series else []) > 5,
                   600, "the first losses")
        if args.inspector:
            wait_until(lambda: find_role(viewer, "preview_inspector") is not None, 600, "the Inspector's map")
        widget.plots.flush()
        save_window(viewer, Path(args.out), settle_s=2.0)
        widget.shutdown()
        viewer.close()
        return 0
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
    widget.inspect.inspect_source.setCurrentText("synthetic preview")
    widget.inspect.show_components()
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
    save_window(viewer, Path(args.out), settle_s=1.5)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
