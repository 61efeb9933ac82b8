"""Shared machinery of the recovery experiments: experiment configs, run specs, one training run
(Trainer events -> theta history, weights, test Dice) and the fixed corrupted test sets.

A *run* is one training of the segmentation network: the warm-start base "B" (naive SynthSeg on
clean images, one per seed, shared by every experiment), and from it Learn2Synth "L", naive SynthSeg
at the preset "N" and SynthSeg at the learned parameters "O". Its spec is a JSON-able dict holding an
l2s_gui config (warm starts are the engine's ``training.init_from`` / ``init_theta_from``, the theta
schedule its ``lr_augmentation_schedule``); the run folder is ``<out>/runs/<name>-<hash of the
spec>`` so that an identical run (the bases, the N baselines shared by the noise+INU and
nonparametric experiments) is trained once and a rerun resumes where it stopped.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from l2s_gui.config import Config, DataConfig, RecoveryConfig, self_training_enabled
from l2s_gui.data import TrainingData
from l2s_gui.events import RoundEvent, StepEvent, ValidationEvent
from l2s_gui.losses import hard_dice
from l2s_gui.recovery_corruption import PresetCorruption
from l2s_gui.self_training import SelfTraining
from l2s_gui.synthesis import build_generator
from l2s_gui.trainer import Trainer

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABEL_MAPS = (REPO / ".." / "shared" / "data" / "label_maps").resolve()
EXPERIMENTS = ["noise_only", "noise_inu", "nonparametric"]
MODES = ["quick", "cpu", "cpu3mm", "full"]


# ---------------------------------------------------------------------------------------------- configs
def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base`` (mappings recursively; lists and scalars replaced)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_experiment(name: str, mode: str) -> dict:
    """The experiment config ``configs/<name>.yaml`` (with its ``inherit`` chain) for ``mode``."""
    def read(path: Path) -> dict:
        data = yaml.safe_load(path.read_text()) or {}
        parent = data.pop("inherit", None)
        return deep_merge(read(path.parent / parent), data) if parent else data

    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown experiment {name!r}: no {path}")
    cfg = read(path)
    modes = cfg.pop("modes", {})
    if mode not in modes:
        raise SystemExit(f"experiment {name}: no mode {mode!r} (have {', '.join(modes)})")
    cfg = deep_merge(cfg, modes[mode])
    cfg["mode"] = mode
    keep = cfg.get("preset_names")
    if keep:
        cfg["presets"] = [p for p in cfg["presets"] if p["name"] in keep]
        cfg["extra_presets"] = [p for p in cfg.get("extra_presets", []) if p["name"] in keep]
    return cfg


def preset_recovery(preset: dict, nodes: list[int]) -> dict:
    """The ``recovery`` config section of a preset ({sigma | sigma_range, inu_c})."""
    rec = {"enabled": True, "sigma": float(preset.get("sigma", 0.0)),
           "sigma_range": [float(v) for v in preset.get("sigma_range", [])],
           "inu_c": [float(v) for v in preset.get("inu_c", [])], "inu_nodes": list(nodes)}
    return rec


def preset_sigma_value(preset: dict) -> float:
    """A number to compare a learned sigma with (the mid-range for a U[low, high] preset)."""
    if preset.get("sigma_range"):
        lo, hi = preset["sigma_range"]
        return 0.5 * (lo + hi)
    return float(preset.get("sigma", 0.0))


def spec_id(spec: dict) -> str:
    text = json.dumps({k: v for k, v in spec.items() if k not in ("name", "label")}, sort_keys=True)
    return f"{spec['name']}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------------------------------------- data
def split_maps(files: list[Path], test_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(training maps, held-out test maps): a seeded permutation; at least one of each."""
    files = sorted(files)
    n = len(files)
    if n < 2:
        raise SystemExit(f"need at least 2 label maps (training and test), found {n}")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(files[i] for i in perm[:n_test])
    train = sorted(files[i] for i in perm[n_test:])
    return train, test


def common_shape(files: list[Path], slice_axis: int, multiple: int) -> list[int]:
    """The 2D slice shape holding every map's slices, rounded up to ``multiple``."""
    import nibabel as nib
    shapes = [nib.load(str(f)).shape for f in files]
    dims = [d for d in range(3) if d != slice_axis]
    return [int(math.ceil(max(s[d] for s in shapes) / multiple) * multiple) for d in dims]


@torch.no_grad()
def build_test_sets(cfg: Config, test_files: list[str], presets: list[dict], n_images: int, seed: int,
                    device: torch.device) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    """Fixed test sets, one per preset: the same clean synthetic images (held-out label maps,
    SynthSeg generator with the run's synthesis settings) corrupted with each preset."""
    dcfg = DataConfig(label_maps=list(test_files), label_table=cfg.data.label_table, ndim=cfg.data.ndim,
                      slice_axis=cfg.data.slice_axis, patch_size=list(cfg.data.patch_size), batch_size=1)
    data = TrainingData.from_config(dcfg, seed=seed, need_label_maps=True, need_real=False)
    synth = build_generator(cfg.synthesis, data.n_generation_labels, cfg.data.ndim,
                            data.generation_classes).to(device)
    g_data = torch.Generator().manual_seed(seed)
    g_dev = torch.Generator(device=device).manual_seed(seed)
    labels = data.sample_generation_batch(n_images, g_data, device)
    x, y = synth(labels, g_dev)
    out = {}
    for p in presets:
        rec = RecoveryConfig(**preset_recovery(p, cfg.recovery.inu_nodes))
        corr = PresetCorruption(rec).to(device)
        g = torch.Generator(device=device).manual_seed(seed + 1)
        out[p["name"]] = (corr(x, g), y)
    return out, data.n_classes


@torch.no_grad()
def evaluate(net: torch.nn.Module, images: Tensor, labels: Tensor, n_classes: int, batch: int = 16) -> dict:
    """Hard Dice per foreground class (pooled over the set, as the trainer's validation) and mean."""
    net.eval()
    scores = torch.zeros(n_classes, dtype=torch.float64)
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for s in range(0, images.shape[0], batch):
        pred = net(images[s:s + batch]).argmax(1)
        d = hard_dice(pred, labels[s:s + batch], n_classes).double().cpu()
        ok = ~torch.isnan(d)
        scores[ok] += d[ok] * pred.shape[0]
        counts[ok] += pred.shape[0]
    net.train()
    per = {str(c): float(scores[c] / counts[c]) for c in range(1, n_classes) if counts[c] > 0}
    return {"mean": float(np.mean(list(per.values()))) if per else float("nan"), "per_class": per}


# ---------------------------------------------------------------------------------------------- one run
def _flatten_theta(theta: dict) -> dict[str, float]:
    out = {}
    for k, v in theta.items():
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                out[f"{k}{i + 1}"] = float(x)
        else:
            out[k] = float(v)
    return out


def _synthetic_unlabelled(cfg: Config, spec: dict | None) -> list[Tensor] | None:
    """Unlabelled "real" images for self-training in recovery mode: ``spec['images']`` synthetic 2D
    images of the training maps with the preset corruption, their labels dropped (None: no spec)."""
    if not spec:
        return None
    sets, _ = build_test_sets(cfg, list(cfg.data.label_maps), [spec["preset"]], int(spec["images"]),
                              int(spec["seed"]), torch.device("cpu"))
    x, _labels = next(iter(sets.values()))
    return [img[0] for img in x]


def run_folder(spec: dict, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / spec_id(spec)


def train_run(spec: dict, runs_dir: str, threads: int = 0) -> dict:
    """Train one run described by ``spec`` (see :func:`experiments.run.build_specs`); write
    ``history.csv``, ``validation.csv``, ``model.safetensors`` and ``result.json`` in its folder and
    return the result. A finished run (result.json present) is not retrained."""
    folder = run_folder(spec, runs_dir)
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_run(spec, folder)
    except Exception:
        (folder / "error.log").write_text(traceback.format_exc())
        raise


def _train_run(spec: dict, folder: Path) -> dict:
    cfg = Config.from_dict(spec["config"])
    self_training = None
    if self_training_enabled(cfg) or spec.get("unlabelled_synthetic"):
        unlabelled = _synthetic_unlabelled(cfg, spec.get("unlabelled_synthetic"))
        self_training = SelfTraining(cfg, unlabelled_images=unlabelled)
        trainer, events = self_training.teacher, self_training.run()
    else:
        trainer = Trainer(cfg)
        events = trainer.run()
    device = trainer.device
    t = cfg.training
    history: list[dict] = []
    validation: list[dict] = []
    inspector: list = []
    start = time.perf_counter()
    rounds: list[dict] = []
    for ev in events:
        if isinstance(ev, RoundEvent):
            rounds.append({"round": ev.round, "mean_dice": ev.mean_dice, "change": ev.change,
                           "kept_fraction": ev.kept_fraction, "stop": ev.stop})
        elif isinstance(ev, StepEvent):
            row = {"step": ev.step, "loss_synth": ev.loss_synth,
                   "loss_real": "" if ev.loss_real is None else ev.loss_real}
            row.update(_flatten_theta({k: v for k, v in ev.theta.items() if k in ("sigma", "c")}))
            history.append(row)
        elif isinstance(ev, ValidationEvent):
            validation.append({"step": ev.step, "mean_dice": ev.mean_dice,
                               **{f"dice_{k}": v for k, v in ev.dice.items()}})
        elif getattr(ev, "kind", "") == "inspector":
            inspector.append(ev)
        elif getattr(ev, "kind", "") == "done" and ev.reason != "finished":
            raise RuntimeError(f"run {spec['name']} ended with {ev.reason}: {ev.message}")
    wall = time.perf_counter() - start
    if self_training is not None:
        trainer = self_training.current   # the last round's network

    # learned theta: the final value and the mean over the last tail_fraction of the hyper-steps
    keys = [k for k in history[-1] if k not in ("step", "loss_synth", "loss_real")] if history else []
    final = {k: history[-1][k] for k in keys}
    tail_n = max(1, int(round(float(spec.get("tail_fraction", 0.25)) * max(t.steps - t.hyper_start, 1))))
    tail = history[-tail_n:]
    tail_mean = {k: float(np.mean([r[k] for r in tail])) for k in keys}

    # test Dice at every test preset (None: the run's own validation is its test)
    test = spec["test"]
    dice = {}
    if test is not None:
        sets, n_classes = build_test_sets(cfg, test["maps"], test["presets"], test["images"], test["seed"], device)
        dice = {name: evaluate(trainer.net, x, y, n_classes) for name, (x, y) in sets.items()}

    _write_csv(folder / "history.csv", history)
    _write_csv(folder / "validation.csv", validation)
    trainer.export(folder / "model.safetensors")
    result = {"name": spec["name"], "label": spec.get("label", spec["name"]), "folder": str(folder),
              "role": spec["role"], "preset": spec.get("preset", {}), "seed": t.seed, "final": final,
              "learned": tail_mean, "start": spec.get("start", {}),
              "tail_steps": tail_n, "dice": dice, "wall_s": wall, "steps": t.steps,
              "hyper_start": t.hyper_start, "device": str(device), "threads": torch.get_num_threads(),
              "last_val_dice": validation[-1]["mean_dice"] if validation else None,
              "last_val_per_class": {k[5:]: v for k, v in validation[-1].items() if k.startswith("dice_")}
              if validation else {},
              "inspector_accuracy": float(inspector[-1].accuracy) if inspector else None,
              "rounds": rounds}
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, folder / "result.json")
    return result


def publish(text: str, path: str | None) -> None:
    """Print a markdown report and, if ``path`` is given, write it there too."""
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    fields = list(rows[0])
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
