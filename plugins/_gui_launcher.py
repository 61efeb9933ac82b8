"""``l2s gui`` (``python -m l2s_napari``): napari with the built-in sample loaded and the training
widget docked and ready -- its inputs and settings are those of ``l2s demo``, so one click on Start
trains -- and the Segment widget beside it (it offers the starter model when installed).

The engine's CLI starts this in a subprocess, so the engine never imports napari.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def open_viewer(sample: bool = True, run: str | None = None, size: str = "1280x800", show: bool = True):
    """(viewer, training widget, segment widget), set up as the module docstring says."""
    import napari

    viewer = napari.Viewer(title="napari · Learn2Synth", show=show)
    width, height = (int(v) for v in size.lower().split("x"))
    viewer.window._qt_window.resize(width, height)
    if sample:
        viewer.open_sample("l2s-gui", "t1_labels")
    _, segment = viewer.window.add_plugin_dock_widget("l2s-gui", "Segment", tabify=False)
    _, training = viewer.window.add_plugin_dock_widget("l2s-gui", "Learn2Synth training", tabify=True)
    if run:
        training.open_run(Path(run).expanduser())
    elif sample:
        training.use_sample()
    return viewer, training, segment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="l2s gui", description=__doc__.splitlines()[0])
    p.add_argument("--no-sample", action="store_true", help="start without the built-in sample")
    p.add_argument("--open", metavar="RUN_DIR", help="open (and follow) a run folder")
    p.add_argument("--size", default="1280x800", help="window size WxH (default 1280x800)")
    args = p.parse_args(argv)
    import napari

    open_viewer(sample=not args.no_sample, run=args.open, size=args.size)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
