"""What the design choices of the recovery experiments buy (docs/experiments/README.md): the
noise-only L runs at presets 0 and 0.15 (seed 0), as in the experiment, and with one choice undone:

* ``no warm start``: the network starts random (no base), the run otherwise the same;
* ``constant theta rate``: theta's learning rate stays at its initial value (no cosine decay).

    python -m experiments.ablation --out runs/experiments --jobs 2 --threads 1 \\
        --write docs/experiments/cpu/ablation.md

Runs are cached in ``<out>/runs`` like the experiments' (the "as in the experiment" runs are the
experiment's own runs when it has been run with the same ``--out``).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from .common import DEFAULT_LABEL_MAPS, load_experiment, publish
from .run import Task, base_specs, learn2synth_specs, prepare, run_tasks

PRESETS = ["0", "0.15"]


def variants(spec: dict) -> dict[str, dict]:
    out = {"as in the experiment": spec}
    cold = copy.deepcopy(spec)
    cold["config"]["training"].pop("init_from")
    cold["name"] = spec["name"] + "_cold"
    out["no warm start"] = cold
    flat = copy.deepcopy(spec)
    flat["config"]["training"]["lr_augmentation_schedule"] = "constant"
    flat["name"] = spec["name"] + "_flat"
    out["constant theta rate"] = flat
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.ablation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="cpu")
    ap.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS))
    ap.add_argument("--out", default="runs/experiments")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    exp = load_experiment("noise_only", args.mode)
    exp["seeds"] = exp["seeds"][:1]
    exp["presets"] = [p for p in exp["presets"] if p["name"] in PRESETS]
    data = prepare(exp, args.label_maps, args.cache, None, log=lambda m: None)
    runs_dir = (Path(args.out) / "runs").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    bases = base_specs(exp, data)
    seed = next(iter(bases))
    tasks, labels = [Task("B", [], lambda _r, s=bases[seed]: s)], []
    for spec in learn2synth_specs(exp, data, bases, runs_dir):
        for label, v in variants(spec).items():
            key = f"{spec['preset']['name']}|{label}"
            tasks.append(Task(key, ["B"], lambda _r, s=v: s))
            labels.append((spec["preset"], label, key))
    results = run_tasks(tasks, runs_dir, args.jobs, args.threads)
    lines = ["| preset | start | run | learned sigma (mean of the last 25%) | final sigma | abs error | "
             "test Dice at the preset |", "|---|---|---|---|---|---|---|"]
    for preset, label, key in labels:
        r = results[key]
        err = abs(r["learned"]["sigma"] - preset["sigma"])
        lines.append(f"| {preset['name']} | {preset['start']['sigma']:g} | {label} | {r['learned']['sigma']:.3f} | "
                     f"{r['final']['sigma']:.3f} | {err:.3f} | {r['dice'][preset['name']]['mean']:.3f} |")
    text = (f"Noise-only L runs, seed {seed}, {exp['finetune']['steps']} steps each ({args.mode} mode); one design "
            "choice undone "
            "at a time.\n\n" + "\n".join(lines) + "\n")
    publish(text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
