"""Time one batch of synthesis: the batched torch generator vs the per-sample cornucopia backend.

Configs: the reference code's 2D setting (batch 64 slices of 192 x 176, 24 classes) and a 3D one
(batch 1, 96^3). Label maps are random smooth blobs (argmax of upsampled Gaussian noise) with
contiguous ids. Prints ms per batch (median over repeats, after warm-up) and the ratio.

    python benchmarks/synthesis_bench.py                       # defaults, cuda if available
    python benchmarks/synthesis_bench.py --device cpu --batch 8 --size3d 48 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from l2s_gui.config import SynthesisConfig
from l2s_gui.synthesis import CornucopiaGenerator, SynthSegGenerator


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
    args = parser.parse_args()

    device = torch.device(args.device)
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
        t_fast = time_ms(lambda: fast(labels, gen), device, args.warmup, args.repeats)
        row = f"{name:<22} {t_fast:>10.1f}"
        if args.no_cornucopia:
            row += f" {'-':>14} {'-':>8}"
        else:
            slow = CornucopiaGenerator(cfg, args.classes, ndim)
            t_slow = time_ms(lambda: slow(labels, gen), device, args.warmup, args.repeats)
            row += f" {t_slow:>14.1f} {t_slow / t_fast:>7.1f}x"
        print(row + f" {1e3 * batch / t_fast:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
