"""GUI tests (napari + Qt + a display). Run under Xvfb: ``xvfb-run -a python -m pytest tests/gui -q``.

Without napari/Qt or without a display every test here is skipped (one clear reason), so the whole
suite still passes on a headless machine without the GUI extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


from gui_support import NO_GUI, make_volumes, train_tiny_model  # noqa: E402  (tests/gui is on sys.path)

TINY_VALUES = (2, 41, 17)  # FreeSurfer-like label values: classes 1..3 stand for these

if NO_GUI:
    # do not import the test modules (they import napari); test_gui_available.py reports the reason
    collect_ignore_glob = ["test_gui_io.py", "test_gui_sample.py", "test_gui_training.py", "test_gui_segment.py",
                           "test_gui_watch.py", "test_gui_inspect.py", "test_gui_damaged.py",
                           "test_gui_first_run.py", "test_gui_config_form.py", "test_gui_synthmix.py",
                           "test_gui_self_training.py", "test_gui_inspector.py"]


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
def errors(monkeypatch):
    """The error notifications of every widget, collected (in order) instead of shown."""
    import l2s_napari._notify as notify

    seen: list[str] = []
    monkeypatch.setattr(notify, "notify_error", seen.append)
    return seen


@pytest.fixture
def volumes(tmp_path):
    return make_volumes(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny 2D model trained once with the CLI (labels 2/41/17, an oblique affine); its data are in
    ``tiny_run.parent / "data"``."""
    import numpy as np

    affine = np.array([[1.2, 0, 0, -20.0], [0, 0.9, 0.1, 12.0], [0, -0.1, 1.1, -18.0], [0, 0, 0, 1]])
    return train_tiny_model(tmp_path_factory.mktemp("tiny"), steps=4, ndim=2, values=TINY_VALUES, affine=affine)
