"""The engine (l2s_gui) imports no Qt and no napari: importing every engine module in a fresh
interpreter must not load them (import-linter checks the static imports too: `lint-imports`)."""

import pkgutil
import subprocess
import sys

import l2s_gui

FORBIDDEN = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "superqt", "magicgui", "pyqtgraph", "vispy")


def test_engine_modules_load_no_gui_toolkit():
    modules = [m.name for m in pkgutil.walk_packages(l2s_gui.__path__, "l2s_gui.") if not m.name.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"engine modules imported GUI toolkits: {out}"
    assert len(modules) > 15
