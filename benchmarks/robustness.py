"""Robustness of a model to the acquisition: Dice on the MNI152 T1 as is and degraded (issue 9).

Cases, all made from nilearn's MNI152 2009 T1 at 1 mm (skull-stripped, as the built-in sample) and
its tissue labels (``sample_data.make_sample_arrays``: WM / GM / CSF from the template's probability
maps):

- ``clean 1 mm`` and ``clean 2 mm`` (the 2 mm template: the built-in sample);
- ``3 mm slices along x|y|z``: each run of 3 slices averaged into one 3 mm slice (a box slice
  profile), the labels taken from the middle slice; Dice on that thick-slice grid;
- ``bias field``: times exp of a smooth seeded field (4 nodes per axis, log-std 0.4: about 0.4x to
  2.5x across the brain);
- ``noise``: Gaussian noise of sigma 8% of the brain's 99th intensity percentile;
- ``inverted (T2-like)``: inside the brain, intensity = max - intensity (CSF bright, WM dark).

Each model segments every case with ``segment_scan`` (the CLI's inference: resampling to the model's
voxel size, flipped pass); classes are compared after mapping both grey matter classes to GM
(``brain_4class``: 1 WM, 2 cortical GM, 3 subcortical GM, 4 ventricles/CSF). Figures, not a test:

    python benchmarks/robustness.py                                  # the shipped starter model
    python benchmarks/robustness.py --models starter runs/starter_old_generator \
        --names starter old-generator --out benchmarks/results/robustness-cpu.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2s_gui.io import Volume  # noqa: E402
from l2s_gui.model_io import load_model, resolve_model_path  # noqa: E402
from l2s_gui.sample_data import CSF, GM, WM, make_sample_arrays  # noqa: E402
from l2s_gui.segment import segment_scan  # noqa: E402

TISSUES = {"WM": WM, "GM": GM, "CSF": CSF}
# brain_4class values -> the sample's tissue ids (both grey matter classes are GM)
BRAIN_4CLASS_TO_TISSUE = {0: 0, 1: WM, 2: GM, 3: GM, 4: CSF}


def thick_slices(data: np.ndarray, labels: np.ndarray, affine: np.ndarray, axis: int, factor: int = 3):
    """``factor`` slices along ``axis`` averaged into one (box profile); labels of the middle slice."""
    n = data.shape[axis] // factor * factor
    cut = [slice(None)] * 3
    cut[axis] = slice(0, n)
    d = np.moveaxis(data[tuple(cut)], axis, 0)
    thick = d.reshape(n // factor, factor, *d.shape[1:]).mean(1)
    lab = np.moveaxis(np.moveaxis(labels[tuple(cut)], axis, 0)[factor // 2::factor], 0, axis)
    new = affine.copy()
    new[:3, axis] = affine[:3, axis] * factor
    new[:3, 3] = affine[:3, 3] + affine[:3, axis] * (factor - 1) / 2  # the block's centre
    return np.moveaxis(thick, 0, axis).astype(np.float32), lab, new


def bias_field(shape, seed: int = 0, nodes: int = 4, log_std: float = 0.4) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 1, nodes, nodes, nodes), generator=g) * log_std
    return torch.exp(F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True))[0, 0].numpy()


def cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, image, tissue labels, affine) of every case."""
    t1, labels, affine, _ = make_sample_arrays(resolution=1)
    t1_2, labels_2, affine_2, _ = make_sample_arrays(resolution=2)
    brain = labels > 0
    top = float(np.percentile(t1[brain], 99))
    rng = np.random.default_rng(0)
    out = [("clean 1 mm", t1, labels, affine), ("clean 2 mm", t1_2, labels_2, affine_2)]
    for axis, name in enumerate("xyz"):
        out.append((f"3 mm slices along {name}", *thick_slices(t1, labels, affine, axis)))
    out.append(("bias field", (t1 * bias_field(t1.shape)).astype(np.float32), labels, affine))
    noisy = t1 + rng.normal(0, 0.08 * top, t1.shape).astype(np.float32)
    out.append(("noise", np.where(brain, noisy, 0).astype(np.float32), labels, affine))
    out.append(("inverted (T2-like)", np.where(brain, t1.max() - t1, 0).astype(np.float32), labels, affine))
    return out


def tissue_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    out = {}
    for name, v in TISSUES.items():
        p, t = pred == v, truth == v
        denom = p.sum() + t.sum()
        out[name] = float(2 * (p & t).sum() / denom) if denom else float("nan")
    out["mean"] = float(np.mean([out[k] for k in TISSUES]))
    return out


def to_tissues(pred: np.ndarray, model) -> np.ndarray:
    if model.table.name != "brain_4class":
        return pred  # a model of the sample's own tissue ids 2 / 3 / 24 (table mni152_tissues)
    lut = np.zeros(int(max(BRAIN_4CLASS_TO_TISSUE)) + 1, np.int32)
    for k, v in BRAIN_4CLASS_TO_TISSUE.items():
        lut[k] = v
    return lut[pred]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["starter"], help="model files, run folders or 'starter'")
    p.add_argument("--names", nargs="*", help="column names (default: the file names)")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = [resolve_model_path(m) for m in args.models]
    names = args.names or [m if m == "starter" else Path(m).name for m in args.models]
    models = [load_model(pth) for pth in paths]
    all_cases = cases()
    results: dict[str, list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    for case, image, truth, affine in all_cases:
        results[case] = []
        for model in models:
            seg = segment_scan(model, Volume(image, affine), "cpu")
            results[case].append(tissue_dice(to_tissues(seg.labels, model), truth))
        print(f"{case}: " + "  ".join(f"{n} {r['mean']:.3f}" for n, r in zip(names, results[case])), flush=True)
    wall = time.perf_counter() - t0

    clean = results["clean 1 mm"]
    header = "| case | " + " | ".join(f"{n}: WM / GM / CSF | {n}: mean (vs clean 1 mm)" for n in names) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(names))]
    for case, rows in results.items():
        cells = []
        for r, c in zip(rows, clean):
            cells.append(f"{r['WM']:.3f} / {r['GM']:.3f} / {r['CSF']:.3f}")
            cells.append(f"{r['mean']:.3f} ({r['mean'] - c['mean']:+.3f})")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    worst = [min(rows[i]["mean"] - clean[i]["mean"] for case, rows in results.items() if case != "clean 1 mm")
             for i in range(len(models))]
    lines.append("")
    lines.append("Largest drop from the clean 1 mm Dice (target: every degraded case within 0.05): "
                 + ", ".join(f"{n} {w:+.3f}" for n, w in zip(names, worst)))
    lines.append("Models: " + ", ".join(f"{n} = {pth} (step {m.step}, trained at {m.voxel_size} mm)"
                                          for n, pth, m in zip(names, paths, models)))
    lines.append(f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                 f"{args.threads} thread(s); {wall:.0f} s for {len(all_cases)} cases x {len(models)} model(s).")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text("# Robustness: Dice on the MNI152 T1, clean and degraded\n\n"
                                  "`python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:]) + "`\n\n"
                                  + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
