"""The recovery experiments (experiments/, Learn2Synth Sec. 4.1): every experiment runs end to end
in its quick mode on small generated label maps (nothing from ../shared), writes its tables and
plots, and in the noise-only experiment the learned sigma moves toward the preset from a common
start (down for preset 0, up for preset 0.15)."""

from __future__ import annotations

import csv
import json
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from experiments import run as exp_run
from experiments.common import (EXPERIMENTS, MODES, PresetAugmentation, deep_merge, load_experiment,
                                spec_id, split_maps)
from experiments.prep import downsample_majority, prepare_label_maps
from l2s_gui.config import Config, RecoveryConfig
from l2s_gui.recovery import PresetCorruption

from helpers import blob_labels


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp_maps")
    for i in range(5):
        nib.save(nib.Nifti1Image(blob_labels((32, 32, 32), 100 + i), np.eye(4)), root / f"map{i}.nii.gz")
    return root


@pytest.fixture(scope="module")
def quick(maps, tmp_path_factory):
    """The three experiments in quick mode, in one output folder (N runs shared), timed. The
    noise-only experiment runs its recovery stage only (its L runs are the longest, for the direction
    check); the two others run both stages (N, L, O and the Dice tables)."""
    out = tmp_path_factory.mktemp("exp_out")
    cache = tmp_path_factory.mktemp("exp_cache")
    common = ["--mode", "quick", "--label-maps", str(maps), "--out", str(out), "--cache", str(cache),
              "--factor", "1", "--threads", "1"]
    start = time.perf_counter()
    rc = exp_run.main(["noise_only", "--stages", "recovery"] + common)
    rc |= exp_run.main(["noise_inu", "nonparametric"] + common)
    return {"out": out, "cache": cache, "common": common, "rc": rc, "wall": time.perf_counter() - start}


def read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_experiment_writes_tables_and_plots(quick):
    assert quick["rc"] == 0
    for name in EXPERIMENTS:
        d = quick["out"] / name
        with_dice = name != "noise_only"
        files = ["recovery.csv", "README.md", "sigma_vs_step.png", "validation_dice.png", "runs.json"]
        for f in files + (["dice.csv"] if with_dice else []):
            assert (d / f).is_file() and (d / f).stat().st_size > 0, f"{name}/{f}"
        rec = read(d / "recovery.csv")
        exp = load_experiment(name, "quick")
        assert [r["preset"] for r in rec] == [p["name"] for p in exp["presets"] + exp.get("extra_presets", [])]
        for r in rec:
            assert float(r["learned_sigma"]) >= 0
        if not with_dice:
            continue
        dice = read(d / "dice.csv")
        assert {r["model"] for r in dice} == {"N", "L", "O"}
        for r in dice:
            for p in exp["presets"]:
                assert 0.0 <= float(r[p["name"]]) <= 1.0
        text = (d / "README.md").read_text()
        assert "Learned parameters" in text and "Test Dice" in text
    assert (quick["out"] / "noise_inu" / "c_vs_step.png").is_file()


def test_noise_only_sigma_moves_toward_the_preset(quick):
    """Start 0.075 for both: preset 0 must pull sigma down, preset 0.15 must push it up."""
    rows = {r["preset"]: r for r in read(quick["out"] / "noise_only" / "recovery.csv")}
    start = load_experiment("noise_only", "quick")["augmentation"]["sigma_init"]
    assert float(rows["0"]["learned_sigma"]) < start
    assert float(rows["0.15"]["learned_sigma"]) > start
    assert float(rows["0.15"]["learned_sigma"]) > float(rows["0"]["learned_sigma"]) + 0.01


def test_inu_runs_record_three_exponents(quick):
    rows = read(quick["out"] / "noise_inu" / "recovery.csv")
    for r in rows:
        for k in ("c1", "c2", "c3"):
            assert 0.0 <= float(r[f"learned_{k}"]) <= 2.0
            assert r[f"preset_{k}"] != ""
    hist = json.loads((quick["out"] / "noise_inu" / "runs.json").read_text())["L"][0]["folder"]
    header = (quick["out"] / "runs" / hist.split("/")[-1] / "history.csv").read_text().splitlines()[0]
    assert {"step", "sigma", "c1", "c2", "c3", "loss_real"} <= set(header.split(","))


def test_optimized_runs_use_the_learned_parameters_and_n_runs_are_shared(quick):
    runs = json.loads((quick["out"] / "noise_inu" / "runs.json").read_text())
    learned = {r["preset"]["name"]: r["learned"] for r in runs["L"]}
    assert runs["O"]
    for o in runs["O"]:
        spec = json.loads((quick["out"] / "runs" / o["folder"].split("/")[-1] / "spec.json").read_text())
        want = learned[o["preset"]["name"]]
        assert spec["theta"]["sigma"] == pytest.approx(want["sigma"])
        assert spec["theta"]["c"] == pytest.approx([want["c1"], want["c2"], want["c3"]])
        assert spec["config"]["training"]["method"] == "synthseg"
    nonpar = json.loads((quick["out"] / "nonparametric" / "runs.json").read_text())
    for o in nonpar["O"]:   # the nonparametric O runs start from the learned residual network
        spec = json.loads((quick["out"] / "runs" / o["folder"].split("/")[-1] / "spec.json").read_text())
        assert spec["aug_state_from"].endswith(nonpar["L"][0]["folder"].split("/")[-1])
    n_inu = {r["folder"] for r in json.loads((quick["out"] / "noise_inu" / "runs.json").read_text())["N"]}
    n_np = {r["folder"] for r in json.loads((quick["out"] / "nonparametric" / "runs.json").read_text())["N"]}
    assert n_np <= n_inu   # the nonparametric table reuses the noise + INU naive baselines


def test_rerun_reuses_finished_runs(quick, maps):
    start = time.perf_counter()
    exp_run.main(["noise_only", "--stages", "recovery"] + quick["common"])
    assert time.perf_counter() - start < 0.25 * quick["wall"] + 5


def test_every_mode_of_every_experiment_builds_valid_configs():
    data = {"train": ["a.nii.gz"], "test": ["b.nii.gz"], "table": "classes.json", "shape": [64, 64], "factor": 1}
    for name in EXPERIMENTS:
        for mode in MODES:
            exp = load_experiment(name, mode)
            specs = exp_run.learn2synth_specs(exp, data) + exp_run.naive_specs(exp, data)
            fake = {p["name"]: {"learned": {"sigma": 0.1, "c1": 0.5, "c2": 0.5, "c3": 0.5}, "folder": "x"}
                    for p in exp["presets"]}
            specs += exp_run.optimized_specs(exp, data, fake)
            assert len({spec_id(s) for s in specs}) == len(specs)
            for s in specs:
                Config.from_dict(s["config"])   # raises ConfigError on anything invalid


def test_majority_downsampling_and_prep_cache(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2, :2, :2] = 2
    a[0, 0, 0] = 1
    small = downsample_majority(a, 3, 2)
    assert small.shape == (2, 2, 2) and small[0, 0, 0] == 2 and small[1, 1, 1] == 0
    lab = blob_labels((20, 20, 20), 7)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "m.nii.gz")
    files, table = prepare_label_maps(tmp_path, factor=2, cache=tmp_path / "c", log=lambda m: None)
    img = nib.load(str(files[0]))
    assert np.allclose(img.header.get_zooms(), 2.0)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2, 3, 4}
    assert json.loads(table.read_text())["labels"][1]["name"] == "white matter"
    again, _ = prepare_label_maps(tmp_path, factor=2, cache=tmp_path / "c", log=lambda m: None)
    assert again == files


def test_split_is_seeded_and_disjoint(tmp_path):
    files = [tmp_path / f"m{i}.nii.gz" for i in range(10)]
    train, test = split_maps(files, 0.2, 0)
    assert len(test) == 2 and not set(train) & set(test) and split_maps(files, 0.2, 0) == (train, test)


def test_preset_augmentation_matches_the_preset_corruption():
    """Naive SynthSeg at a U[low, high] preset trains on the very distribution of the "real" images."""
    rec = RecoveryConfig(enabled=True, sigma_range=[0.025, 0.2], inu_c=[0.5, 0.5, 0.5])
    x = torch.full((256, 1, 16, 16), 0.5)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    aug = PresetAugmentation(rec)
    a = aug(x, aug.sample(x, g1))
    b = PresetCorruption(rec)(x, g2)
    assert list(aug.parameters()) == [] or not any(p.requires_grad for p in aug.parameters())
    for q in (0.1, 0.5, 0.9):
        assert float(torch.quantile(a.flatten(), q)) == pytest.approx(float(torch.quantile(b.flatten(), q)), abs=0.02)


def test_deep_merge_replaces_lists_and_merges_mappings():
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}
