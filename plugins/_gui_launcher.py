"""``l2s gui`` (``python -m l2s_napari``): napari with the built-in sample loaded and the training
widget docked and ready -- its inputs and settings are those of ``l2s demo``, so one click on Start
trains -- and the Segment widget beside it (it offers the starter model when installed).

The engine's CLI starts this in a subprocess, so the engine never imports napari.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RENDERING_DEFAULTS = {"LP_NUM_THREADS": "1"}
"""Environment defaults of the GUI process, set before napari creates its OpenGL context. Mesa's
software rasteriser (llvmpipe: Xvfb, remote desktops, machines without a GPU driver) draws with one
thread per core by default, and those threads take the cores from a training; with one thread the
training kept 93% of its headless speed on 2 cores against 85-91%
(benchmarks/results/gui-responsiveness-cpu.md). Hardware OpenGL ignores it. A value the user set wins."""


def apply_rendering_defaults(environ=None) -> None:
    """Set :data:`RENDERING_DEFAULTS` in ``environ`` (default ``os.environ``) where it has no value."""
    environ = os.environ if environ is None else environ
    for key, value in RENDERING_DEFAULTS.items():
        environ.setdefault(key, value)


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
    apply_rendering_defaults()
    import napari

    open_viewer(sample=not args.no_sample, run=args.open, size=args.size)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
