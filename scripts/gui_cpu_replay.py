"""CPU the napari process spends following a training, without a training competing for the CPU.

A writer process replays a run folder at a training's pace (10 step events/s, a preview every 10
steps: what ``benchmarks/gui_responsiveness.py`` trains, at 10 it/s), while napari with the
training widget follows it; the napari process's CPU seconds over the window are printed. Because
no training runs, the figure hardly depends on what else loads the machine (unlike an it/s ratio).

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/gui_cpu_replay.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write(run_dir: str, seconds: float) -> None:
    from l2s_gui.events import PreviewEvent, StartEvent, StepEvent
    from l2s_gui.runs import RunFolder

    run = RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text("training: {steps: 100000}\n")
    run.write_state(status="running", step=0, total_steps=100000, pid=os.getpid(), device="cpu")
    run.append_event(StartEvent(step=0, total_steps=100000, device="cpu", method="learn2synth", n_classes=4,
                                label_values=[0, 1, 2, 3]))
    rng = np.random.default_rng(0)
    t0, step = time.time(), 0
    while time.time() - t0 < seconds:
        step += 1
        run.append_event(StepEvent(step=step, loss_synth=float(rng.random()), loss_real=float(rng.random()),
                                   theta={"sigma": 0.05, "c": [0.25, 0.3, 0.35]}, it_per_s=10.0,
                                   elapsed_s=time.time() - t0))
        if step % 10 == 0:
            img = rng.random((96, 112)).astype(np.float32)
            run.write_preview(PreviewEvent(step=step, synthetic=img, augmented=img, real=img,
                                           prediction=rng.integers(0, 4, (96, 112)),
                                           real_labels=rng.integers(0, 4, (96, 112))))
        time.sleep(0.1)


def follow(run_dir: str, seconds: float) -> float:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from l2s_napari._training_widget import TrainingWidget

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(np.random.default_rng(0).random((64, 72, 64)).astype(np.float32), name="scan")
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    wait(2000)
    writer = subprocess.Popen([sys.executable, __file__, "--write", run_dir, "--seconds", str(seconds + 8)])
    wait(2500)
    widget.open_run(run_dir)
    wait(3000)  # catch up, first preview
    cpu0, t0 = time.process_time(), time.perf_counter()
    wait(int(seconds * 1000))
    share = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    print(f"napari process CPU while following a 10 it/s run: {100 * share:.1f}% of one core "
          f"(previews shown up to step {widget.previews.step})", flush=True)
    widget.shutdown()
    writer.wait()
    viewer.close()
    return share


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--write", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        write(args.write, args.seconds)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        follow(str(Path(tmp) / "run"), args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
