"""Reading and writing volumes (.nii, .nii.gz, .mgz) with clear, one-line errors.

Every problem with a user's file raises :class:`~l2s_gui.errors.InputError` naming the file and what
to do; outputs never overwrite an input and never overwrite an existing file unless asked
(:class:`~l2s_gui.errors.OutputExistsError`). Files are written atomically (temporary file in the same
folder, then ``os.replace``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from .atomic import atomic_path
from .errors import InputError, L2SError, OutputExistsError

__all__ = ["Volume", "load_volume", "load_scan", "load_label_map", "check_pair", "save_volume",
           "expand_paths", "volume_suffix", "strip_suffix", "to_ras", "from_ras", "SUFFIXES",
           "read_volume", "write_volume", "is_integer_valued", "looks_like_labels", "label_dtype",
           "axis_aligned_transform", "affine_from_scale_translate"]

SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")
_SUFFIX_TEXT = ".nii, .nii.gz or .mgz"
AFFINE_TOLERANCE_MM = 1e-3


def volume_suffix(path: str | Path) -> str | None:
    """The supported suffix of ``path`` ('.nii.gz', '.nii', '.mgz', '.mgh'), or None."""
    name = Path(path).name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def strip_suffix(path: str | Path) -> str:
    """File name without its volume suffix: 'sub-01_T1w.nii.gz' -> 'sub-01_T1w'."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine (mm), the file header and where it came from."""

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "volume"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, ...]:
        """Voxel sizes in mm (column norms of the affine's 3x3 part)."""
        return tuple(float(z) for z in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(np.asarray(self.affine, dtype=np.float64)[:3, :3])))


# ---------------------------------------------------------------------------------------------- loading
def _open(path: str | Path):
    """(nibabel image, data as stored with its scaling applied unless the file holds unscaled
    integers, which keep their on-disk dtype, affine); InputError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {_SUFFIX_TEXT} file")
    if volume_suffix(path) is None:
        raise InputError(f"{path}: unsupported file type; use {_SUFFIX_TEXT}")
    try:
        img = nib.load(str(path))
        dataobj = img.dataobj
        slope, inter = getattr(dataobj, "slope", 1.0), getattr(dataobj, "inter", 0.0)
        unscaled = (slope in (1.0, None) or np.isnan(slope)) and (inter in (0.0, None) or np.isnan(inter))
        on_disk = np.dtype(img.get_data_dtype())
        if unscaled and on_disk.kind in "iub" and hasattr(dataobj, "get_unscaled"):
            data = np.asarray(dataobj.get_unscaled()).astype(on_disk, copy=False)
        else:
            data = np.asanyarray(dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except MemoryError:
        raise InputError(f"{path}: too large to load into memory") from None
    except L2SError:
        raise
    except Exception as exc:  # nibabel/gzip/zlib raise many types for damaged files
        raise InputError(f"{path}: cannot read this file (corrupt or not {_SUFFIX_TEXT}: "
                         f"{_first_line(exc)})") from None
    if data.dtype.names is not None or np.iscomplexobj(data):
        raise InputError(f"{path}: unsupported voxel type {data.dtype}; give a real-valued 3D volume")
    if 0 in data.shape:
        raise InputError(f"{path}: empty image of shape {tuple(data.shape)}")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: invalid voxel-to-world affine in the header; fix the file's geometry")
    return img, data, affine


def load_volume(path: str | Path) -> Volume:
    """Load a 3D volume (data as stored, scaling applied). 2D images become one slice (X, Y, 1);
    trailing singleton dimensions are squeezed; real 4D images are refused."""
    path = Path(path)
    img, data, affine = _open(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputError(f"{path}: 4D image with {data.shape[3]} volumes; give one 3D volume")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{path}: {data.ndim}D image of shape {tuple(data.shape)}; give one 3D volume")
    return Volume(np.ascontiguousarray(data), affine, img.header, path)


def read_volume(path: str | Path) -> Volume:
    """A volume as a viewer shows it: 2D, 3D or 4D (volumes last) data in voxel order, unscaled
    integer files in their on-disk dtype (label values round-trip exactly), the affine and header.
    The napari reader and the sample data use it; training reads through :func:`load_scan` /
    :func:`load_label_map`, which add their checks to the same reading."""
    path = Path(path)
    img, data, affine = _open(path)
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3, 4):
        raise InputError(f"{path}: expected a 2D/3D volume, got shape {tuple(data.shape)}")
    return Volume(data, affine, img.header, path)


def load_scan(path: str | Path) -> Volume:
    """Load a scan as float32; refuse NaN/Inf and constant images."""
    vol = load_volume(path)
    data = vol.data
    if not np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_:
        raise InputError(f"{vol.path}: unsupported voxel type {data.dtype} for a scan")
    data = data.astype(np.float32, copy=False)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{vol.path}: contains NaN or Inf values; fix or mask the scan first")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise InputError(f"{vol.path}: image is constant (every voxel is {lo:g}); not a scan")
    vol.data = data
    return vol


def load_label_map(path: str | Path) -> Volume:
    """Load a label map as int32; refuse non-integer, negative and all-zero maps."""
    vol = load_volume(path)
    data = vol.data
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{vol.path}: unsupported voxel type {data.dtype} for a label map")
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data)
        if not finite.all():
            raise InputError(f"{vol.path}: not a label map (contains NaN or Inf values)")
        frac = data != np.round(data)
        if frac.any():
            example = float(data[frac].flat[0])
            raise InputError(f"{vol.path}: not a label map (non-integer values such as {example:.2f}); "
                             f"did you pass a scan?")
    if data.size and float(data.min()) < 0:
        raise InputError(f"{vol.path}: label map has negative values (such as {data.min():g}); "
                         f"labels must be >= 0")
    if data.size and float(data.max()) > np.iinfo(np.int32).max:
        raise InputError(f"{vol.path}: label values too large (max {data.max():g})")
    data = data.astype(np.int32, copy=False)
    if not data.any():
        raise InputError(f"{vol.path}: label map is empty (all zero)")
    vol.data = data
    return vol


def _corners(shape: Sequence[int]) -> np.ndarray:
    """Homogeneous voxel coordinates (4, 8) of the grid's corner voxels."""
    ext = [(0, s - 1) for s in shape[:3]]
    pts = np.array(np.meshgrid(*ext, indexing="ij")).reshape(3, -1).astype(np.float64)
    return np.vstack([pts, np.ones((1, pts.shape[1]))])


def affine_distance_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where two affines put the corner voxels of a grid."""
    pts = _corners(shape)
    return float(np.max(np.linalg.norm((np.asarray(a) @ pts - np.asarray(b) @ pts)[:3], axis=0)))


def check_pair(scan: Volume, labels: Volume, tolerance_mm: float = AFFINE_TOLERANCE_MM) -> None:
    """The label map must be on the scan's voxel grid (same shape, same affine)."""
    if scan.data.shape != labels.data.shape:
        fmt = lambda s: "x".join(str(n) for n in s)  # noqa: E731
        raise InputError(f"{scan.name} ({fmt(scan.data.shape)}) and {labels.name} ({fmt(labels.data.shape)}): "
                         f"shapes differ; the label map must be on the scan's voxel grid")
    dist = affine_distance_mm(scan.affine, labels.affine, scan.data.shape)
    if dist > tolerance_mm:
        raise InputError(f"{scan.name} and {labels.name}: voxel-to-world affines differ (by up to {dist:.3g} mm); "
                         f"resample the label map onto the scan's grid")


# ---------------------------------------------------------------------------------------------- orientation
def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder/flip voxel axes to the closest RAS orientation (exact: no resampling).

    Returns ``(data_ras, affine_ras, start)``; ``from_ras(result, start)`` maps an array of the RAS
    grid back onto the original voxel order.
    """
    start = ornt.io_orientation(affine)
    transform = ornt.ornt_transform(start, ornt.axcodes2ornt("RAS"))
    data_ras = ornt.apply_orientation(data, transform)
    affine_ras = np.asarray(affine) @ ornt.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(data_ras), affine_ras, start


def from_ras(data_ras: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras` (``start`` is its third result)."""
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), start)
    return np.ascontiguousarray(ornt.apply_orientation(data_ras, transform))


# ---------------------------------------------------------------------------------------------- saving
def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_path(path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse writing onto an input (always) or onto an existing file (unless ``overwrite``)."""
    path = Path(path)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise OutputExistsError(f"{path}: is one of the inputs; choose another output path "
                                    f"(inputs are never overwritten)")
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder; give a file name for the output")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; use --overwrite to replace it")
    return path


def _output_dtype(data: np.ndarray, suffix: str) -> np.dtype:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if 0 <= lo and hi <= 255:
            return np.dtype(np.uint8)
        if suffix in (".nii", ".nii.gz") and -32768 <= lo and hi <= 32767:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def _build_image(data: np.ndarray, affine: np.ndarray, header_like: Any, suffix: str):
    affine = np.asarray(affine, dtype=np.float64)
    dtype = _output_dtype(data, suffix)
    arr = np.asarray(data).astype(dtype, copy=False)
    if suffix in (".mgz", ".mgh"):
        header = header_like.copy() if isinstance(header_like, nib.freesurfer.mghformat.MGHHeader) else None
        img = nib.MGHImage(arr, affine, header=header)
        img.header.set_data_dtype(dtype)
        return img
    hdr_like = header_like if isinstance(header_like, nib.Nifti1Header) else None
    header = hdr_like.copy() if hdr_like is not None else None
    cls = nib.Nifti2Image if isinstance(hdr_like, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(arr, affine, header=header)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if hdr_like is not None:
        qcode, scode = int(hdr_like["qform_code"]), int(hdr_like["sform_code"])
        if qcode == 0 and scode == 0:
            qcode = scode = 1
        space, time = img.header.get_xyzt_units()
        if space == "unknown":  # read as mm everywhere; say so
            img.header.set_xyzt_units("mm", time)
    else:  # from MGZ or an array: the affine is the scanner geometry
        qcode = scode = 1
        img.header.set_xyzt_units("mm", "sec")
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    img.set_sform(affine, code=scode if scode else 1)
    img.set_qform(affine, code=qcode if qcode else 1)
    return img


def save_volume(path: str | Path, data: np.ndarray, like: Volume, overwrite: bool = False,
                inputs: Iterable[str | Path] = ()) -> Path:
    """Write ``data`` on ``like``'s grid (affine, qform/sform codes, voxel sizes) as NIfTI or MGZ.

    Integer data is written as uint8 when it fits (else int16/int32), anything else as float32.
    Never writes onto a path in ``inputs``; refuses an existing file unless ``overwrite``.
    """
    path = Path(path).expanduser()
    suffix = volume_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: unsupported output type; use {_SUFFIX_TEXT}")
    inputs = list(inputs) + ([like.path] if like.path is not None else [])
    check_output_path(path, overwrite, inputs)
    data = np.asarray(data)
    if data.shape != tuple(like.data.shape):
        raise ValueError(f"data shape {data.shape} differs from the reference grid {tuple(like.data.shape)}")
    img = _build_image(data, like.affine, like.header, suffix)
    _save_atomic(img, path, suffix)
    return path


def _save_atomic(img, path: Path, suffix: str) -> None:
    with atomic_path(path, keep_suffix=suffix) as tmp:
        nib.save(img, str(tmp))


def write_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Write ``data`` (voxel order, 2D to 4D) with ``affine`` as NIfTI, or MGZ when the name says so
    (no suffix: ``.nii.gz`` is added); ``header`` (a nibabel header, e.g. from :func:`read_volume`)
    keeps its qform/sform codes and units. Replaces an existing file (napari's save dialog has
    asked); written atomically. Dtypes as :func:`save_volume`. Returns the path written."""
    path = Path(path).expanduser()
    suffix = volume_suffix(path)
    if suffix is None:
        path = path.with_name(path.name + ".nii.gz")
        suffix = ".nii.gz"
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder; give a file name for the output")
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    _save_atomic(_build_image(data, affine, header, suffix), path, suffix)
    return path


# ---------------------------------------------------------------------------------------------- scan or labels
# File-name hints: a name that says "labels" wins over the value heuristics, and so does "scan".
_LABEL_HINT = re.compile(r"(^|[^a-z])(label|labels|seg|aseg|aparc|parc|dseg|mask|lab|synthseg|prediction)"
                         r"([^a-z]|$)", re.I)
_SCAN_HINT = re.compile(r"(^|[^a-z])(t1|t1w|t2|t2w|flair|pd|scan|image|img|mprage|norm|brain|orig)([^a-z]|$)", re.I)


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


def looks_like_labels(data: np.ndarray, path: str | Path | None = None) -> bool:
    """Whether a volume is a label map (else a scan): the one decision the reader, the sample data
    and the training inputs share.

    Non-integer values: a scan. Otherwise the file name decides when it says so ("aseg", "labels",
    "seg", ... vs "T1", "scan", ...); else few distinct values (<= 64, or a sparse set of at most
    1000 values within their range) make a label map, while a dense range (a uint8 T1) is a scan.

    >>> looks_like_labels(np.array([[0, 2], [41, 2]]))
    True
    >>> looks_like_labels(np.arange(256, dtype=np.uint8).reshape(16, 16), "sub-01_T1w.nii.gz")
    False
    """
    if not is_integer_valued(data):
        return False
    name = strip_suffix(path) if path is not None else ""
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


def label_map_problem(data: np.ndarray, name: str) -> str:
    """Why ``data`` cannot be a label map ("" when it can): non-integer or negative values."""
    if not is_integer_valued(data):
        return f"{name} is not a label map (it holds non-integer values)"
    data = np.asarray(data)
    if data.size and data.min() < 0:
        return f"{name} is not a label map (negative values)"
    return ""


def label_dtype(data: np.ndarray) -> np.dtype:
    """The integer dtype a label map keeps (the file's own integer type when it has one)."""
    data = np.asarray(data)
    if data.dtype.kind in "iu":
        return data.dtype
    if data.dtype.kind == "b":
        return np.dtype(np.uint8)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo >= 0 and hi < 2**16:
        return np.dtype(np.uint16) if hi >= 256 else np.dtype(np.uint8)
    return np.dtype(np.int32)


# ---------------------------------------------------------------------------------------------- display geometry
def axis_aligned_transform(affine: np.ndarray, ndim: int = 3) -> tuple[list[float], list[float]]:
    """(scale, translate): the axis-aligned part of a voxel-to-world affine (voxel sizes and origin).

    Viewers that slice in 2D ignore rotations and shears (napari does), so they display a volume
    with this transform and keep the true affine beside it.

    >>> axis_aligned_transform(np.diag([2.0, 3.0, 4.0, 1.0]))
    ([2.0, 3.0, 4.0], [0.0, 0.0, 0.0])
    """
    affine = np.asarray(affine, dtype=float)
    scale = np.linalg.norm(affine[:3, :3], axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    translate = affine[:3, 3]
    return (list(map(float, scale[:ndim])) + [1.0] * max(0, ndim - 3),
            list(map(float, translate[:ndim])) + [0.0] * max(0, ndim - 3))


def affine_from_scale_translate(scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    """A voxel-to-world affine from the last three (or fewer) axes' scale and translate."""
    scale = [float(v) for v in list(scale)[-3:]]
    translate = [float(v) for v in list(translate)[-3:]]
    while len(scale) < 3:
        scale.append(1.0)
        translate.append(0.0)
    affine = np.eye(4)
    affine[[0, 1, 2], [0, 1, 2]] = scale
    affine[:3, 3] = translate
    return affine


# ---------------------------------------------------------------------------------------------- paths
def expand_paths(items: Sequence[str | Path], what: str) -> list[Path]:
    """Files, or folders holding .nii/.nii.gz/.mgz files, as a list of files.

    Files keep the order given; each folder contributes its volume files sorted by name (no
    recursion). Duplicates are dropped. ``what`` names the setting in error messages.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    if isinstance(items, (str, Path)):
        items = [items]
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.is_file() and volume_suffix(f) and not f.name.startswith(".")),
                           key=lambda f: f.name)
            if not found:
                raise InputError(f"{what}: folder {p} holds no {_SUFFIX_TEXT} files")
        elif p.is_file():
            if volume_suffix(p) is None:
                raise InputError(f"{what}: {p}: unsupported file type; use {_SUFFIX_TEXT}")
            found = [p]
        else:
            raise InputError(f"{what}: {p} not found")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out
