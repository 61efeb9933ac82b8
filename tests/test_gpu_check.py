"""benchmarks/gpu_check.py: says so and exits 0 without CUDA; one line per path, a failing path does
not stop the others."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check"]


def test_one_line_per_path_and_failures_do_not_stop_the_others(monkeypatch, capsys):
    module = load_module()

    def boom():
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(module, "paths", lambda device, data, tmp: [("first", boom), ("second", lambda: "fine")])
    monkeypatch.setattr(module, "make_data", lambda root: root)
    assert module.main(["--device", "cpu"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("FAIL  first") and lines[1].endswith("RuntimeError: kernel exploded")
    assert lines[2].startswith("PASS  second") and lines[2].endswith("fine")
    assert lines[-1].startswith("gpu_check: 1/2 passed")


def test_synthesis_paths_run_on_the_cpu(capsys):
    module = load_module()
    assert module.main(["--device", "cpu", "--only", "synthesis-torch"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS  synthesis-torch-") == 2 and "FAIL" not in out
