"""Tables (CSV, markdown) and plots (PNG) of an experiment's runs."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .common import preset_sigma_value, read_csv  # noqa: E402

SIGMA_TARGET = 0.01
C_TARGET = 0.1


def _c_keys(d: dict) -> list[str]:
    return sorted((k for k in d if re.fullmatch(r"c\d+", k)), key=lambda k: int(k[1:]))


def _fmt(v, digits=3) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def _targets(exp: dict, p: dict) -> tuple[float, float]:
    t = exp.get("targets", {})
    return float(p.get("target_sigma", t.get("sigma", SIGMA_TARGET))), float(p.get("target_c", t.get("c", C_TARGET)))


def recovery_rows(exp: dict, L: list[dict]) -> list[dict]:
    """One row per L run (preset, seed): preset, start, learned (mean of the tail) and final theta."""
    paper = exp.get("paper", {}).get("sigma", {})
    rows = []
    for r in L:
        p = r["preset"]
        fixed = not p.get("sigma_range")
        tol_sigma, tol_c = _targets(exp, p)
        start = r.get("start", {})
        row = {"preset": p["name"], "seed": r.get("seed", 0),
               "preset_sigma": p.get("sigma", "") if fixed else "U[{:g},{:g}]".format(*p["sigma_range"]),
               "start_sigma": start.get("sigma", ""),
               "learned_sigma": r["learned"].get("sigma"), "final_sigma": r["final"].get("sigma"),
               "paper_sigma": paper.get(p["name"], "")}
        if fixed:
            row["abs_err_sigma"] = abs(row["learned_sigma"] - p.get("sigma", 0.0))
            row["sigma_on_target"] = row["abs_err_sigma"] <= tol_sigma
        else:  # U[low, high]: the distance to the range (0 inside it)
            lo, hi = p["sigma_range"]
            row["abs_err_sigma"] = max(lo - row["learned_sigma"], row["learned_sigma"] - hi, 0.0)
            row["sigma_on_target"] = row["abs_err_sigma"] == 0.0
        pc, sc = p.get("inu_c", []), start.get("c", [])
        for i, k in enumerate(_c_keys(r["learned"])):
            row[f"preset_{k}"] = pc[i] if i < len(pc) else ""
            row[f"start_{k}"] = sc[i] if i < len(sc) else (sc[0] if len(sc) == 1 else "")
            row[f"learned_{k}"] = r["learned"][k]
            row[f"final_{k}"] = r["final"][k]
            row[f"abs_err_{k}"] = abs(r["learned"][k] - pc[i]) if i < len(pc) else ""
        errs = [row[f"abs_err_{k}"] for k in _c_keys(r["learned"]) if row.get(f"abs_err_{k}", "") != ""]
        if errs:
            row["c_on_target"] = all(e <= tol_c for e in errs)
        row.update({"steps": r["steps"], "hyper_steps": r["steps"] - r["hyper_start"],
                    "tail_steps_averaged": r["tail_steps"], "wall_s": round(r["wall_s"], 1),
                    "val_dice_end": r.get("last_val_dice")})
        rows.append(row)
    return rows


def recovery_summary(exp: dict, rows: list[dict]) -> list[dict]:
    """Per preset over the seeds: mean learned theta, the worst seed's error, targets met."""
    out = []
    for name in dict.fromkeys(r["preset"] for r in rows):
        group = [r for r in rows if r["preset"] == name]
        ckeys = sorted({k[len("learned_"):] for r in group for k in r if re.fullmatch(r"learned_c\d+", k)})
        first = group[0]
        mean_sigma = float(np.mean([r["learned_sigma"] for r in group]))
        p = next(q for q in exp["presets"] + exp.get("extra_presets", []) if q["name"] == name)
        tol_sigma, tol_c = _targets(exp, p)
        if p.get("sigma_range"):
            lo, hi = p["sigma_range"]
            mean_err = max(lo - mean_sigma, mean_sigma - hi, 0.0)
            ok_sigma = mean_err == 0.0
        else:
            mean_err = abs(mean_sigma - float(p.get("sigma", 0.0)))
            ok_sigma = mean_err <= tol_sigma
        row = {"preset": name, "seeds": len(group), "preset_sigma": first["preset_sigma"],
               "start_sigma": first["start_sigma"], "paper_sigma": first["paper_sigma"],
               "mean_learned_sigma": mean_sigma, "err_of_mean_sigma": mean_err,
               "worst_seed_err_sigma": max(r["abs_err_sigma"] for r in group),
               "sigma_target": tol_sigma if not p.get("sigma_range") else "inside range",
               "sigma_met_by_mean": ok_sigma,
               "sigma_met_by_every_seed": all(r["sigma_on_target"] for r in group)}
        ok_c = True
        for k in ckeys:
            vals = [r[f"learned_{k}"] for r in group]
            row[f"preset_{k}"] = first.get(f"preset_{k}", "")
            row[f"start_{k}"] = first.get(f"start_{k}", "")
            row[f"mean_learned_{k}"] = float(np.mean(vals))
            if row[f"preset_{k}"] != "":
                row[f"err_of_mean_{k}"] = abs(row[f"mean_learned_{k}"] - float(row[f"preset_{k}"]))
                row[f"worst_seed_err_{k}"] = max(r[f"abs_err_{k}"] for r in group)
                ok_c &= row[f"err_of_mean_{k}"] <= tol_c
        if ckeys:
            row["c_target"] = tol_c
            row["c_met_by_mean"] = ok_c
            row["c_met_by_every_seed"] = all(r.get("c_on_target", True) for r in group)
        row["wall_s_mean"] = float(np.mean([r["wall_s"] for r in group]))
        ends = [r["val_dice_end"] for r in group if r["val_dice_end"] is not None]
        row["val_dice_end_mean"] = float(np.mean(ends or [float("nan")]))
        out.append(row)
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})


def _yes(v) -> str:
    return "-" if v == "" or v is None else ("yes" if v else "**no**")


def recovery_markdown(exp: dict, summary: list[dict]) -> str:
    names = [r["preset"] for r in summary]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def add(label, key, digits=3, fn=None):
        show = fn or (lambda v: _fmt(v, digits))
        lines.append(f"| {label} | " + " | ".join(show(r.get(key, "")) for r in summary) + " |")

    if not summary:
        return "No finished Learn2Synth runs.\n"
    add("preset sigma", "preset_sigma")
    add("start sigma", "start_sigma")
    add("seeds", "seeds", fn=str)
    add("learned sigma, mean over the seeds", "mean_learned_sigma")
    add("paper (Learn2Synth)", "paper_sigma")
    add("error of the mean", "err_of_mean_sigma")
    add("worst seed's error", "worst_seed_err_sigma")
    add("target (abs error)", "sigma_target", fn=lambda v: _fmt(v, 2))
    add("met by the mean", "sigma_met_by_mean", fn=_yes)
    add("met by every seed", "sigma_met_by_every_seed", fn=_yes)
    ckeys = sorted({k[len("mean_learned_"):] for r in summary for k in r if re.fullmatch(r"mean_learned_c\d+", k)})
    for k in ckeys:
        add(f"preset {k}", f"preset_{k}", 2)
        add(f"start {k}", f"start_{k}", 2)
        add(f"learned {k}, mean", f"mean_learned_{k}")
        add(f"error of the mean, {k}", f"err_of_mean_{k}")
        add(f"worst seed's error, {k}", f"worst_seed_err_{k}")
    if ckeys:
        add("c target (abs error)", "c_target", fn=lambda v: _fmt(v, 2))
        add("every c met by the mean", "c_met_by_mean", fn=_yes)
        add("every c met by every seed", "c_met_by_every_seed", fn=_yes)
    add("validation Dice at the end (mean)", "val_dice_end_mean")
    add("wall time per run (s, mean)", "wall_s_mean", 0)
    return "\n".join(lines) + "\n"


def dice_rows(exp: dict, N: list[dict], L: list[dict], O: list[dict]) -> list[dict]:
    """One row per (training preset, model N / L / O, seed): mean foreground Dice at every test preset."""
    rows = []
    tests = [p["name"] for p in exp["presets"]]
    with_n = {r.get("seed", 0) for r in N}
    L = [r for r in L if r.get("seed", 0) in with_n]   # like for like: the seeds that have baselines
    for p in exp["presets"]:
        for role, group in (("N", N), ("L", L), ("O", O)):
            for r in sorted((r for r in group if r["preset"]["name"] == p["name"]), key=lambda r: r.get("seed", 0)):
                row = {"train": p["name"], "model": role, "seed": r.get("seed", 0)}
                for t in tests:
                    row[t] = r["dice"][t]["mean"] if t in r["dice"] else float("nan")
                rows.append(row)
    return rows


def dice_summary(exp: dict, rows: list[dict]) -> list[dict]:
    """Per (training preset, model): the mean over seeds and the worst seed at every test preset."""
    tests = [p["name"] for p in exp["presets"]]
    out = []
    for key in dict.fromkeys((r["train"], r["model"]) for r in rows):
        group = [r for r in rows if (r["train"], r["model"]) == key]
        row = {"train": key[0], "model": key[1], "seeds": len(group)}
        for t in tests:
            row[t] = float(np.mean([r[t] for r in group]))
            row[f"{t} worst"] = float(min(r[t] for r in group))
        out.append(row)
    return out


def dice_checks(exp: dict, summary: list[dict]) -> list[str]:
    """The Dice targets: L within 0.01 of N (or above) and O >= N - 0.01 at every matched preset."""
    tol = float(exp.get("targets", {}).get("dice_margin", 0.01))
    lines = []
    for t in [p["name"] for p in exp["presets"]]:
        get = {r["model"]: r for r in summary if r["train"] == t}
        if "N" not in get:
            continue
        n = get["N"][t]
        parts = []
        for m in ("L", "O"):
            if m in get:
                d = get[m][t] - n
                parts.append(f"{m} {get[m][t]:.3f} ({d:+.3f}: {'met' if d >= -tol else '**missed**'})")
        lines.append(f"- preset {t}: N {n:.3f}; " + "; ".join(parts))
    return lines


def dice_markdown(exp: dict, summary: list[dict]) -> str:
    tests = [p["name"] for p in exp["presets"]]
    best = {t: max((r[t] for r in summary), default=float("nan")) for t in tests}
    lines = ["| train \\ test | model | " + " | ".join(tests) + " |", "|---|---|" + "---|" * len(tests)]
    prev = None
    for r in summary:
        cells = []
        for t in tests:
            s = f"{_fmt(r[t])} ({_fmt(r[t + ' worst'])})"
            if r[t] == best[t]:
                s = f"**{s}**"
            if t == r["train"]:
                s = f"<u>{s}</u>"
            cells.append(s)
        lines.append(f"| {r['train'] if r['train'] != prev else ''} | {r['model']} | " + " | ".join(cells) + " |")
        prev = r["train"]
    seeds = sorted({r["seeds"] for r in summary})
    lines += ["", f"Mean foreground Dice over {'/'.join(map(str, seeds))} seed(s) (worst seed in "
              "brackets). Bold: best mean in the column; underlined: tested at the training preset.", "",
              "Targets at the matched preset (L within 0.01 of N or above; O >= N - 0.01), on the means:", ""]
    lines += dice_checks(exp, summary)
    return "\n".join(lines) + "\n"


def base_markdown(B: list[dict]) -> str:
    """The warm-start networks: clean Dice and the drop on noisy images (the hypergradient's signal)."""
    if not B:
        return ""
    tests = list(B[0]["dice"])
    lines = ["| seed | " + " | ".join(f"test {t}" for t in tests)
             + " | drop clean -> last | validation Dice | wall (s) |",
             "|---" * (len(tests) + 4) + "|"]
    for r in sorted(B, key=lambda r: r.get("seed", 0)):
        d = [r["dice"][t]["mean"] for t in tests]
        lines.append(f"| {r.get('seed', 0)} | " + " | ".join(_fmt(v) for v in d) +
                     f" | {d[0] - d[-1]:.3f} | {_fmt(r.get('last_val_dice'))} | {r['wall_s']:.0f} |")
    means = [float(np.mean([r["dice"][t]["mean"] for r in B])) for t in tests]
    worst = [float(min(r["dice"][t]["mean"] for r in B)) for t in tests]
    lines.append("| mean | " + " | ".join(_fmt(v) for v in means) + f" | {means[0] - means[-1]:.3f} | | |")
    lines.append("| worst | " + " | ".join(_fmt(v) for v in worst) + " | | | |")
    return "\n".join(lines) + "\n"


def plot_theta(exp: dict, L: list[dict], path_sigma: Path, path_c: Path | None) -> None:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    hyper_start = None
    names = list(dict.fromkeys(r["preset"]["name"] for r in L))
    for r in L:
        hist = read_csv(Path(r["folder"]) / "history.csv")
        steps = [int(h["step"]) for h in hist]
        sig = [float(h["sigma"]) for h in hist]
        col = colors[names.index(r["preset"]["name"]) % len(colors)]
        first = r is next(q for q in L if q["preset"]["name"] == r["preset"]["name"])
        ax.plot(steps, sig, color=col, lw=1.0, alpha=0.85, label=f"preset {r['preset']['name']}" if first else None)
        p = r["preset"]
        if p.get("sigma_range"):
            ax.axhspan(*p["sigma_range"], color=col, alpha=0.08)
            ax.axhline(preset_sigma_value(p), color=col, ls=":", lw=1)
        else:
            ax.axhline(p.get("sigma", 0.0), color=col, ls="--", lw=1)
        hyper_start = r["hyper_start"]
    if hyper_start:
        ax.axvline(hyper_start, color="grey", lw=0.8)
        ax.text(hyper_start, ax.get_ylim()[1], " hyper-steps start", va="top", fontsize=8, color="grey")
    ax.set_xlabel("step (of the run continuing the base network)")
    ax.set_ylabel("learned sigma")
    ax.set_title(f"{exp.get('title', exp['name'])} [{exp['mode']} mode]\n"
                 "solid: learned; dashed: preset (dotted + band: U[low, high] and its mid-point)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path_sigma, dpi=110)
    plt.close(fig)
    if path_c is None:
        return
    with_c = [r for r in L if _c_keys(r["learned"])]
    if not with_c:
        return
    by_preset: dict[str, list[dict]] = {}
    for r in with_c:
        by_preset.setdefault(r["preset"]["name"], []).append(r)
    n = len(by_preset)
    cols = min(n, 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.2 * rows_), squeeze=False)
    for ax, (name, group) in zip(axes.flat, by_preset.items()):
        for n_run, r in enumerate(group):
            hist = read_csv(Path(r["folder"]) / "history.csv")
            steps = [int(h["step"]) for h in hist]
            pc = r["preset"].get("inu_c", [])
            for j, k in enumerate(_c_keys(r["learned"])):
                ax.plot(steps, [float(h[k]) for h in hist], color=colors[j], lw=1.0, alpha=0.85,
                        label=f"{k} (M={[2, 4, 8][j] if j < 3 else '?'})" if n_run == 0 else None)
                if j < len(pc) and n_run == 0:
                    ax.axhline(pc[j], color=colors[j], ls="--", lw=1)
        ax.axvline(group[0]["hyper_start"], color="grey", lw=0.8)
        ax.set_title(f"preset {name} ({len(group)} seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("c_k")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{exp.get('title', exp['name'])} [{exp['mode']} mode]: INU exponents (dashed: preset)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path_c, dpi=110)
    plt.close(fig)


def plot_validation(exp: dict, runs: list[dict], path: Path) -> None:
    """Validation Dice at the end of each L, N and O run, one column of points per preset and role
    (one point per seed, a bar at their mean); drawn from the run results alone (``last_val_dice``),
    so ``runs.json`` is enough to redraw it."""
    roles = [("N", "naive SynthSeg (N)"), ("L", "Learn2Synth (L)"), ("O", "trained at learned theta (O)")]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r["preset"]["name"] for r in runs if r.get("role") in dict(roles)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2.5), 4))
    width = 0.8 / len(roles)
    for j, (role, label) in enumerate(roles):
        first = True
        for i, name in enumerate(names):
            vals = [r["last_val_dice"] for r in runs if r.get("role") == role
                    and r["preset"]["name"] == name and r.get("last_val_dice") is not None]
            if not vals:
                continue
            x = i + (j - (len(roles) - 1) / 2) * width
            ax.scatter([x] * len(vals), vals, s=14, color=colors[j], alpha=0.8, label=label if first else None)
            ax.hlines(float(np.mean(vals)), x - width * 0.4, x + width * 0.4, color=colors[j], lw=2)
            first = False
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("preset of the \"real\" images (each run validated at its own preset)")
    ax.set_ylabel("validation Dice at the end of the run")
    ax.set_title(f"{exp.get('title', exp['name'])}\n[{exp['mode']} mode] points: seeds; bars: their mean",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(exp: dict, data: dict, B: list[dict], L: list[dict], N: list[dict], O: list[dict], out: Path,
                 wall: float, env: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rec = recovery_rows(exp, L)
    summary = recovery_summary(exp, rec)
    _write_csv(out / "recovery.csv", rec)
    _write_csv(out / "recovery_summary.csv", summary)
    runs = B + L + N + O
    md = [f"# {exp.get('title', exp['name'])}: {exp['mode']} mode", "",
          f"Device: {env.get('device')} (torch {env.get('torch')}, {env.get('cpu_count')} CPUs visible, "
          f"{env.get('jobs')} run(s) in parallel, {env.get('threads') or 'default'} thread(s) each). "
          f"Training wall time summed over the {len(runs)} runs: {sum(r['wall_s'] for r in runs):.0f} s; wall "
          f"time of the command that wrote this report: {wall:.0f} s (finished runs, e.g. the base networks "
          f"shared by the experiments, are reused, not retrained).", "",
          f"Data: {len(data['train'])} training label maps (of which the engine holds "
          f"{exp['l2s']['data'].get('val_fraction', 0.25):g} out for validation) and {len(data['test'])} held-out "
          f"test maps, 2D coronal slices of {'x'.join(map(str, data['shape']))} voxels at {data['factor']} mm.", "",
          "## Base networks (warm start: naive SynthSeg on clean images)", "", base_markdown(B),
          "## Learned parameters", "", recovery_markdown(exp, summary),
          "Per seed: `recovery.csv`; per preset: `recovery_summary.csv`."]
    if exp.get("notes"):
        md += ["", str(exp["notes"]).strip(), ""]
    plot_theta(exp, L, out / "sigma_vs_step.png", out / "c_vs_step.png")
    md += ["", "![sigma vs step](sigma_vs_step.png)", ""]
    if (out / "c_vs_step.png").is_file():
        md += ["![c vs step](c_vs_step.png)", ""]
    if N or O:
        drows = dice_rows(exp, N, L, O)
        dsum = dice_summary(exp, drows)
        _write_csv(out / "dice.csv", drows)
        _write_csv(out / "dice_summary.csv", dsum)
        md += ["## Test Dice (held-out maps, fixed corrupted test set per preset)", "", dice_markdown(exp, dsum)]
    plot_validation(exp, L + N + O, out / "validation_dice.png")
    md += ["![validation Dice](validation_dice.png)", ""]
    (out / "README.md").write_text("\n".join(md))

    def rel(results: list[dict]) -> list[dict]:
        # run folders relative to the output folder (<out>/runs/...), so the file can be moved
        return [{**r, "folder": "runs/" + Path(r["folder"]).name} for r in results]

    (out / "runs.json").write_text(json.dumps({"B": rel(B), "L": rel(L), "N": rel(N), "O": rel(O), "wall_s": wall,
                                               "env": env,
                                               "data": {"train": [Path(f).name for f in data["train"]],
                                                        "test": [Path(f).name for f in data["test"]],
                                                        "shape": data["shape"], "factor": data["factor"]},
                                               "settings": {k: v for k, v in exp.items() if k != "presets"},
                                               "presets": exp["presets"]}, indent=1, default=str))
