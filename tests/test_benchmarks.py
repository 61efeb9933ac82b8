"""The benchmark suite keeps working: ``benchmarks/run.py --preset tiny`` on the CPU writes its JSON
and markdown with the documented structure (timings are not checked, only that they exist)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODES = ["naive", "exact", "exact_jvp", "approx"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--preset", "tiny", "--device", "cpu",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tiny_preset_writes_json_with_every_measurement(tiny_run):
    out, _ = tiny_run
    result = json.loads(Path(f"{out}.json").read_text())
    meta = result["meta"]
    assert result["schema"] == 1
    assert meta["device"] == "cpu" and meta["preset"] == "tiny"
    for key in ("device_name", "torch", "memory_method", "load_before", "load_after", "date", "wall_s"):
        assert key in meta
    assert [c["ndim"] for c in result["configs"]] == [2, 3]
    for config in result["configs"]:
        steps = config["steps"]
        assert positive(steps["plain"]["ms"]) and positive(steps["plain"]["cpu_ms"])
        assert set(steps["hyper"]) == set(MODES)
        for mode, entry in steps["hyper"].items():
            assert positive(entry["ms"]) and positive(entry["ratio_to_plain"]) and positive(entry["cpu_ratio_to_plain"])
            assert len(entry["ms_all"]) == meta["repeats"]
            assert entry["peak_mib"] is None or entry["peak_mib"] >= 0
            assert positive(entry["hypergradient_norm"])
            if mode != "naive":
                assert math.isfinite(entry["rel_err_vs_naive"])
        # both exact routes give the naive double-backward value (float32)
        assert steps["hyper"]["exact"]["rel_err_vs_naive"] < 1e-3
        assert steps["hyper"]["exact_jvp"]["rel_err_vs_naive"] < 1e-3
        e2e = config["end_to_end"]
        for variant in ("synthseg", "learn2synth", "learn2synth_every_10"):
            assert positive(e2e[variant]["it_per_s"]) and positive(e2e[variant]["ratio_to_synthseg"])
            assert 0 < e2e[variant]["synthesis_share"] < 1
        assert e2e["synthseg"]["ratio_to_synthseg"] == 1.0
        seg = config["segmentation"]
        assert "error" not in seg, seg
        assert seg["volume"] == [32, 32, 32] and positive(seg["seconds"])


@pytest.mark.slow
def test_tiny_preset_writes_markdown_tables(tiny_run):
    out, _ = tiny_run
    text = Path(f"{out}.md").read_text()
    assert text.startswith("# Benchmarks: ")
    for heading in ("## Hypergradient cost", "## End-to-end training", "## Segmentation of a whole volume"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| 2D 32^2") or line.startswith("| 3D 16^3")]
    assert len(rows) == 6  # two configs in each of the three tables


def test_unknown_mode_is_refused():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--modes", "exact,fast"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "unknown mode" in proc.stderr


def test_benchmarks_and_experiments_use_seams_not_patches():
    """No assignment to a trainer's private attributes, a module's functions or a module global."""
    import re

    patch = re.compile(r"(trainer\.[a-z_]+\.forward\s*=|trainer\._\w+\s*=|setattr\(|hypergrad\.\w+\s*=|"
                       r"\.learns_theta\s*=|DEFAULT_EXACT_ROUTE)")
    for folder in ("benchmarks", "experiments"):
        for path in sorted((ROOT / folder).glob("*.py")):
            hits = [line.strip() for line in path.read_text().splitlines() if patch.search(line)]
            assert not hits, (path.name, hits)
