"""Every method on the same data, side by side (issue 11): Dice on held-out real images, the
Inspector's final accuracy and the wall time of each method, mean over seeds with the worst seed.

    python -m experiments.compare --setting recovery,mni152 --seeds 0,1,2 --jobs 2 --threads 1
    python -m experiments.compare --setting recovery --mode full --device cuda     # on a GPU

Two settings:

* ``recovery``: the CPU recovery setting of the experiments (``noise_inu``, cpu mode): the "real"
  images are synthetic images corrupted with sigma 0.10 and INU c = 0.5 (K = 3 fields of 2, 4, 8
  nodes); every method continues its seed's base network (the experiments' run cache, shared) for
  the same number of steps; Dice on the fixed corrupted test images from the 3 held-out label maps.
  The real pairs are drawn afresh at every step (the engine's recovery mode), so the real-pair
  methods (mixed, finetuned, SynthMix) see an unlimited supply of target-domain pairs here: an
  upper bound of what a handful of scans gives them.
* ``mni152``: the built-in sample as the real domain (the demo: the MNI152 T1 template and two
  deformed copies with their labels; one pair held out for validation, the Dice reported), every
  method started from the shipped starter model for the demo's 300 steps; self-training gets a
  third deformed copy of the template as its unlabelled scan.

Methods (``METHODS``): naive SynthSeg (theta fixed at the engine's start), Learn2Synth, Mixed and
Finetuned SynthSeg (Learn2Synth Sec. 4.2.1), SynthMix's aligned mix-up, Learn2Synth + GBA contrast
blending, Learn2Synth + self-training. Every run trains the Inspector alongside (it never trains
the segmenter): its final patch accuracy says how far the images each method trains on are from the
real ones (0.5: indistinguishable).

Results: ``<out>/comparison/<setting>/`` (``comparison.csv``, ``comparison_summary.csv``,
``README.md``, ``comparison.png``); ``--publish DIR`` copies them there (the committed
``docs/experiments/cpu/comparison``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .common import DEFAULT_LABEL_MAPS, deep_merge, load_experiment, preset_recovery
from .prep import DEFAULT_CACHE
from .run import (
    Task,
    _base_config,
    _finetune,
    _start_augmentation,
    _test_spec,
    base_specs,
    prepare,
    run_tasks,
    with_overrides,
)

SETTINGS = ("recovery", "mni152")
RECOVERY_PRESET = "0.10"

# method name -> (label, config overrides); "{base}" style warm starts are filled per setting
METHODS: dict[str, tuple[str, dict]] = {
    "naive": ("naive SynthSeg", {"training": {"method": "synthseg"}}),
    "learn2synth": ("Learn2Synth", {"training": {"method": "learn2synth"}}),
    "mixed": ("Mixed SynthSeg", {"training": {"method": "mixed", "mixed_real_fraction": 0.25}}),
    "finetuned": ("Finetuned SynthSeg", {"training": {"method": "finetuned"}}),
    "synthmix": ("SynthMix aligned mix-up", {"training": {"method": "synthmix"}}),
    "l2s_gba": ("Learn2Synth + GBA contrast", {
        "training": {"method": "learn2synth"},
        "synthesis": {"contrast_blend_probability": 0.5}}),
    "l2s_self": ("Learn2Synth + self-training", {
        "training": {"method": "learn2synth"},
        "self_training": {"rounds": 2, "steps": 100}}),   # after the method's steps: 2 rounds of 100
}
INSPECTOR = {"inspector": {"enabled": True}}
UNLABELLED_IMAGES = 64   # recovery setting: corrupted images of the training maps, labels dropped


def _recovery_specs(args, methods: list[str]) -> tuple[list[Task], dict]:
    exp = with_overrides(load_experiment("noise_inu", args.mode), seeds=args.seeds, device=args.device,
                         steps=args.steps)
    data = prepare(exp, args.label_maps, args.cache, None, log=lambda m: None)
    runs_dir = (Path(args.out) / "runs").resolve()
    bases = base_specs(exp, data)
    # sigma 0.10 with INU (the quick mode keeps one preset only: its own)
    preset = next((p for p in exp["presets"] if p["name"] == RECOVERY_PRESET), exp["presets"][0])
    nodes = exp["l2s"].get("recovery", {}).get("inu_nodes", [2, 4, 8])
    base_cfg = _base_config(exp, data)
    tasks = [Task(f"B{seed}", [], (lambda s: lambda _r: s)(spec)) for seed, spec in bases.items()]
    for seed in exp["seeds"]:
        for m in methods:
            label, over = METHODS[m]
            hyper = over["training"]["method"] == "learn2synth"
            cfg = deep_merge(base_cfg, {
                "augmentation": _start_augmentation(exp, preset),
                "recovery": preset_recovery(preset, nodes),
                "training": _finetune(exp, seed, bases[seed], runs_dir, hyper)})
            cfg = deep_merge(deep_merge(cfg, over), INSPECTOR)
            spec = {"name": f"cmp_rec_{m}_s{seed}", "label": f"{label} s{seed}", "role": "C", "method": m,
                    "preset": preset, "config": cfg, "test": _test_spec(exp, data, [preset]),
                    "tail_fraction": 0.25}
            if "self_training" in over:
                spec["unlabelled_synthetic"] = {"preset": {k: preset[k] for k in ("name", "sigma", "inu_c")},
                                                "images": UNLABELLED_IMAGES, "seed": 4242 + seed}
            tasks.append(Task(f"{m}{seed}", [f"B{seed}"], (lambda s: lambda _r: s)(spec)))
    info = {"setting": "recovery", "preset": {k: preset[k] for k in ("name", "sigma", "inu_c")},
            "steps": int(exp["finetune"]["steps"]), "data": f"{len(data['train'])} training maps, "
            f"{len(data['test'])} held-out test maps, 2D coronal slices {'x'.join(map(str, data['shape']))} "
            f"at {data['factor']} mm"}
    return tasks, info


def _mni152_specs(args, methods: list[str]) -> tuple[list[Task], dict]:
    from l2s_gui.labels import load_label_table
    from l2s_gui.sample_data import CSF, GM, WM, sample_config, sample_paths

    cache = Path(args.out).resolve() / "sample"
    demo = sample_config(cache / "pairs")
    # the committed comparison predates the demo's SynthSeg-rule intensity prior: every synthesis
    # method here draws SynthSeg's uniform contrasts (the same specs, so its runs and figures reproduce)
    demo["synthesis"].pop("intensity_prior", None)
    if args.steps:
        demo["training"]["steps"] = args.steps
    demo["training"].update({"preview_every": 1000000, "checkpoint_every": 1000000, "log_every": 1,
                             "val_every": demo["training"]["steps"]})
    if args.device:
        demo["training"]["device"] = args.device
    else:
        demo["training"]["device"] = "cpu"
    # a third deformed copy: the unlabelled target scan of self-training (not a training pair)
    unlabelled = sample_paths(cache / "unlabelled", n_real_copies=3)["real_images"][-1]
    table = load_label_table(demo["data"]["label_table"])
    tissues = [int(table.values[c]) for c in table.to_classes(np.array([WM, GM, CSF]))]
    tasks = []
    for seed in args.seeds or [0, 1, 2]:
        for m in methods:
            label, over = METHODS[m]
            cfg = deep_merge(deep_merge(deep_merge(demo, {"training": {"seed": seed}}), over), INSPECTOR)
            if "self_training" in over:
                cfg["data"]["unlabelled_images"] = [str(unlabelled)]
            spec = {"name": f"cmp_mni_{m}_s{seed}", "label": f"{label} s{seed}", "role": "C", "method": m,
                    "config": cfg, "test": None}
            tasks.append(Task(f"{m}{seed}", [], (lambda s: lambda _r: s)(spec)))
    info = {"setting": "mni152", "steps": int(demo["training"]["steps"]),
            "data": "the MNI152 2009 T1 template at 2 mm and two deformed copies with their labels "
                    "(2 training pairs, 1 held-out validation pair), 2D coronal slices, the starter model's "
                    "classes; Dice of white matter, grey matter and CSF", "dice_classes": tissues}
    return tasks, info


SPECS: dict[str, Callable] = {"recovery": _recovery_specs, "mni152": _mni152_specs}


def _dice_of(result: dict, info: dict) -> float:
    if info["setting"] == "recovery":
        return float(next(iter(result["dice"].values()))["mean"])
    per = result["last_val_per_class"]   # the sample labels WM, GM and CSF only (as the demo's summary)
    return float(np.mean([per[str(v)] for v in info["dice_classes"] if str(v) in per]))


def summarise(info: dict, results: dict[str, dict], methods: list[str], seeds: list[int]) -> list[dict]:
    """One row per method: Dice (mean over seeds, worst seed), Inspector accuracy, wall time."""
    rows = []
    for m in methods:
        runs = [results[f"{m}{s}"] for s in seeds if f"{m}{s}" in results]
        if not runs:
            continue
        dice = [_dice_of(r, info) for r in runs]
        acc = [r["inspector_accuracy"] for r in runs if r.get("inspector_accuracy") is not None]
        rows.append({"method": m, "label": METHODS[m][0], "seeds": len(runs),
                     "dice_mean": float(np.mean(dice)), "dice_worst": float(np.min(dice)),
                     "inspector_accuracy_mean": float(np.mean(acc)) if acc else float("nan"),
                     "wall_s_mean": float(np.mean([r["wall_s"] for r in runs]))})
    return rows


def _per_run_rows(info: dict, results: dict[str, dict], methods: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    for m in methods:
        for s in seeds:
            r = results.get(f"{m}{s}")
            if r is not None:
                rows.append({"method": m, "seed": s, "dice": _dice_of(r, info),
                             "inspector_accuracy": r.get("inspector_accuracy"), "wall_s": r["wall_s"],
                             "theta": json.dumps(r.get("final", {}))})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_report(folder: Path, setting: str, info: dict, summary: list[dict], per_run: list[dict],
                 env: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "comparison.csv", per_run)
    _write_csv(folder / "comparison_summary.csv", summary)
    best = max(summary, key=lambda r: r["dice_mean"]) if summary else None
    lines = [f"# Method comparison: {setting}", "",
             f"Data: {info['data']}; {info['steps']} training steps per run."]
    if setting == "recovery":
        p = info["preset"]
        lines.append(f"Real domain: synthetic images with sigma {p['sigma']} noise and INU c = "
                     f"{'/'.join(str(c) for c in p['inu_c'])}; test Dice on the held-out maps' images.")
    lines += ["", f"Machine: {env['machine']}; {env['jobs']} runs in parallel, {env['threads']} thread(s) each.",
              "", "| method | Dice on held-out real images, mean (worst seed) | Inspector accuracy "
              "| wall time per run |",
              "|---|---|---|---|"]
    for r in summary:
        mark = " **(best)**" if best is not None and r is best else ""
        lines.append(f"| {r['label']}{mark} | {_fmt(r['dice_mean'])} ({_fmt(r['dice_worst'])}) | "
                     f"{_fmt(r['inspector_accuracy_mean'], 2)} | {r['wall_s_mean']:.0f} s |")
    lines += ["", f"Mean over {max((r['seeds'] for r in summary), default=0)} seed(s); the Inspector's accuracy "
              "is its patch-wise accuracy at the end of the run on real validation images vs the images the "
              "method trains on (0.5: it cannot tell them apart). Finetuned SynthSeg trains on the real pairs "
              "only, so its Inspector compares real with real images: 0.5 by construction."]
    lines += _margin_lines(summary, per_run) + ["", "![comparison](comparison.png)", ""]
    (folder / "README.md").write_text("\n".join(lines))
    _plot(folder / "comparison.png", setting, summary, per_run)


def _margin_lines(summary: list[dict], per_run: list[dict]) -> list[str]:
    """One sentence setting the winner's margin beside the spread of the seeds of one method."""
    if len(summary) < 2:
        return []
    ranked = sorted(summary, key=lambda r: -r["dice_mean"])
    by_method: dict[str, list[float]] = {}
    for row in per_run:
        by_method.setdefault(row["method"], []).append(row["dice"])
    spread = max(max(d) - min(d) for d in by_method.values())
    return ["", f"The best mean ({ranked[0]['label']}) leads the next ({ranked[1]['label']}) by "
                f"{ranked[0]['dice_mean'] - ranked[1]['dice_mean']:.3f}; the whole range of means is "
                f"{ranked[0]['dice_mean'] - ranked[-1]['dice_mean']:.3f}, and the seeds of one method differ by "
                f"up to {spread:.3f}."]


def _plot(path: Path, setting: str, summary: list[dict], per_run: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["method"] for r in summary]
    labels = [r["label"].replace(" + ", "\n+ ") for r in summary]
    for ax, key, run_key, title in ((axes[0], "dice_mean", "dice", "Dice on held-out real images"),
                                    (axes[1], "inspector_accuracy_mean", "inspector_accuracy",
                                     "Inspector accuracy (0.5 = indistinguishable)")):
        ax.bar(range(len(summary)), [r[key] for r in summary], color="#8fb3d9")
        for i, m in enumerate(names):
            pts = [r[run_key] for r in per_run if r["method"] == m and r[run_key] is not None]
            ax.plot([i] * len(pts), pts, "k.", ms=6)
        ax.set_xticks(range(len(summary)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[1].axhline(0.5, color="0.4", ls="--", lw=1)
    fig.suptitle(f"{setting}: bars = mean over seeds, dots = seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="recovery,mni152", help="recovery and/or mni152 (default: %(default)s)")
    ap.add_argument("--methods", default=",".join(METHODS), help="methods to run (default: all)")
    ap.add_argument("--mode", default="cpu", choices=["quick", "cpu", "full"], help="the experiments' mode (recovery)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override the steps of every run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS))
    ap.add_argument("--cache", default=None, help=f"preprocessed label maps (default: {DEFAULT_CACHE})")
    ap.add_argument("--out", default="runs/experiments", help="the experiments' output folder (shares the bases)")
    ap.add_argument("--publish", default=None, help="copy the reports to DIR/<setting>/")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    settings = [s.strip() for s in args.setting.split(",") if s.strip()]
    if set(settings) - set(SETTINGS):
        ap.error(f"unknown setting(s) {sorted(set(settings) - set(SETTINGS))}; choose from {', '.join(SETTINGS)}")
    runs_dir = (Path(args.out) / "runs").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
                      if not args.device or args.device == "cpu" else args.device,
           "jobs": args.jobs, "threads": args.threads}
    for setting in settings:
        start = time.perf_counter()
        tasks, info = SPECS[setting](args, methods)
        print(f"[compare {setting}] {len(tasks)} runs, {args.jobs} at a time", flush=True)
        results = run_tasks(tasks, runs_dir, args.jobs, args.threads)
        folder = Path(args.out) / "comparison" / setting
        summary = summarise(info, results, methods, args.seeds)
        write_report(folder, setting, info, summary, _per_run_rows(info, results, methods, args.seeds),
                     {**env, "wall_s": time.perf_counter() - start})
        if args.publish:
            dest = Path(args.publish) / setting
            dest.mkdir(parents=True, exist_ok=True)
            for f in folder.iterdir():
                shutil.copy2(f, dest / f.name)
        print(f"[compare {setting}] done in {time.perf_counter() - start:.0f} s: {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
