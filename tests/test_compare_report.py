"""The method comparison's report (experiments/compare.py): table, winner, its margin beside the
seeds' spread, the plot; built from per-run results without training."""

from __future__ import annotations

import csv

from experiments.compare import _per_run_rows, summarise, write_report


def _results():
    """Two seeds per method, Dice on the held-out "real" test set of the recovery setting."""
    dice = {"naive": (0.60, 0.62), "learn2synth": (0.64, 0.61), "mixed": (0.70, 0.66)}
    return {f"{m}{s}": {"dice": {"sigma_0.1": {"mean": d[s]}}, "inspector_accuracy": 0.7 + 0.01 * s,
                        "wall_s": 100.0 + s}
            for m, d in dice.items() for s in (0, 1)}


def test_report_names_the_winner_and_sets_its_margin_beside_the_seed_spread(tmp_path):
    info = {"setting": "recovery", "data": "toy", "steps": 10, "preset": {"sigma": 0.1, "inu_c": [0.5]}}
    methods, seeds = ["naive", "learn2synth", "mixed"], [0, 1]
    results = _results()
    summary = summarise(info, results, methods, seeds)
    assert [round(r["dice_mean"], 3) for r in summary] == [0.61, 0.625, 0.68]
    assert [round(r["dice_worst"], 3) for r in summary] == [0.60, 0.61, 0.66]
    per_run = _per_run_rows(info, results, methods, seeds)
    write_report(tmp_path, "recovery", info, summary, per_run, {"machine": "test", "jobs": 1, "threads": 1})
    text = (tmp_path / "README.md").read_text()
    assert "| Mixed SynthSeg **(best)** | 0.680 (0.660) |" in text
    assert "leads the next (Learn2Synth) by 0.055" in text
    assert "whole range of means is 0.070" in text and "differ by up to 0.040" in text
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    with open(tmp_path / "comparison.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
