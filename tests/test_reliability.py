"""Reliability of the run folder and the CLI under careless or hostile use (issue 12): one writer
per run folder, resume from the newest intact checkpoint, one-line errors for unwritable outputs,
full disks, crafted model files and absurd configs, NaN stops, watch on a dead run, umask-following
permissions, outputs never replacing inputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save as safetensors_save

from l2s_gui import runs as runs_module
from l2s_gui.cli import main
from l2s_gui.config import Config
from l2s_gui.errors import ConfigError, OutputError
from l2s_gui.events import DoneEvent
from l2s_gui.model_io import load_model
from l2s_gui.run_lock import RunLock, lock_holder, writer_alive
from l2s_gui.runs import RunFolder, check_checkpoint, sanitize_event_json, sanitize_preview, sanitize_state
from l2s_gui.trainer import Trainer


def write_config(tmp_path, dataset, name="cfg.yaml", **training):
    cfg = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False},
        "training": {"steps": 4, "val_every": 2, "preview_every": 2, "checkpoint_every": 2, "device": "cpu",
                     **training},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("l2s: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def step_events(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "step"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    """A finished 4-step run (checkpoints at steps 2 and 4) to copy and damage."""
    root = tmp_path_factory.mktemp("trained")
    cfg = write_config(root, dataset)
    run = root / "run"
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 0
    return run


# ---------------------------------------------------------------------------------------------- 1. the lock
def test_a_live_run_folder_is_refused_to_a_second_writer(tmp_path, dataset, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cfg = write_config(tmp_path, dataset)
    with RunLock(run, "train"):
        assert lock_holder(run)["pid"] == os.getpid()
        for argv in (["train", str(cfg), "-o", str(run), "--quiet"],
                     ["train", str(cfg), "-o", str(run), "--overwrite", "--quiet"],
                     ["resume", str(run), "--steps", "8", "--quiet"]):
            assert main(argv) == 1
            line = one_error_line(capsys.readouterr().err)
            assert f"process {os.getpid()}" in line and "in use" in line
    assert lock_holder(run) is None
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["steps"] == 4  # untouched
    assert main(["resume", str(run), "--steps", "6", "--quiet"]) == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    pid = dead_pid()
    (run / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "train"}))
    RunFolder(run).write_state(status="running", pid=pid)
    assert writer_alive(run)[0] is False
    assert main(["resume", str(run), "--steps", "6", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"process {pid}" in err and "no longer running" in err


@pytest.mark.slow
def test_two_trains_and_a_resume_of_a_live_run(tmp_path, dataset):
    """Real processes: while `l2s train` runs, a second train and a resume are refused naming its pid;
    after kill -9 the run resumes from its last checkpoint and its history stays monotone."""
    cfg = write_config(tmp_path, dataset, steps=100000, checkpoint_every=5, preview_every=1000, val_every=1000)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "l2s_gui", "train", str(cfg), "-o", str(run), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob("step_*")) and time.time() < deadline:
            time.sleep(0.2)
        assert list((run / "checkpoints").glob("step_*")), proc.stderr.read() if proc.poll() is not None else ""
        for argv in (["train", str(cfg), "-o", str(run)], ["train", str(cfg), "-o", str(run), "--overwrite"],
                     ["resume", str(run)]):
            second = subprocess.run([sys.executable, "-m", "l2s_gui", *argv], capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 1
            assert f"process {proc.pid}" in one_error_line(second.stderr)
        assert writer_alive(run)[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert RunFolder(run).read_state()["status"] == "running"  # died without a word ...
    alive, why = writer_alive(run)
    assert not alive and "no longer running" in why  # ... but readers know
    last = RunFolder(run).checkpoint_step(RunFolder(run).latest_checkpoint())
    resumed = subprocess.run([sys.executable, "-m", "l2s_gui", "resume", str(run), "--steps", str(last + 3),
                              "--quiet"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    steps = step_events(run)
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == last + 3


# ---------------------------------------------------------------------------------------------- 2. resume
DAMAGES = {
    "truncated": lambda d: (d / "state.safetensors").write_bytes((d / "state.safetensors").read_bytes()[:300]),
    "empty": lambda d: (d / "state.safetensors").write_bytes(b""),
    "missing": lambda d: (d / "state.safetensors").unlink(),
    "bad state.json": lambda d: (d / "state.json").write_text('{"step": "four", '),
    "no state.json": lambda d: (d / "state.json").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, trained, damage, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    latest = run / "checkpoints" / "step_0000004"
    DAMAGES[damage](latest)
    assert check_checkpoint(latest) is not None
    (run / "checkpoints" / ".tmp_step_abc").mkdir()  # crash leftovers
    (run / ".state.json.x1y2.tmp").write_text("{")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "step": 5, "loss_')  # a half-written line from a kill
    assert main(["resume", str(run), "--steps", "6", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "step_0000004 is damaged" in err and "resuming from step_0000002 (step 2)" in err
    assert not (run / "checkpoints" / ".tmp_step_abc").exists() and not (run / ".state.json.x1y2.tmp").exists()
    assert step_events(run) == [1, 2, 3, 4, 5, 6]  # the history after step 2 was cut: monotone plots
    assert RunFolder(run).read_state()["status"] == "finished"
    assert json.loads((run / "model.json").read_text())["step"] == 6


def test_resume_arguments_are_checked_before_anything_is_written(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.lock"}
    for steps, words in (("-1", "positive"), ("0", "positive"), ("4", "at step 4 already")):
        assert main(["resume", str(run), "--steps", steps, "--quiet"]) == 1
        assert words in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.lock"} == before


def test_a_run_that_died_before_its_first_checkpoint_restarts_without_overwrite(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path, dataset)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(cfg, run / "config.yaml")
    RunFolder(run).write_state(status="running", pid=dead_pid(), step=1)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "start", "step": 0, "total_steps": 4}) + "\n")
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 0
    assert "before its first checkpoint" in capsys.readouterr().err
    # and `resume` does the same for such a folder
    shutil.rmtree(run / "checkpoints")
    (run / "model.safetensors").unlink()
    (run / "model.json").unlink()
    RunFolder(run).write_state(status="running", pid=dead_pid(), step=1)
    assert main(["resume", str(run), "--quiet"]) == 0
    assert RunFolder(run).read_state()["status"] == "finished"


# ---------------------------------------------------------------------------------------------- 3. unwritable places
def test_unwritable_run_folder_is_one_line(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path, dataset)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["train", str(cfg), "-o", str(blocker / "run"), "--quiet"]) == 1
    assert str(blocker) in one_error_line(capsys.readouterr().err)
    if os.geteuid() != 0:  # root writes through permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            assert main(["train", str(cfg), "-o", str(ro / "run"), "--quiet"]) == 1
            assert "cannot write" in one_error_line(capsys.readouterr().err)
        finally:
            ro.chmod(0o755)


def test_read_only_file_system_is_one_line(tmp_path, dataset, capsys, monkeypatch):
    cfg = write_config(tmp_path, dataset)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "run"))

    monkeypatch.setattr(runs_module.tempfile, "mkstemp", read_only)
    assert main(["train", str(cfg), "-o", str(tmp_path / "run"), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "read-only file system" in line and str(tmp_path / "run") in line


def test_disk_full_during_training_ends_the_run_cleanly(tmp_path, dataset, capsys, monkeypatch):
    """Every run-folder write fails with ENOSPC from step 3 on (metrics, checkpoint files): the run
    ends with an error state and one line; the unfinished checkpoint is cleaned up."""
    cfg = write_config(tmp_path, dataset, steps=6)
    run = tmp_path / "run"
    original_append = RunFolder.append_event
    original_save = runs_module.atomic_write_bytes
    full = {"on": False}

    def append_event(self, event):
        if getattr(event, "step", 0) >= 3 and not isinstance(event, DoneEvent):
            full["on"] = True
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.metrics_path))
        return original_append(self, event)

    import safetensors.torch

    real_save_file = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if full["on"]:  # what safetensors raises on a full disk (its own exception type)
            with open(filename, "wb") as fh:
                fh.write(b"partial")
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, filename, metadata)

    monkeypatch.setattr(RunFolder, "append_event", append_event)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "disk full" in line
    assert RunFolder(run).read_state()["status"] == "error"
    assert not list((run / "checkpoints").glob(".tmp_step_*"))
    monkeypatch.setattr(runs_module, "atomic_write_bytes", original_save)
    assert RunFolder(run).latest_checkpoint().name == "step_0000002"


def test_os_errors_anywhere_are_one_line(tmp_path, capsys, monkeypatch):
    """The last safety net of the CLI: an OSError from anywhere names its file."""
    import l2s_gui.cli as cli

    def boom(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")

    monkeypatch.setitem(cli.COMMANDS, "watch", boom)
    assert main(["watch", str(tmp_path)]) == 1
    assert one_error_line(capsys.readouterr().err) == "l2s: error: /some/file: permission denied"


# ------------------------------------------------------------------------------ 3. crafted models, absurd configs
def _model_variants(path):
    """Crafted variants of a real model file's metadata and weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["l2s"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}

    def with_meta(change):
        m = json.loads(json.dumps(meta))
        change(m)
        return tensors, {"l2s": json.dumps(m)}

    def set_(keys, value):
        def change(m):
            node = m
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        return change

    nan_tensors = {k: (torch.full_like(v, float("nan")) if k.startswith("net.") else v) for k, v in tensors.items()}
    return {
        "huge widths": with_meta(set_(["config", "network", "widths"], [100000, 100000, 100000])),
        "many levels": with_meta(set_(["config", "network", "widths"], [4] * 40)),
        "widths a string": with_meta(set_(["config", "network", "widths"], "big")),
        "tiny voxel size": with_meta(set_(["config", "data", "voxel_size"], [1e-6])),
        "inf sigma": with_meta(set_(["config", "augmentation", "sigma_init"], float("inf"))),
        "config a list": with_meta(set_(["config"], [1, 2])),
        "no label table": with_meta(lambda m: m.pop("label_table")),
        "million classes": with_meta(set_(["label_table", "labels"], [{"value": i} for i in range(10 ** 5)])),
        "labels a number": with_meta(set_(["label_table", "labels"], 7)),
        "spatial shape text": with_meta(set_(["spatial_shape"], "abc")),
        "spatial shape huge": with_meta(set_(["spatial_shape"], [4096, 4096, 4096])),
        "step text": with_meta(set_(["step"], "x")),
        "version text": with_meta(set_(["format_version"], "1")),
        "metadata not JSON": (tensors, {"l2s": "{not json"}),
        "metadata a list": (tensors, {"l2s": "[1, 2]"}),
        "no metadata": (tensors, {"other": "x"}),
        "wrong weights": ({k: v[:1] if v.ndim else v for k, v in tensors.items()}, {"l2s": json.dumps(meta)}),
        "NaN weights": (nan_tensors, {"l2s": json.dumps(meta)}),
    }


def test_crafted_model_files_are_one_line(tmp_path, trained, capsys):
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 24)).astype(np.float32), np.eye(4)), scan)
    variants = _model_variants(trained / "model.safetensors")
    for name, (tensors, metadata) in variants.items():
        model = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        model.write_bytes(safetensors_save(tensors, metadata=metadata))
        assert main(["segment", str(model), str(scan), "-o", str(tmp_path / "seg.nii.gz")]) == 1, name
        line = one_error_line(capsys.readouterr().err)
        assert str(model) in line and "internal error" not in line, (name, line)
    assert not (tmp_path / "seg.nii.gz").exists()


@pytest.mark.parametrize("key, value, words", [
    ("network.widths", [100000, 100000], "at most 1024"),
    ("network.widths", [1024] * 8, "too large"),
    ("data.voxel_size", [1e-6], "data.voxel_size"),
    ("training.lr_segmentation", float("inf"), "finite"),
    ("training.steps", 10 ** 15, "training.steps"),
    ("data.batch_size", 10 ** 6, "data.batch_size"),
    ("augmentation.sigma_init", float("nan"), "finite"),
])
def test_absurd_config_numbers_are_one_line_naming_the_key(key, value, words):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=words) as info:
        Config.from_dict({section: {name: value}})
    assert str(info.value).startswith(key)


def test_a_voxel_size_making_a_huge_grid_is_one_line(tmp_path, dataset, capsys, monkeypatch):
    from l2s_gui import resample
    from l2s_gui.errors import InputError

    with pytest.raises(InputError, match="data.voxel_size: .* too many"):
        resample.target_shape((256, 256, 256), (1.0, 1.0, 1.0), [0.1])  # 2560^3 voxels
    monkeypatch.setattr(resample, "MAX_RESAMPLED_VOXELS", 100 ** 3)  # the test data is small
    cfg = write_config(tmp_path, dataset)
    assert main(["train", str(cfg), "-o", str(tmp_path / "run"), "--set", "data.voxel_size=[0.2]", "--quiet"]) == 1
    assert "too many" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_an_integer_scan_given_as_label_map_asks_for_a_label_table(tmp_path, dataset, capsys):
    scan = tmp_path / "maps" / "scan_as_labels.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(np.arange(24 ** 3, dtype=np.int32).reshape(24, 24, 24) % 1500, np.eye(4)), scan)
    cfg = write_config(tmp_path, dataset)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["label_maps"] = [str(scan)]
    cfg.write_text(yaml.safe_dump(data))
    assert main(["train", str(cfg), "-o", str(tmp_path / "run"), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "1500 distinct label values" in line and "data.label_table" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- 4. NaN stop
def test_a_diverging_run_stops_with_an_error_and_keeps_the_last_good_model(tmp_path, dataset, capsys, monkeypatch):
    cfg = write_config(tmp_path, dataset, steps=6)
    run = tmp_path / "run"
    original = Trainer.train_step

    def train_step(self):
        loss = original(self)
        if self.step >= 2:  # the 4th step diverges: weights and loss NaN
            with torch.no_grad():
                for p in self.net.parameters():
                    p.fill_(float("nan"))
            return float("nan"), None
        return loss

    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "diverged at step 3" in line
    state = RunFolder(run).read_state()
    assert state["status"] == "error" and "diverged" in state["message"]
    assert RunFolder(run).latest_checkpoint().name == "step_0000002"
    model = load_model(run / "model.safetensors")  # the last good model (load_model refuses NaN weights)
    assert model.step == 2
    done = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert done["kind"] == "done" and done["reason"] == "error"


# ---------------------------------------------------------------------------------------------- 3. watch
def test_watch_stops_on_a_dead_run_and_skips_malformed_lines(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "step": 5, "loss_synth": "NaNx", "theta": [1], "it_per_s": "fast"}\n')
        fh.write('[1, 2, 3]\n{"kind": "validation", "step": "x"}\nnot json\n')
        fh.write('{"kind": "validation", "step": 6, "dice": {"2": "a"}, "mean_dice": 0.5}\n')
    pid = dead_pid()
    RunFolder(run).write_state(status="running", pid=pid)
    (run / "run.lock").write_text("")
    assert main(["watch", str(run)]) == 1  # by the dead pid (the message below), not a stale heartbeat
    captured = capsys.readouterr()
    assert "step 6: validation Dice 0.5000" in captured.out
    assert f"process {pid} is no longer running" in one_error_line(captured.err)
    # a malformed state.json: watch --once still answers
    for text in ("[1, 2]", '{"status": 3, "step": "x"}', "{", ""):
        (run / "state.json").write_text(text)
        assert main(["watch", str(run), "--once"]) == 0
        assert "status:" in capsys.readouterr().out


def test_sanitizers_keep_good_data_and_drop_bad_fields():
    good = {"kind": "step", "step": 1, "loss_synth": 0.5, "loss_real": None, "theta": {"sigma": 0.1, "c": [0.5]},
            "it_per_s": 2.0, "elapsed_s": 1.0}
    assert sanitize_event_json(good) == good
    bad = sanitize_event_json({"kind": "step", "step": 2.0, "loss_synth": "x", "theta": {"sigma": "y", "c": [1]}})
    assert bad == {"kind": "step", "step": 2, "theta": {"c": [1]}}
    assert sanitize_event_json({"kind": "step", "step": "2"}) is None
    assert sanitize_event_json({"kind": "preview", "step": 2}) is None
    assert sanitize_event_json([1]) is None
    assert sanitize_state({"status": 1, "step": "x", "pid": 5, "total_steps": -3}) == {"pid": 5}
    assert sanitize_preview({"step": np.int64(3), "synthetic": np.zeros((4, 4))})["step"] == 3
    assert sanitize_preview({"step": np.zeros(3), "synthetic": np.zeros((4, 4))}) is None
    assert sanitize_preview({"synthetic": np.zeros(4)}) is None


# ---------------------------------------------------------------------------------------------- 5. outputs vs inputs
def test_segment_never_replaces_the_model_and_keeps_outputs_apart(tmp_path, trained, capsys):
    model = tmp_path / "model.safetensors"
    shutil.copy(trained / "model.safetensors", model)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 24)).astype(np.float32), np.eye(4)), scan)
    before = model.read_bytes()
    assert main(["segment", str(model), str(scan), "-o", str(tmp_path / "s.nii.gz"), "--vol", str(model),
                 "--overwrite"]) == 1
    assert "inputs are never overwritten" in one_error_line(capsys.readouterr().err)
    assert main(["segment", str(model), str(scan), "-o", str(model), "--overwrite"]) == 1
    one_error_line(capsys.readouterr().err)
    assert model.read_bytes() == before and not (tmp_path / "s.nii.gz").exists()
    seg = tmp_path / "seg.nii.gz"
    assert main(["segment", str(model), str(scan), "-o", str(seg), "--vol", str(seg), "--overwrite"]) == 1
    assert "same file" in one_error_line(capsys.readouterr().err)
    assert main(["segment", str(model), str(scan), "-o", str(seg), "--vol", str(scan), "--overwrite"]) == 1
    one_error_line(capsys.readouterr().err)
    assert not seg.exists()


def test_train_inputs_inside_the_run_folder_are_refused(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_config(run, dataset, name="config.yaml")
    assert main(["train", str(cfg), "-o", str(run), "--overwrite", "--quiet"]) == 1
    assert "would be replaced" in one_error_line(capsys.readouterr().err)
    assert cfg.is_file()


# ---------------------------------------------------------------------------------------------- 6. permissions
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_run_files_follow_the_umask(tmp_path, dataset, umask, file_mode, dir_mode):
    cfg = write_config(tmp_path, dataset)
    run = tmp_path / "run"
    old = os.umask(umask)
    try:
        assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 0
    finally:
        os.umask(old)
    for path in run.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (dir_mode if path.is_dir() else file_mode), (path, oct(mode))


def test_write_errors_name_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"{blocker}/state.json: cannot write"):
        runs_module.atomic_write_text(blocker / "state.json", "{}")


def test_liveness_of_a_run_on_another_host_follows_its_heartbeat(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    os.utime(run / "metrics.jsonl", (1000.0, 1000.0))
    state = {"status": "running", "pid": 1, "host": "gpu-server-somewhere", "heartbeat": 5000.0}
    assert writer_alive(run, state, now=5000.0 + 60)[0]
    alive, why = writer_alive(run, state, now=5000.0 + 3600)
    assert not alive and "has not written for 3600 s" in why


def test_the_writer_refreshes_its_heartbeat(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    folder.write_state(status="running")
    first = folder.read_state()["heartbeat"]
    assert folder.read_state()["host"] == socket.gethostname()
    monkeypatch.setattr(runs_module, "HEARTBEAT_EVERY_S", 0.0)
    time.sleep(0.01)
    folder.read_control()  # polled every step and while paused
    assert folder.read_state()["heartbeat"] > first
    assert RunFolder(tmp_path / "run").read_control() is None  # a reader never writes
