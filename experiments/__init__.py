"""Reproductions of the Learn2Synth synthetic-recovery experiments (Sec. 4.1, Tables 1-4).

Run ``python -m experiments.run --help``. Configurations live in ``experiments/configs/*.yaml``;
results (CSV, markdown, PNG) are written to ``--out``. See ``docs/experiments/README.md``.
"""
