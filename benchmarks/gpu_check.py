"""GPU readiness check: every device path of l2s-gui, small sizes, one line per path.

    python benchmarks/gpu_check.py                  # on the first CUDA device; a few minutes
    python benchmarks/gpu_check.py --only train-2d  # the paths whose name contains a pattern
    python benchmarks/gpu_check.py --device cpu     # the same paths on the CPU (a smoke test of the script)

Without a CUDA device (and no ``--device``) it prints one line saying so and exits 0. Otherwise
each path runs in its own try/except (one failure does not stop the others) and prints
``PASS|FAIL  <path>  <seconds>  <detail or the error>``; the exit status is 1 when a path failed.

Paths (small generated label maps with left/right FreeSurfer ids, in a temporary folder):

* ``synthesis-{torch,cornucopia}-{2d,3d}``: one batch of each synthesis backend on the device
  (finite images in [0, 1], label maps kept on the device);
* ``generation-labels-2d``: training with a merging label table (``freesurfer_4class``): every
  original label value is its own generation label, mapped to the training classes after synthesis;
* ``train-{2d,3d}-{naive,exact,exact-jvp,approx}``: Learn2Synth steps with every hypergradient route
  (fp32), and ``train-{2d,3d}-exact-bf16`` with bf16 autocast; ``train-2d-nonparametric``: the
  residual-network augmentation;
* ``segment-{2d,3d}-flip``: the exported model segments a scan on the device with the left/right
  flipped pass, the clean-up, a scan voxel size other than the training one (resampling both ways),
  and agrees with the same segmentation on the CPU;
* ``torchrun-1proc``: ``l2s train`` under ``torch.distributed.run`` with one process on the device;
* ``experiments-full-mode``: the recovery experiments' GPU command (``python -m experiments.run all
  --mode full``: batch 64, 5-level UNet, every experiment's base, L, N and O runs and reports) on six
  generated maps, one seed, 4 base and 4 continuation steps (``--base-steps``, ``--steps``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def brain_labels(shape, seed: int) -> np.ndarray:
    """A toy two-hemisphere brain in RAS voxel order: left (x < 0) ids 2/3/17, right 41/42/53, CSF 24
    between and around them, with a smooth random wobble."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    wobble = sum(0.05 * rng.uniform(-1, 1) * np.sin((2 + k) * g + rng.uniform(0, 6)) for k, g in enumerate(grid))
    r = np.sqrt(sum(c ** 2 for c in grid)) / (0.85 * (1 + 0.05 * rng.uniform(-1, 1))) + wobble
    left = grid[0] < -0.04
    right = grid[0] > 0.04
    lab = np.zeros(shape, np.int16)
    lab[r < 1.0] = 24
    for side, (wm, gm, hippo) in ((left, (2, 3, 17)), (right, (41, 42, 53))):
        lab[side & (r < 0.9)] = gm
        lab[side & (r < 0.65)] = wm
        lab[side & (r < 0.65) & (np.abs(np.abs(grid[0]) - 0.35) < 0.12) & (np.abs(grid[2]) < 0.2)] = hippo
    return lab


def make_data(root: Path, shape=(40, 32, 36), n_maps: int = 3, n_real: int = 3) -> Path:
    """Label maps and real (scan, labels) pairs (1 mm, RAS) under ``root``."""
    import nibabel as nib

    means = {0: 0.0, 2: 0.8, 41: 0.8, 3: 0.5, 42: 0.5, 17: 0.6, 53: 0.6, 24: 0.2}
    rng = np.random.default_rng(0)
    for sub in ("maps", "images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_maps):
        nib.save(nib.Nifti1Image(brain_labels(shape, i), np.eye(4)), str(root / "maps" / f"map{i}.nii.gz"))
    for i in range(n_real):
        lab = brain_labels(shape, 100 + i)
        img = np.vectorize(means.get)(lab).astype(np.float32) + 0.03 * rng.standard_normal(shape).astype(np.float32)
        nib.save(nib.Nifti1Image(img * 300, np.eye(4)), str(root / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"s{i}.nii.gz"))
    return root


def config_dict(data_dir: Path, device: str, ndim: int, steps: int = 3, **sections) -> dict:
    cfg = {
        "data": {"label_maps": [str(data_dir / "maps")], "real_images": [str(data_dir / "images")],
                 "real_labels": [str(data_dir / "labels")], "ndim": ndim, "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [8, 16, 32]},
        "augmentation": {"inu_nodes": [2, 4]},
        "training": {"steps": steps, "val_every": 2, "preview_every": 2, "checkpoint_every": 1000,
                     "device": device, "lr_augmentation": 0.01},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def train(cfg: dict, export: Path | None = None) -> str:
    """Run a Trainer to the end; return a one-line detail (steps/s, final loss, theta)."""
    from l2s_gui.config import Config
    from l2s_gui.events import DoneEvent, StepEvent
    from l2s_gui.trainer import Trainer

    trainer = Trainer(Config.from_dict(cfg))
    events = list(trainer.run())
    done = [e for e in events if isinstance(e, DoneEvent)]
    if not done or done[-1].reason != "finished":
        raise RuntimeError(f"training ended with {done[-1].reason if done else 'no done event'}: "
                           f"{done[-1].message if done else ''}")
    steps = [e for e in events if isinstance(e, StepEvent)]
    last = steps[-1]
    losses = [v for k, v in vars(last).items() if "loss" in k and isinstance(v, float)]
    if not all(np.isfinite(losses)):
        raise RuntimeError(f"non-finite loss at step {last.step}: {losses}")
    if export is not None:
        trainer.export(export)
    return f"{len(steps)} steps, {last.it_per_s:.1f} it/s, loss {losses[0]:.3f}"


def check_synthesis(device: torch.device, backend: str, ndim: int) -> str:
    from l2s_gui.config import SynthesisConfig
    from l2s_gui.synthesis import build_generator

    shape = (48, 40) if ndim == 2 else (32, 32, 32)
    gen = build_generator(SynthesisConfig(backend=backend), 6, ndim).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    labels = torch.randint(0, 6, (4, *shape), generator=g, device=device)
    image, deformed = gen(labels, g)
    _sync(device)
    if image.shape != (4, 1, *shape) or deformed.shape != labels.shape:
        raise RuntimeError(f"shapes {tuple(image.shape)}, {tuple(deformed.shape)}")
    if image.device.type != device.type or deformed.device.type != device.type:
        raise RuntimeError(f"outputs on {image.device} / {deformed.device}")
    if not torch.isfinite(image).all() or image.min() < -1e-4 or image.max() > 1 + 1e-4:
        raise RuntimeError(f"image range {float(image.min()):.3g}..{float(image.max()):.3g}")
    return f"batch 4 x {'x'.join(map(str, shape))}"


def check_generator_parts(device: torch.device, ndim: int) -> str:
    """Issue 9 parts on the device: flip with label swap, skull strip, resolution randomisation and
    the SVF field at the defaults; reproducible, no folding, image in [0, 1]."""
    from l2s_gui.config import SynthesisConfig
    from l2s_gui.synthesis import SynthSegGenerator, jacobian_determinant

    shape = (48, 40) if ndim == 2 else (32, 32, 32)
    perm = torch.tensor([0, 2, 1, 4, 3, 5])
    gen = SynthSegGenerator(SynthesisConfig(skull_strip_probability=0.5), 6, ndim, flip_permutation=perm,
                            extracerebral=[False] * 5 + [True]).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    labels = torch.randint(0, 6, (8, *shape), generator=g, device=device)
    image, deformed = gen(labels, torch.Generator(device=device).manual_seed(1))
    again, deformed2 = gen(labels, torch.Generator(device=device).manual_seed(1))
    _sync(device)
    if image.device.type != device.type or not torch.equal(deformed, deformed2):
        raise RuntimeError("not on the device or not reproducible")
    if not torch.isfinite(image).all() or image.min() < -1e-4 or image.max() > 1 + 1e-4:
        raise RuntimeError(f"image range {float(image.min()):.3g}..{float(image.max()):.3g}")
    flipped = gen.flip(labels, torch.Generator(device=device).manual_seed(2))
    ok = [(f == labels[i]).all() or (f == perm.to(device)[labels[i].flip(0)]).all() for i, f in enumerate(flipped)]
    if not all(bool(o) for o in ok):
        raise RuntimeError("flip is not an exact label swap")
    jac = jacobian_determinant(gen.sampling_coords(16, shape, torch.Generator(device=device).manual_seed(3), device))
    folded = float((jac <= 0).float().mean())
    if folded:
        raise RuntimeError(f"folded fraction {folded:.2e}")
    return f"batch 8 x {'x'.join(map(str, shape))}, folded fraction 0"


def check_segment(device: torch.device, data: Path, ndim: int, tmp: Path) -> str:
    import nibabel as nib

    from l2s_gui.io import load_scan
    from l2s_gui.model_io import load_model
    from l2s_gui.segment import segment_scan

    model_path = tmp / f"model{ndim}d.safetensors"
    if not model_path.is_file():
        train(config_dict(data, str(device), ndim, steps=2), export=model_path)
    scan_path = tmp / "scan_thick.nii.gz"  # the first real scan with 2 mm slices along the last axis
    scan = load_scan(data / "images" / "s0.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(scan.data[:, :, ::2]), np.diag([1.0, 1.0, 2.0, 1.0])),
             str(scan_path))
    scan = load_scan(scan_path)
    model = load_model(model_path, device)
    if model.table.flip_classes() is None:
        raise RuntimeError(f"the model's table {model.table.values} allows no flip")
    result = segment_scan(model, scan, device, flip=True, clean=True)
    _sync(device)
    if not result.flipped or result.labels.shape != scan.shape:
        raise RuntimeError(f"flipped {result.flipped}, shape {result.labels.shape} vs {scan.shape}")
    detail = f"{len(result.volumes_mm3)} structures, {result.cleaned_voxels} voxels cleaned"
    if device.type != "cpu":
        on_cpu = segment_scan(load_model(model_path, "cpu"), scan, "cpu", flip=True, clean=True)
        agree = float((on_cpu.labels == result.labels).mean())
        if agree < 0.99:
            raise RuntimeError(f"labels agree with the CPU's on {100 * agree:.2f}% of voxels only")
        detail += f", {100 * agree:.2f}% equal to the CPU's"
    return detail


def check_torchrun(device: torch.device, data: Path, tmp: Path) -> str:
    import yaml

    cfg_path = tmp / "torchrun.yaml"
    cfg_path.write_text(yaml.safe_dump(config_dict(data, str(device) if device.type == "cpu" else "cuda", 2)))
    run = tmp / "torchrun_run"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "l2s_gui.cli",
           "train", str(cfg_path), "-o", str(run), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"exit status {proc.returncode}: {tail[0]}")
    if not (run / "model.safetensors").is_file():
        raise RuntimeError("no model.safetensors written")
    return "1 process, model written"


def check_experiments_full_mode(device: torch.device, tmp: Path) -> str:
    import nibabel as nib

    from experiments import run as experiments_run
    from l2s_gui.device import resolve_device

    maps = tmp / "experiment_maps"
    maps.mkdir(exist_ok=True)
    for i in range(6):  # 1 test map, 1 validation map, 4 synthesis maps
        nib.save(nib.Nifti1Image(brain_labels((40, 32, 36), 200 + i), np.eye(4)), str(maps / f"map{i}.nii.gz"))
    out = tmp / "experiments_full"
    with open(tmp / "experiments_full.log", "w") as log, contextlib.redirect_stdout(log):  # one line per path
        rc = experiments_run.main(["all", "--mode", "full", "--label-maps", str(maps), "--out", str(out),
                                   "--cache", str(tmp / "experiments_cache"), "--seeds", "0", "--base-steps", "4",
                                   "--steps", "4", "--device", str(device)])
    if rc != 0:
        raise RuntimeError(f"experiments.run exit status {rc}")
    missing = [f"{name}/recovery.csv" for name in experiments_run.EXPERIMENTS
               if not (out / name / "recovery.csv").is_file()]
    if missing:
        raise RuntimeError(f"no report: {', '.join(missing)}")
    results = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
    devices, want = {r["device"] for r in results}, str(resolve_device(str(device)))   # 'cuda' -> 'cuda:0'
    if devices != {want}:
        raise RuntimeError(f"runs trained on {sorted(devices)}, not {want}")
    return f"{len(results)} runs, reports of {len(experiments_run.EXPERIMENTS)} experiments"


def paths(device: torch.device, data: Path, tmp: Path) -> list[tuple[str, Callable[[], str]]]:
    dev = str(device)
    out: list[tuple[str, Callable[[], str]]] = []
    for backend in ("torch", "cornucopia"):
        for ndim in (2, 3):
            out.append((f"synthesis-{backend}-{ndim}d", lambda b=backend, n=ndim: check_synthesis(device, b, n)))
    out.append(("generation-labels-2d", lambda: train(config_dict(data, dev, 2,
                                                                  data={"label_table": "freesurfer_4class"}))))
    out.append(("generator-parts-2d", lambda: check_generator_parts(device, 2)))
    out.append(("generator-parts-3d", lambda: check_generator_parts(device, 3)))
    out.append(("train-3d-skull-strip", lambda: train(config_dict(
        data, dev, 3, data={"label_table": "freesurfer_4class"}, synthesis={"skull_strip_probability": 0.5}))))
    for ndim in (2, 3):
        for name, mode, route in (("naive", "naive", "reverse"), ("exact", "exact", "reverse"),
                                  ("exact-jvp", "exact", "jvp"), ("approx", "approx", "reverse")):
            out.append((f"train-{ndim}d-{name}", lambda n=ndim, m=mode, r=route: train(
                config_dict(data, dev, n, training={"hypergradient": m, "hypergradient_route": r}))))
        out.append((f"train-{ndim}d-exact-bf16", lambda n=ndim: train(
            config_dict(data, dev, n, training={"hypergradient": "exact", "precision": "bf16"}))))
    out.append(("train-2d-nonparametric", lambda: train(config_dict(
        data, dev, 2, augmentation={"kind": "nonparametric", "residual_widths": [4, 8]}))))
    for ndim in (2, 3):
        out.append((f"segment-{ndim}d-flip", lambda n=ndim: check_segment(device, data, n, tmp)))
    out.append(("torchrun-1proc", lambda: check_torchrun(device, data, tmp)))
    out.append(("experiments-full-mode", lambda: check_experiments_full_mode(device, tmp)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="default: the first CUDA device; 'cpu' runs the paths on the CPU")
    p.add_argument("--only", action="append", default=[], help="run the paths whose name contains this (repeatable)")
    p.add_argument("--verbose", action="store_true", help="print the traceback of a failing path")
    args = p.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check")
            return 0
        args.device = "cuda:0"
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: {name}, torch {torch.__version__}", flush=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="l2s_gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        data = make_data(tmp / "data")
        todo = [(n, f) for n, f in paths(device, data, tmp) if not args.only or any(o in n for o in args.only)]
        start_all = time.perf_counter()
        for label, fn in todo:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            try:
                detail = fn()
                _sync(device)
                ok = True
            except Exception as exc:  # noqa: BLE001 - one failing path must not stop the others
                ok = False
                lines = str(exc).strip().splitlines()
                detail = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                if args.verbose:
                    traceback.print_exc()
            seconds = time.perf_counter() - start
            if device.type == "cuda":
                detail += f", peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'}  {label:<26} {seconds:7.2f} s  {detail}", flush=True)
        print(f"gpu_check: {len(todo) - failed}/{len(todo)} passed in {time.perf_counter() - start_all:.1f} s "
              f"on {name}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
