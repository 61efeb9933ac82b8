"""Benchmark suite of issue 4: hypergradient cost, end-to-end training throughput, segmentation time.

One command prints a table and writes JSON + markdown::

    python benchmarks/run.py                     # preset 'gpu' on CUDA, 'cpu' otherwise
    python benchmarks/run.py --preset tiny       # seconds on 2 CPU cores (run by tests/test_benchmarks.py)
    python benchmarks/run.py --preset gpu --only 3d-160 --repeats 10
    python benchmarks/run.py --out /tmp/bench    # writes /tmp/bench.json and /tmp/bench.md

Default output: ``benchmarks/results/<device>.{json,md}`` for the device's own preset (``cpu`` /
``cuda-<gpu name>``), ``benchmarks/results/<device>-<preset>.{json,md}`` for another preset.

Per config (network, batch and image size; 4-level UNet, parametric INU + noise augmentation, inner
Adam with a moment history, soft Dice), all on the chosen device:

* **plain**: one SynthSeg step on a fixed synthetic batch (augmentation, forward, backward, inner
  update) -- ``Trainer.train_step`` of method synthseg with synthesis taken out;
* **hyper-step per mode**: one Learn2Synth iteration with a hyper-step on the same batch plus a fixed
  "real" batch (synthetic pass, real pass, hypergradient, both updates) -- ``Trainer.train_step``
  with ``training.hypergradient`` = naive (double backward), exact (the fast exact route) or approx
  (float64 finite differences); time and ratio to the plain step;
* **agreement**: relative error ``|h - h_naive| / |h_naive|`` of the exact and approx hypergradients
  against the naive double-backward value on one state, in the config's precision (float32, or
  bf16 autocast for bf16 configs, which also report the error against the float32 naive value);
* **peak memory** of each step: on CUDA ``torch.cuda.max_memory_allocated`` (absolute, everything
  torch allocated on the device); on CPU the rise of the process's peak resident set size
  (``VmHWM`` reset through ``/proc/self/clear_refs`` after ``malloc_trim``) above the resident size
  before the step;
* **end to end**: ``Trainer.train_step`` in the synthetic-recovery setting (label maps -> synthesis
  on the device -> updates, hyper-steps at the default interval; "real" images are synthetic images
  with a preset corruption, so no files are read), learn2synth vs synthseg with the same network and
  batch: it/s, their ratio, and the share of step time spent in synthesis; also learn2synth with a
  hyper-step every ``--amortise`` iterations;
* **segmentation** of a 256^3 volume (``l2s_gui.segment.segment_array``: slice-wise for 2D models,
  sliding 50%-overlap windows of the training size for 3D models).

Timings are medians over ``--repeats`` rounds after ``--warmup`` rounds; the variants are run
round-robin inside each round so that their ratios are measured under the same machine load (on a
shared CPU, quote ratios, not absolute times). CUDA is used when present (``--device`` overrides),
with ``torch.cuda.synchronize`` around every timed region.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from l2s_gui.config import Config  # noqa: E402
from l2s_gui.data import TrainingData  # noqa: E402
from l2s_gui.hypergrad import hyper_step  # noqa: E402
from l2s_gui.labels import LabelTable  # noqa: E402
from l2s_gui.losses import soft_dice_loss  # noqa: E402
from l2s_gui.trainer import Trainer  # noqa: E402

MODES = ("naive", "exact", "exact_jvp", "approx")
"""Timed variants of the hyper-step: mode naive, mode exact with its default route (reverse-over-reverse
since this benchmark was written), mode exact with the forward-over-reverse route ('jvp', the
route before), mode approx."""
_VARIANT = {"naive": ("naive", "reverse"), "exact": ("exact", "reverse"), "exact_jvp": ("exact", "jvp"),
            "approx": ("approx", "reverse")}
"""(training.hypergradient, training.hypergradient_route) of each variant."""
SCHEMA_VERSION = 1


@dataclass
class BenchConfig:
    name: str
    ndim: int
    size: int                      # edge length of the square/cubic training images
    batch: int
    widths: tuple[int, ...]
    classes: int
    precision: str = "fp32"        # fp32 | bf16 (autocast for the networks)
    seg_size: int = 256            # edge of the volume segmented by the segmentation benchmark
    description: str = ""


@dataclass
class Preset:
    configs: list[BenchConfig]
    warmup: int
    repeats: int
    e2e_warmup: int
    e2e_steps: int
    seg_repeats: int = 1
    note: str = ""
    threads: int | None = None  # torch.set_num_threads (CPU) unless --threads is given


PRESETS: dict[str, Preset] = {
    # the configs of GUIDE Sec. 3 (measured anchors on one H100)
    "gpu": Preset(
        configs=[
            BenchConfig("2d-256-b64-32ch", 2, 256, 64, (32, 64, 128, 256), 16,
                        description="2D 256^2, batch 64, 32 base channels, fp32"),
            BenchConfig("3d-128-16ch", 3, 128, 1, (16, 32, 64, 128), 16,
                        description="3D 128^3, batch 1, 16 base channels, fp32"),
            BenchConfig("3d-160-24ch-bf16", 3, 160, 1, (24, 48, 96, 192), 16, precision="bf16",
                        description="3D 160^3, batch 1, 24 base channels, bf16 autocast"),
        ],
        warmup=2, repeats=7, e2e_warmup=10, e2e_steps=40, seg_repeats=3,
        note="GUIDE Sec. 3 configurations"),
    # the same three shapes scaled down for a 2-core CPU
    "cpu": Preset(
        configs=[
            BenchConfig("2d-128-b8-16ch", 2, 128, 8, (16, 32, 64, 128), 8,
                        description="2D 128^2, batch 8, 16 base channels, fp32"),
            BenchConfig("3d-64-8ch", 3, 64, 1, (8, 16, 32, 64), 8,
                        description="3D 64^3, batch 1, 8 base channels, fp32"),
            BenchConfig("3d-64-12ch-bf16", 3, 64, 1, (12, 24, 48, 96), 8, precision="bf16",
                        description="3D 64^3, batch 1, 12 base channels, bf16 autocast"),
        ],
        warmup=1, repeats=5, e2e_warmup=10, e2e_steps=10, seg_repeats=1,
        note="GUIDE Sec. 3 shapes scaled down for a CPU"),
    # CI: checks that the script runs and writes its files (timings meaningless)
    "tiny": Preset(
        configs=[
            BenchConfig("2d-32-b2-4ch", 2, 32, 2, (4, 8), 3, seg_size=32, description="2D 32^2, batch 2, tiny"),
            BenchConfig("3d-16-4ch", 3, 16, 1, (4, 8), 3, seg_size=32, description="3D 16^3, batch 1, tiny"),
        ],
        warmup=1, repeats=2, e2e_warmup=1, e2e_steps=1, seg_repeats=1, threads=1,
        note="smoke test only"),
}


# ----------------------------------------------------------------------------- device helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return device.type


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB)"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


class PeakMemory:
    """Peak memory of one call: CUDA allocator statistics, or the CPU process's peak RSS rise."""

    def __init__(self, device: torch.device):
        self.device = device
        self.libc = None
        self.cpu_ok = False
        if device.type == "cpu":
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                self._reset_hwm()
                self._read("VmHWM")
                self.cpu_ok = True
            except (OSError, AttributeError, ValueError):
                self.cpu_ok = False

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated during the step (absolute: parameters, batches, activations)"
        if self.cpu_ok:
            return ("peak RSS rise during the step: /proc/self/status VmHWM (reset via /proc/self/clear_refs, "
                    "after malloc_trim) minus VmRSS before the step")
        return "unavailable on this platform"

    @staticmethod
    def _read(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
        if match is None:
            raise ValueError(key)
        return int(match.group(1)) * 1024

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def measure(self, fn: Callable[[], object]) -> float | None:
        """Run ``fn`` once; return its peak memory in MiB (None when it cannot be measured)."""
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        if not self.cpu_ok:
            fn()
            return None
        import gc

        gc.collect()
        self.libc.malloc_trim(0)
        self._reset_hwm()
        before = self._read("VmRSS")
        fn()
        return max(self._read("VmHWM") - before, 0) / 2 ** 20


def timed(fn: Callable[[], object], device: torch.device) -> float:
    return timed2(fn, device)[0]


def timed2(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call (CUDA synchronised)."""
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return 1e3 * (time.perf_counter() - start), 1e3 * (time.process_time() - cpu_start)


def round_robin(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                repeats: int) -> dict[str, dict]:
    """Median wall ms (and process CPU ms) of each function, run in turn within every round."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for key, fn in fns.items():
            w, c = timed2(fn, device)
            if r >= warmup:
                wall[key].append(w)
                cpu[key].append(c)
    return {k: {"ms": statistics.median(wall[k]), "ms_all": [round(t, 3) for t in wall[k]],
                "cpu_ms": statistics.median(cpu[k])} for k in fns}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------- data and trainers
def smooth_label_volume(shape: tuple[int, ...], n_classes: int, seed: int) -> torch.Tensor:
    """Smooth random regions with ids 0..n_classes-1 (upsampled noise cut at its quantiles), uint8."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 1) + tuple(max(s // 8, 2) for s in shape), generator=g)
    field = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]
    sample = field.flatten()[torch.randperm(field.numel(), generator=g)[:100_000]]
    edges = torch.quantile(sample, torch.linspace(0, 1, n_classes + 1)[1:-1])
    return torch.bucketize(field, edges).to(torch.uint8)


def make_data(cfg: BenchConfig) -> TrainingData:
    """In-memory label maps (2 volumes): 2D configs slice (size, 24, size) volumes along axis 1."""
    table = LabelTable.from_values(range(cfg.classes))
    shape = (cfg.size, 24, cfg.size) if cfg.ndim == 2 else (cfg.size,) * 3
    maps = [smooth_label_volume(shape, cfg.classes, seed) for seed in range(2)]
    for m in maps:  # every class present somewhere, background included
        m.view(-1)[:cfg.classes] = torch.arange(cfg.classes, dtype=torch.uint8)
    spatial = [cfg.size] * cfg.ndim
    return TrainingData(table, cfg.ndim, 1, spatial, False, maps, [Path(f"generated_{i}") for i in range(2)], [], [])


def make_config(cfg: BenchConfig, device: str, method: str = "learn2synth", **training) -> Config:
    data = {
        "data": {"label_maps": ["generated"], "ndim": cfg.ndim, "batch_size": cfg.batch, "slice_axis": 1},
        "network": {"widths": list(cfg.widths)},
        "training": {"method": method, "device": device, "precision": cfg.precision, "steps": 10 ** 9,
                     "val_every": 10 ** 9, "preview_every": 10 ** 9, "checkpoint_every": 10 ** 9, **training},
        "recovery": {"enabled": True, "sigma": 0.1, "inu_c": [0.5, 0.5, 0.5]},
    }
    return Config.from_dict(data)


def make_trainer(cfg: BenchConfig, data: TrainingData, device: str, method: str = "learn2synth",
                 activation: str | None = None, channels_last: bool = False, **training) -> Trainer:
    config = make_config(cfg, device, method, **training)
    if activation:
        config.network.activation = activation
    trainer = Trainer(config, run=None, data=data)
    if channels_last:  # weights in channels-last order: convolutions then run channels-last
        fmt_ = torch.channels_last if cfg.ndim == 2 else torch.channels_last_3d
        trainer.net.to(memory_format=fmt_)
    return trainer


def time_calls(module: torch.nn.Module, device: torch.device, totals: dict[str, float], key: str,
               counting: dict[str, bool]) -> None:
    """Add the wall time (ms, device synchronised) of each call of ``module`` to ``totals[key]`` while
    ``counting['on']``, through forward pre- and post-hooks (the module is not modified)."""
    start: list[float] = []

    def before(_module, _args) -> None:
        if counting["on"]:
            sync(device)
            start.append(time.perf_counter())

    def after(_module, _args, _output) -> None:
        if start:
            sync(device)
            totals[key] += 1e3 * (time.perf_counter() - start.pop())

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.detach().double().reshape(-1) for g in grads.values()])


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    denom = float(ref.norm())
    return float((a - ref).norm()) / denom if denom > 0 else float("nan")


# ----------------------------------------------------------------------------- one config
def bench_steps(cfg: BenchConfig, data: TrainingData, device: torch.device, preset: Preset, args,
                memory: PeakMemory) -> dict:
    """Plain step vs hyper-step per mode on a fixed batch; agreement; peak memory."""
    trainer = make_trainer(cfg, data, str(device), activation=args.activation, channels_last=args.channels_last,
                           hyper_every=1, hyper_start=0)
    x, y, draw = trainer.sample_synthetic_batch()
    x_real, y_real = trainer.sample_real_batch()
    trainer.synthetic_batches = lambda: (x, y, draw)          # fixed batch: synthesis out of the timing
    trainer.real_batches = lambda: (x_real, y_real)
    t = trainer.cfg.training

    def plain() -> None:
        trainer.train_step(hyper=False)
        trainer.step += 1

    def hyper(variant: str) -> Callable[[], None]:
        mode, route = _VARIANT[variant]

        def run() -> None:
            t.hypergradient, t.hypergradient_route = mode, route
            trainer.train_step(hyper=True)
            trainer.step += 1
        return run

    for _ in range(3):  # inner Adam history: the hypergradient is ~0 at the very first step
        plain()
    fns: dict[str, Callable[[], None]] = {"plain": plain}
    for mode in args.modes:
        fns[mode] = hyper(mode)
    timing = round_robin(fns, device, preset.warmup, preset.repeats)

    # agreement on one state (no update)
    hyper_vals: dict[str, torch.Tensor] = {}
    for variant in args.modes:
        mode, route = _VARIANT[variant]
        hyper_vals[variant] = flat(hyper_step(trainer.net, trainer.aug, trainer.inner, x, draw, y, x_real, y_real,
                                              soft_dice_loss, mode=mode, autocast=trainer.autocast,
                                              exact_route=route)[4])
    reference_fp32 = None
    if cfg.precision != "fp32" and "naive" in args.modes:
        reference_fp32 = flat(hyper_step(trainer.net, trainer.aug, trainer.inner, x, draw, y, x_real, y_real,
                                         soft_dice_loss, mode="naive", autocast=nullcontext)[4])

    peaks = {key: memory.measure(fn) for key, fn in fns.items()}
    plain_ms = timing["plain"]["ms"]
    plain_cpu = timing["plain"]["cpu_ms"]
    out = {"plain": {**timing["plain"], "peak_mib": peaks["plain"]}, "hyper": {}}
    for mode in args.modes:
        entry = {**timing[mode], "ratio_to_plain": timing[mode]["ms"] / plain_ms,
                 "cpu_ratio_to_plain": timing[mode]["cpu_ms"] / plain_cpu if plain_cpu > 0 else None,
                 "peak_mib": peaks[mode], "hypergradient_norm": float(hyper_vals[mode].norm())}
        if "naive" in hyper_vals and mode != "naive":
            entry["rel_err_vs_naive"] = rel_err(hyper_vals[mode], hyper_vals["naive"])
        if reference_fp32 is not None:
            entry["rel_err_vs_naive_fp32"] = rel_err(hyper_vals[mode], reference_fp32)
        out["hyper"][mode] = entry
    out["n_parameters"] = sum(p.numel() for p in trainer.net.parameters())
    return out


def bench_end_to_end(cfg: BenchConfig, data: TrainingData, device: torch.device, preset: Preset, args) -> dict:
    """Trainer.train_step with synthesis on the device: learn2synth (default interval, and every
    ``--amortise`` steps) vs synthseg; it/s and synthesis share."""
    variants = {
        "synthseg": make_trainer(cfg, data, str(device), method="synthseg", activation=args.activation,
                                 channels_last=args.channels_last),
        "learn2synth": make_trainer(cfg, data, str(device), activation=args.activation,
                                    channels_last=args.channels_last),
    }
    default_every = variants["learn2synth"].cfg.training.hyper_every
    if args.amortise and args.amortise != default_every:
        variants[f"learn2synth_every_{args.amortise}"] = make_trainer(
            cfg, data, str(device), activation=args.activation, channels_last=args.channels_last,
            hyper_every=args.amortise)
    synth_ms = {k: 0.0 for k in variants}
    counting = {"on": False}

    for key, trainer in variants.items():
        time_calls(trainer.synth, device, synth_ms, key, counting)
    # blocks of `block` steps per variant and round, starting at a multiple of `block`, so that the
    # amortised variant takes exactly one hyper-step per block
    block = max(args.amortise, 1) if args.amortise else 5
    warm = block * max(1, -(-preset.e2e_warmup // block))
    for trainer in variants.values():
        for _ in range(warm):
            trainer.train_step()
            trainer.step += 1
    total_ms = {k: 0.0 for k in variants}
    rounds = max(1, -(-preset.e2e_steps // block))

    def run_block(trainer: Trainer) -> None:
        for _ in range(block):
            trainer.train_step()
            trainer.step += 1

    counting["on"] = True
    for _ in range(rounds):
        for key, trainer in variants.items():
            total_ms[key] += timed(lambda trainer=trainer: run_block(trainer), device)
    counting["on"] = False
    steps = rounds * block
    out: dict = {"steps": steps, "warmup_steps": warm, "hyper_every_default": default_every}
    for key in variants:
        out[key] = {"it_per_s": 1e3 * steps / total_ms[key], "ms_per_it": total_ms[key] / steps,
                    "synthesis_share": synth_ms[key] / total_ms[key]}
    base = out["synthseg"]["it_per_s"]
    for key in variants:
        out[key]["ratio_to_synthseg"] = out[key]["it_per_s"] / base
    del variants
    return out


def bench_segmentation(cfg: BenchConfig, data: TrainingData, device: torch.device, preset: Preset, args) -> dict:
    """Time of ``segment_array`` on a seg_size^3 volume with this config's (briefly trained) model."""
    try:
        from l2s_gui.model_io import LoadedModel
        from l2s_gui.segment import segment_array
    except ImportError as exc:  # segmentation module not available in this checkout
        return {"error": f"{type(exc).__name__}: {exc}"}
    trainer = make_trainer(cfg, data, str(device), method="synthseg", activation=args.activation)
    model = LoadedModel(net=trainer.net, augmentation=trainer.aug, table=trainer.table, config=trainer.cfg,
                        spatial_shape=list(data.spatial_shape), step=0)
    n = cfg.seg_size
    labels = smooth_label_volume((n, n, n), cfg.classes, seed=5).float()
    g = torch.Generator().manual_seed(0)
    image = (labels / cfg.classes + 0.05 * torch.randn(labels.shape, generator=g)).clamp_(0, 1).numpy()
    times = []
    try:
        for _ in range(preset.seg_repeats):
            start = time.perf_counter()
            out = segment_array(model, image, device=device)
            sync(device)
            times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other benchmarks still count
        return {"error": f"{type(exc).__name__}: {exc}"}
    assert out.shape == image.shape
    mode = "slices" if cfg.ndim == 2 else f"windows of {'x'.join(map(str, data.spatial_shape))}, overlap 0.5"
    return {"volume": [n, n, n], "seconds": statistics.median(times), "seconds_all": [round(t, 3) for t in times],
            "mode": mode}


# ----------------------------------------------------------------------------- output
def fmt(value, spec: str = ".1f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# Benchmarks: {meta['device_name']}", "",
             f"- device: `{meta['device']}` ({meta['device_name']}), torch {meta['torch']}, preset `{meta['preset']}`"
             f" ({meta['preset_note']}), activation {meta['activation']}"
             + (", channels-last" if meta.get("channels_last") else ""),
             f"- {meta['warmup']} warm-up + {meta['repeats']} timed rounds, variants round-robin, medians;"
             f" load average before/after: {meta['load_before']} / {meta['load_after']}",
             f"- memory: {meta['memory_method']}",
             f"- date: {meta['date']}, total run time {meta['wall_s']:.0f} s", "",
             "## Hypergradient cost (one iteration on a fixed batch)", "",
             "ms per iteration, (x plain step)" + ("; on a CPU also the ratio of process CPU times, robust to other "
                                                   "processes' load" if meta["device"] == "cpu" else "") + ".", "",
             "| config | plain ms | naive | exact (reverse, new default) | exact (jvp, before) | approx "
             "| rel. err. vs naive: exact / jvp / approx | peak MiB plain / naive / exact / jvp / approx |",
             "|---|---|---|---|---|---|---|---|"]
    cpu = meta["device"] == "cpu"
    for c in result["configs"]:
        s = c.get("steps")
        if not s:
            continue
        h = s["hyper"]

        def cell(mode: str, h: dict = h) -> str:
            if mode not in h:
                return "-"
            text = f"{h[mode]['ms']:.1f} ({h[mode]['ratio_to_plain']:.2f}x"
            if cpu and h[mode].get("cpu_ratio_to_plain"):
                text += f"; cpu {h[mode]['cpu_ratio_to_plain']:.2f}x"
            return text + ")"

        def err(mode: str, h: dict = h) -> str:
            if mode not in h:
                return "-"
            e = fmt(h[mode].get("rel_err_vs_naive"), ".1e")
            if "rel_err_vs_naive_fp32" in h[mode]:
                e += f" ({fmt(h[mode]['rel_err_vs_naive_fp32'], '.1e')} vs fp32)"
            return e

        peaks = " / ".join(fmt(x, ".0f") for x in [s["plain"]["peak_mib"]] +
                           [h[m]["peak_mib"] if m in h else None for m in MODES])
        lines.append(f"| {c['description']} | {s['plain']['ms']:.1f} | {cell('naive')} | {cell('exact')} | "
                     f"{cell('exact_jvp')} | {cell('approx')} | {err('exact')} / {err('exact_jvp')} / "
                     f"{err('approx')} | {peaks} |")
    lines += ["", "## End-to-end training (synthesis on the device, recovery setting)", "",
              "| config | synthseg it/s | learn2synth it/s (every k) | ratio | amortised it/s (every k) | ratio "
              "| synthesis share synthseg / learn2synth |",
              "|---|---|---|---|---|---|---|"]
    for c in result["configs"]:
        e = c.get("end_to_end")
        if not e:
            continue
        amort = [k for k in e if k.startswith("learn2synth_every_")]
        a = e[amort[0]] if amort else None
        k_a = amort[0].rsplit("_", 1)[1] if amort else "-"
        lines.append(
            f"| {c['description']} | {e['synthseg']['it_per_s']:.2f} | {e['learn2synth']['it_per_s']:.2f} "
            f"(k={e['hyper_every_default']}) | {e['learn2synth']['ratio_to_synthseg']:.2f} | "
            + (f"{a['it_per_s']:.2f} (k={k_a}) | {a['ratio_to_synthseg']:.2f}" if a else "- | -")
            + f" | {100 * e['synthseg']['synthesis_share']:.0f}% / {100 * e['learn2synth']['synthesis_share']:.0f}% |")
    lines += ["", "## Segmentation of a whole volume", "", "| model | volume | seconds | how |", "|---|---|---|---|"]
    for c in result["configs"]:
        sg = c.get("segmentation")
        if not sg:
            continue
        if "error" in sg:
            lines.append(f"| {c['description']} | - | - | error: {sg['error']} |")
        else:
            lines.append(f"| {c['description']} | {'x'.join(map(str, sg['volume']))} | {sg['seconds']:.2f} | "
                         f"{sg['mode']} |")
    return "\n".join(lines) + "\n"


def print_table(result: dict) -> None:
    print(markdown(result))


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Learn2Synth benchmarks (issue 4)",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: gpu on CUDA, else cpu")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--out", help="output path without suffix (writes .json and .md); "
                                 "default benchmarks/results/<device>[-<preset>]")
    p.add_argument("--only", action="append", default=[], help="run configs whose name contains this (repeatable)")
    p.add_argument("--modes", default=",".join(MODES), help="hypergradient modes to time (default all)")
    p.add_argument("--repeats", type=int, help="timed rounds (default from the preset)")
    p.add_argument("--warmup", type=int, help="warm-up rounds (default from the preset)")
    p.add_argument("--activation", default="elu", choices=["elu", "relu", "leaky_relu"],
                   help="network activation (default elu, the product default; GUIDE Sec. 3 used relu)")
    p.add_argument("--channels-last", action="store_true",
                   help="network weights in channels-last memory order (GUIDE Sec. 3 used it with bf16)")
    p.add_argument("--amortise", type=int, default=10,
                   help="also time learn2synth with a hyper-step every k steps (0: skip)")
    p.add_argument("--skip", action="append", default=[], choices=["steps", "e2e", "seg"],
                   help="skip a part (repeatable)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = sorted(set(args.modes) - set(MODES))
    if bad:
        p.error(f"unknown mode(s) {bad}; choose from {list(MODES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    preset_name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    if device.type == "cpu" and not args.threads and preset.threads:
        torch.set_num_threads(preset.threads)
    if args.repeats:
        preset.repeats = args.repeats
    if args.warmup is not None:
        preset.warmup = args.warmup
    configs = [c for c in preset.configs if not args.only or any(o in c.name for o in args.only)]
    own = (preset_name == "gpu") == (device.type == "cuda")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        device_slug(device) + ("" if own else f"-{preset_name}"))
    memory = PeakMemory(device)
    started = time.perf_counter()
    result = {"schema": SCHEMA_VERSION, "meta": {
        "device": str(device), "device_slug": device_slug(device), "device_name": device_name(device),
        "torch": torch.__version__, "python": platform.python_version(), "preset": preset_name,
        "preset_note": preset.note, "warmup": preset.warmup, "repeats": preset.repeats,
        "activation": args.activation, "channels_last": args.channels_last, "modes": args.modes,
        "memory_method": memory.method,
        "load_before": load_average(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)},
        "configs": []}
    for cfg in configs:
        print(f"[bench] {cfg.name}: {cfg.description}", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        data = make_data(cfg)
        entry = {"name": cfg.name, "description": cfg.description, **{k: v for k, v in asdict(cfg).items()
                                                                         if k not in ("name", "description")}}
        entry["widths"] = list(cfg.widths)
        if "steps" not in args.skip:
            entry["steps"] = bench_steps(cfg, data, device, preset, args, memory)
            print(f"[bench]   steps done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if "e2e" not in args.skip:
            entry["end_to_end"] = bench_end_to_end(cfg, data, device, preset, args)
            print(f"[bench]   end to end done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if "seg" not in args.skip:
            entry["segmentation"] = bench_segmentation(cfg, data, device, preset, args)
            print(f"[bench]   segmentation done ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
        result["configs"].append(entry)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["meta"]["load_after"] = load_average()
    result["meta"]["wall_s"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown(result))
    if not args.quiet:
        print_table(result)
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
