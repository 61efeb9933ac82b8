"""Profile one hyper-step (torch.profiler) on a benchmark config and print where the time goes.

    python benchmarks/profile_hypergrad.py --preset cpu --only 2d --mode exact
    python benchmarks/profile_hypergrad.py --preset gpu --only 3d-128 --mode naive --trace /tmp/trace.json

Prints the top operators by self time (CPU, and CUDA on a GPU) and a summary by phase (the
``record_function`` ranges that ``l2s_gui.hypergrad.hyper_step`` puts around its parts: synthetic
pass, real pass, tangent, hypergradient). ``--route``: the route of ``--mode exact`` (reverse, the
default, or jvp). ``--trace`` also writes a Chrome trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

from l2s_gui import hypergrad  # noqa: E402
from l2s_gui.losses import soft_dice_loss  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(bench.PRESETS))
    p.add_argument("--only", default="", help="first config whose name contains this")
    p.add_argument("--mode", default="exact", help="naive | exact | approx | plain")
    p.add_argument("--route", default="reverse", choices=["reverse", "jvp"], help="route of --mode exact")
    p.add_argument("--device", default="auto")
    p.add_argument("--activation", default="elu")
    p.add_argument("--threads", type=int)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--trace", help="write a Chrome trace here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    cfg = next(c for c in bench.PRESETS[args.preset].configs if args.only in c.name)
    data = bench.make_data(cfg)
    trainer = bench.make_trainer(cfg, data, str(device), activation=args.activation)
    x, y, draw = trainer.sample_synthetic_batch()
    x_real, y_real = trainer.sample_real_batch()
    phi = dict(trainer.net.named_parameters())
    _, grads = hypergrad.loss_and_grads(trainer.net, phi, x, y, soft_dice_loss, trainer.autocast)
    trainer.inner.commit(grads)

    def step():
        if args.mode == "plain":
            with torch.no_grad():
                x_aug = trainer.aug(x, draw)
            return hypergrad.loss_and_grads(trainer.net, phi, x_aug, y, soft_dice_loss, trainer.autocast)
        return hypergrad.hyper_step(trainer.net, trainer.aug, trainer.inner, x, draw, y, x_real, y_real,
                                    soft_dice_loss, mode=args.mode, autocast=trainer.autocast,
                                    exact_route=args.route)

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        step()
        bench.sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{cfg.description}, mode {args.mode}, {bench.device_name(device)}")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    phases = [e for e in prof.key_averages() if e.key.startswith("phase: ")]
    print("phases (inclusive CPU time" + (", CUDA time" if device.type == "cuda" else "") + "):")
    for e in sorted(phases, key=lambda e: -e.cpu_time_total):
        extra = f", {e.device_time_total / 1e3:9.1f} ms CUDA" if device.type == "cuda" else ""
        print(f"  {e.key[7:]:40s} {e.count:3d} calls {e.cpu_time_total / 1e3:9.1f} ms{extra}")
    if args.trace:
        prof.export_chrome_trace(args.trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
