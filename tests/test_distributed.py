"""`l2s train` under torchrun: 2 CPU processes with the gloo backend on a tiny config.

The run finishes, one run folder is written (by rank 0 alone), and every rank ends with the same
network and augmentation parameters although each draws its own batches (gradients of phi and
theta are averaged across ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

torch_distributed = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not torch_distributed.is_available() or not torch_distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# Runs `l2s train` exactly as the CLI does, and saves each rank's final parameters for the test.
WORKER = textwrap.dedent('''
    import os, sys
    import torch
    from l2s_gui import trainer as trainer_module

    original_run = trainer_module.Trainer.run

    def run(self):
        yield from original_run(self)
        state = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        state.update({f"aug.{k}": v.detach().cpu().clone() for k, v in self.aug.state_dict().items()})
        state["world"] = torch.tensor(self.world)
        state["step"] = torch.tensor(self.step)
        torch.save(state, os.path.join(os.environ["L2S_TEST_DUMP"], f"rank{self.rank}.pt"))

    trainer_module.Trainer.run = run
    from l2s_gui.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def write_config(tmp_path, dataset, **training):
    cfg = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu_nodes": [2, 4]},
        "training": {"steps": 4, "val_every": 2, "preview_every": 2, "checkpoint_every": 2, "device": "cpu",
                     "lr_augmentation": 0.05, **training},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun(tmp_path, *args, nproc=2, timeout=120):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    dump = tmp_path / "dump"
    dump.mkdir(exist_ok=True)
    env = dict(os.environ, L2S_TEST_DUMP=str(dump), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(worker), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    return proc, dump


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_run_with_identical_parameters(tmp_path, dataset):
    cfg = write_config(tmp_path, dataset)
    run = tmp_path / "run"
    proc, dump = torchrun(tmp_path, "train", str(cfg), "-o", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    # one run folder, written once
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["dump", "run"]
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1  # events written by rank 0 only
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4]
    assert events[-1]["reason"] == "finished"
    assert proc.stderr.count("l2s: finished") == 1
    # both ranks trained (world size 2) and ended with the same parameters
    states = [torch.load(dump / f"rank{r}.pt") for r in range(2)]
    assert all(int(s.pop("world")) == 2 and int(s.pop("step")) == 4 for s in states)
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # ... which did change: phi trained, and theta (learn2synth) moved away from its initial values
    theta = {k: v for k, v in states[0].items() if k.startswith("aug.")}
    assert abs(float(theta["aug.noise.sigma"]) - 0.1) > 1e-6


def test_torchrun_refuses_an_existing_run_folder_on_every_rank(tmp_path, dataset):
    cfg = write_config(tmp_path, dataset, steps=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("existing\n")
    proc, dump = torchrun(tmp_path, "train", str(cfg), "-o", str(run), "--quiet")
    assert proc.returncode != 0
    assert proc.stderr.count("already exists") == 1  # reported once, by rank 0
    assert (run / "config.yaml").read_text() == "existing\n"
    assert not list(dump.iterdir())
