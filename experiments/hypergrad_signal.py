"""How much signal the hypergradient carries about each theta component: its mean over independent
draws against its spread (GUIDE Sec. 7; Learn2Synth eq. 5).

For the L runs of an experiment in a mode (their specs as ``experiments.run`` builds them: base
network, preset "real" corruption, A_theta; the base networks must be trained), the
network is warmed up as the run does (``hyper_start`` plain steps), then ``--draws`` hyper-steps are
computed from that one state, each on a fresh synthetic and "real" batch, without updating anything.
Per component of theta (sigma, c_1..c_K) it reports the mean hypergradient, its standard deviation and
their ratio, the signal-to-noise ratio (SNR). Adam moves a parameter by about ``lr * SNR`` per step
when the gradient's sign is what carries information (``m / sqrt(v)``), so a component with
``|SNR| << 0.1`` drifts by noise, whatever its learning rate or step count; the sign of the mean says
which way L_real wants it to go. Each theta is probed at its L run's start and at the preset, where a
recoverable component's mean hypergradient changes sign or vanishes.

``--network end`` probes instead each L run's finished network and theta (its run folder, trained by
``experiments.run``), at the learned theta and at the preset: the network there has co-adapted with
theta through the hyper phase, so a component whose SNR is near zero at both ends has a flat L_real
between them (not identifiable there), while one pulled back towards the preset was stopped short.

    python -m experiments.hypergrad_signal --out runs/experiments --experiment noise_inu --mode cpu \
        --presets 0.10,0.15 --seeds 0,1,2 --draws 48 --write docs/experiments/cpu/hypergrad_signal.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from l2s_gui.config import Config
from l2s_gui.hypergrad import hyper_step
from l2s_gui.trainer import Trainer

from . import run as experiment_run
from .common import DEFAULT_LABEL_MAPS, MODES, load_experiment, publish, run_folder
from .prep import DEFAULT_CACHE


def _set_theta(trainer: Trainer, theta: dict) -> None:
    """Sets sigma and c of a parametric A_theta (the keys of an L run's ``start``)."""
    with torch.no_grad():
        for name, p in trainer.aug.named_parameters():
            key = name.split(".")[-1]
            if key in theta:
                p.copy_(torch.as_tensor(theta[key], dtype=p.dtype).reshape(p.shape))


def l_specs(experiment: str, mode: str, out: Path, label_maps: str, cache: str | None = None,
            factor: int | None = None) -> list[dict]:
    """The experiment's L run specs in ``mode``, as ``experiments.run`` builds them (their base
    networks in ``<out>/runs``)."""
    exp = load_experiment(experiment, mode)
    data = experiment_run.prepare(exp, label_maps, cache, factor, log=lambda _m: None)
    return experiment_run.learn2synth_specs(exp, data, experiment_run.base_specs(exp, data),
                                            (out / "runs").resolve())


def hypergradients(spec: dict, theta: dict, draws: int, fix: str = "none"
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``draws`` hypergradients per theta parameter at ``theta``, from the run's warmed-up network,
    and the parameters' values (one row each, shaped like one draw).

    ``fix``: 'none' (a fresh synthetic and "real" batch per draw), 'synthetic' or 'real' (that batch
    drawn once and reused: the spread left is the other batch's share of the variance)."""
    cfg = Config.from_dict(spec["config"])
    trainer = Trainer(cfg)
    for _ in range(cfg.training.hyper_start):  # the run's plain steps: inner Adam moments warm up
        trainer.train_step(hyper=False)
        trainer.step += 1
    _set_theta(trainer, theta)
    params = dict(trainer.aug.named_parameters())
    values = {n: p.detach().double().flatten().numpy()[None] for n, p in params.items()}
    out: dict[str, list[np.ndarray]] = {n: [] for n in params}
    synthetic, real = trainer.synthetic_batches(), trainer.real_batches()
    for _ in range(draws):
        x, y, draw = synthetic if fix == "synthetic" else trainer.synthetic_batches()
        x_real, y_real = real if fix == "real" else trainer.real_batches()
        *_, hyper = hyper_step(trainer.net, trainer.aug, trainer.inner, x, draw, y, x_real, y_real,
                               trainer.loss_fn, mode=cfg.training.hypergradient,
                               exact_route=cfg.training.hypergradient_route)
        for n in out:
            out[n].append(hyper[n].detach().double().flatten().numpy())
    return {n: np.stack(v) for n, v in out.items()}, values


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


def finished_run(spec: dict) -> dict:
    """``spec`` continued from its own finished L run (network and theta from its run folder, beside
    its base's, no plain steps first), for ``--network end``."""
    folder = run_folder(spec, Path(spec["config"]["training"]["init_from"]).parent.parent)
    if not (folder / "model.safetensors").is_file():
        raise SystemExit(f"{spec['name']}: its L run {folder} has not finished "
                         "(python -m experiments.run trains it)")
    spec = copy.deepcopy(spec)
    spec["config"]["training"].update(init_from=str(folder / "model.safetensors"),
                                      init_theta_from=str(folder), hyper_start=0)
    return spec


def measure(specs: list[dict], draws: int, fix: str = "none",
            where_list: tuple[str, ...] = ("start", "preset"), network: str = "warmed") -> list[dict]:
    """One row per L run spec, theta position and component. ``network`` 'warmed': the base warmed
    up as the run does, theta at the run's start and at the preset; 'end': the run's finished
    network (in the runs folder of its base), theta where the run left it ('learned') and at the preset."""
    positions = ("start", "preset") if network == "warmed" else ("learned", "preset")
    if not set(where_list) <= set(positions):
        raise SystemExit(f"--at {','.join(where_list)}: with --network {network} theta is probed at "
                         f"{' and/or '.join(positions)}")
    rows = []
    for spec in specs:
        base = spec["config"]["training"]["init_from"]
        if not Path(base).is_file():
            raise SystemExit(f"{spec['name']}: its base network {base} is not trained yet "
                             "(python -m experiments.run trains it)")
        preset, seed = spec["preset"], spec["config"]["training"]["seed"]
        at_preset = {"sigma": preset.get("sigma", spec["start"].get("sigma")), "c": preset.get("inu_c")}
        if network == "end":
            spec = finished_run(spec)
        for where, theta in (("start", spec["start"]), ("learned", {}), ("preset", at_preset)):
            if where not in where_list:
                continue
            grads, values = hypergradients(spec, {k: v for k, v in theta.items() if v is not None}, draws, fix)
            value_of = components(values)
            for comp, g in components(grads).items():
                mean, std = float(g.mean()), float(g.std(ddof=1))
                row = {"preset": preset["name"], "seed": seed, "theta at": where, "component": comp,
                       "mean": mean, "std": std, "snr": mean / std if std > 0 else 0.0,
                       "value": float(value_of[comp][0])}
                rows.append(row)
                print(f"{row['preset']} s{seed} at {where}: {comp} = {row['value']:.3f} mean {mean:+.3e} "
                      f"std {std:.3e} SNR {row['snr']:+.3f}", flush=True)
    return rows


def markdown(rows: list[dict], draws: int, command: str = "", network: str = "warmed") -> str:
    network_text = ("the base warmed up as the L run does" if network == "warmed"
                    else "each L run's finished network, co-adapted with theta")
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"`{command}` (torch {torch.__version__}, {platform.machine()} CPU, "
             f"{torch.get_num_threads()} thread(s)).", ""] if command else []
    lines += [f"Hypergradient of L_real per theta component: {draws} independent draws (synthetic and "
             "\"real\" batches) from one network per seed (" + network_text + "). SNR = mean / standard deviation "
             "of the draws; gradient descent moves a component against the sign of its mean, and Adam "
             "by about lr x SNR per hyper-step.", "",
             "| preset | theta at | component | value (mean over seeds) | mean hypergradient | "
             + " | ".join(f"SNR s{s}" for s in seeds) + " | SNR, mean |",
             "|---" * (6 + len(seeds)) + "|"]
    keys = sorted({(r["preset"], r["theta at"], r["component"]) for r in rows},
                  key=lambda k: (k[0], k[1] == "preset", k[2] != "sigma", k[2]))
    for preset, where, comp in keys:
        sel = {r["seed"]: r for r in rows if (r["preset"], r["theta at"], r["component"]) == (preset, where, comp)}
        lines.append(f"| {preset} | {where} | {comp} | {np.mean([r['value'] for r in sel.values()]):.3f} | "
                     f"{np.mean([r['mean'] for r in sel.values()]):+.2e} | "
                     + " | ".join(f"{sel[s]['snr']:+.2f}" if s in sel else "-" for s in seeds)
                     + f" | {np.mean([r['snr'] for r in sel.values()]):+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.hypergrad_signal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/experiments", help="an experiment output folder (with runs/)")
    ap.add_argument("--experiment", default="noise_inu", help="whose L runs to probe (default: noise_inu)")
    ap.add_argument("--mode", choices=MODES, default="cpu", help="the experiment's mode (default: cpu)")
    ap.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS), help="as for experiments.run")
    ap.add_argument("--cache", default=None, help=f"preprocessed label maps (default: {DEFAULT_CACHE})")
    ap.add_argument("--factor", type=int, default=None, help="as for experiments.run")
    ap.add_argument("--presets", default="0.10", help="preset names, comma-separated (default: 0.10)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (default: 0,1,2)")
    ap.add_argument("--draws", type=int, default=48, help="hypergradients per theta (default: 48)")
    ap.add_argument("--fix", default="none", choices=["none", "synthetic", "real"],
                    help="reuse one synthetic or one 'real' batch for every draw (variance shares)")
    ap.add_argument("--network", default="warmed", choices=["warmed", "end"],
                    help="'warmed': the base after the run's plain steps; 'end': each L run's finished "
                         "network (default: warmed)")
    ap.add_argument("--at", default=None, help="where theta is probed (default: start,preset; with "
                                               "--network end: learned,preset)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    presets = args.presets.split(",")
    specs = [s for s in l_specs(args.experiment, args.mode, Path(args.out), args.label_maps, args.cache, args.factor)
             if s["preset"]["name"] in presets and s["config"]["training"]["seed"] in seeds]
    if not specs:
        raise SystemExit(f"{args.experiment} ({args.mode} mode) has no L runs for presets {args.presets} "
                         f"and seeds {args.seeds}")
    at = args.at or ("start,preset" if args.network == "warmed" else "learned,preset")
    rows = measure(specs, args.draws, args.fix, tuple(at.split(",")), args.network)
    command = "python -m experiments.hypergrad_signal " + " ".join(a for a in (argv or sys.argv[1:]))
    publish(markdown(rows, args.draws, command.split(" --write")[0], args.network), args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
