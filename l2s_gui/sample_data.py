"""Built-in sample data, made offline from files that nilearn ships in its wheel.

- ``t1.nii.gz``: the MNI152 2009 T1 template (nilearn ``load_mni152_template``, 2 mm, skull-stripped,
  99 x 117 x 95 voxels, RAS), float32.
- ``t1_labels.nii.gz``: a label map on the same grid with FreeSurfer ids 2 (white matter), 3 (grey
  matter) and 24 (CSF). Inside nilearn's MNI152 brain mask each voxel takes the tissue with the
  largest probability among WM (``load_mni152_wm_template``), GM (``load_mni152_gm_template``) and
  CSF := 1 - GM - WM (nilearn ships no CSF map); outside the mask it is background (0). So CSF is
  where neither grey nor white matter dominates: ventricles and sulcal CSF.
- ``label_maps/labels_NN.nii.gz``: ``n_label_maps`` label maps for synthesis, the label map warped by
  seeded smooth random deformations (a small random rotation/scaling plus a smooth elastic field,
  nearest-neighbour resampling), so that they differ from each other and from the real pairs.
- ``real/scan_NN.nii.gz`` + ``real/labels_NN.nii.gz``: ``n_real_copies`` deformed copies of the scan
  and its labels (the same field for both; linear for the scan, nearest for the labels). With the
  undeformed pair they make the demo's real pairs, enough for a train/validation split.

Nothing is downloaded. Files are written once into a cache folder (``$L2S_CACHE_DIR`` or
``$XDG_CACHE_HOME/l2s-gui`` or ``~/.cache/l2s-gui``, then ``sample-v1``) and reused; a
``sample.json`` manifest, written last, marks a complete set.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write_text
from .errors import InputError
from .io import Volume, load_label_map, load_scan, save_volume
from .starter import STARTER_NAME, STARTER_NETWORK, STARTER_TABLE, STARTER_VOXEL_SIZE

__all__ = ["sample_paths", "load_sample", "sample_config", "make_sample_arrays", "default_cache_dir",
           "SAMPLE_VERSION"]

SAMPLE_VERSION = 2
WM, GM, CSF = 2, 3, 24


def default_cache_dir() -> Path:
    root = os.environ.get("L2S_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "l2s-gui"


@functools.lru_cache(maxsize=2)
def _load_templates(resolution: int = 2):
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise InputError(f"the sample data needs nilearn ({exc}); pip install nilearn") from None
    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution)
    wm = datasets.load_mni152_wm_template(resolution=resolution)
    mask = datasets.load_mni152_brain_mask(resolution=resolution)
    return t1, gm, wm, mask


def make_sample_arrays(resolution: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(t1 float32, labels int32 with 0/2/3/24, affine, header) on the template's grid."""
    t1, gm, wm, mask = _load_templates(resolution)
    t1_data = np.asarray(t1.get_fdata(), dtype=np.float32)
    g = np.asarray(gm.get_fdata(), dtype=np.float32)
    w = np.asarray(wm.get_fdata(), dtype=np.float32)
    inside = np.asarray(mask.get_fdata()) > 0.5
    csf = np.clip(1.0 - g - w, 0.0, 1.0)
    winner = np.argmax(np.stack([w, g, csf]), axis=0)
    labels = np.choose(winner, [WM, GM, CSF]).astype(np.int32)
    labels[~inside] = 0
    t1_data[~np.isfinite(t1_data)] = 0
    # skull-stripped, like the label maps (which label nothing outside the brain): synthetic images
    # have no skull or scalp, so an unstripped real scan would be a gap no learned noise/INU can close
    t1_data[~inside] = 0
    return t1_data, labels, np.asarray(t1.affine, dtype=np.float64), t1.header


def _deformation_grid(shape: tuple[int, int, int], seed: int, elastic_vox: float = 2.5, nodes: int = 5,
                      rotation_deg: float = 6.0, scaling: float = 0.06) -> torch.Tensor:
    """A seeded smooth random sampling grid (1, X, Y, Z, 3) for ``grid_sample`` (align_corners=True)."""
    g = torch.Generator().manual_seed(int(seed))
    size = torch.tensor(shape, dtype=torch.float64)
    center = (size - 1) / 2
    # small random rotation (about each axis) and scaling, about the centre
    angles = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * math.radians(rotation_deg)
    scales = 1 + (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * scaling
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    matrix = rx @ ry @ rz @ torch.diag(scales)
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), -1)
    coords = (coords - center) @ matrix.T + center
    # smooth elastic displacement: coarse Gaussian nodes, upsampled (trilinear)
    coarse = torch.randn((1, 3, nodes, nodes, nodes), generator=g, dtype=torch.float64) * elastic_vox
    disp = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0].permute(1, 2, 3, 0)
    coords = coords + disp
    norm = 2 * coords / (size - 1) - 1           # voxel -> [-1, 1]
    return norm.flip(-1).unsqueeze(0).float()    # grid_sample wants (z, y, x) order for a (X, Y, Z) volume


def _warp(data: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)[0, 0].numpy()
    return out.astype(data.dtype) if mode == "nearest" else out.astype(np.float32)


def _manifest(n_label_maps: int, n_real_copies: int, resolution: int) -> dict[str, Any]:
    return {"format": "l2s-sample", "version": SAMPLE_VERSION, "n_label_maps": int(n_label_maps),
            "n_real_copies": int(n_real_copies), "resolution": int(resolution)}


def _layout(folder: Path, n_label_maps: int, n_real_copies: int) -> dict[str, Any]:
    return {
        "scan": folder / "t1.nii.gz",
        "labels": folder / "t1_labels.nii.gz",
        "label_maps": [folder / "label_maps" / f"labels_{i:02d}.nii.gz" for i in range(n_label_maps)],
        "real_images": [folder / "real" / f"scan_{i:02d}.nii.gz" for i in range(1, n_real_copies + 1)],
        "real_labels": [folder / "real" / f"labels_{i:02d}.nii.gz" for i in range(1, n_real_copies + 1)],
    }


def sample_paths(folder: Path | str | None = None, n_label_maps: int = 4, n_real_copies: int = 2,
                 resolution: int = 2) -> dict[str, Any]:
    """Write the sample (once) and return its paths.

    Returns ``{"scan", "labels", "label_maps": [...], "real_images": [...], "real_labels": [...],
    "folder"}``; ``real_images``/``real_labels`` are the deformed copies only (the demo pairs them
    with ``scan``/``labels``). An existing complete set with the same parameters is reused.
    """
    folder = Path(folder).expanduser() if folder is not None else default_cache_dir() / f"sample-v{SAMPLE_VERSION}"
    paths = _layout(folder, n_label_maps, n_real_copies)
    paths["folder"] = folder
    manifest_path = folder / "sample.json"
    wanted = _manifest(n_label_maps, n_real_copies, resolution)
    files = [paths["scan"], paths["labels"], *paths["label_maps"], *paths["real_images"], *paths["real_labels"]]
    try:
        current = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    except (OSError, ValueError):
        current = None
    if current == wanted and all(f.is_file() for f in files):
        return paths

    try:
        for sub in ("label_maps", "real"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the sample data folder ({exc})") from None
    if manifest_path.exists():
        manifest_path.unlink()
    t1, labels, affine, header = make_sample_arrays(resolution)
    like = Volume(t1, affine, header, None)
    save_volume(paths["scan"], t1, like, overwrite=True)
    save_volume(paths["labels"], labels, like, overwrite=True)
    for i, path in enumerate(paths["label_maps"]):
        grid = _deformation_grid(labels.shape, seed=1 + i)
        save_volume(path, _warp(labels, grid, "nearest"), like, overwrite=True)
    for i, (ip, lp) in enumerate(zip(paths["real_images"], paths["real_labels"])):
        grid = _deformation_grid(labels.shape, seed=1001 + i)
        save_volume(ip, _warp(t1, grid, "bilinear"), like, overwrite=True)
        save_volume(lp, _warp(labels, grid, "nearest"), like, overwrite=True)
    atomic_write_text(manifest_path, json.dumps(wanted, indent=1))
    return paths


def load_sample(folder: Path | str | None = None) -> dict[str, Any]:
    """The sample as volumes: ``{"scan": Volume, "labels": Volume, "label_maps": [Volume, ...]}``."""
    paths = sample_paths(folder)
    return {"scan": load_scan(paths["scan"]), "labels": load_label_map(paths["labels"]),
            "label_maps": [load_label_map(p) for p in paths["label_maps"]]}


def sample_config(out_dir: Path | str | None = None, init_from: str = STARTER_NAME) -> dict[str, Any]:
    """The demo's config mapping (for ``Config.from_dict``), pointing at the sample files.

    ``out_dir`` is where the sample files are written (None: the user cache, reused). Real pairs:
    the template with its labels plus two deformed copies (3 pairs: 2 train, 1 validation).
    2D coronal slices at 2 mm, the starter model's network and classes (``brain_4class``: the sample's
    ids 2 / 3 / 24 are white matter / cortical grey matter / CSF), started from the shipped starter
    model (``init_from``; "" starts from a random network), the SynthSeg-grade generator with the
    tissue intensities drawn around the real training pairs' (``synthesis.intensity_prior: real``), and
    Learn2Synth with a hyper-step every 2nd step from the start (the warm-started network's
    hypergradient carries signal at once): about 3 minutes on 2 CPU cores.
    """
    paths = sample_paths(out_dir)
    return {
        "data": {
            "label_maps": [str(paths["folder"] / "label_maps")],
            "real_images": [str(paths["scan"])] + [str(p) for p in paths["real_images"]],
            "real_labels": [str(paths["labels"])] + [str(p) for p in paths["real_labels"]],
            "val_fraction": 0.34,
            "label_table": STARTER_TABLE,
            "ndim": 2,
            "slice_axis": 1,
            "patch_size": [],
            "batch_size": 8,
            "voxel_size": list(STARTER_VOXEL_SIZE),
        },
        "network": dict(STARTER_NETWORK),
        # the sample is skull-stripped: black outside the brain, with a sharp edge; every tissue's
        # intensity is drawn around its intensity in the real training pairs (SynthSeg-rule: a T1 demo)
        "synthesis": {"skull_strip_probability": 1.0, "skull_strip_sharp": True, "intensity_prior": "real"},
        "augmentation": {"sigma_init": 0.05},
        "training": {"init_from": init_from, "steps": 300, "hyper_every": 2, "lr_segmentation": 1e-3,
                     "lr_augmentation": 3e-3, "lr_augmentation_schedule": "cosine", "val_every": 25,
                     "preview_every": 10, "checkpoint_every": 100, "log_every": 1, "seed": 0},
    }
