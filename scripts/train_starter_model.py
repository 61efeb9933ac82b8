"""Train the shipped starter model (resources/models/starter_4class_2d.safetensors) with the engine.

Naive SynthSeg (theta fixed: no learned augmentation), 2D coronal slices at 2 mm, on the 16 shared
SynthSeg label maps (every FreeSurfer id a generation label; targets: the paper's 4 classes over the
whole brain, table ``brain_4class``), with the SynthSeg-grade generator (flip, resolution and
partial-volume randomisation, SVF elastic field, gamma, skull stripping half of the time). Seed,
budget and settings are below; on a 2-core CPU it takes about an hour (one torch thread).

    python scripts/train_starter_model.py                    # train (or resume) and export
    python scripts/train_starter_model.py --label-maps DIR   # other label maps (FreeSurfer ids)

The run folder (default runs/starter) is resumable: rerun the command after an interruption. The
MNI152 2 mm sample is the validation pair (monitoring only: the exported model is the last step's,
nothing is selected on it). ``benchmarks/robustness.py`` measures the exported model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.prep import prepare_label_maps  # noqa: E402
from l2s_gui.sample_data import sample_paths  # noqa: E402
from l2s_gui.starter import STARTER_FILE, STARTER_NETWORK, STARTER_TABLE, STARTER_VOXEL_SIZE  # noqa: E402

DEFAULT_LABEL_MAPS = (REPO / ".." / "shared" / "data" / "label_maps").resolve()
TABLE = STARTER_TABLE
STEPS = 7000
SEED = 0


OLD_GENERATOR = {"gamma_std": 0.25, "elastic_kind": "displacement", "flip": False, "resolution": False,
                 "skull_strip_probability": 0.0}
"""The generator before issue 9's SynthSeg-grade parts (for the robustness ablation, --old-generator)."""


def starter_config(label_maps: list[str], real_images: list[str], real_labels: list[str], steps: int,
                   old_generator: bool = False) -> dict:
    """The starter model's training config (an l2s_gui Config mapping)."""
    cfg = {
        "data": {"label_maps": label_maps, "real_images": real_images, "real_labels": real_labels,
                 "val_fraction": 0.5, "label_table": TABLE, "ndim": 2, "slice_axis": 1, "patch_size": [],
                 "batch_size": 8, "voxel_size": list(STARTER_VOXEL_SIZE)},
        "synthesis": {"skull_strip_probability": 0.5},
        "augmentation": {"kind": "parametric", "noise": "uniform", "sigma_range": [0.0, 0.1], "inu": True,
                         "inu_c_init": [0.4]},
        "network": dict(STARTER_NETWORK),
        "training": {"method": "synthseg", "steps": steps, "lr_segmentation": 3e-3,
                     "lr_segmentation_schedule": "cosine", "lr_segmentation_final": 0.05, "seed": SEED,
                     "device": "cpu", "val_every": 250, "preview_every": 100, "checkpoint_every": 250,
                     "log_every": 10},
    }
    if old_generator:
        cfg["synthesis"] = dict(OLD_GENERATOR)
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--label-maps", default=str(DEFAULT_LABEL_MAPS))
    p.add_argument("--out", default=str(REPO / "runs" / "starter"), help="run folder (resumed if present)")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--export", default=str(REPO / "resources" / "models" / STARTER_FILE))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--old-generator", action="store_true",
                   help="the same training without the SynthSeg-grade generator parts (robustness ablation); "
                        "default run folder runs/starter_old_generator, not exported unless --export is given")
    args = p.parse_args(argv)
    if args.old_generator and args.out == p.get_default("out"):
        args.out = str(REPO / "runs" / "starter_old_generator")
    if args.old_generator and args.export == p.get_default("export"):
        args.export = ""

    maps, table = prepare_label_maps(args.label_maps, factor=2, table=TABLE, margin=16, crop_classes=[1, 2, 3])
    sample = sample_paths()
    cfg = starter_config([str(m) for m in maps], [str(sample["scan"]), str(sample["real_images"][0])],
                         [str(sample["labels"]), str(sample["real_labels"][0])], args.steps, args.old_generator)
    run = Path(args.out)
    env_cmd = [sys.executable, "-c", f"import torch; torch.set_num_threads({args.threads}); "
               "from l2s_gui.cli import main; raise SystemExit(main())"]
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        cmd = env_cmd + ["resume", str(run), "--steps", str(args.steps)]
    else:
        run.parent.mkdir(parents=True, exist_ok=True)
        cfg_path = run.parent / f"{run.name}.yaml"  # beside the run folder: train refuses one inside it
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = env_cmd + ["train", str(cfg_path), "-o", str(run), "--overwrite"]
    print(" ".join(cmd[3:]), flush=True)
    code = subprocess.call(cmd)
    if code or not args.export:
        return code
    export = Path(args.export)
    export.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.safetensors", export)
    print(f"starter model: {export} ({export.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
