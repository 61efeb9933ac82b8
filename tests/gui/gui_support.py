"""Helpers for the GUI tests (no napari import at module level)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


def _why_no_gui() -> str:
    try:
        import napari  # noqa: F401
        import pytestqt  # noqa: F401
        import qtpy  # noqa: F401
        from qtpy import QtWidgets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import problem means no GUI here
        return f"napari/Qt/pytest-qt not available ({type(exc).__name__}: {exc})"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display: run the GUI tests under Xvfb (xvfb-run -a python -m pytest tests/gui)"
    return ""


NO_GUI = _why_no_gui()


def make_volumes(folder: Path, n: int = 3, shape=(32, 40, 36), seed: int = 0,
                 affine: np.ndarray | None = None, values=(1, 2, 3)) -> list[tuple[Path, Path]]:
    """Small synthetic 'brains' (nested ellipsoids, labels 0 and ``values`` from the centre out) as
    NIfTI scan/label pairs."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([1.2, 1.0, 1.1, 1.0])
        affine[:3, 3] = [-20.0, -22.0, -18.0]
    pairs = []
    for i in range(n):
        grids = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
        r = np.sqrt(sum((g / (s * 0.42)) ** 2 for g, s in zip(grids, shape)))
        r = r * (1 + 0.05 * rng.standard_normal())
        lab = np.zeros(shape, np.int16)
        lab[r < 1] = 3
        lab[r < 0.75] = 2
        lab[r < 0.4] = 1
        img = np.choose(lab, [0.02, 0.8, 0.55, 0.3]).astype(np.float32)
        img = (img + rng.normal(0, 0.03, shape).astype(np.float32)) * 100
        lab = np.asarray([0, *values], np.int16)[lab]
        lp, sp = folder / f"sub{i}_labels.nii.gz", folder / f"sub{i}_T1.nii.gz"
        nib.save(nib.Nifti1Image(lab, affine), lp)
        nib.save(nib.Nifti1Image(img, affine), sp)
        pairs.append((sp, lp))
    return pairs




def train_tiny_model(folder: Path, steps: int = 6, ndim: int = 2, **volume_kwargs) -> Path:
    """Train a tiny CPU model with the CLI (a few seconds); returns the run folder."""
    import subprocess

    import yaml

    pairs = make_volumes(folder / "data", **volume_kwargs)
    config = {
        "data": {"label_maps": [str(p[1]) for p in pairs[:2]], "real_images": [str(p[0]) for p in pairs],
                 "real_labels": [str(p[1]) for p in pairs], "batch_size": 2, "ndim": ndim,
                 "patch_size": [16, 16, 16] if ndim == 3 else []},
        "network": {"widths": [4, 8]},
        "training": {"steps": steps, "preview_every": 2, "val_every": 3, "checkpoint_every": 3, "device": "cpu"},
    }
    cfg = folder / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "l2s_gui.cli", "train", str(cfg), "-o", str(run), "--quiet"],
                   check=True, capture_output=True, timeout=300)
    return run
