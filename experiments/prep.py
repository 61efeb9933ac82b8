"""Label-map preprocessing for the experiments, cached outside the repository.

Each source label map (FreeSurfer ids, any orientation) is
1. reoriented to RAS voxel order (as the engine does),
2. cropped to the bounding box of the classes ``crop_classes`` of a label table (default
   ``freesurfer_4class``: background, white matter, cortical grey matter, subcortical grey matter,
   ventricles/CSF) plus a margin; the experiments crop to the tissue classes 1-3, because label 24
   (CSF) of the SynthSeg maps extends far below the brain,
3. downsampled by an integer factor with a majority vote over the *original* label ids (one-hot
   average pooling + argmax; a nearest-neighbour pick would lose thin cortex),
and saved as ``<stem>.nii.gz`` holding the original FreeSurfer ids. The ids are not merged here:
every original label stays a *generation label* with its own random intensity (SynthSeg), and the
engine merges to the table's classes only for the targets, after deformation. ``table`` is returned
unchanged (a shipped name or a path) for ``data.label_table``. The cache folder name is a hash of the
source files (names, sizes, mtimes) and the settings, so a changed input gives a new cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from l2s_gui.io import expand_paths, load_label_map, to_ras
from l2s_gui.labels import LabelTable, load_label_table

DEFAULT_CACHE = Path(os.environ.get("L2S_EXPERIMENT_CACHE", Path.home() / ".cache" / "l2s-gui" / "experiments"))


def _key(paths: list[Path], table: str, factor: int, margin: int, crop_classes) -> str:
    """The cache key: the maps' names and contents (not their paths or times, which change when the
    data folder is mounted again) and the preprocessing settings."""
    h = hashlib.sha1()
    for p in paths:
        h.update(f"{p.name}|{hashlib.sha1(p.read_bytes()).hexdigest()}\n".encode())
    h.update(f"{table}|{factor}|{margin}|{crop_classes}|v3-content".encode())
    return h.hexdigest()[:12]


def downsample_majority(classes: np.ndarray, n_classes: int, factor: int) -> np.ndarray:
    """Majority vote over ``factor``^3 blocks of an array of ids ``0..n_classes-1`` (the shape must
    be a multiple of ``factor``)."""
    if factor == 1:
        return classes
    t = torch.from_numpy(classes.astype(np.int64))
    # one class at a time keeps the memory at one float volume
    best = None
    best_val = None
    for c in range(n_classes):
        frac = F.avg_pool3d((t == c).float()[None, None], factor)[0, 0]
        if best is None:
            best, best_val = torch.zeros_like(frac, dtype=torch.int64), frac
        else:
            better = frac > best_val
            best[better] = c
            best_val = torch.where(better, frac, best_val)
    return best.numpy().astype(np.int64)


def prepare_label_maps(source: str | Path | list, factor: int = 2, table: str = "freesurfer_4class",
                       margin: int = 4, cache: str | Path | None = None, limit: int | None = None,
                       crop_classes: list[int] | None = None, log=print) -> tuple[list[Path], str]:
    """Preprocess (once) and return (cached label-map files sorted by name, the label table for
    ``data.label_table``)."""
    sources = source if isinstance(source, list) else [source]
    paths = expand_paths(sources, "--label-maps")
    if limit:
        paths = paths[:limit]
    folder = Path(cache or DEFAULT_CACHE) / f"maps_{_key(paths, table, factor, margin, crop_classes)}"
    done = folder / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return [folder / n for n in info["files"]], table
    folder.mkdir(parents=True, exist_ok=True)
    lt: LabelTable = load_label_table(table)
    files = []
    for i, p in enumerate(paths):
        vol = load_label_map(p)
        data, affine, _ = to_ras(vol.data, vol.affine)
        ids = np.rint(data).astype(np.int64)
        cls = lt.to_classes(ids, source=p)
        keep = np.isin(cls, crop_classes) if crop_classes else cls > 0
        nz = np.argwhere(keep) if keep.any() else np.argwhere(cls > 0)
        lo = np.maximum(nz.min(0) - margin, 0)
        hi = np.minimum(nz.max(0) + 1 + margin, ids.shape)
        crop = ids[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        crop = np.pad(crop, [(0, (-s) % factor) for s in crop.shape])
        values, index = np.unique(crop, return_inverse=True)
        small = values[downsample_majority(index.reshape(crop.shape), len(values), factor)].astype(np.int16)
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(0)) * factor
        name = Path(str(p.name).replace(".nii.gz", "").replace(".nii", "").replace(".mgz", "")).name + ".nii.gz"
        nib.save(nib.Nifti1Image(small, np.diag(list(zooms) + [1.0])), folder / name)
        files.append(name)
        log(f"  prep {i + 1}/{len(paths)}: {p.name} -> {'x'.join(map(str, small.shape))} at {zooms[0]:g} mm")
    done.write_text(json.dumps({"files": sorted(files), "sources": [str(p) for p in paths], "factor": factor,
                                "table": table, "margin": margin, "crop_classes": crop_classes}, indent=1))
    return [folder / n for n in sorted(files)], table
