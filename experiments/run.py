"""Run the Learn2Synth synthetic-recovery experiments (Sec. 4.1, Tables 1-4).

    python -m experiments.run noise_only --mode cpu --out runs/experiments
    python -m experiments.run all --mode full --label-maps ../shared/data/label_maps --out runs/exp_gpu

Experiments (configs in ``experiments/configs``):

* ``noise_only``   Table 1 (learned sigma per preset) and Table 2 (Dice of N, L, O at every preset);
* ``noise_inu``    Table 3 (learned sigma and c_1..c_3, K = 3 fields with M = 2, 4, 8, preset c = 0.5,
                   plus an unequal-c run) and Table 4 upper block (Dice of N, L, O);
* ``nonparametric`` Table 4 lower block: the residual augmentation (eq. 10-11 + eq. 9 noise) learned
                   on the same noise + INU "real" images (N shared with ``noise_inu``).

Modes: ``quick`` (tiny, for CI), ``cpu`` (4 mm slices: what fits a few CPU cores in about half an
hour), ``cpu3mm`` (3 mm slices and longer bases, which reach a clean Dice of 0.75; about 1.5x the
cost), ``full`` (paper-like, for a GPU). Stages: ``recovery`` (the L runs), ``dice`` (N and O runs and the
Dice tables). Everything lands in ``--out``: ``<out>/<experiment>/`` holds the tables (CSV, markdown)
and plots (PNG); ``<out>/runs/`` holds one folder per training run (history, weights, result), reused
when the same run is asked for again (rerunning a command resumes an interrupted experiment).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from .common import (
    DEFAULT_LABEL_MAPS,
    EXPERIMENTS,
    MODES,
    common_shape,
    deep_merge,
    load_experiment,
    preset_recovery,
    preset_sigma_value,
    run_folder,
    spec_id,
    split_maps,
    train_run,
)
from .prep import DEFAULT_CACHE, prepare_label_maps
from .report import write_report


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def prepare(exp: dict, label_maps: str, cache: str | None, factor: int | None, log=print) -> dict:
    """Preprocess the label maps and fix the data split and the sample shape."""
    prep = dict(exp.get("prep", {}))
    if factor is not None:
        prep["factor"] = factor
    files, table = prepare_label_maps(label_maps, factor=int(prep.get("factor", 1)),
                                      table=prep.get("table", "freesurfer_4class"),
                                      margin=int(prep.get("margin", 4)), cache=cache,
                                      crop_classes=prep.get("crop_classes"), log=log)
    split = exp.get("split", {})
    train, test = split_maps(files, float(split.get("test_fraction", 0.2)), int(split.get("seed", 0)))
    l2s = exp["l2s"]
    levels = len(l2s["network"]["widths"])
    shape = common_shape(files, int(l2s["data"].get("slice_axis", 1)), 2 ** (levels - 1))
    return {"train": [str(f) for f in train], "test": [str(f) for f in test], "table": str(table),
            "shape": shape, "factor": int(prep.get("factor", 1))}


def _base_config(exp: dict, data: dict) -> dict:
    # data.val_fraction of the training maps is held out for validation (engine, recovery mode)
    return deep_merge(exp["l2s"], {"data": {"label_maps": data["train"], "label_table": data["table"],
                                            "patch_size": data["shape"]}})


def _corruption(p: dict) -> dict:
    """A preset without its run settings (start values, targets): what the "real" images are."""
    return {k: v for k, v in p.items() if k in ("name", "sigma", "sigma_range", "inu_c")}


def _test_spec(exp: dict, data: dict, presets: list[dict] | None = None) -> dict:
    t = exp.get("test", {})
    presets = presets if presets is not None else exp["presets"]
    return {"maps": data["test"], "presets": [_corruption(p) for p in presets],
            "images": int(t.get("images", 64)), "seed": int(t.get("seed", 12345))}


def _tail(exp: dict) -> dict:
    return {"tail_fraction": float(exp.get("schedule", {}).get("tail_fraction", 0.25))}


def _seeds(exp: dict) -> list[int]:
    return [int(v) for v in exp.get("seeds", [0])]


def _finetune(exp: dict, seed: int, base: dict, runs_dir: Path, hyper: bool) -> dict:
    """Training settings of an L / N / O run: it continues the seed's base network for
    ``finetune.steps`` steps (L: the first ``finetune.hyper_start`` of them without hyper-steps)."""
    f = exp["finetune"]
    return {"seed": seed, "steps": int(f["steps"]), "hyper_start": int(f.get("hyper_start", 0)) if hyper else 0,
            "init_from": str(run_folder(base, runs_dir) / "model.safetensors")}


def base_specs(exp: dict, data: dict) -> dict[int, dict]:
    """The warm-start networks: naive SynthSeg on clean images (sigma 0, no INU), one per seed,
    validated on clean images from held-out maps. Identical in every experiment, so trained once."""
    b = exp["base"]
    aug = {"kind": "parametric", "noise": "fixed", "sigma_init": 0.0, "inu": False}
    out = {}
    for seed in _seeds(exp):
        cfg = deep_merge(_base_config(exp, data), {
            "augmentation": aug, "recovery": preset_recovery({"sigma": 0.0}, [2, 4, 8]),
            "training": {"method": "synthseg", "seed": seed, "steps": int(b["steps"]),
                         "lr_segmentation": float(b["lr_segmentation"]), "hyper_start": 0,
                         "lr_segmentation_schedule": b.get("lr_schedule", "constant"),
                         "lr_segmentation_final": float(b.get("lr_final", 0.1)),
                         "val_every": int(b.get("val_every", 500))}})
        for key in ("lr_augmentation", "lr_augmentation_schedule", "lr_augmentation_final", "hypergradient",
                    "hyper_every"):   # theta's settings: not used here, kept out of the run's identity
            cfg["training"].pop(key, None)
        out[seed] = {"name": f"B_s{seed}", "label": f"base seed {seed}", "role": "B",
                     "preset": {"name": "0", "sigma": 0.0}, "config": cfg,
                     "test": _test_spec(exp, data, exp["base_test_presets"])}
    return out


def _start_augmentation(exp: dict, p: dict) -> dict:
    """The learnable augmentation of an L run, started at the preset's ``start`` (away from it)."""
    aug = dict(exp["augmentation"])
    start = p.get("start", {})
    if "sigma" in start:
        aug["sigma_init"] = float(start["sigma"])
    if "c" in start:
        aug["inu_c_init"] = [float(v) for v in start["c"]]
    return aug


def learn2synth_specs(exp: dict, data: dict, bases: dict[int, dict], runs_dir: Path) -> list[dict]:
    base = _base_config(exp, data)
    nodes = exp["l2s"].get("recovery", {}).get("inu_nodes", [2, 4, 8])
    specs = []
    for seed in _seeds(exp):
        for p in exp["presets"] + exp.get("extra_presets", []):
            training = {"method": "learn2synth", **_finetune(exp, seed, bases[seed], runs_dir, True)}
            if "lr_inu_scale" in exp:   # the L runs' own setting: N and O keep their run identity
                training["lr_inu_scale"] = float(exp["lr_inu_scale"])
            cfg = deep_merge(base, {"augmentation": _start_augmentation(exp, p), "training": training,
                                    "recovery": preset_recovery(p, nodes)})
            specs.append({"name": f"{exp['name']}_L_{_safe(p['name'])}_s{seed}", "label": f"L {p['name']} s{seed}",
                          "role": "L", "preset": p, "start": p.get("start", {}), "config": cfg,
                          "test": _test_spec(exp, data), **_tail(exp)})
    return specs


def naive_specs(exp: dict, data: dict, bases: dict[int, dict], runs_dir: Path) -> list[dict]:
    """Naive SynthSeg: the augmentation fixed at the preset (a U[low, high] sigma preset uses the
    engine's per-image 'uniform' noise, since eq. 8 has one sigma)."""
    base = _base_config(exp, data)
    nodes = exp["l2s"].get("recovery", {}).get("inu_nodes", [2, 4, 8])
    specs = []
    for seed in _seeds(exp):
        for p in exp["presets"]:
            c = [float(v) for v in p.get("inu_c", [])]
            aug = {"kind": "parametric", "noise": "uniform" if p.get("sigma_range") else "fixed",
                   "sigma_init": preset_sigma_value(p), "inu": bool(c), "inu_nodes": nodes[:max(len(c), 1)],
                   "inu_c_init": c or [0.5]}
            if p.get("sigma_range"):
                aug["sigma_range"] = [float(v) for v in p["sigma_range"]]
            cfg = deep_merge(base, {"augmentation": aug, "recovery": preset_recovery(p, nodes),
                                    "training": {"method": "synthseg",
                                                 **_finetune(exp, seed, bases[seed], runs_dir, False)}})
            specs.append({"name": f"N_{'inu' if c else 'noise'}_{_safe(p['name'])}_s{seed}",
                          "label": f"N {p['name']} s{seed}", "role": "N", "preset": _corruption(p), "config": cfg,
                          "test": _test_spec(exp, data), **_tail(exp)})
    return specs


def optimized_specs(exp: dict, data: dict, bases: dict[int, dict], runs_dir: Path,
                    learned: dict[tuple[str, int], dict]) -> list[dict]:
    """SynthSeg from the base network with the augmentation fixed at what Learn2Synth learned
    (``learned``: (preset name, seed) -> L result); the nonparametric kind takes L's final residual
    network and sigma (``init_theta_from``)."""
    base = _base_config(exp, data)
    nodes = exp["l2s"].get("recovery", {}).get("inu_nodes", [2, 4, 8])
    specs = []
    for seed in _seeds(exp):
        for p in exp["presets"]:
            res = learned[(p["name"], seed)]
            aug = dict(exp["augmentation"])
            train = {"method": "synthseg", **_finetune(exp, seed, bases[seed], runs_dir, False)}
            if aug.get("kind") == "nonparametric":
                train["init_theta_from"] = str(Path(res["folder"]) / "model.safetensors")
            else:
                aug["sigma_init"] = res["learned"]["sigma"]
                cs = [res["learned"][k] for k in sorted(res["learned"]) if re.fullmatch(r"c\d+", k)]
                if cs:
                    aug["inu_c_init"] = cs
            cfg = deep_merge(base, {"augmentation": aug, "training": train, "recovery": preset_recovery(p, nodes)})
            specs.append({"name": f"{exp['name']}_O_{_safe(p['name'])}_s{seed}", "label": f"O {p['name']} s{seed}",
                          "role": "O", "preset": p, "config": cfg, "test": _test_spec(exp, data), **_tail(exp)})
    return specs


@dataclass
class Task:
    """A run whose spec is built once the runs it depends on have finished (an O run needs its L
    run's learned theta; every L / N / O run needs its seed's base network)."""

    key: str
    deps: list[str]
    make_spec: Callable[[dict[str, dict]], dict]


def run_tasks(tasks: list[Task], runs_dir: Path, jobs: int, threads: int, log=print,
              finished_only: bool = False) -> dict[str, dict]:
    """Run every task, up to ``jobs`` at a time, each as soon as its dependencies are done (in list
    order among the ready ones); finished runs (result.json present) are reused. Returns key -> result.
    ``finished_only``: train nothing; return the finished runs (a report of what is there)."""
    results: dict[str, dict] = {}
    pending = list(tasks)
    running: dict = {}
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=max(jobs, 1), mp_context=mp.get_context("spawn"))
    try:
        while pending or running:
            while len(running) < max(jobs, 1):   # start ready tasks (a reused run may make others ready)
                task = next((t for t in pending if all(d in results for d in t.deps)), None)
                if task is None:
                    break
                pending.remove(task)
                spec = task.make_spec(results)
                done = runs_dir / spec_id(spec) / "result.json"
                if done.is_file():
                    results[task.key] = json.loads(done.read_text())
                    continue
                if finished_only:
                    continue
                log(f"    start {spec['name']} ({time.perf_counter() - t0:.0f} s elapsed)")
                running[pool.submit(train_run, spec, str(runs_dir), threads)] = (task, spec)
            if not running:
                if finished_only:
                    break
                if pending and not any(all(d in results for d in t.deps) for t in pending):
                    raise RuntimeError(f"tasks wait on runs that never come: {[t.key for t in pending]}")
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                task, spec = running.pop(fut)
                results[task.key] = fut.result()
                log(f"    done {spec['name']} in {results[task.key]['wall_s']:.0f} s "
                    f"({time.perf_counter() - t0:.0f} s elapsed)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def with_overrides(exp: dict, seeds: list[int] | None = None, device: str | None = None,
                   steps: int | None = None, base_steps: int | None = None) -> dict:
    """The experiment's settings with the command line's overrides: the seeds, the runs' device,
    the L / N / O runs' steps (``hyper_start`` clipped to half of them) and the base networks'
    steps (their validation interval clipped to them)."""
    exp = dict(exp)
    if seeds:
        exp["seeds"] = list(seeds)
    if device:
        exp["l2s"] = deep_merge(exp["l2s"], {"training": {"device": device}})
    if steps:
        f = exp["finetune"]
        exp["finetune"] = {**f, "steps": steps, "hyper_start": min(int(f.get("hyper_start", 0)), steps // 2)}
    if base_steps:
        b = exp["base"]
        exp["base"] = {**b, "steps": base_steps, "val_every": min(int(b.get("val_every", 500)), base_steps)}
    return exp


def run_experiment(name: str, mode: str, label_maps: str, out: Path, stages: list[str], jobs: int = 1,
                   threads: int = 0, factor: int | None = None, cache: str | None = None,
                   device: str | None = None, steps: int | None = None, seeds: list[int] | None = None,
                   dice_seeds: list[int] | None = None, finished_only: bool = False,
                   base_steps: int | None = None, log=print) -> dict:
    exp = with_overrides(load_experiment(name, mode), seeds=seeds, device=device, steps=steps,
                         base_steps=base_steps)
    dice_exp = {**exp, "seeds": [s for s in exp["seeds"] if s in dice_seeds]} if dice_seeds else exp
    start = time.perf_counter()
    log(f"[{name}] mode {mode}: preparing label maps from {label_maps}")
    data = prepare(exp, label_maps, cache, factor, log=lambda m: log(m))
    log(f"[{name}] {len(data['train'])} training maps, {len(data['test'])} test maps, 2D slices "
        f"{'x'.join(map(str, data['shape']))} at {data['factor']} mm")
    runs_dir = (out / "runs").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    bases = base_specs(exp, data)
    L = learn2synth_specs(exp, data, bases, runs_dir)
    N = naive_specs(dice_exp, data, bases, runs_dir) if "dice" in stages else []

    def fixed(spec: dict) -> Callable[[dict], dict]:
        return lambda _results: spec

    def optimized(key: str, seed: int, preset: str) -> Callable[[dict], dict]:
        def make(results: dict) -> dict:
            learned = {(preset, seed): results[key]}
            exp_one = {**exp, "presets": [p for p in exp["presets"] if p["name"] == preset], "seeds": [seed]}
            spec = optimized_specs(exp_one, data, bases, runs_dir, learned)[0]
            spec["test"] = _test_spec(exp, data)   # tested at every preset, like N and L
            return spec
        return make

    tasks = [Task(f"B{seed}", [], fixed(spec)) for seed, spec in bases.items()]
    tasks += [Task(f"L{i}", [f"B{s['config']['training']['seed']}"], fixed(s)) for i, s in enumerate(L)]
    if "dice" in stages:   # O right after its L (it needs L's theta), then the N baselines
        dice_presets = {p["name"] for p in exp["presets"]}
        tasks += [Task(f"O{i}", [f"L{i}"], optimized(f"L{i}", s["config"]["training"]["seed"], s["preset"]["name"]))
                  for i, s in enumerate(L) if s["preset"]["name"] in dice_presets
                  and s["config"]["training"]["seed"] in dice_exp["seeds"]]
        tasks += [Task(f"N{i}", [f"B{s['config']['training']['seed']}"], fixed(s)) for i, s in enumerate(N)]
    n_oracle = sum(t.key.startswith("O") for t in tasks)
    log(f"  {len(tasks)} runs ({len(bases)} base, {len(L)} L, {len(N)} N, {n_oracle} O), {jobs} at a time")
    results = run_tasks(tasks, runs_dir, jobs, threads, log, finished_only)
    B_res = [results[f"B{seed}"] for seed in bases if f"B{seed}" in results]
    L_res = [results[f"L{i}"] for i in range(len(L)) if f"L{i}" in results]
    N_res = [results[f"N{i}"] for i in range(len(N)) if f"N{i}" in results]
    O_res = [results[t.key] for t in tasks if t.key.startswith("O") and t.key in results]
    wall = time.perf_counter() - start
    env = {"device": L_res[0]["device"] if L_res else "", "torch": torch.__version__,
           "cpu_count": mp.cpu_count(), "platform": platform.platform(), "jobs": jobs, "threads": threads}
    exp_dir = out / name
    write_report(exp, data, B_res, L_res, N_res, O_res, exp_dir, wall, env)
    log(f"[{name}] done in {wall:.0f} s; results in {exp_dir}")
    return {"experiment": name, "dir": str(exp_dir), "wall_s": wall, "B": B_res, "L": L_res, "N": N_res, "O": O_res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", choices=EXPERIMENTS + ["all"])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS),
                    help="folder or files of label maps with FreeSurfer ids (default: %(default)s)")
    ap.add_argument("--out", default="runs/experiments", help="output folder (default: %(default)s)")
    ap.add_argument("--stages", default="recovery,dice", help="recovery and/or dice (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="training runs in parallel processes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--factor", type=int, default=None, help="override the mode's downsampling factor")
    ap.add_argument("--steps", type=int, default=None,
                    help="override the L/N/O runs' finetune.steps (hyper_start clipped to half)")
    ap.add_argument("--base-steps", type=int, default=None,
                    help="override the base networks' steps (a scaled-down run, e.g. on a short GPU lease)")
    ap.add_argument("--device", default=None, help="override training.device (auto, cpu, cuda, ...)")
    ap.add_argument("--seeds", default=None, help="override the mode's seeds, e.g. 0 or 0,1,2")
    ap.add_argument("--finished-only", action="store_true",
                    help="train nothing: write the report from the runs that have finished")
    ap.add_argument("--dice-seeds", default=None, help="train the N and O runs of the Dice tables for these "
                                                       "seeds only (default: every seed)")
    ap.add_argument("--cache", default=None, help=f"preprocessed label maps (default: {DEFAULT_CACHE})")
    args = ap.parse_args(argv)
    names = EXPERIMENTS if "all" in args.experiments else args.experiments
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = set(stages) - {"recovery", "dice"}
    if bad:
        ap.error(f"unknown stage(s) {sorted(bad)}")
    out = Path(args.out)
    summaries = []
    for name in names:
        summaries.append(run_experiment(name, args.mode, args.label_maps, out, stages, args.jobs, args.threads,
                                        args.factor, args.cache, args.device, args.steps,
                                        [int(v) for v in args.seeds.split(",")] if args.seeds else None,
                                        [int(v) for v in args.dice_seeds.split(",")] if args.dice_seeds else None,
                                        args.finished_only, args.base_steps))
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if not isinstance(summary, dict):
        summary = {}
    for s in summaries:
        summary[s["experiment"]] = {"mode": args.mode, "wall_s": round(s["wall_s"], 1)}
    summary_path.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
