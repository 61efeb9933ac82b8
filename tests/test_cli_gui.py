"""``l2s gui`` starts the plugin's GUI in its own process; the engine imports no napari for it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from l2s_gui import cli


def test_gui_runs_the_plugin_in_a_subprocess(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("napari", "l2s_napari")
                        else real_find_spec(name, *a))
    assert cli.main(["gui", "--open", "runs/exp1"]) == 0
    assert calls == [[sys.executable, "-m", "l2s_napari", "--size", "1280x800", "--open", "runs/exp1"]]


def test_gui_without_napari_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert cli.main(["gui"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l2s: error: the GUI needs napari") and ".[gui]" in err[0]


def test_gui_without_a_display_or_failing_is_one_line(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("napari", "l2s_napari")
                        else real_find_spec(name, *a))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda argv: 0)
    assert cli.main(["gui"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l2s: error: no display") and "xvfb-run" in err[0]
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(subprocess, "call", lambda argv: 3)
    assert cli.main(["gui"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ended with status 3" in err[0]
