"""How much signal the hypergradient carries about each theta component: its mean over independent
draws against its spread (GUIDE Sec. 7; Learn2Synth eq. 5).

For the L runs of an experiment (their spec: base network, preset "real" corruption, A_theta), the
network is warmed up as the run does (``hyper_start`` plain steps), then ``--draws`` hyper-steps are
computed from that one state, each on a fresh synthetic and "real" batch, without updating anything.
Per component of theta (sigma, c_1..c_K) it reports the mean hypergradient, its standard deviation and
their ratio, the signal-to-noise ratio (SNR). Adam moves a parameter by about ``lr * SNR`` per step
when the gradient's sign is what carries information (``m / sqrt(v)``), so a component with
``|SNR| << 0.1`` drifts by noise, whatever its learning rate or step count; the sign of the mean says
which way L_real wants it to go. Each theta is probed at its L run's start and at the preset, where a
recoverable component's mean hypergradient changes sign or vanishes.

    python -m experiments.hypergrad_signal --out runs/experiments --experiment noise_inu \
        --presets 0.10 --seeds 0,1,2 --draws 48 --write docs/experiments/cpu/hypergrad_signal.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from l2s_gui.config import Config
from l2s_gui.hypergrad import hyper_step
from l2s_gui.trainer import Trainer

from .common import publish


def _set_theta(trainer: Trainer, theta: dict) -> None:
    """Sets sigma and c of a parametric A_theta (the keys of an L run's ``start``)."""
    with torch.no_grad():
        for name, p in trainer.aug.named_parameters():
            key = name.split(".")[-1]
            if key in theta:
                p.copy_(torch.as_tensor(theta[key], dtype=p.dtype).reshape(p.shape))


def _names(trainer: Trainer) -> list[str]:
    return [n for n, _ in trainer.aug.named_parameters()]


def hypergradients(spec: dict, theta: dict, draws: int, fix: str = "none") -> dict[str, np.ndarray]:
    """``draws`` hypergradients per theta component at ``theta``, from the run's warmed-up network.

    ``fix``: 'none' (a fresh synthetic and "real" batch per draw), 'synthetic' or 'real' (that batch
    drawn once and reused: the spread left is the other batch's share of the variance)."""
    cfg = Config.from_dict(spec["config"])
    trainer = Trainer(cfg)
    for _ in range(cfg.training.hyper_start):  # the run's plain steps: inner Adam moments warm up
        trainer.train_step(hyper=False)
        trainer.step += 1
    _set_theta(trainer, theta)
    out: dict[str, list[np.ndarray]] = {n: [] for n in _names(trainer)}
    synthetic, real = trainer.synthetic_batches(), trainer.real_batches()
    for _ in range(draws):
        x, y, draw = synthetic if fix == "synthetic" else trainer.synthetic_batches()
        x_real, y_real = real if fix == "real" else trainer.real_batches()
        *_, hyper = hyper_step(trainer.net, trainer.aug, trainer.inner, x, draw, y, x_real, y_real,
                               trainer.loss_fn, mode=cfg.training.hypergradient,
                               exact_route=cfg.training.hypergradient_route)
        for n in out:
            out[n].append(hyper[n].detach().double().flatten().numpy())
    return {n: np.stack(v) for n, v in out.items()}


def components(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per named scalar (sigma, c1..cK): its draws."""
    flat: dict[str, np.ndarray] = {}
    for name, g in grads.items():
        short = name.split(".")[-1]
        if g.shape[1] == 1:
            flat[short] = g[:, 0]
        else:
            for k in range(g.shape[1]):
                flat[f"{short}{k + 1}"] = g[:, k]
    return flat


def measure(out: Path, experiment: str, presets: list[str], seeds: list[int], draws: int,
            fix: str = "none", where_list: tuple[str, ...] = ("start", "preset")) -> list[dict]:
    rows = []
    for folder in sorted(out.glob(f"runs/{experiment}_L_*")):
        spec = json.loads((folder / "spec.json").read_text())
        if spec["preset"]["name"] not in presets or spec["config"]["training"]["seed"] not in seeds:
            continue
        preset = spec["preset"]
        at_preset = {"sigma": preset.get("sigma", spec["start"].get("sigma")), "c": preset.get("inu_c")}
        for where, theta in (("start", spec["start"]), ("preset", at_preset)):
            if where not in where_list:
                continue
            theta = {k: v for k, v in theta.items() if v is not None}
            for comp, g in components(hypergradients(spec, theta, draws, fix)).items():
                mean, std = float(g.mean()), float(g.std(ddof=1))
                rows.append({"preset": preset["name"], "seed": spec["config"]["training"]["seed"],
                             "theta at": where, "component": comp, "mean": mean, "std": std,
                             "snr": mean / std if std > 0 else 0.0,
                             "value": _value(theta, comp)})
                print(f"{preset['name']} s{rows[-1]['seed']} at {where}: {comp} = {rows[-1]['value']:.3f} "
                      f"mean {mean:+.3e} std {std:.3e} SNR {rows[-1]['snr']:+.3f}", flush=True)
    return rows


def _value(theta: dict, comp: str) -> float:
    if comp == "sigma":
        return float(theta.get("sigma", float("nan")))
    return float(theta["c"][int(comp[1:]) - 1]) if "c" in theta else float("nan")


def markdown(rows: list[dict], draws: int, command: str = "") -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"`{command}` (torch {torch.__version__}, {platform.machine()} CPU, "
             f"{torch.get_num_threads()} thread(s)).", ""] if command else []
    lines += [f"Hypergradient of L_real per theta component: {draws} independent draws (synthetic and "
             "\"real\" batches) from one warmed-up network per seed. SNR = mean / standard deviation "
             "of the draws; gradient descent moves a component against the sign of its mean, and Adam "
             "by about lr x SNR per hyper-step.", "",
             "| preset | theta at | component | value | mean hypergradient | "
             + " | ".join(f"SNR s{s}" for s in seeds) + " | SNR, mean |",
             "|---" * (6 + len(seeds)) + "|"]
    keys = sorted({(r["preset"], r["theta at"], r["component"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "start", k[2] != "sigma", k[2]))
    for preset, where, comp in keys:
        sel = {r["seed"]: r for r in rows if (r["preset"], r["theta at"], r["component"]) == (preset, where, comp)}
        any_row = next(iter(sel.values()))
        lines.append(f"| {preset} | {where} | {comp} | {any_row['value']:.3f} | "
                     f"{np.mean([r['mean'] for r in sel.values()]):+.2e} | "
                     + " | ".join(f"{sel[s]['snr']:+.2f}" if s in sel else "-" for s in seeds)
                     + f" | {np.mean([r['snr'] for r in sel.values()]):+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.hypergrad_signal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/experiments", help="an experiment output folder (with runs/)")
    ap.add_argument("--experiment", default="noise_inu", help="whose L runs to probe (default: noise_inu)")
    ap.add_argument("--presets", default="0.10", help="preset names, comma-separated (default: 0.10)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (default: 0,1,2)")
    ap.add_argument("--draws", type=int, default=48, help="hypergradients per theta (default: 48)")
    ap.add_argument("--fix", default="none", choices=["none", "synthetic", "real"],
                    help="reuse one synthetic or one 'real' batch for every draw (variance shares)")
    ap.add_argument("--at", default="start,preset", help="where theta is probed (default: start,preset)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = measure(Path(args.out), args.experiment, args.presets.split(","), seeds, args.draws, args.fix,
                   tuple(args.at.split(",")))
    if not rows:
        raise SystemExit(f"{args.out}: no L runs of {args.experiment} for presets {args.presets} "
                         f"and seeds {args.seeds} (runs/{args.experiment}_L_*/spec.json)")
    command = "python -m experiments.hypergrad_signal " + " ".join(a for a in (argv or sys.argv[1:]))
    publish(markdown(rows, args.draws, command.split(" --write")[0]), args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
