"""Inputs of a run started by a controller (the GUI): volumes held in memory (viewer layers) or
files, checked, written into the run folder's ``inputs/`` and listed in the run's config.

:func:`prepare_run_inputs` validates the settings first (the config without its data lists: no
placeholder paths), then the in-memory volumes (label maps hold whole, non-negative numbers; a scan
and its labels share a grid), and only then writes anything: the volumes as NIfTI under
``inputs/``, then the complete config, validated again with its real paths
(:func:`~l2s_gui.config.check_data_present`). Every problem is one line naming the layer, file or
setting (ValueError / :class:`~l2s_gui.errors.L2SError`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import REAL_PAIR_METHODS, SYNTHESIS_METHODS
from .io import label_map_problem, write_volume
from .runs import RunFolder

__all__ = ["ArrayVolume", "Source", "pair_problem", "labels_problem", "missing_inputs", "prepare_run_inputs",
           "safe_name"]


@dataclass
class ArrayVolume:
    """A volume held in memory, e.g. a napari layer: data in voxel order and its geometry."""

    data: np.ndarray
    affine: np.ndarray
    name: str
    header: Any = None


Source = str | Path | ArrayVolume


def safe_name(name: str) -> str:
    """A file-system friendly version of a layer name.

    >>> safe_name("T1 (MNI152 sample)")
    'T1_MNI152_sample'
    """
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._")
    return name[:80] or "layer"


def labels_problem(labels: ArrayVolume) -> str:
    """Why an in-memory volume cannot be a label map ("" when it can)."""
    return label_map_problem(labels.data, f"layer '{labels.name}'")


def pair_problem(scan: ArrayVolume, labels: ArrayVolume) -> str:
    """Why two in-memory volumes cannot be a (scan, labels) pair; "" when they can."""
    problem = labels_problem(labels)
    if problem:
        return problem
    if scan is labels or scan.data is labels.data:
        return "choose different layers for the scan and its labels"
    s_shape, l_shape = tuple(np.shape(scan.data)), tuple(np.shape(labels.data))
    if s_shape != l_shape:
        fmt = "x".join
        return (f"scan '{scan.name}' ({fmt(map(str, s_shape))}) and labels '{labels.name}' "
                f"({fmt(map(str, l_shape))}): shapes differ; the label map must be on the scan's voxel grid")
    return ""


def missing_inputs(method: str, n_label_maps: int, n_pairs: int) -> str:
    """What a training method still needs before it can start ("" when nothing), in the words of
    the GUI's Data tab."""
    missing = []
    if method in SYNTHESIS_METHODS and not n_label_maps:
        missing.append("check or add at least one label map for synthesis (Data tab)")
    if method in REAL_PAIR_METHODS and not n_pairs:
        missing.append("add at least one real scan + labels pair (Data tab)")
    return "; ".join(missing)


def _write(item: Source, path: Path, labels: bool) -> str:
    if not isinstance(item, ArrayVolume):
        return str(Path(item).expanduser().resolve())
    data = np.asarray(item.data)
    if labels:
        if data.dtype.kind not in "iu":
            data = np.round(data).astype(np.int32)
    else:
        data = data.astype(np.float32, copy=False)
    return str(write_volume(path.with_name(f"{path.name}_{safe_name(item.name)}.nii"), data, item.affine,
                            header=item.header))


def prepare_run_inputs(run_dir: str | Path, settings: dict[str, Any], label_maps: Sequence[Source],
                       pairs: Sequence[tuple[Source, Source]], method: str | None = None,
                       unlabelled: Sequence[Source] = ()) -> Path:
    """Check everything, write the in-memory volumes to ``run_dir/inputs`` and the run's config
    there (module docstring); return the config's path. ``settings``: a config mapping whose data
    lists are replaced by these inputs. The run folder must be new, empty or hold only an earlier
    ``inputs/`` (:meth:`RunFolder.prepare_inputs`). ``unlabelled``: the unlabelled scans of
    self-training (``data.unlabelled_images``), written as ``inputs/unlabelled_NNN_*``."""
    from .config import Config, check_data_present

    data = copy.deepcopy(settings)
    section = data.setdefault("data", {})
    for key in ("label_maps", "real_images", "real_labels", "unlabelled_images"):
        section[key] = []
    Config.from_dict(data)  # every setting, before anything is written
    method = method or data.get("training", {}).get("method", "learn2synth")
    if method not in SYNTHESIS_METHODS:
        label_maps = []
    for item in label_maps:
        if isinstance(item, ArrayVolume) and labels_problem(item):
            raise ValueError(labels_problem(item))
    for scan, labels in pairs:
        if isinstance(scan, ArrayVolume) and isinstance(labels, ArrayVolume):
            problem = pair_problem(scan, labels)
        else:
            problem = labels_problem(labels) if isinstance(labels, ArrayVolume) else ""
        if problem:
            raise ValueError(problem)
    missing = missing_inputs(method, len(label_maps), len(pairs))
    if missing:
        raise ValueError(missing)
    inputs = RunFolder(run_dir).prepare_inputs()
    section["label_maps"] = [_write(item, inputs / f"synth_{i:03d}", True) for i, item in enumerate(label_maps)]
    section["real_images"] = [_write(s, inputs / f"real_{i:03d}_scan", False) for i, (s, _l) in enumerate(pairs)]
    section["real_labels"] = [_write(lab, inputs / f"real_{i:03d}_labels", True) for i, (_s, lab) in enumerate(pairs)]
    section["unlabelled_images"] = [_write(s, inputs / f"unlabelled_{i:03d}", False) for i, s in enumerate(unlabelled)]
    config = Config.from_dict(data)
    check_data_present(config)
    path = inputs / "config.yaml"
    config.save(path)
    return path
