"""Reports (as a skip) why the GUI tests cannot run here; passes when they can."""

import pytest

from gui_support import NO_GUI


def test_gui_available():
    if NO_GUI:
        pytest.skip(NO_GUI)
