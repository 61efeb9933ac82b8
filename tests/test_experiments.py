"""The recovery experiments (experiments/, Learn2Synth Sec. 4.1): every experiment runs end to end
in its quick mode on small generated label maps (nothing from ../shared), writes its tables and
plots; in the noise-only experiment a trained tiny base network recovers sigma (preset 0 from above,
preset 0.15 from below); warm starts, shared runs and the engine's per-image uniform noise."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from experiments import run as exp_run
from experiments.common import EXPERIMENTS, MODES, deep_merge, load_experiment, spec_id, split_maps
from experiments.prep import downsample_majority, prepare_label_maps
from helpers import VALUES, blob_labels, brain_like_labels
from l2s_gui.augment import build_augmentation
from l2s_gui.config import AugmentationConfig, Config, RecoveryConfig
from l2s_gui.recovery_corruption import PresetCorruption


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp_maps")
    for i in range(6):   # toy brains: classes with consistent geometry, so the base network can learn them
        nib.save(nib.Nifti1Image(brain_like_labels((32, 32, 32), 100 + i), np.eye(4)), root / f"map{i}.nii.gz")
    return root


@pytest.fixture(scope="module")
def quick(maps, tmp_path_factory):
    """The three experiments in quick mode, in one output folder (base and N runs shared).
    The noise-only experiment runs its recovery stage only; the two others run both stages."""
    out = tmp_path_factory.mktemp("exp_out")
    cache = tmp_path_factory.mktemp("exp_cache")
    common = ["--mode", "quick", "--label-maps", str(maps), "--out", str(out), "--cache", str(cache),
              "--factor", "1", "--threads", "1"]
    rc = exp_run.main(["noise_only", "--stages", "recovery"] + common)
    rc |= exp_run.main(["noise_inu", "nonparametric"] + common)
    return {"out": out, "cache": cache, "common": common, "rc": rc}


def read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def runs_json(quick, name):
    return json.loads((quick["out"] / name / "runs.json").read_text())


def spec_of(quick, result):
    return json.loads((quick["out"] / "runs" / result["folder"].split("/")[-1] / "spec.json").read_text())


@pytest.mark.slow
def test_every_experiment_writes_tables_and_plots(quick):
    assert quick["rc"] == 0
    for name in EXPERIMENTS:
        d = quick["out"] / name
        with_dice = name != "noise_only"
        files = ["recovery.csv", "recovery_summary.csv", "README.md", "sigma_vs_step.png", "validation_dice.png",
                 "runs.json"]
        for f in files + (["dice.csv", "dice_summary.csv"] if with_dice else []):
            assert (d / f).is_file() and (d / f).stat().st_size > 0, f"{name}/{f}"
        rec = read(d / "recovery.csv")
        exp = load_experiment(name, "quick")
        assert [r["preset"] for r in rec] == [p["name"] for p in exp["presets"] + exp.get("extra_presets", [])]
        assert {"preset_sigma", "learned_sigma", "seed"} <= set(rec[0])
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
        assert "Learned parameters" in text and "Test Dice" in text and "Base networks" in text
    assert (quick["out"] / "noise_inu" / "c_vs_step.png").is_file()


@pytest.mark.slow
def test_sigma_recovered_from_a_trained_tiny_network(quick):
    """The CI recovery check: the base network is trained (its Dice drops on noisy images, so the
    hypergradient has a signal), and from it sigma ends within 0.03 of preset 0 (started 0.05 above
    it) and of preset 0.15 (started 0.05 below it)."""
    base = runs_json(quick, "noise_only")["B"][0]["dice"]
    assert base["0"]["mean"] > 0.5 and base["0"]["mean"] - base["0.15"]["mean"] > 0.1
    rows = {r["preset"]: r for r in read(quick["out"] / "noise_only" / "recovery.csv")}
    assert float(rows["0"]["start_sigma"]) == pytest.approx(0.05)
    assert float(rows["0.15"]["start_sigma"]) == pytest.approx(0.10)
    assert abs(float(rows["0"]["final_sigma"]) - 0.0) <= 0.03
    assert abs(float(rows["0.15"]["final_sigma"]) - 0.15) <= 0.03


@pytest.mark.slow
def test_base_network_is_shared_and_every_run_starts_from_it(quick):
    bases = {r["folder"] for name in EXPERIMENTS for r in runs_json(quick, name)["B"]}
    assert len(bases) == 1   # one seed in quick mode, trained once for the three experiments
    base_model = str(quick["out"] / "runs" / next(iter(bases)).split("/")[-1] / "model.safetensors")
    for name in EXPERIMENTS:
        for role in ("L", "N", "O"):
            for r in runs_json(quick, name)[role]:
                cfg = spec_of(quick, r)["config"]
                assert cfg["training"]["init_from"] == base_model
    base_spec = spec_of(quick, runs_json(quick, "noise_only")["B"][0])["config"]
    assert base_spec["augmentation"]["sigma_init"] == 0 and base_spec["augmentation"]["inu"] is False


@pytest.mark.slow
def test_inu_runs_record_three_exponents(quick):
    rows = read(quick["out"] / "noise_inu" / "recovery.csv")
    for r in rows:
        for k in ("c1", "c2", "c3"):
            assert 0.0 <= float(r[f"learned_{k}"]) <= 2.0
            assert r[f"preset_{k}"] != "" and r[f"start_{k}"] != ""
    hist = runs_json(quick, "noise_inu")["L"][0]["folder"]
    header = (quick["out"] / "runs" / hist.split("/")[-1] / "history.csv").read_text().splitlines()[0]
    assert {"step", "sigma", "c1", "c2", "c3", "loss_real"} <= set(header.split(","))


@pytest.mark.slow
def test_optimized_runs_use_the_learned_parameters_and_n_runs_are_shared(quick):
    runs = runs_json(quick, "noise_inu")
    learned = {r["preset"]["name"]: r["learned"] for r in runs["L"]}
    assert runs["O"]
    for o in runs["O"]:
        aug = spec_of(quick, o)["config"]["augmentation"]
        want = learned[o["preset"]["name"]]
        assert aug["sigma_init"] == pytest.approx(want["sigma"])
        assert aug["inu_c_init"] == pytest.approx([want["c1"], want["c2"], want["c3"]])
        assert spec_of(quick, o)["config"]["training"]["method"] == "synthseg"
    nonpar = runs_json(quick, "nonparametric")
    for o in nonpar["O"]:   # the nonparametric O runs take the learned residual network (engine warm start)
        train = spec_of(quick, o)["config"]["training"]
        assert nonpar["L"][0]["folder"].split("/")[-1] in train["init_theta_from"]
    n_inu = {r["folder"] for r in runs["N"]}
    n_np = {r["folder"] for r in nonpar["N"]}
    assert n_np <= n_inu   # the nonparametric table reuses the noise + INU naive baselines


@pytest.mark.slow
def test_rerun_reuses_finished_runs(quick, maps):
    def finished():  # every run's folder, with when its files were last written
        return {p: p.stat().st_mtime_ns for p in quick["out"].glob("runs/*/*") if p.is_file()}

    before = finished()
    assert any(p.name == "result.json" for p in before)
    assert exp_run.main(["noise_only", "--stages", "recovery"] + quick["common"]) == 0
    assert finished() == before  # no run trained again, no run added


def test_every_mode_of_every_experiment_builds_valid_configs(tmp_path):
    data = {"train": ["a.nii.gz"], "test": ["b.nii.gz"], "table": "freesurfer_4class", "shape": [64, 64],
            "factor": 1}
    for name in EXPERIMENTS:
        for mode in MODES:
            exp = load_experiment(name, mode)
            bases = exp_run.base_specs(exp, data)
            specs = list(bases.values()) + exp_run.learn2synth_specs(exp, data, bases, tmp_path)
            specs += exp_run.naive_specs(exp, data, bases, tmp_path)
            fake = {(p["name"], s): {"learned": {"sigma": 0.1, "c1": 0.5, "c2": 0.5, "c3": 0.5}, "folder": "x"}
                    for p in exp["presets"] for s in exp["seeds"]}
            specs += exp_run.optimized_specs(exp, data, bases, tmp_path, fake)
            assert len({spec_id(s) for s in specs}) == len(specs)
            for s in specs:
                Config.from_dict(s["config"])   # raises ConfigError on anything invalid
            for s in specs:   # no Learn2Synth run starts at its preset (at least 0.04 away)
                if s["role"] == "L":
                    p, a = s["preset"], s["config"]["augmentation"]
                    lo, hi = p.get("sigma_range") or [p["sigma"], p["sigma"]]
                    assert a["sigma_init"] <= lo - 0.04 or a["sigma_init"] >= hi + 0.04
                    for c0, c in zip(a.get("inu_c_init", []) if a.get("inu") else [], p.get("inu_c", [])):
                        assert abs(c0 - c) >= 0.04
            for s in specs:   # an experiment's lr_inu_scale is the L runs' setting only
                want = exp.get("lr_inu_scale") if s["role"] == "L" else None
                assert s["config"]["training"].get("lr_inu_scale") == want, (name, mode, s["name"])


def test_command_line_overrides_reach_every_run(tmp_path, monkeypatch):
    """--seeds / --device / --steps / --base-steps (a scaled-down full mode on a short GPU lease)
    reach the base, L and N specs that run_experiment schedules, also the N runs of --dice-seeds."""
    data = {"train": ["a.nii.gz"], "test": ["b.nii.gz"], "table": "freesurfer_4class", "shape": [64, 64],
            "factor": 1}
    scheduled = {}

    def capture(tasks, *args, **kwargs):
        scheduled.update({t.key: t.make_spec({}) for t in tasks if not t.key.startswith("O")})
        return {}

    monkeypatch.setattr(exp_run, "prepare", lambda *args, **kwargs: data)
    monkeypatch.setattr(exp_run, "run_tasks", capture)
    monkeypatch.setattr(exp_run, "write_report", lambda *args, **kwargs: None)
    exp_run.run_experiment("noise_inu", "full", "maps", tmp_path, ["recovery", "dice"], seeds=[1, 2],
                           device="cuda:1", steps=40, base_steps=300, dice_seeds=[2], log=lambda m: None)
    assert load_experiment("noise_inu", "full")["base"]["steps"] == 30000   # the mode itself is not changed
    roles = {}
    for spec in scheduled.values():
        t = spec["config"]["training"]
        roles.setdefault(spec["role"], set()).add(t["seed"])
        assert t["device"] == "cuda:1"
        if spec["role"] == "B":
            assert (t["steps"], t["val_every"]) == (300, 300)
        else:
            assert t["steps"] == 40
            assert t["hyper_start"] == (20 if spec["role"] == "L" else 0)   # the mode's 100, clipped to half
    assert roles == {"B": {1, 2}, "L": {1, 2}, "N": {2}}


def test_majority_downsampling_and_prep_keeps_generation_labels(tmp_path):
    a = np.zeros((4, 4, 4), np.int64)
    a[:2, :2, :2] = 2
    a[0, 0, 0] = 1
    small = downsample_majority(a, 3, 2)
    assert small.shape == (2, 2, 2) and small[0, 0, 0] == 2 and small[1, 1, 1] == 0
    lab = blob_labels((20, 20, 20), 7)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "m.nii.gz")
    files, table = prepare_label_maps(tmp_path, factor=2, cache=tmp_path / "c", log=lambda m: None)
    img = nib.load(str(files[0]))
    assert np.allclose(img.header.get_zooms(), 2.0)
    # original FreeSurfer ids are kept (merged by the engine's label table only for the targets)
    assert set(np.unique(np.asarray(img.dataobj)).tolist()) <= set(VALUES) and table == "freesurfer_4class"
    assert len(set(np.unique(np.asarray(img.dataobj)).tolist())) >= 4
    again, _ = prepare_label_maps(tmp_path, factor=2, cache=tmp_path / "c", log=lambda m: None)
    assert again == files
    # the data folder mounted again elsewhere, with new file times: the cache (and so every run's
    # settings hash) is kept; a changed map is a new cache
    moved = tmp_path / "mounted_again"
    moved.mkdir()
    (moved / "m.nii.gz").write_bytes((tmp_path / "m.nii.gz").read_bytes())
    os.utime(moved / "m.nii.gz", (1e9, 1e9))
    remounted, _ = prepare_label_maps(moved, factor=2, cache=tmp_path / "c", log=lambda m: None)
    assert remounted == files
    lab[0, 0, 0] = VALUES[1]
    nib.save(nib.Nifti1Image(lab, np.eye(4)), moved / "m.nii.gz")
    changed, _ = prepare_label_maps(moved, factor=2, cache=tmp_path / "c", log=lambda m: None)
    assert changed[0].parent != files[0].parent


def test_split_is_seeded_and_disjoint(tmp_path):
    files = [tmp_path / f"m{i}.nii.gz" for i in range(10)]
    train, test = split_maps(files, 0.2, 0)
    assert len(test) == 2 and not set(train) & set(test) and split_maps(files, 0.2, 0) == (train, test)


def test_uniform_noise_augmentation_matches_the_preset_corruption():
    """Naive SynthSeg at a U[low, high] preset (engine noise 'uniform' + INU at the preset c) trains
    on the very distribution of the "real" images."""
    rec = RecoveryConfig(enabled=True, sigma_range=[0.025, 0.2], inu_c=[0.5, 0.5, 0.5])
    aug = build_augmentation(AugmentationConfig(noise="uniform", sigma_range=[0.025, 0.2], inu=True,
                                                inu_c_init=[0.5, 0.5, 0.5]), 2)
    x = torch.full((256, 1, 16, 16), 0.5)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    with torch.no_grad():
        a = aug(x, aug.sample(x, g1))
    b = PresetCorruption(rec)(x, g2)
    for q in (0.1, 0.5, 0.9):
        assert float(torch.quantile(a.flatten(), q)) == pytest.approx(float(torch.quantile(b.flatten(), q)), abs=0.02)


def test_deep_merge_replaces_lists_and_merges_mappings():
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}


def test_ablation_variants_undo_one_choice_each(tmp_path):
    from experiments.ablation import variants

    exp = load_experiment("noise_only", "cpu")
    data = {"train": ["a.nii.gz"], "test": ["b.nii.gz"], "table": "freesurfer_4class", "shape": [40, 40],
            "factor": 4}
    bases = exp_run.base_specs(exp, data)
    spec = exp_run.learn2synth_specs(exp, data, bases, tmp_path)[0]
    v = variants(spec)
    assert v["as in the experiment"] is spec
    assert "init_from" not in v["no warm start"]["config"]["training"]
    assert v["constant theta rate"]["config"]["training"]["lr_augmentation_schedule"] == "constant"
    training = spec["config"]["training"]
    assert training["lr_augmentation_schedule"] == "cosine" and training["init_from"]
    assert len({spec_id(s) for s in v.values()}) == 3


def test_inu_rate_keeps_the_experiments_own_runs_and_reports_mean_and_worst_seed(tmp_path):
    """experiments.inu_rate: the mode's own lr_inu_scale leaves the L spec (and so its cached run)
    as it is; another scale is a new run; the table's figures are the seeds' mean, error and range."""
    from experiments.inu_rate import at_scale, table

    exp = load_experiment("noise_inu", "cpu3mm")
    own = float(exp["lr_inu_scale"])
    data = {"train": ["a.nii.gz"], "test": ["b.nii.gz"], "table": "freesurfer_4class", "shape": [56, 48],
            "factor": 3}
    spec = exp_run.learn2synth_specs(exp, data, exp_run.base_specs(exp, data), tmp_path)[0]
    assert at_scale(spec, own, own) is spec
    faster = at_scale(spec, 2 * own, own)
    assert faster["config"]["training"]["lr_inu_scale"] == 2 * own
    assert spec["config"]["training"]["lr_inu_scale"] == own and spec_id(faster) != spec_id(spec)
    preset = {"name": "0.05", "inu_c": [0.5, 0.5, 0.5]}
    runs = [{"learned": {"sigma": 0.05, "c1": c1, "c2": 0.5, "c3": 0.4}} for c1 in (0.3, 0.5, 0.7)]
    text = table([(preset, 10.0, r) for r in runs])
    assert "| 0.05 | 10 | 3 | 0.050 | 0.50 / 0.50 / 0.40 | 0.00 / 0.00 / 0.10 | 0.20 / 0.00 / 0.10 | " \
           "0.30-0.70 / 0.50-0.50 / 0.40-0.40 |" in text


@pytest.mark.slow
def test_finished_only_reports_without_training(quick, tmp_path):
    """A report of what has finished (e.g. an experiment stopped at its time budget): nothing is
    trained, missing runs are left out."""
    out = quick["out"]
    before = sorted(p.name for p in (out / "runs").iterdir())
    common = [a if a != str(out) else str(out) for a in quick["common"]]
    assert exp_run.main(["noise_inu", "--finished-only", "--seeds", "0,1"] + common) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    rec = read(out / "noise_inu" / "recovery.csv")
    assert {r["seed"] for r in rec} == {"0"}


@pytest.mark.slow
def test_hypergradient_signal_reports_every_component_at_start_and_preset(quick, tmp_path):
    """experiments.hypergrad_signal on the quick noise+INU L runs: one row per seed, theta position
    and component (sigma, c1..c3), taken at the spec's start and at the preset, with a spread and an
    SNR; the table is written."""
    from experiments import hypergrad_signal

    table = tmp_path / "signal.md"
    assert hypergrad_signal.main(quick["common"] + ["--experiment", "noise_inu", "--presets", "0.15",
                                                    "--seeds", "0", "--draws", "3", "--write", str(table)]) == 0
    specs = [s for s in hypergrad_signal.l_specs("noise_inu", "quick", quick["out"], quick["common"][3],
                                                 str(quick["cache"]), factor=1)
             if s["preset"]["name"] == "0.15"]
    assert len(specs) == 1 and (quick["out"] / "runs" / spec_id(specs[0])).is_dir()   # the experiment's run
    rows = hypergrad_signal.measure(specs, 3, fix="real", where_list=("start",))
    spec = specs[0]
    assert {r["component"] for r in rows} == {"sigma", "c1", "c2", "c3"}
    assert {r["theta at"] for r in rows} == {"start"}
    values = {r["component"]: r["value"] for r in rows}
    assert values["sigma"] == pytest.approx(spec["start"]["sigma"])
    assert [values[f"c{k}"] for k in (1, 2, 3)] == pytest.approx(spec["start"]["c"])
    for r in rows:
        assert np.isfinite(r["mean"]) and r["std"] > 0 and r["snr"] == pytest.approx(r["mean"] / r["std"])
    text = table.read_text()
    assert "| 0.15 | start | sigma |" in text and "| 0.15 | preset | c3 | 0.500 |" in text


@pytest.mark.slow
def test_hypergradient_signal_from_the_finished_run_starts_at_its_learned_theta(quick):
    """--network end: each L run's finished network and theta (its run folder), probed where the
    run left theta ('learned': its final sigma and c_k) and at the preset; 'start' is refused."""
    from experiments import hypergrad_signal

    specs = [s for s in hypergrad_signal.l_specs("noise_inu", "quick", quick["out"], quick["common"][3],
                                                 str(quick["cache"]), factor=1)
             if s["preset"]["name"] == "0.15"]
    rows = hypergrad_signal.measure(specs, 2, where_list=("learned", "preset"), network="end")
    final = json.loads((quick["out"] / "runs" / spec_id(specs[0]) / "result.json").read_text())["final"]
    learned = {r["component"]: r["value"] for r in rows if r["theta at"] == "learned"}
    assert set(learned) == {"sigma", "c1", "c2", "c3"}
    for k, v in learned.items():
        assert v == pytest.approx(final[k], abs=1e-5)
    assert {r["component"]: r["value"] for r in rows if r["theta at"] == "preset"}["sigma"] == pytest.approx(0.15)
    assert all(np.isfinite(r["mean"]) for r in rows)
    with pytest.raises(SystemExit, match="--network end"):
        hypergrad_signal.measure(specs, 2, where_list=("start",), network="end")
