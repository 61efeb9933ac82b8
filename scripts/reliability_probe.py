"""Try the ``l2s`` command line as a careless or hostile user would, and count what happens.

    python scripts/reliability_probe.py [--kills 12] [--jobs 2] [--out probe_dir] [--quick]

1. bad inputs: every case runs ``python -m l2s_gui ...`` in a subprocess (timeout 180 s) and is
   classified: *clear* (exit != 0, exactly one ``l2s: error:`` line, no traceback), *traceback*,
   *accepted* (exit 0: a bad input taken silently), *hang* (timeout), *unclear* (anything else).
   Valid controls must exit 0.
2. concurrency: two writers on one run folder, resume / --overwrite of a live run, watch of a dead run.
3. kill -9: a 60-step run (checkpoint_every 10) is killed at random times (then resumed, sometimes
   killed again during the resume), and resumed until it finishes; the final weights are compared
   bit for bit with an uninterrupted run, and the steps lost per kill (last logged step minus the
   checkpoint resumed from) are counted.
4. disk full: a real small tmpfs when it can be mounted (root), else skipped.

Prints a summary (and writes ``summary.json`` in ``--out``). Uses tiny generated data and a tiny
2D network on the CPU, so every training takes seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

PY = sys.executable
TIMEOUT = 180


# ---------------------------------------------------------------------------------------------- data
def blob_labels(shape, seed, values=(0, 2, 3, 4, 17)):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(c ** 2 for c in grid) < 0.8
    noise = rng.standard_normal((4, *[max(s // 4, 2) for s in shape]))
    up = np.stack([np.kron(n, np.ones((4, 4, 4)))[:shape[0], :shape[1], :shape[2]] for n in noise])
    return np.where(inside, np.array(values)[up.argmax(0) + 1], 0).astype(np.int32)


def make_data(root: Path) -> dict:
    for sub in ("maps", "images", "labels", "bad"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    eye = np.eye(4)
    rng = np.random.default_rng(0)
    means = {0: 0.0, 2: 0.8, 3: 0.5, 4: 0.2, 17: 0.6}
    for i in range(3):
        nib.save(nib.Nifti1Image(blob_labels((24, 24, 24), i), eye), root / "maps" / f"map{i}.nii.gz")
        lab = blob_labels((24, 24, 24), 10 + i)
        img = np.vectorize(means.get)(lab).astype(np.float32) + 0.05 * rng.standard_normal(lab.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(img, eye), root / "images" / f"s{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, eye), root / "labels" / f"s{i}.nii.gz")
    bad = root / "bad"
    scan = np.asarray(nib.load(root / "images" / "s0.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(scan, eye), bad / "float_scan.nii.gz")
    nib.save(nib.Nifti1Image((np.arange(24 ** 3).reshape(24, 24, 24) % 1500).astype(np.int32), eye),
             bad / "int_scan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 24), np.int32), eye), bad / "zeros.nii.gz")
    nib.save(nib.Nifti1Image(-blob_labels((24, 24, 24), 1), eye), bad / "negative.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 24, 3), np.float32), eye), bad / "4d.nii.gz")
    nan = scan.copy()
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, eye), bad / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((24, 24, 24), np.float32), eye), bad / "constant.nii.gz")
    nib.save(nib.Nifti1Image(blob_labels((20, 24, 24), 1), eye), bad / "other_shape.nii.gz")
    (bad / "text.nii.gz").write_text("not a volume")
    (bad / "empty.nii.gz").write_bytes(b"")
    (bad / "garbage.safetensors").write_bytes(os.urandom(2000))
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "empty_folder").mkdir(exist_ok=True)
    (bad / "table.json").write_text("{not json")
    (bad / "binary.yaml").write_bytes(os.urandom(300))
    return {"maps": root / "maps", "images": root / "images", "labels": root / "labels", "bad": bad}


def base_config(data: dict, **training) -> dict:
    return {
        "data": {"label_maps": [str(data["maps"])], "real_images": [str(data["images"])],
                 "real_labels": [str(data["labels"])], "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False},
        "training": {"steps": 4, "val_every": 2, "preview_every": 2, "checkpoint_every": 2, "device": "cpu",
                     **training},
    }


def write_cfg(folder: Path, name: str, cfg) -> Path:
    path = folder / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def run_cli(argv, timeout=TIMEOUT, cwd=None) -> dict:
    start = time.time()
    try:
        proc = subprocess.run([PY, "-m", "l2s_gui", *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"rc": None, "err": "", "out": "", "s": time.time() - start}
    return {"rc": proc.returncode, "err": proc.stderr, "out": proc.stdout, "s": time.time() - start}


def classify(result: dict) -> str:
    if result["rc"] is None:
        return "hang"
    err = result["err"]
    if "Traceback" in err:
        return "traceback"
    if result["rc"] == 0:
        return "accepted"
    lines = [line for line in err.splitlines() if line.startswith("l2s: error:")]
    return "clear" if len(lines) == 1 and "internal error" not in lines[0] else "unclear"


# ---------------------------------------------------------------------------------------------- cases
def crafted_models(model: Path, folder: Path) -> dict[str, Path]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save as st_save

    with safe_open(str(model), framework="pt") as fh:
        meta = json.loads(fh.metadata()["l2s"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}

    def variant(name, change=None, tensors_=None, raw=None):
        m = json.loads(json.dumps(meta))
        if change is not None:
            change(m)
        path = folder / f"crafted_{name}.safetensors"
        path.write_bytes(st_save(tensors_ if tensors_ is not None else tensors,
                                 metadata=raw if raw is not None else {"l2s": json.dumps(m)}))
        return path

    def setter(*keys, value):
        def change(m):
            node = m
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        return change

    out = {
        "huge widths": variant("widths", setter("config", "network", "widths", value=[300000] * 3)),
        "40 levels": variant("levels", setter("config", "network", "widths", value=[4] * 40)),
        "widths text": variant("wtext", setter("config", "network", "widths", value="big")),
        "convs 10^6": variant("convs", setter("config", "network", "convs_per_level", value=10 ** 6)),
        "tiny voxel": variant("voxel", setter("config", "data", "voxel_size", value=[1e-7])),
        "inf sigma": variant("inf", setter("config", "augmentation", "sigma_init", value=float("inf"))),
        "ndim 7": variant("ndim", setter("config", "data", "ndim", value=7)),
        "config list": variant("clist", setter("config", value=[1])),
        "no label table": variant("notable", lambda m: m.pop("label_table")),
        "10^5 classes": variant("classes", setter("label_table", "labels",
                                                  value=[{"value": i} for i in range(10 ** 5)])),
        "labels number": variant("lnum", setter("label_table", "labels", value=7)),
        "spatial text": variant("stext", setter("spatial_shape", value="abc")),
        "spatial huge": variant("shuge", setter("spatial_shape", value=[4096, 4096, 4096])),
        "step text": variant("step", setter("step", value="x")),
        "version text": variant("version", setter("format_version", value="1")),
        "metadata not JSON": variant("nojson", raw={"l2s": "{nope"}),
        "metadata list": variant("mlist", raw={"l2s": "[1]"}),
        "no l2s metadata": variant("nometa", raw={"x": "y"}),
        "wrong weight shapes": variant("shapes", tensors_={k: v[:1] if v.ndim else v for k, v in tensors.items()}),
        "NaN weights": variant("nan", tensors_={k: torch.full_like(v, float("nan")) for k, v in tensors.items()}),
    }
    return out


def bad_input_cases(work: Path, data: dict, trained: Path) -> list[tuple[str, list]]:
    bad = data["bad"]
    cfgs = work / "cfgs"
    cfgs.mkdir(exist_ok=True)
    base = base_config(data)
    scan = data["images"] / "s0.nii.gz"
    model = trained / "model.safetensors"
    n = [0]

    def cfg_with(path, value, name=None):
        c = json.loads(json.dumps(base))
        node = c
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        n[0] += 1
        return write_cfg(cfgs, name or f"c{n[0]}.yaml", c)

    def out():
        n[0] += 1
        return work / "outs" / f"o{n[0]}"

    def train(cfg, *extra):
        return ["train", cfg, "-o", out(), "--quiet", *extra]

    existing_nonrun = work / "not_a_run"
    existing_nonrun.mkdir(exist_ok=True)
    (existing_nonrun / "notes.txt").write_text("mine")
    a_file = work / "a_file.txt"
    a_file.write_text("x")
    # damaged runs for resume
    def damaged_run(name, damage):
        run = work / "damaged" / name
        shutil.copytree(trained, run)
        damage(run)
        return run

    def all_ckpts_bad(run):
        for d in (run / "checkpoints").glob("step_*"):
            (d / "state.safetensors").write_bytes(b"")

    def no_ckpt_but_model(run):
        shutil.rmtree(run / "checkpoints")

    def edited_config(run):
        c = yaml.safe_load((run / "config.yaml").read_text())
        c["network"]["widths"] = [8, 16]
        (run / "config.yaml").write_text(yaml.safe_dump(c))

    def data_gone(run):
        c = yaml.safe_load((run / "config.yaml").read_text())
        c["data"]["label_maps"] = [str(work / "moved_away")]
        (run / "config.yaml").write_text(yaml.safe_dump(c))

    dead_state = damaged_run("dead", lambda r: (r / "state.json").write_text(json.dumps(
        {"status": "running", "pid": _dead_pid(), "host": socket.gethostname(), "step": 4, "total_steps": 8})))
    dead_bad_state = damaged_run("dead_bad_state", lambda r: (r / "state.json").write_text("[1, 2]"))
    (dead_bad_state / "state.json").write_text('{"status": "running", "pid": "x", "step": [1]}')

    cases: list[tuple[str, list]] = [
        # config files
        ("config missing", train(work / "nope.yaml")),
        ("config is a folder", train(work)),
        ("config empty", train(write_cfg(cfgs, "empty.yaml", ""))),
        ("config invalid YAML", train(write_cfg(cfgs, "inv.yaml", "data: [unclosed"))),
        ("config top-level list", train(write_cfg(cfgs, "list.yaml", "- 1\n- 2\n"))),
        ("config invalid JSON", train(write_cfg(cfgs, "inv.json", "{nope"))),
        ("config binary", train(bad / "binary.yaml")),
        ("unknown section", train(cfg_with("nonsense.x", 1))),
        ("unknown key", train(cfg_with("training.lr", 1))),
        ("section a scalar", train(cfg_with("training", 5))),
        # numbers
        ("lr negative", train(cfg_with("training.lr_segmentation", -1))),
        ("lr inf", train(cfg_with("training.lr_segmentation", float("inf")))),
        ("lr nan", train(cfg_with("training.lr_augmentation", float("nan")))),
        ("lr text", train(cfg_with("training.lr_segmentation", "fast"))),
        ("steps negative", train(cfg_with("training.steps", -5))),
        ("steps 1e15", train(cfg_with("training.steps", 10 ** 15))),
        ("steps text", train(cfg_with("training.steps", "many"))),
        ("steps float", train(cfg_with("training.steps", 2.5))),
        ("widths huge", train(cfg_with("network.widths", [100000, 100000]))),
        ("widths 8x1024", train(cfg_with("network.widths", [1024] * 8))),
        ("widths empty", train(cfg_with("network.widths", []))),
        ("widths zero", train(cfg_with("network.widths", [0, 4]))),
        ("convs_per_level 1000", train(cfg_with("network.convs_per_level", 1000))),
        ("voxel size 1e-9", train(cfg_with("data.voxel_size", [1e-9]))),
        ("voxel size negative", train(cfg_with("data.voxel_size", [-1]))),
        ("voxel size 2 values", train(cfg_with("data.voxel_size", [1, 1]))),
        ("batch size 0", train(cfg_with("data.batch_size", 0))),
        ("batch size 1e6", train(cfg_with("data.batch_size", 10 ** 6))),
        ("patch not multiple", train(cfg_with("data.patch_size", [17, 17]))),
        ("patch huge", train(cfg_with("data.patch_size", [100000, 100000]))),
        ("patch 3 values in 2D", train(cfg_with("data.patch_size", [16, 16, 16]))),
        ("ndim 4", train(cfg_with("data.ndim", 4))),
        ("slice axis 5", train(cfg_with("data.slice_axis", 5))),
        ("val fraction 1.5", train(cfg_with("data.val_fraction", 1.5))),
        ("seed 1e20", train(cfg_with("training.seed", 10 ** 20))),
        ("int 1e400", train(write_cfg(cfgs, "bigint.yaml",
                                      yaml.safe_dump(base).replace("steps: 4", "steps: " + "9" * 400)))),
        ("rotation nan", train(cfg_with("synthesis.rotation", float("nan")))),
        ("scaling 2", train(cfg_with("synthesis.scaling", 2))),
        ("mean range 1 value", train(cfg_with("synthesis.mean_range", [1]))),
        ("std range negative", train(cfg_with("synthesis.std_range", [-1, 1]))),
        ("elastic nodes 1e4", train(cfg_with("synthesis.elastic_nodes", 10000))),
        ("inu nodes 1000", train(cfg_with("augmentation.inu_nodes", [1000]))),
        ("residual widths huge", train(cfg_with("augmentation.residual_widths", [100000]))),
        ("sigma init -1", train(cfg_with("augmentation.sigma_init", -1))),
        ("inu c init > max", train(cfg_with("augmentation.inu_c_init", 5))),
        ("kind none with learn2synth", train(cfg_with("augmentation.kind", "none"))),
        ("method unknown", train(cfg_with("training.method", "magic"))),
        ("hypergradient unknown", train(cfg_with("training.hypergradient", "fast"))),
        ("precision fp8", train(cfg_with("training.precision", "fp8"))),
        ("device gpu", train(cfg_with("training.device", "gpu"))),
        ("device cuda (none here)", train(cfg_with("training.device", "cuda"))),
        ("device cuda:x", train(cfg_with("training.device", "cuda:x"))),
        ("checkpoint every 0", train(cfg_with("training.checkpoint_every", 0))),
        ("keep checkpoints 0", train(cfg_with("training.keep_checkpoints", 0))),
        ("recovery with supervised", train(cfg_with("training.method", "supervised", "sup.yaml"),
                                           "--set", "recovery.enabled=true")),
        ("lr 1e8 (diverges)", train(cfg_with("training.lr_segmentation", 1e8), "--steps", "30")),
        # data
        ("label maps missing", train(cfg_with("data.label_maps", [str(work / "nowhere")]))),
        ("label map a float scan", train(cfg_with("data.label_maps", [str(bad / "float_scan.nii.gz")]))),
        ("label map an int scan (1500 values)", train(cfg_with("data.label_maps", [str(bad / "int_scan.nii.gz")]))),
        ("label map all zero", train(cfg_with("data.label_maps", [str(bad / "zeros.nii.gz")]))),
        ("label map negative", train(cfg_with("data.label_maps", [str(bad / "negative.nii.gz")]))),
        ("label map 4D", train(cfg_with("data.label_maps", [str(bad / "4d.nii.gz")]))),
        ("label map text file", train(cfg_with("data.label_maps", [str(bad / "text.nii.gz")]))),
        ("label map empty file", train(cfg_with("data.label_maps", [str(bad / "empty.nii.gz")]))),
        ("label maps empty folder", train(cfg_with("data.label_maps", [str(bad / "empty_folder")]))),
        ("label maps none", train(cfg_with("data.label_maps", []))),
        ("real images none", train(cfg_with("data.real_images", []))),
        ("real count mismatch", train(cfg_with("data.real_images", [str(data["images"] / "s0.nii.gz")]))),
        ("real NaN scan", train(cfg_with("data.real_images", [str(bad / "nan.nii.gz")] + [
            str(data["images"] / f"s{i}.nii.gz") for i in (1, 2)]))),
        ("real constant scan", train(cfg_with("data.real_images", [str(bad / "constant.nii.gz")] + [
            str(data["images"] / f"s{i}.nii.gz") for i in (1, 2)]))),
        ("real shape mismatch", train(cfg_with("data.real_labels", [str(bad / "other_shape.nii.gz")] + [
            str(data["labels"] / f"s{i}.nii.gz") for i in (1, 2)]))),
        ("label table missing file", train(cfg_with("data.label_table", str(work / "none.json")))),
        ("label table garbage", train(cfg_with("data.label_table", str(bad / "table.json")))),
        ("label table unknown name", train(cfg_with("data.label_table", "freesurfer_99class"))),
        # command line
        ("--set without =", train(cfg_with("training.steps", 4, "ok1.yaml"), "--set", "training.steps")),
        ("--set unknown key", train(cfg_with("training.steps", 4, "ok2.yaml"), "--set", "foo.bar=1")),
        ("--set into a scalar", train(cfg_with("training.steps", 4, "ok3.yaml"), "--set", "training.steps.x=1")),
        ("--steps -1", train(cfg_with("training.steps", 4, "ok4.yaml"), "--steps", "-1")),
        ("--steps text", train(cfg_with("training.steps", 4, "ok5.yaml"), "--steps", "abc")),
        ("--device foo", train(cfg_with("training.steps", 4, "ok6.yaml"), "--device", "foo")),
        ("-o an existing file", ["train", cfgs / "ok1.yaml", "-o", a_file, "--quiet"]),
        ("-o under a file", ["train", cfgs / "ok1.yaml", "-o", a_file / "run", "--quiet"]),
        ("-o read-only (/proc)", ["train", cfgs / "ok1.yaml", "-o", "/proc/l2s_run", "--quiet"]),
        ("-o read-only (/sys)", ["train", cfgs / "ok1.yaml", "-o", "/sys/l2s_run", "--quiet"]),
        ("-o a non-empty non-run folder", ["train", cfgs / "ok1.yaml", "-o", existing_nonrun, "--quiet"]),
        ("-o an existing run", ["train", cfgs / "ok1.yaml", "-o", trained, "--quiet"]),
        ("config inside the run folder", ["train", trained / "config.yaml", "-o", trained, "--overwrite"]),
        ("no command", []),
        ("unknown command", ["fly"]),
        ("train without -o", ["train", cfgs / "ok1.yaml"]),
        # resume
        ("resume not a run", ["resume", existing_nonrun]),
        ("resume missing folder", ["resume", work / "nope"]),
        ("resume a file", ["resume", a_file]),
        ("resume --steps -1", ["resume", damaged_run("r1", lambda r: None), "--steps", "-1"]),
        ("resume --steps 0", ["resume", damaged_run("r2", lambda r: None), "--steps", "0"]),
        ("resume --steps below the step", ["resume", damaged_run("r3", lambda r: None), "--steps", "2"]),
        ("resume --steps text", ["resume", damaged_run("r4", lambda r: None), "--steps", "x"]),
        ("resume config garbage", ["resume", damaged_run("r5", lambda r: (r / "config.yaml").write_text("[["))]),
        ("resume all checkpoints damaged", ["resume", damaged_run("r6", all_ckpts_bad), "--steps", "8"]),
        ("resume no checkpoint but a model", ["resume", damaged_run("r7", no_ckpt_but_model), "--steps", "8"]),
        ("resume config edited", ["resume", damaged_run("r8", edited_config), "--steps", "8"]),
        ("resume data gone", ["resume", damaged_run("r9", data_gone), "--steps", "8"]),
        # watch
        ("watch not a run", ["watch", existing_nonrun]),
        ("watch missing", ["watch", work / "nope"]),
        ("watch a dead run", ["watch", dead_state]),
        ("watch a dead run, malformed state", ["watch", dead_bad_state]),
        # segment
        ("segment model missing", ["segment", work / "nope.safetensors", scan, "-o", out()]),
        ("segment model folder without model", ["segment", existing_nonrun, scan, "-o", out()]),
        ("segment model garbage", ["segment", bad / "garbage.safetensors", scan, "-o", out()]),
        ("segment model empty", ["segment", bad / "empty.safetensors", scan, "-o", out()]),
        ("segment model a NIfTI", ["segment", scan, scan, "-o", out()]),
        ("segment input missing", ["segment", model, work / "nope.nii.gz", "-o", out()]),
        ("segment input empty folder", ["segment", model, bad / "empty_folder", "-o", out()]),
        ("segment input text", ["segment", model, bad / "text.nii.gz", "-o", out()]),
        ("segment input 4D", ["segment", model, bad / "4d.nii.gz", "-o", out()]),
        ("segment input NaN", ["segment", model, bad / "nan.nii.gz", "-o", out()]),
        ("segment input constant", ["segment", model, bad / "constant.nii.gz", "-o", out()]),
        ("segment -o = input", ["segment", model, scan, "-o", scan, "--overwrite"]),
        ("segment -o = model", ["segment", model, scan, "-o", model, "--overwrite"]),
        ("segment --vol = model", ["segment", model, scan, "-o", str(out()) + ".nii.gz", "--vol", model,
                                   "--overwrite"]),
        ("segment --vol = -o", ["segment", model, scan, "-o", work / "same.nii.gz", "--vol", work / "same.nii.gz",
                                "--overwrite"]),
        ("segment --vol = input", ["segment", model, scan, "-o", str(out()) + ".nii.gz", "--vol", scan,
                                   "--overwrite"]),
        ("segment --vol a folder", ["segment", model, scan, "-o", str(out()) + ".nii.gz", "--vol", bad]),
        ("segment -o exists", ["segment", model, scan, "-o", a_file]),
        ("segment -o read-only (/proc)", ["segment", model, scan, "-o", "/proc/seg.nii.gz"]),
        ("segment --vol read-only (/proc)", ["segment", model, scan, "-o", str(out()) + ".nii.gz", "--vol",
                                             "/proc/vol.csv"]),
        ("segment -o a .png", ["segment", model, scan, "-o", work / "seg.png"]),
        ("segment 2 inputs, -o a file", ["segment", model, scan, data["images"] / "s1.nii.gz", "-o",
                                         work / "two.nii.gz"]),
        ("segment --device foo", ["segment", model, scan, "-o", out(), "--device", "foo"]),
        ("segment --device cuda:x", ["segment", model, scan, "-o", out(), "--device", "cuda:x"]),
        ("segment --device cuda:7", ["segment", model, scan, "-o", out(), "--device", "cuda:7"]),
        # demo
        ("demo -o a file", ["demo", "-o", a_file]),
        ("train --steps 0", train(cfg_with("training.steps", 4, "ok7.yaml"), "--steps", "0")),
        ("demo --steps -1", ["demo", "-o", out(), "--steps", "-1"]),
        ("demo --device foo", ["demo", "-o", out(), "--device", "foo"]),
    ]
    for name, path in crafted_models(model, work).items():
        cases.append((f"segment crafted model: {name}", ["segment", path, scan, "-o", out()]))
    return cases


def valid_cases(work: Path, data: dict, trained: Path) -> list[tuple[str, list]]:
    base = base_config(data)
    ok = work / "ok"
    ok.mkdir(exist_ok=True)
    cfg = write_cfg(ok, "ok.yaml", base)
    cfg_json = ok / "ok.json"
    cfg_json.write_text(json.dumps(base))
    scan = data["images"] / "s0.nii.gz"
    model = trained / "model.safetensors"
    runs = [shutil.copytree(trained, ok / f"run{i}") for i in range(3)]
    return [
        ("train", ["train", cfg, "-o", ok / "t1", "--quiet"]),
        ("train JSON", ["train", cfg_json, "-o", ok / "t2", "--quiet"]),
        ("train --set", ["train", cfg, "-o", ok / "t3", "--quiet", "--set", "training.seed=3"]),
        ("train --steps", ["train", cfg, "-o", ok / "t4", "--quiet", "--steps", "3"]),
        ("train synthseg", ["train", cfg, "-o", ok / "t5", "--quiet", "--set", "training.method=synthseg"]),
        ("train supervised", ["train", cfg, "-o", ok / "t6", "--quiet", "--set", "training.method=supervised"]),
        ("train --overwrite a finished run", ["train", cfg, "-o", runs[0], "--overwrite", "--quiet"]),
        ("train voxel size 2", ["train", cfg, "-o", ok / "t7", "--quiet", "--set", "data.voxel_size=[2]"]),
        ("train 3D", ["train", cfg, "-o", ok / "t8", "--quiet", "--set", "data.ndim=3",
                      "--set", "data.patch_size=[16,16,16]"]),
        ("train progress bar", ["train", cfg, "-o", ok / "t9"]),
        ("resume --steps", ["resume", runs[1], "--steps", "6", "--quiet"]),
        ("resume finished (no steps)", ["resume", runs[2], "--quiet"]),
        ("watch --once", ["watch", trained, "--once"]),
        ("watch finished", ["watch", trained]),
        ("segment one", ["segment", model, scan, "-o", ok / "seg.nii.gz"]),
        ("segment run folder", ["segment", trained, scan, "-o", ok / "seg2.nii.gz"]),
        ("segment folder + vol", ["segment", model, data["images"], "-o", ok / "segs", "--vol", ok / "v.csv"]),
        ("segment mgz", ["segment", model, scan, "-o", ok / "seg.mgz"]),
        ("segment --overwrite", ["segment", model, scan, "-o", ok / "seg.nii.gz", "--overwrite"]),
        ("segment --device cpu", ["segment", model, scan, "-o", ok / "seg3.nii.gz", "--device", "cpu"]),
        ("segment output in a new folder", ["segment", model, scan, "-o", ok / "new" / "deep" / "s.nii.gz"]),
        ("help", ["--help"]),
        ("train --help", ["train", "--help"]),
        ("segment --help", ["segment", "--help"]),
        ("label table freesurfer_4class", ["train", cfg, "-o", ok / "t10", "--quiet", "--set",
                                           "data.label_table=auto"]),
    ]


def _dead_pid() -> int:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- concurrency
def concurrency(work: Path, data: dict) -> list[tuple[str, bool, str]]:
    """(scenario, handled as expected, detail)"""
    out = []
    folder = work / "conc"
    folder.mkdir(exist_ok=True)
    long_cfg = write_cfg(folder, "long.yaml", base_config(data, steps=400, checkpoint_every=10, preview_every=50,
                                                          val_every=1000))
    other_cfg = write_cfg(folder, "other.yaml", base_config(data, steps=300, checkpoint_every=10))

    def wait_for(cond, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return True
            time.sleep(0.1)
        return False

    # 1. two trains at once on one folder
    run = folder / "both"
    procs = [subprocess.Popen([PY, "-m", "l2s_gui", "train", long_cfg, "-o", run, "--quiet", "--steps", "40"],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    refused = [r[1] for r in results if r[0] == 1]
    ok = codes == [0, 1] and len(steps) == len(set(steps)) and refused and "in use by process" in refused[0]
    out.append(("two `train -o X` at once", ok, f"exit codes {codes}, {len(steps) - len(set(steps))} duplicate steps"))

    # 2-5. while one runs: second train, resume, overwrite with another config, demo; then watch
    run = folder / "live"
    proc = subprocess.Popen([PY, "-m", "l2s_gui", "train", long_cfg, "-o", run, "--quiet"],
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: list((run / "checkpoints").glob("step_*")))
    config_before = (run / "config.yaml").read_text()
    for name, argv in (("second `train -o X` on a live run", ["train", long_cfg, "-o", run, "--quiet"]),
                       ("`resume` of a live run", ["resume", run, "--quiet"]),
                       ("`resume --steps` of a live run", ["resume", run, "--steps", "900", "--quiet"]),
                       ("`train --overwrite` (other config) on a live run",
                        ["train", other_cfg, "-o", run, "--overwrite", "--quiet"])):
        r = run_cli(argv)
        ok = r["rc"] == 1 and f"process {proc.pid}" in r["err"] and classify(r) == "clear"
        out.append((name, ok, r["err"].strip().splitlines()[-1][:150] if r["err"].strip() else ""))
    out.append(("config.yaml untouched by refused writers", (run / "config.yaml").read_text() == config_before, ""))
    r = run_cli(["watch", run, "--once"])
    out.append(("`watch --once` of a live run", r["rc"] == 0 and "status: running" in r["out"], r["out"][-80:]))
    # watch that must end when the process dies
    watcher = subprocess.Popen([PY, "-m", "l2s_gui", "watch", run], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        code = watcher.wait(timeout=60)
        err = watcher.stderr.read()
        ok = code == 1 and "no longer running" in err
        out.append(("`watch` ends when the run's process is killed", ok, err.strip()[-150:]))
    except subprocess.TimeoutExpired:
        watcher.kill()
        out.append(("`watch` ends when the run's process is killed", False, "hung"))
    r = run_cli(["watch", run])
    out.append(("`watch` of a dead run started later", r["rc"] == 1 and classify(r) == "clear", r["err"][-120:]))
    # the dead run can be resumed (stale lock taken over, with a message)
    r = run_cli(["resume", run, "--steps", "60", "--quiet"])
    out.append(("`resume` of a killed run takes over its folder", r["rc"] == 0 and "no longer running" in r["err"],
                r["err"].strip().splitlines()[0][:150] if r["err"].strip() else ""))
    # segment while a run rewrites its model (atomic replaces)
    run2 = folder / "seg_live"
    proc = subprocess.Popen([PY, "-m", "l2s_gui", "train", long_cfg, "-o", run2, "--quiet", "--set",
                             "training.checkpoint_every=2"], stderr=subprocess.DEVNULL)
    wait_for(lambda: (run2 / "model.safetensors").is_file())
    oks = []
    for i in range(3):
        r = run_cli(["segment", run2, data["images"] / "s0.nii.gz", "-o", folder / f"live_seg{i}.nii.gz"])
        oks.append(r["rc"] == 0)
    proc.kill()
    proc.wait()
    out.append(("`segment` with the model of a live run (replaced every 2 steps)", all(oks), str(oks)))
    # two resumes at once on a stopped run
    r0 = run_cli(["resume", run, "--steps", "60", "--quiet"])  # finished at 60 now
    procs = [subprocess.Popen([PY, "-m", "l2s_gui", "resume", run, "--steps", "90", "--quiet"],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    out.append(("two `resume` at once", codes == [0, 1] and steps == sorted(set(steps)),
                f"exit codes {codes}; steps monotone {steps == sorted(set(steps))}; {r0['rc']}"))
    return out


# ---------------------------------------------------------------------------------------------- kill -9
def weights_digest(model: Path) -> str:
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(model), framework="pt") as fh:
        for k in sorted(fh.keys()):
            h.update(k.encode())
            h.update(fh.get_tensor(k).numpy().tobytes())
    return h.hexdigest()


def last_logged_step(run: Path) -> int:
    last = 0
    try:
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("kind") == "step":
                last = max(last, int(e["step"]))
    except OSError:
        pass
    return last


def kills(work: Path, data: dict, n_kills: int, seed: int = 0) -> dict:
    from l2s_gui.runs import RunFolder

    folder = work / "kills"
    folder.mkdir(exist_ok=True)
    steps = 60
    cfg = write_cfg(folder, "k.yaml", base_config(data, steps=steps, checkpoint_every=10, preview_every=5,
                                                  val_every=20))
    ref = folder / "reference"
    r = run_cli(["train", cfg, "-o", ref, "--quiet"], timeout=600)
    assert r["rc"] == 0, r["err"]
    reference = weights_digest(ref / "model.safetensors")
    rng = random.Random(seed)
    results = []
    for k in range(n_kills):
        run = folder / f"k{k}"
        argv = [PY, "-m", "l2s_gui", "train", cfg, "-o", run, "--quiet"]
        kills_here, lost, before_first = 0, [], 0
        # kill at a random step (some before the first checkpoint), sometimes again during the resume
        for attempt in range(1 + (k % 3 == 2)):
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            target = rng.randint(3, steps - 5) if (k, attempt) != (0, 0) else 5  # one before the 1st checkpoint
            end = time.time() + 300
            while time.time() < end and proc.poll() is None and last_logged_step(run) < target:
                time.sleep(0.01)
            time.sleep(rng.random() * 0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills_here += 1
                logged = last_logged_step(run)
                ckpt = RunFolder(run).latest_checkpoint()
                resumed_from = RunFolder.checkpoint_step(ckpt) if ckpt is not None else 0
                if ckpt is None:
                    before_first += 1
                else:
                    lost.append(logged - resumed_from)
            argv = [PY, "-m", "l2s_gui", "resume", run, "--quiet"]
        final = run_cli(["resume", run, "--quiet"], timeout=600)
        ok = final["rc"] == 0 and RunFolder(run).read_state().get("status") == "finished"
        identical = ok and weights_digest(run / "model.safetensors") == reference
        history = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
                   if json.loads(x)["kind"] == "step"]
        results.append({"kills": kills_here, "before_first_checkpoint": before_first, "steps_lost": lost,
                        "resumed": ok, "identical": identical, "history_monotone": history == sorted(set(history)),
                        "err": final["err"][-200:] if not ok else ""})
    return {"runs": results, "reference": reference}


# ---------------------------------------------------------------------------------------------- disk full
def disk_full(work: Path, data: dict) -> list[tuple[str, bool, str]]:
    mnt = Path(tempfile.mkdtemp(prefix="l2s_full_"))
    sizes = ["32k", "64k", "128k", "256k"]
    out = []
    cfg = write_cfg(work, "full.yaml", base_config(data, steps=400, checkpoint_every=5, preview_every=5))
    for size in sizes:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True).returncode != 0:
            return [("disk full (tmpfs)", None, "cannot mount a tmpfs here (not root?): skipped")]
        try:
            r = run_cli(["train", cfg, "-o", mnt / "run", "--quiet"], timeout=600)
            from l2s_gui.runs import RunFolder

            state = RunFolder(mnt / "run").read_state().get("status")
            leftovers = list((mnt / "run" / "checkpoints").glob(".tmp_step_*")) if (mnt / "run").is_dir() else []
            ok = classify(r) == "clear" and "disk full" in r["err"] and state in ("error", None) and not leftovers
            out.append((f"disk full ({size} tmpfs)", ok, f"state {state}; {r['err'].strip().splitlines()[-1][:150]}"))
            # resume after freeing space is not possible on the same tmpfs; check the folder resumes elsewhere
            if (mnt / "run" / "config.yaml").is_file():
                copy = work / f"full_copy_{size}"
                shutil.copytree(mnt / "run", copy)
                ckpt = RunFolder(copy).latest_checkpoint()
                more = (RunFolder.checkpoint_step(ckpt) if ckpt is not None else 0) + 5
                r2 = run_cli(["resume", copy, "--quiet", "--steps", str(more)])
                out.append((f"  ... its folder resumes once there is space ({size})", r2["rc"] == 0,
                            r2["err"].strip()[-120:]))
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    shutil.rmtree(mnt, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["bad", "valid", "concurrency", "kills", "disk"])
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="l2s_probe_"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.time()
    data = make_data(work / "data")
    trained = work / "trained"
    r = run_cli(["train", write_cfg(work, "train.yaml", base_config(data)), "-o", trained, "--quiet"])
    assert r["rc"] == 0, r["err"]
    summary: dict = {}

    def run_cases(cases):
        with futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_cli(c[1]), cases))
        return [(name, classify(res), res) for (name, _), res in zip(cases, results)]

    if "bad" not in args.skip:
        rows = run_cases(bad_input_cases(work, data, trained))
        counts: dict[str, int] = {}
        for _name, kind, _res in rows:
            counts[kind] = counts.get(kind, 0) + 1
        print(f"\n== bad inputs: {len(rows)} kinds tried")
        for name, kind, res in rows:
            line = [x for x in res["err"].splitlines() if x.strip()]
            print(f"  [{kind:9s}] {name}: {(line[-1] if line else res['out'].strip()[-100:])[:160]}")
        print("  counts:", counts)
        summary["bad_inputs"] = {"tried": len(rows), **counts,
                                 "not_clear": [n for n, k, _ in rows if k != "clear"]}
    if "valid" not in args.skip:
        rows = run_cases(valid_cases(work, data, trained))
        passed = [n for n, _k, res in rows if res["rc"] == 0]
        print(f"\n== valid controls: {len(passed)}/{len(rows)} exit 0")
        for name, _kind, res in rows:
            if res["rc"] != 0:
                print(f"  FAILED {name}: {res['err'].strip()[-200:]}")
        summary["valid"] = {"tried": len(rows), "ok": len(passed)}
    if "concurrency" not in args.skip:
        rows = concurrency(work, data)
        print(f"\n== concurrency: {sum(1 for _, ok, _ in rows if ok)}/{len(rows)} handled")
        for name, ok, detail in rows:
            print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
        summary["concurrency"] = {"tried": len(rows), "ok": sum(1 for _, ok, _ in rows if ok)}
    if "kills" not in args.skip and args.kills:
        res = kills(work, data, args.kills)
        runs = res["runs"]
        total = sum(r["kills"] for r in runs)
        lost = [x for r in runs for x in r["steps_lost"]]
        print(f"\n== kill -9: {total} kills in {len(runs)} runs (60 steps, checkpoint_every 10)")
        for r in runs:
            print(f"  kills {r['kills']} (before 1st ckpt {r['before_first_checkpoint']}), steps lost "
                  f"{r['steps_lost']}, resumed {r['resumed']}, bit-identical {r['identical']}, "
                  f"history monotone {r['history_monotone']} {r['err']}")
        print(f"  survived: {sum(r['resumed'] for r in runs)}/{len(runs)} runs; bit-identical "
              f"{sum(r['identical'] for r in runs)}/{len(runs)}; steps lost per kill "
              f"min {min(lost, default=0)} max {max(lost, default=0)} mean {np.mean(lost) if lost else 0:.1f}")
        summary["kills"] = {"kills": total, "runs": len(runs), "resumed": sum(r["resumed"] for r in runs),
                            "identical": sum(r["identical"] for r in runs), "steps_lost": lost,
                            "before_first_checkpoint": sum(r["before_first_checkpoint"] for r in runs)}
    if "disk" not in args.skip:
        rows = disk_full(work, data)
        print("\n== disk full")
        for name, ok, detail in rows:
            print(f"  [{'skip' if ok is None else 'ok' if ok else 'FAIL'}] {name}: {detail}")
        summary["disk_full"] = [(n, ok) for n, ok, _ in rows]
    summary["seconds"] = round(time.time() - t0)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nsummary ({summary['seconds']} s): {json.dumps({k: v for k, v in summary.items() if k != 'bad_inputs'})}")
    if "bad_inputs" in summary:
        bad = summary["bad_inputs"]
        print(f"bad inputs: {bad['tried']} tried, {bad.get('clear', 0)} one clear line; "
              f"not clear: {summary['bad_inputs']['not_clear']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
