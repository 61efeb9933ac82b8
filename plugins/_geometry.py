"""Volume geometry and file helpers shared by the reader, the writer and the widgets (no Qt here).

napari's 2D slicing ignores rotations and shears, so volumes are *displayed* with an axis-aligned
transform (``scale`` = voxel sizes, ``translate`` = the affine's origin) while the true voxel-to-world
affine is kept in ``layer.metadata["affine"]`` and written back on save. Data stay in voxel order, so
a read/write round trip is exact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
READ_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")

# File-name hints: a name that says "labels" wins over the value heuristics, and so does "scan".
_LABEL_HINT = re.compile(r"(^|[^a-z])(label|labels|seg|aseg|aparc|parc|dseg|mask|lab|synthseg|prediction)([^a-z]|$)", re.I)
_SCAN_HINT = re.compile(r"(^|[^a-z])(t1|t1w|t2|t2w|flair|pd|scan|image|img|mprage|norm|brain|orig)([^a-z]|$)", re.I)

AFFINE_KEY = "affine"
SOURCE_KEY = "source_path"


def has_suffix(path: str | Path, suffixes: tuple[str, ...] = READ_SUFFIXES) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in suffixes)


def stem(path: str | Path) -> str:
    """File name without .nii/.nii.gz/.mgz/.mgh."""
    name = Path(path).name
    for s in sorted(READ_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return Path(path).stem


def display_transform(affine: np.ndarray, ndim: int = 3) -> tuple[list[float], list[float]]:
    """Axis-aligned (scale, translate) approximating a voxel-to-world affine for display."""
    affine = np.asarray(affine, dtype=float)
    linear = affine[:3, :3]
    scale = np.linalg.norm(linear, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    translate = affine[:3, 3]
    scale = list(map(float, scale[:ndim])) + [1.0] * max(0, ndim - 3)
    translate = list(map(float, translate[:ndim])) + [0.0] * max(0, ndim - 3)
    return scale, translate


def affine_from_display(scale, translate) -> np.ndarray:
    """A voxel-to-world affine from a layer's (last three) scale/translate, when none is stored."""
    scale = list(np.asarray(scale, float))[-3:]
    translate = list(np.asarray(translate, float))[-3:]
    while len(scale) < 3:
        scale.append(1.0)
        translate.append(0.0)
    affine = np.eye(4)
    affine[[0, 1, 2], [0, 1, 2]] = scale
    affine[:3, 3] = translate
    return affine


def layer_affine(layer_or_attrs: Any) -> np.ndarray:
    """The true affine of a layer (metadata) or, failing that, one built from scale/translate.

    Accepts a napari layer or the ``attributes`` dict napari hands to writers.
    """
    if isinstance(layer_or_attrs, dict):
        meta = layer_or_attrs.get("metadata") or {}
        scale, translate = layer_or_attrs.get("scale", [1, 1, 1]), layer_or_attrs.get("translate", [0, 0, 0])
    else:
        meta = layer_or_attrs.metadata or {}
        scale, translate = layer_or_attrs.scale, layer_or_attrs.translate
    affine = meta.get(AFFINE_KEY)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape == (4, 4):
            return affine
    return affine_from_display(scale, translate)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, float)[:3, :3])))


def is_integer_valued(data: np.ndarray, max_check: int = 2_000_000) -> bool:
    """Integer dtype, or float data whose (sampled) values are all whole numbers."""
    data = np.asarray(data)
    if data.dtype.kind in "iub":
        return True
    if data.dtype.kind != "f":
        return False
    flat = data.reshape(-1)
    if flat.size > max_check:
        flat = flat[:: flat.size // max_check + 1]
    return bool(np.all(np.isfinite(flat)) and np.all(flat == np.round(flat)))


def looks_like_labels(data: np.ndarray, path: Optional[str | Path] = None) -> bool:
    """Decide whether a volume is a label map (-> Labels layer) or a scan (-> Image layer).

    Non-integer values: a scan. Otherwise the file name decides when it says so ("aseg", "labels",
    "seg", ... vs "T1", "scan", ...); else few distinct values (<= 64, or a sparse set of at most
    1000 values within their range) make a label map, while a dense range (a uint8 T1) is a scan.
    """
    if not is_integer_valued(data):
        return False
    name = stem(path) if path is not None else ""
    if name and _LABEL_HINT.search(name):
        return True
    if name and _SCAN_HINT.search(name):
        return False
    flat = np.asarray(data).reshape(-1)
    if flat.size > 4_000_000:
        flat = flat[:: flat.size // 4_000_000 + 1]
    values = np.unique(flat)
    if values.size <= 64:
        return True
    span = float(values[-1]) - float(values[0]) + 1
    return values.size <= 1000 and values.size < 0.5 * span


def label_dtype(data: np.ndarray) -> np.dtype:
    """The integer dtype a label map keeps in napari (the file's own integer type when it has one)."""
    data = np.asarray(data)
    if data.dtype.kind in "iu":
        return data.dtype
    if data.dtype.kind == "b":
        return np.dtype(np.uint8)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo >= 0 and hi < 2**16:
        return np.dtype(np.uint16) if hi >= 256 else np.dtype(np.uint8)
    return np.dtype(np.int32)


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a NIfTI/MGZ file: (data in voxel order, 4x4 affine, nibabel header).

    Integer files keep their on-disk dtype (so labels round-trip exactly); scaled data come back
    as floats. Raises ``ValueError`` with a one-line message on unreadable files.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        dataobj = img.dataobj
        slope = getattr(dataobj, "slope", 1.0)
        inter = getattr(dataobj, "inter", 0.0)
        unscaled = (slope in (1.0, None) or np.isnan(slope)) and (inter in (0.0, None) or np.isnan(inter))
        on_disk = np.dtype(img.get_data_dtype())
        if unscaled and on_disk.kind in "iub":
            data = np.asarray(dataobj.get_unscaled() if hasattr(dataobj, "get_unscaled") else dataobj)
            data = data.astype(on_disk, copy=False)
        else:
            data = np.asanyarray(dataobj)
        affine = np.asarray(img.affine, dtype=float)
        header = img.header
    except Exception as exc:  # nibabel raises many types on corrupt input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name}: cannot read as NIfTI/MGZ ({first})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"{path.name}: expected a 2D/3D volume, got shape {data.shape}")
    return data, affine, header


def write_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, header: Any = None) -> str:
    """Write ``data`` (voxel order) with ``affine`` as NIfTI (or MGZ when the name says so).

    Overwrites ``path`` (napari's save dialog has already asked). Written via a temporary file and a
    rename so a reader never sees a half-written volume. Returns the path written.
    """
    import os

    import nibabel as nib

    path = Path(path)
    lower = path.name.lower()
    if not (lower.endswith(".nii") or lower.endswith(".nii.gz") or lower.endswith(".mgz") or lower.endswith(".mgh")):
        path = path.with_name(path.name + ".nii.gz")
        lower = path.name.lower()
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    if data.dtype == np.int64 and data.size and data.min() >= np.iinfo(np.int32).min and data.max() <= np.iinfo(np.int32).max:
        data = data.astype(np.int32)  # NIfTI viewers handle int32 better; the values are unchanged
    affine = np.asarray(affine, dtype=float)
    if lower.endswith((".mgz", ".mgh")):
        img = nib.MGHImage(data if data.dtype != np.int64 else data.astype(np.int32), affine)
    else:
        hdr = None
        if header is not None and isinstance(header, nib.Nifti1Header):
            hdr = header.copy()
            hdr.set_data_dtype(data.dtype)
            hdr.set_slope_inter(None, None)
        img = nib.Nifti1Image(data, affine, header=hdr)
        img.set_sform(affine, code=int(hdr["sform_code"]) if hdr is not None and int(hdr["sform_code"]) > 0 else 1)
        img.set_qform(affine, code=int(hdr["qform_code"]) if hdr is not None and int(hdr["qform_code"]) > 0 else 1)
        img.header.set_slope_inter(None, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else Path(lower).suffix
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)
    return str(path)


def volume_to_layer_data(path: str | Path) -> tuple[np.ndarray, dict, str]:
    """A napari LayerData tuple for a volume file: ('labels' for label maps, else 'image')."""
    data, affine, header = read_volume(path)
    scale, translate = display_transform(affine, data.ndim if data.ndim <= 3 else 3)
    if data.ndim == 4:  # time/channel last in NIfTI -> first in napari
        data = np.moveaxis(data, 3, 0)
        scale, translate = [1.0] + scale, [0.0] + translate
    if data.ndim == 2:
        scale, translate = scale[:2], translate[:2]
    meta = {AFFINE_KEY: affine, SOURCE_KEY: str(Path(path).resolve()), "header": header}
    kwargs: dict[str, Any] = {"name": stem(path), "scale": scale, "translate": translate, "metadata": meta}
    if data.ndim <= 3 and looks_like_labels(data, path):
        if data.dtype.kind not in "iu":
            data = data.astype(label_dtype(data))
        return data, kwargs, "labels"
    data = data.astype(np.float32) if data.dtype.kind == "f" and data.dtype != np.float32 else data
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if finite.size:
        lo, hi = np.percentile(finite[:: max(1, finite.size // 1_000_000)], [0.5, 99.5])
        if hi > lo:
            kwargs["contrast_limits"] = [float(lo), float(hi)]
    kwargs["colormap"] = "gray"
    return data, kwargs, "image"


def safe_name(name: str) -> str:
    """A file-system friendly version of a layer name."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._")
    return name[:80] or "layer"
