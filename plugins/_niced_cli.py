"""Start the engine CLI in a training subprocess at a lower CPU priority.

``python -m l2s_napari._niced_cli [--nice N] -- train CONFIG -o RUN ...`` lowers this process's
scheduling priority (``os.nice``, POSIX only) and runs ``l2s_gui.cli.main``. On a machine where the
training saturates the CPU, the napari process then always gets the CPU first when it needs it (a few
percent of one core), so the GUI stays responsive while the training keeps nearly all of its speed.
No Qt or napari is imported here.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    nice = 0
    if argv[:1] == ["--nice"]:
        nice = int(argv[1])
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if nice and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass
    from l2s_gui.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
