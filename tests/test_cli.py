"""The `l2s` command line: one-line errors, no tracebacks, no overwritten runs, resume and watch."""

from __future__ import annotations

import subprocess
import sys

import yaml

from l2s_gui.cli import main


def write_config(tmp_path, dataset, **training):
    cfg = {
        "data": {"label_maps": [str(dataset / "maps")], "real_images": [str(dataset / "images")],
                 "real_labels": [str(dataset / "labels")], "batch_size": 2, "val_fraction": 0.34},
        "network": {"widths": [4, 8]},
        "augmentation": {"inu": False},
        "training": {"steps": 4, "val_every": 2, "preview_every": 2, "checkpoint_every": 2, **training},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_resume_watch(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path, dataset)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 0
    assert (run / "model.safetensors").is_file()
    # refuses to start over an existing run
    assert main(["train", str(cfg), "-o", str(run), "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["resume", str(run), "--steps", "6", "--quiet"]) == 0
    assert main(["watch", str(run), "--once"]) == 0
    out = capsys.readouterr().out
    assert "status: finished, step 6/6" in out


def test_bad_config_value_is_one_line_naming_the_key(tmp_path, dataset):
    cfg = write_config(tmp_path, dataset, lr_segmentation=-1)
    proc = subprocess.run([sys.executable, "-m", "l2s_gui", "train", str(cfg), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["l2s: error: training.lr_segmentation: must be > 0, got -1.0"]
    assert "Traceback" not in proc.stderr


def test_missing_data_is_one_line_naming_the_file(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path, dataset)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["label_maps"] = [str(tmp_path / "nowhere")]
    cfg.write_text(yaml.safe_dump(data))
    assert main(["train", str(cfg), "-o", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_warm_start_from_a_run_folder_relative_to_the_config(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path, dataset)
    assert main(["train", str(cfg), "-o", str(tmp_path / "first"), "--quiet"]) == 0
    warm = write_config(tmp_path, dataset, init_from="first", init_theta_from="first/model.safetensors")
    assert main(["train", str(warm), "-o", str(tmp_path / "second"), "--quiet"]) == 0
    saved = yaml.safe_load((tmp_path / "second" / "config.yaml").read_text())["training"]
    assert saved["init_from"] == str(tmp_path / "first")
    bad = write_config(tmp_path, dataset, init_from="nowhere.safetensors")
    assert main(["train", str(bad), "-o", str(tmp_path / "third"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "training.init_from" in err and "nowhere.safetensors" in err and "Traceback" not in err
