"""How far the INU exponents follow their hypergradient at another rate: the noise + INU L runs of a
mode at some presets and seeds, with ``training.lr_inu_scale`` (c's rate as a multiple of theta's)
set to each of ``--scales``. The mode's own scale reuses the experiment's runs (same ``--out``);
the others are trained and cached in ``<out>/runs`` beside them.

A component with a signal moves further towards where L_real wants it at a higher rate; one whose
L_real is flat only spreads wider over the seeds (a random walk of about the rate per step).

    python -m experiments.inu_rate --out runs/experiments --mode cpu3mm --presets 0.05,0.10 \\
        --scales 5,10 --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from .common import DEFAULT_LABEL_MAPS, MODES, load_experiment, publish
from .prep import DEFAULT_CACHE
from .run import Task, base_specs, learn2synth_specs, prepare, run_tasks, with_overrides


def at_scale(spec: dict, scale: float, own: float | None) -> dict:
    """``spec`` with c's rate at ``scale`` x theta's; the experiment's own scale keeps the spec (and
    so its cached run) unchanged."""
    if own is not None and scale == own:
        return spec
    out = copy.deepcopy(spec)
    out["config"]["training"]["lr_inu_scale"] = float(scale)
    out["name"] = f"{spec['name']}_rate{scale:g}"
    return out


def table(rows: list[tuple[dict, float, dict]]) -> str:
    """One line per preset and scale: learned sigma and c_k (mean of the seeds' last 25%), the mean's
    error and the worst seed's error per component, and the seeds' spread of c_k."""
    lines = ["| preset | c rate (x theta's) | seeds | learned sigma | learned c1 / c2 / c3 | error of the mean "
             "c1 / c2 / c3 | worst seed's error c1 / c2 / c3 | seeds' range of c1 / c2 / c3 |",
             "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((p["name"], s) for p, s, _ in rows))
    for name, scale in keys:
        sel = [(p, r) for p, s, r in rows if p["name"] == name and s == scale]
        preset = sel[0][0]
        c = np.array([[r["learned"][f"c{k}"] for k in (1, 2, 3)] for _, r in sel])
        target = np.array(preset["inu_c"])
        sigma = np.mean([r["learned"]["sigma"] for _, r in sel])
        fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)   # noqa: E731
        lines.append(f"| {name} | {scale:g} | {len(sel)} | {sigma:.3f} | {fmt(c.mean(0))} | "
                     f"{fmt(abs(c.mean(0) - target))} | {fmt(abs(c - target).max(0))} | "
                     + " / ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(c.min(0), c.max(0))) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.inu_rate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/experiments", help="the experiments' output folder (with runs/)")
    ap.add_argument("--mode", choices=MODES, default="cpu3mm")
    ap.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS))
    ap.add_argument("--cache", default=None, help=f"preprocessed label maps (default: {DEFAULT_CACHE})")
    ap.add_argument("--factor", type=int, default=None, help="as for experiments.run")
    ap.add_argument("--presets", default="0.05,0.10", help="noise + INU preset names (default: 0.05,0.10)")
    ap.add_argument("--seeds", default=None, help="seeds, comma-separated (default: the mode's)")
    ap.add_argument("--scales", default="5,10", help="lr_inu_scale values, comma-separated (default: 5,10)")
    ap.add_argument("--steps", type=int, default=None,
                    help="override the L runs' finetune.steps (more hyper-steps; hyper_start clipped to half)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    exp = with_overrides(load_experiment("noise_inu", args.mode), steps=args.steps,
                         seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None)
    names = args.presets.split(",")
    known = [p["name"] for p in exp["presets"] + exp.get("extra_presets", [])]
    if not set(names) <= set(known):
        raise SystemExit(f"--presets {args.presets}: noise_inu ({args.mode} mode) has the presets {', '.join(known)}")
    scales = [float(s) for s in args.scales.split(",")]
    own = float(exp["lr_inu_scale"]) if "lr_inu_scale" in exp else None
    data = prepare(exp, args.label_maps, args.cache, args.factor, log=lambda _m: None)
    runs_dir = (Path(args.out) / "runs").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    bases = base_specs(exp, data)
    tasks = [Task(f"B{seed}", [], lambda _r, s=spec: s) for seed, spec in bases.items()]
    keys = []
    for spec in learn2synth_specs(exp, data, bases, runs_dir):   # every preset: their test sets are in the spec
        if spec["preset"]["name"] not in names:
            continue
        seed = spec["config"]["training"]["seed"]
        for scale in scales:
            key = f"{spec['preset']['name']}|{scale:g}|{seed}"
            run = at_scale(spec, scale, own)
            tasks.append(Task(key, [f"B{seed}"], lambda _r, s=run: s))
            keys.append((spec["preset"], scale, key))
    results = run_tasks(tasks, runs_dir, args.jobs, args.threads)
    rows = sorted(((p, s, results[k]) for p, s, k in keys), key=lambda t: (t[0]["name"], t[1]))
    text = (f"Noise + INU L runs ({args.mode} mode, {exp['finetune']['steps']} steps from the base), the INU "
            f"exponents at each rate; the experiment's own rate is {own:g}x.\n\n" if own is not None else
            f"Noise + INU L runs ({args.mode} mode), the INU exponents at each rate.\n\n") + table(rows)
    command = "python -m experiments.inu_rate " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"`{command.split(' --write')[0]}` (torch {torch.__version__}, {platform.machine()} CPU; wall times "
            f"per run {min(r['wall_s'] for _p, _s, r in rows):.0f}-{max(r['wall_s'] for _p, _s, r in rows):.0f} s)."
            "\n\n" + text)
    publish(text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
