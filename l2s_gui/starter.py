"""The shipped starter model: a naive-SynthSeg 2D network for the paper's 4 classes + background.

Trained by ``scripts/train_starter_model.py`` (seed, budget and settings in the script) on the
shared SynthSeg label maps; ``l2s segment`` uses it when no model is given, the Segment widget offers
it and training can start from it (``training.init_from: starter``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

__all__ = ["STARTER_NAME", "STARTER_FILE", "STARTER_TABLE", "STARTER_NETWORK", "STARTER_VOXEL_SIZE",
           "starter_model_path", "resolve_model_spec"]

STARTER_NAME = "starter"
"""The name that stands for the shipped starter model wherever a model path is asked for."""
STARTER_FILE = "starter_4class_2d.safetensors"
STARTER_TABLE = "brain_4class"
"""Its label table: background, white matter, cortical GM, subcortical GM, ventricles/CSF (whole brain)."""
STARTER_NETWORK = {"widths": [16, 32, 64, 128], "norm": "instance", "activation": "elu", "convs_per_level": 2}
"""Its network settings (``network.*``): a run that starts from it (``init_from``) must use them."""
STARTER_VOXEL_SIZE = [2.0]
"""The voxel size (mm) it was trained at: 2D coronal slices (``data.slice_axis`` 1)."""


def starter_model_path() -> Optional[Path]:
    """Path of the shipped starter model, or None when this installation does not hold it."""
    path = Path(str(resources.files("l2s_gui.resources").joinpath(f"models/{STARTER_FILE}")))
    return path if path.is_file() else None


def resolve_model_spec(spec: str) -> str:
    """``spec`` itself, or the starter model's path when ``spec`` is ``"starter"``."""
    if spec.strip().lower() != STARTER_NAME:
        return spec
    path = starter_model_path()
    if path is None:
        from .errors import InputError
        raise InputError(f"the starter model ({STARTER_FILE}) is not installed in "
                         f"{resources.files('l2s_gui.resources')}/models: reinstall l2s-gui or give a model file")
    return str(path)
