"""Time one batch of synthesis: the batched torch generator vs the per-sample cornucopia backend.

Configs: the reference code's 2D setting (batch 64 slices of 192 x 176, 24 classes) and a 3D one
(batch 1, 96^3). Label maps are random smooth blobs (argmax of upsampled Gaussian noise) with
contiguous ids. Prints ms per batch (median over repeats, after warm-up) and the ratio.

    python benchmarks/synthesis_bench.py                       # defaults, cuda if available
    python benchmarks/synthesis_bench.py --device cpu --batch 8 --size3d 48 --repeats 2
    python benchmarks/synthesis_bench.py --step-share --device cpu   # issue 9: share of a step

``--step-share``: synthesis as a fraction of a whole ``Trainer.train_step`` at the default config
(``Config()`` defaults: 2D, batch 4, UNet widths 16-64, SynthesisConfig defaults with flip,
resolution randomisation and the SVF field) on FreeSurfer-id label maps (so the flip runs), for
methods synthseg and learn2synth: the trainer's generator call is timed inside the step (the step
time includes data sampling, synthesis, augmentation, forward, backward and updates).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from l2s_gui.config import Config, SynthesisConfig
from l2s_gui.synthesis import CornucopiaGenerator, SynthSegGenerator

FS_VALUES = [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
             41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60]
"""FreeSurfer ids of SynthSeg's training label maps (both hemispheres: the flip swaps them)."""


def smooth_labels(batch: int, spatial: tuple[int, ...], n_classes: int, device: torch.device,
                  seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    coarse = torch.randn((batch, n_classes) + (6,) * len(spatial), generator=g, device=device)
    return F.interpolate(coarse, size=spatial, mode=mode, align_corners=True).argmax(1)


def time_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def step_share(device: torch.device, size2d: tuple[int, int], ndim: int, size3d: int, warmup: int,
               steps: int) -> None:
    """Synthesis share of ``Trainer.train_step`` at the default config (see the module docstring)."""
    from pathlib import Path

    from l2s_gui.data import TrainingData
    from l2s_gui.labels import LabelTable
    from l2s_gui.trainer import Trainer

    table = LabelTable.from_values(FS_VALUES)
    spatial = list(size2d) if ndim == 2 else [size3d] * 3
    shape = (size2d[0], 16, size2d[1]) if ndim == 2 else (size3d,) * 3
    maps = []
    for seed in range(2):
        ids = smooth_labels(1, shape, len(FS_VALUES), torch.device("cpu"), seed)[0]
        maps.append(ids.to(torch.uint8))
    data = TrainingData(table, ndim, 1, spatial, False, maps, [Path(f"generated_{i}") for i in range(2)], [], [])
    for method in ("synthseg", "learn2synth"):
        cfg = Config.from_dict({"data": {"label_maps": ["generated"], "ndim": ndim, "slice_axis": 1},
                                "training": {"method": method, "device": str(device), "steps": 10 ** 9,
                                             "val_every": 10 ** 9, "preview_every": 10 ** 9,
                                             "checkpoint_every": 10 ** 9},
                                "recovery": {"enabled": True, "sigma": 0.1, "inu_c": [0.5, 0.5, 0.5]}})
        trainer = Trainer(cfg, run=None, data=data)
        assert getattr(trainer.synth, "flip_permutation", None) is not None or \
            getattr(getattr(trainer.synth, "generator", None), "flip_permutation", None) is not None
        synth_ms, ncalls, started = [0.0], [0], [0.0]

        def before(_module, _args, started=started) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started[0] = time.perf_counter()

        def after(_module, _args, _output, synth_ms=synth_ms, ncalls=ncalls, started=started) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            synth_ms[0] += 1e3 * (time.perf_counter() - started[0])
            ncalls[0] += 1
        trainer.synth.register_forward_pre_hook(before)  # hooks time the generator without changing it
        trainer.synth.register_forward_hook(after)
        for _ in range(warmup):
            trainer.train_step()
            trainer.step += 1
        synth_ms[0], ncalls[0] = 0.0, 0
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
            trainer.step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total = 1e3 * (time.perf_counter() - start)
        calls = f"{ncalls[0] / steps:.1f} generator calls per step"
        print(f"{method:<12} {ndim}D {'x'.join(map(str, spatial))} batch {cfg.data.batch_size}: "
              f"step {total / steps:.0f} ms, synthesis {synth_ms[0] / steps:.0f} ms "
              f"= {100 * synth_ms[0] / total:.1f}% of the step ({calls})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64, help="2D batch size (default 64)")
    parser.add_argument("--size2d", type=int, nargs=2, default=[192, 176])
    parser.add_argument("--batch3d", type=int, default=1)
    parser.add_argument("--size3d", type=int, default=96, help="3D edge length (default 96)")
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cornucopia", action="store_true", help="time the torch backend only")
    parser.add_argument("--step-share", action="store_true",
                        help="synthesis share of a Trainer.train_step at the default config (issue 9)")
    parser.add_argument("--ndim", type=int, default=2, help="--step-share: 2 (default config) or 3")
    parser.add_argument("--steps", type=int, default=10, help="--step-share: timed steps")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.step_share:
        print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
        step_share(device, tuple(args.size2d), args.ndim, args.size3d, args.warmup, args.steps)
        return
    cfg = SynthesisConfig()
    configs = [
        (f"2D {args.batch}x{args.size2d[0]}x{args.size2d[1]}", args.batch, tuple(args.size2d)),
        (f"3D {args.batch3d}x{args.size3d}^3", args.batch3d, (args.size3d,) * 3),
    ]
    print(f"device: {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({torch.get_num_threads()} threads)")
          + f", {args.classes} classes, torch {torch.__version__}, median of {args.repeats}"
          + f" after {args.warmup} warm-up")
    print(f"{'config':<22} {'torch ms':>10} {'cornucopia ms':>14} {'ratio':>8} {'torch img/s':>12}")
    for name, batch, spatial in configs:
        labels = smooth_labels(batch, spatial, args.classes, device)
        ndim = len(spatial)
        fast = SynthSegGenerator(cfg, args.classes, ndim)
        gen = torch.Generator(device=device).manual_seed(0)
        t_fast = time_ms(lambda fast=fast, labels=labels, gen=gen: fast(labels, gen), device, args.warmup, args.repeats)
        row = f"{name:<22} {t_fast:>10.1f}"
        if args.no_cornucopia:
            row += f" {'-':>14} {'-':>8}"
        else:
            slow = CornucopiaGenerator(cfg, args.classes, ndim)
            t_slow = time_ms(lambda slow=slow, labels=labels, gen=gen: slow(labels, gen), device, args.warmup,
                             args.repeats)
            row += f" {t_slow:>14.1f} {t_slow / t_fast:>7.1f}x"
        print(row + f" {1e3 * batch / t_fast:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
