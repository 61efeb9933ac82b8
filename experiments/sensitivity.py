"""How much a trained network's test Dice depends on each corruption parameter: the signal a
hypergradient of L_real can carry about that parameter (GUIDE Sec. 7).

For every base network of an experiment output folder (``<out>/runs/B_s*``), the mean foreground Dice
on the fixed held-out test images corrupted with: noise sigma in {0, 0.05, 0.10, 0.15}; and the INU
field k alone (eq. 6-7, M_k = 2, 4, 8 nodes) at c_k in {0.25, 0.5, 1.0}. A parameter whose Dice does
not move is one the hypergradient cannot recover at this resolution.

    python -m experiments.sensitivity --out runs/experiments --write docs/experiments/cpu/sensitivity.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from l2s_gui.config import Config
from l2s_gui.model_io import load_model

from .common import build_test_sets, evaluate, publish

SIGMAS = [0.0, 0.05, 0.10, 0.15]
CS = [0.25, 0.5, 1.0]
NODES = [2, 4, 8]


def presets() -> list[dict]:
    out = [{"name": f"sigma {s:g}", "sigma": s} for s in SIGMAS]
    for k, m in enumerate(NODES):
        for c in CS:
            inu = [0.0] * len(NODES)
            inu[k] = c
            out.append({"name": f"c{k + 1} (M={m}) {c:g}", "sigma": 0.0, "inu_c": inu})
    return out


def measure(out: Path) -> dict:
    rows = {}
    for result in sorted(out.glob("runs/B_s*/result.json")):
        res = json.loads(result.read_text())
        spec = json.loads((result.parent / "spec.json").read_text())
        cfg = Config.from_dict(spec["config"])
        model = load_model(result.parent / "model.safetensors")
        t = spec["test"]
        sets, n_classes = build_test_sets(cfg, t["maps"], presets(), t["images"], t["seed"], torch.device("cpu"))
        rows[f"seed {res['seed']}"] = {name: evaluate(model.net, x, y, n_classes)["mean"]
                                       for name, (x, y) in sets.items()}
    return rows


def markdown(rows: dict) -> str:
    names = [p["name"] for p in presets()]
    lines = ["| test images | " + " | ".join(rows) + " | mean | change from clean (mean) |",
             "|---" * (len(rows) + 3) + "|"]
    clean = float(np.mean([r["sigma 0"] for r in rows.values()]))
    for n in names:
        vals = [r[n] for r in rows.values()]
        m = float(np.mean(vals))
        lines.append(f"| {n} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {m:.3f} | {m - clean:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.sensitivity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/experiments", help="an experiment output folder (with runs/B_s*)")
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = measure(Path(args.out))
    if not rows:
        raise SystemExit(f"{args.out}: no finished base networks (runs/B_s*/result.json)")
    text = ("Mean foreground Dice of the base networks (naive SynthSeg on clean images) on the held-out test "
            "images with one corruption at a time (INU: one field alone, the others at c = 0).\n\n" + markdown(rows))
    publish(text, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
