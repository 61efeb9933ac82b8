"""GUI responsiveness while training (a script, not a timed test).

Runs the same short CPU training twice:

1. headless: ``python -m l2s_gui.cli train`` on its own;
2. with napari: the "Learn2Synth training" widget starts the same training (its subprocess) and
   follows it live (previews, plots, progress), while a precise QTimer measures how late the Qt event
   loop serves it (the latency a user feels when clicking or panning).

Prints the event-loop latency p50/p99/max and the training speed (it/s) with and without the GUI;
the targets are p99 < 100 ms and GUI-attached speed within 10% of headless.

Usage (needs a display; on a headless Linux box run it under Xvfb)::

    xvfb-run -a python benchmarks/gui_responsiveness.py [--steps 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

TRACE = None  # set to a list to record late timer samples (for profiling)


def make_data(folder: Path, n: int = 4, shape=(64, 72, 64), seed: int = 0) -> list[tuple[Path, Path]]:
    """Synthetic 'brains' (nested ellipsoids with a bumpy boundary), labels 0..3, as NIfTI pairs."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    pairs = []
    for i in range(n):
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        r = np.sqrt(sum((g / 0.85) ** 2 for g in grids))
        r = r * (1 + 0.06 * np.sin(5 * grids[0] + i) * np.cos(4 * grids[1]))
        lab = np.zeros(shape, np.int16)
        lab[r < 1] = 3
        lab[r < 0.8] = 2
        lab[r < 0.45] = 1
        img = np.choose(lab, [0.02, 0.85, 0.6, 0.3]).astype(np.float32)
        img += rng.normal(0, 0.03, shape).astype(np.float32)
        sp, lp = folder / f"sub{i}_T1.nii.gz", folder / f"sub{i}_labels.nii.gz"
        nib.save(nib.Nifti1Image(img * 100, affine), sp)
        nib.save(nib.Nifti1Image(lab, affine), lp)
        pairs.append((sp, lp))
    return pairs


def settings(steps: int, widths: list[int]) -> dict:
    return {"data": {"batch_size": 4, "ndim": 2, "val_fraction": 0.25},
            "network": {"widths": widths},
            "training": {"steps": steps, "preview_every": 10, "val_every": 50, "checkpoint_every": 10_000,
                         "device": "cpu", "seed": 0}}


def speed_from_metrics(run_dir: Path, skip: int = 10) -> float:
    """Steady-state it/s from the step events' elapsed time (first ``skip`` steps are warm-up)."""
    steps = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("kind") == "step":
            steps.append((e["step"], e["elapsed_s"]))
    steps = [s for s in steps if s[0] > skip]
    if len(steps) < 2:
        return float("nan")
    (s0, t0), (s1, t1) = steps[0], steps[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")


def run_headless(work: Path, pairs, steps: int, widths: list[int]) -> float:
    cfg = settings(steps, widths)
    cfg["data"].update(label_maps=[str(p[1]) for p in pairs], real_images=[str(p[0]) for p in pairs],
                       real_labels=[str(p[1]) for p in pairs])
    path = work / "headless.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = work / "run_headless"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "l2s_gui.cli", "train", str(path), "-o", str(run_dir), "--quiet",
                    "--overwrite"], check=True, capture_output=True)
    print(f"headless: {steps} steps in {time.perf_counter() - t0:.1f} s wall", flush=True)
    return speed_from_metrics(run_dir)


def run_with_gui(work: Path, pairs, steps: int, widths: list[int], interval_ms: int = 10,
                 interact_ms: int = 500) -> dict:
    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from l2s_napari._training_widget import TrainingWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    for scan, labels in pairs:
        viewer.open(str(scan), plugin="l2s-gui")
        viewer.open(str(labels), plugin="l2s-gui")
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Learn2Synth training", area="right")
    for i in range(len(pairs)):
        widget.add_pair(viewer.layers[f"sub{i}_T1"], viewer.layers[f"sub{i}_labels"])
    widget.apply_settings(settings(steps, widths))
    widget.run_edit.setText(str(work / "run_gui"))
    app = QApplication.instance()

    lateness: list[float] = []
    clock = QElapsedTimer()
    state = {"expected": 0.0, "measuring": False}
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setSingleShot(True)

    def tick():
        now = clock.nsecsElapsed() / 1e6
        if state["measuring"]:
            lateness.append(max(0.0, now - state["expected"]))
            if TRACE is not None and lateness[-1] > 30:
                TRACE.append((time.perf_counter(), "late", round(lateness[-1], 1)))
        state["expected"] = clock.nsecsElapsed() / 1e6 + interval_ms
        timer.start(interval_ms)

    timer.timeout.connect(tick)
    clock.start()
    tick()
    # let the window settle, then start training and measure until the process ends (real event loop)
    settle = QEventLoop()
    QTimer.singleShot(2000, settle.quit)
    settle.exec()
    loop = QEventLoop()
    widget.process.finished.connect(lambda *_: loop.quit())
    assert widget.start(), "training did not start"
    state["measuring"] = True
    t0 = time.perf_counter()
    # a user panning/zooming now and then: canvas redraws during training
    zoom = QTimer()
    zoom_state = {"n": 0}

    def interact():
        zoom_state["n"] += 1
        viewer.scene.camera.zoom *= 1.02 if zoom_state["n"] % 2 else 1 / 1.02

    zoom.timeout.connect(interact)
    if interact_ms > 0:
        zoom.start(interact_ms)
    cpu0 = time.process_time()
    loop.exec()
    gui_cpu = time.process_time() - cpu0
    zoom.stop()
    state["measuring"] = False
    wall = time.perf_counter() - t0
    timer.stop()
    for _ in range(20):
        app.processEvents()
    interactions = zoom_state["n"]
    it_s = speed_from_metrics(work / "run_gui")
    n_previews = widget.previews.step
    widget.shutdown()
    viewer.close()
    lat = np.asarray(lateness)
    print(f"with GUI: {steps} steps in {wall:.1f} s wall; {len(lat)} timer samples; last preview step "
          f"{n_previews}; {interactions} zoom interactions", flush=True)
    return {"it_per_s": it_s, "gui_cpu_fraction": gui_cpu / wall, "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)), "latency_ms_max": float(lat.max()),
            "samples": int(lat.size)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--widths", default="8 16 32", help="UNet widths (default: '8 16 32')")
    p.add_argument("--repeat", type=int, default=2,
                   help="headless/GUI runs, interleaved (medians are reported; a shared machine is noisy)")
    p.add_argument("--interact-ms", type=int, default=0,
                   help="also zoom the canvas every N ms during the GUI run (0: GUI attached but idle)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--keep", help="work folder to keep (default: a temporary folder)")
    args = p.parse_args(argv)
    from l2s_napari._gui_launcher import apply_rendering_defaults

    apply_rendering_defaults()  # the GUI process's environment, as `l2s gui` sets it
    widths = [int(w) for w in args.widths.split()]
    headless_runs, gui_runs = [], []
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pairs = make_data(work / "data")
        for r in range(args.repeat):
            sub = work / f"rep{r}"
            sub.mkdir(parents=True, exist_ok=True)
            headless_runs.append(run_headless(sub, pairs, args.steps, widths))
            gui_runs.append(run_with_gui(sub, pairs, args.steps, widths, interact_ms=args.interact_ms))
    headless = float(np.median(headless_runs))
    gui_speed = float(np.median([g["it_per_s"] for g in gui_runs]))
    med = {k: float(np.median([g[k] for g in gui_runs])) for k in gui_runs[0] if k != "it_per_s"}
    ratio = gui_speed / headless if headless else float("nan")
    import torch

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    result = {"steps": args.steps, "widths": widths, "repeat": args.repeat, "interact_ms": args.interact_ms,
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "loadavg_before": load_before, "loadavg_after": load_after,
              "headless_it_per_s": headless, "gui_it_per_s": gui_speed, "gui_over_headless": ratio,
              "headless_runs": headless_runs, "gui_runs": gui_runs, **med}
    print()
    print(f"GUI responsiveness during a CPU training (2D, UNet widths {widths}, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, median of {args.repeat} interleaved runs"
          + f", LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}"
          + (f", canvas zoomed every {args.interact_ms} ms" if args.interact_ms else "") + ")")
    print(f"  Qt event loop latency (10 ms timer lateness): p50 {med['latency_ms_p50']:.1f} ms, "
          f"p99 {med['latency_ms_p99']:.1f} ms, max {med['latency_ms_max']:.0f} ms  [target p99 < 100 ms]")
    print(f"  training speed: headless {headless:.2f} it/s, with napari attached {gui_speed:.2f} it/s "
          f"({100 * ratio:.0f}% of headless)  [target >= 90%]")
    print(f"  napari process CPU while training: {100 * med['gui_cpu_fraction']:.0f}% of one core")
    print("  runs: headless " + ", ".join(f"{v:.2f}" for v in headless_runs) + " it/s; GUI "
          + ", ".join(f"{g['it_per_s']:.2f} it/s (p99 {g['latency_ms_p99']:.0f} ms)" for g in gui_runs))
    if load_before is not None:
        print(f"  machine load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
              f"(other jobs on the machine skew both speeds; compare runs with a low load)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
