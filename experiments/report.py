"""Tables (CSV, markdown) and plots (PNG) of an experiment's runs."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib

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


def recovery_rows(exp: dict, L: list[dict]) -> list[dict]:
    paper = exp.get("paper", {}).get("sigma", {})
    rows = []
    for r in L:
        p = r["preset"]
        fixed = not p.get("sigma_range")
        row = {"preset": p["name"], "preset_sigma": p.get("sigma", "") if fixed else "U[%g,%g]" % tuple(p["sigma_range"]),
               "learned_sigma": r["learned"].get("sigma"), "final_sigma": r["final"].get("sigma"),
               "paper_sigma": paper.get(p["name"], "")}
        row["abs_err_sigma"] = abs(row["learned_sigma"] - p.get("sigma", 0.0)) if fixed and row["learned_sigma"] is not None else ""
        row["sigma_within_0.01"] = (row["abs_err_sigma"] <= SIGMA_TARGET) if row["abs_err_sigma"] != "" else ""
        pc = p.get("inu_c", [])
        for i, k in enumerate(_c_keys(r["learned"])):
            row[f"preset_{k}"] = pc[i] if i < len(pc) else ""
            row[f"learned_{k}"] = r["learned"][k]
            row[f"final_{k}"] = r["final"][k]
            row[f"abs_err_{k}"] = abs(r["learned"][k] - pc[i]) if i < len(pc) else ""
        errs = [row[f"abs_err_{k}"] for k in _c_keys(r["learned"]) if row.get(f"abs_err_{k}", "") != ""]
        if errs:
            row["c_within_0.1"] = all(e <= C_TARGET for e in errs)
        row.update({"steps": r["steps"], "hyper_steps": r["steps"] - r["hyper_start"],
                    "tail_steps_averaged": r["tail_steps"], "wall_s": round(r["wall_s"], 1),
                    "val_dice_end": r.get("last_val_dice")})
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})


def recovery_markdown(exp: dict, rows: list[dict]) -> str:
    names = [r["preset"] for r in rows]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def add(label, key, digits=3):
        lines.append(f"| {label} | " + " | ".join(_fmt(r.get(key, ""), digits) for r in rows) + " |")

    add("preset sigma", "preset_sigma")
    add("learned sigma (mean of last hyper-steps)", "learned_sigma")
    add("final sigma", "final_sigma")
    add("paper (Learn2Synth)", "paper_sigma")
    add("abs(learned - preset)", "abs_err_sigma")
    lines.append("| within 0.01 | " + " | ".join(
        ("yes" if r["sigma_within_0.01"] else "**no**") if r["sigma_within_0.01"] != "" else "-" for r in rows) + " |")
    ckeys = sorted({k[len("learned_"):] for r in rows for k in r if re.fullmatch(r"learned_c\d+", k)})
    for k in ckeys:
        add(f"preset {k}", f"preset_{k}", 2)
        add(f"learned {k}", f"learned_{k}")
        add(f"abs(learned - preset) {k}", f"abs_err_{k}")
    if ckeys:
        lines.append("| all c within 0.1 | " + " | ".join(
            ("yes" if r.get("c_within_0.1") else "**no**") if "c_within_0.1" in r else "-" for r in rows) + " |")
    add("validation Dice at the end", "val_dice_end")
    add("wall time (s)", "wall_s", 0)
    return "\n".join(lines) + "\n"


def dice_rows(exp: dict, N: list[dict], L: list[dict], O: list[dict]) -> list[dict]:
    rows = []
    by_preset = {r["preset"]["name"]: r for r in L}
    tests = [p["name"] for p in exp["presets"]]
    for p in exp["presets"]:
        for role, group in (("N", N), ("L", [by_preset.get(p["name"])]), ("O", O)):
            for r in group:
                if r is None or r["preset"]["name"] != p["name"]:
                    continue
                row = {"train": p["name"], "model": role}
                for t in tests:
                    row[t] = r["dice"][t]["mean"] if t in r["dice"] else float("nan")
                rows.append(row)
    return rows


def dice_markdown(exp: dict, rows: list[dict]) -> str:
    tests = [p["name"] for p in exp["presets"]]
    best = {t: max((r[t] for r in rows), default=float("nan")) for t in tests}
    lines = ["| train \\ test | model | " + " | ".join(tests) + " |", "|---|---|" + "---|" * len(tests)]
    prev = None
    for r in rows:
        cells = []
        for t in tests:
            v = r[t]
            s = _fmt(v)
            if v == best[t]:
                s = f"**{s}**"
            if t == r["train"]:
                s = f"<u>{s}</u>"
            cells.append(s)
        lines.append(f"| {r['train'] if r['train'] != prev else ''} | {r['model']} | " + " | ".join(cells) + " |")
        prev = r["train"]
    lines.append("")
    lines.append("Bold: best in the column; underlined: tested at the training preset (the diagonal).")
    checks = []
    for t in tests:
        n = next((r[t] for r in rows if r["train"] == t and r["model"] == "N"), None)
        l = next((r[t] for r in rows if r["train"] == t and r["model"] == "L"), None)
        if n is not None and l is not None:
            checks.append(f"{t}: L {l:.3f} vs N {n:.3f} ({'L >= N' if l >= n else 'L < N'}, {l - n:+.3f})")
    if checks:
        lines.append("")
        lines.append("L vs N at the matched preset: " + "; ".join(checks) + ".")
    return "\n".join(lines) + "\n"


def plot_theta(exp: dict, L: list[dict], path_sigma: Path, path_c: Path | None) -> None:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    hyper_start = None
    for i, r in enumerate(L):
        hist = read_csv(Path(r["folder"]) / "history.csv")
        steps = [int(h["step"]) for h in hist]
        sig = [float(h["sigma"]) for h in hist]
        col = colors[i % len(colors)]
        ax.plot(steps, sig, color=col, lw=1.2, label=f"preset {r['preset']['name']}")
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
    ax.set_xlabel("step")
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
    n = len(with_c)
    cols = min(n, 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.2 * rows_), squeeze=False)
    for ax, r in zip(axes.flat, with_c):
        hist = read_csv(Path(r["folder"]) / "history.csv")
        steps = [int(h["step"]) for h in hist]
        pc = r["preset"].get("inu_c", [])
        for j, k in enumerate(_c_keys(r["learned"])):
            ax.plot(steps, [float(h[k]) for h in hist], color=colors[j], lw=1.2, label=f"{k} (M={[2, 4, 8][j] if j < 3 else '?'})")
            if j < len(pc):
                ax.axhline(pc[j], color=colors[j], ls="--", lw=1)
        ax.axvline(r["hyper_start"], color="grey", lw=0.8)
        ax.set_title(f"preset {r['preset']['name']}", fontsize=9)
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
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        f = Path(r["folder"]) / "validation.csv"
        if not f.is_file() or not f.read_text().strip():
            continue
        rows = read_csv(f)
        ax.plot([int(v["step"]) for v in rows], [float(v["mean_dice"]) for v in rows], lw=1,
                label=r.get("label", r["name"]))
    ax.set_xlabel("step")
    ax.set_ylabel("mean Dice (validation at the run's preset)")
    ax.set_title(f"{exp.get('title', exp['name'])} [{exp['mode']} mode]", fontsize=9)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(exp: dict, data: dict, L: list[dict], N: list[dict], O: list[dict], out: Path, wall: float,
                 env: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rec = recovery_rows(exp, L)
    _write_csv(out / "recovery.csv", rec)
    md = [f"# {exp.get('title', exp['name'])}: {exp['mode']} mode", "",
          f"Device: {env.get('device')} (torch {env.get('torch')}, {env.get('cpu_count')} CPUs visible, "
          f"{env.get('jobs')} run(s) in parallel, {env.get('threads') or 'default'} thread(s) each). "
          f"Training wall time summed over the {len(L) + len(N) + len(O)} runs: "
          f"{sum(r['wall_s'] for r in L + N + O):.0f} s; wall time of the command that wrote this report: "
          f"{wall:.0f} s (finished runs are reused, not retrained).", "",
          f"Data: {len(data['train'])} training and {len(data['test'])} held-out test label maps, 2D coronal "
          f"slices of {'x'.join(map(str, data['shape']))} voxels at {data['factor']} mm.", "",
          "## Learned parameters", "", recovery_markdown(exp, rec)]
    if exp.get("notes"):
        md += ["", str(exp["notes"]).strip(), ""]
    plot_theta(exp, L, out / "sigma_vs_step.png", out / "c_vs_step.png")
    md += ["", "![sigma vs step](sigma_vs_step.png)", ""]
    if (out / "c_vs_step.png").is_file():
        md += ["![c vs step](c_vs_step.png)", ""]
    if N or O:
        drows = dice_rows(exp, N, L, O)
        _write_csv(out / "dice.csv", drows)
        md += ["## Test Dice (held-out maps, fixed corrupted test set per preset)", "", dice_markdown(exp, drows)]
    plot_validation(exp, L + N + O, out / "validation_dice.png")
    md += ["![validation Dice](validation_dice.png)", ""]
    (out / "README.md").write_text("\n".join(md))
    def rel(results: list[dict]) -> list[dict]:
        # run folders relative to the output folder (<out>/runs/...), so the file can be moved
        return [{**r, "folder": "runs/" + Path(r["folder"]).name} for r in results]

    (out / "runs.json").write_text(json.dumps({"L": rel(L), "N": rel(N), "O": rel(O), "wall_s": wall, "env": env,
                                               "data": {"train": [Path(f).name for f in data["train"]],
                                                        "test": [Path(f).name for f in data["test"]],
                                                        "shape": data["shape"], "factor": data["factor"]},
                                               "settings": {k: v for k, v in exp.items() if k != "presets"},
                                               "presets": exp["presets"]}, indent=1, default=str))
