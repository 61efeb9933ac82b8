"""GUI tests (napari + Qt + a display). Run under Xvfb: ``xvfb-run -a python -m pytest tests/gui -q``.

Without napari/Qt or without a display every test here is skipped (one clear reason), so the whole
suite still passes on a headless machine without the GUI extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


from gui_support import NO_GUI, make_volumes  # noqa: E402  (tests/gui is on sys.path)

if NO_GUI:
    # do not import the test modules (they import napari); test_gui_available.py reports the reason
    collect_ignore_glob = ["test_gui_io.py", "test_gui_sample.py", "test_gui_training.py", "test_gui_segment.py",
                           "test_gui_watch.py", "test_gui_inspect.py"]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gui)
            if NO_GUI:
                item.add_marker(pytest.mark.skip(reason=NO_GUI))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Runs go under a temporary home so the tests never write to the user's ~/l2s_runs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    yield


@pytest.fixture
def volumes(tmp_path):
    return make_volumes(tmp_path / "data")
