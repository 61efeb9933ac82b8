"""``python -m l2s_napari``: the Learn2Synth GUI (see :mod:`._gui_launcher`)."""

import sys

from ._gui_launcher import main

sys.exit(main(sys.argv[1:]))
