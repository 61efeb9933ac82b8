"""Segmentation of new volumes with a trained model.

The scan is reoriented to RAS voxel order (axis permutations/flips only, as in training),
normalised exactly as in training (:func:`~l2s_gui.intensity.normalize_intensities`) and resampled
(linear) to the voxel size the model was trained at (:attr:`LoadedModel.voxel_size
<l2s_gui.model_io.LoadedModel.voxel_size>`: any scan voxel size, thick slices included; for 2D
models in-plane only, the slices along the slice axis staying the scan's own). There the
network gives softmax posteriors, slice by slice along the model's slice axis (2D models) or with an
overlapping sliding window (3D models; posteriors blended where windows overlap). As in SynthSeg:

- a left/right flipped pass (on by default): the scan flipped along the RAS left-right axis (axis 0)
  is segmented too, its posteriors flipped back with the left/right classes swapped
  (:meth:`LabelTable.flip_classes <l2s_gui.labels.LabelTable.flip_classes>`) and averaged with the
  first pass. Skipped, with a note said once, when the label table does not allow a flip, and for
  2D models slicing along axis 0 (sagittal slices: a flip only reorders them, so the network would
  see the same slices and the pass would add nothing);
- an optional clean-up (``clean``): on the model's grid, each structure keeps its largest
  26-connected component; the posterior of the removed voxels for that structure is set to 0, so
  they go to their next most probable class;
- the posteriors are resampled (linear) back onto the scan's own grid, class by class in chunks to
  bound the memory, and the labels are their argmax there (thin structures survive better than
  with nearest-neighbour label resampling);
- volumes are soft: the sum of the posteriors on the scan's grid times its voxel volume (mm^3).

Labels are mapped back to the input's voxel order and original label values; written outputs keep
the input's affine and header geometry.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path
from .device import is_out_of_memory, resolve_device
from .errors import DeviceMemoryError, InputError, L2SError, OutputError
from .intensity import normalize_intensities
from .io import (Volume, check_output_path, expand_paths, from_ras, load_scan, save_volume, strip_suffix, to_ras,
                 volume_suffix)
from .labels import LabelTable
from .resample import resample, target_shape, target_voxel_size, voxel_sizes

POSTERIOR_BUDGET = 2 << 30  # bytes of float32 posteriors on the model's grid above which they are kept in float16
CHUNK_BYTES = 512 << 20     # bytes of float32 posteriors resampled onto the scan's grid at a time


class SegmentationCancelled(L2SError):
    """The user cancelled a segmentation."""


Progress = Optional[Callable[[float], None]]
Cancelled = Optional[Callable[[], bool]]


def _pad_to_multiple(x: torch.Tensor, multiple: int, minimum: Sequence[int] = ()) -> tuple[torch.Tensor, list[int]]:
    """Zero-pad the trailing spatial dims of (B, C, *sp) up to a multiple; return the original sizes."""
    sizes = list(x.shape[2:])
    targets = [max(-(-s // multiple) * multiple, (minimum[i] if i < len(minimum) else 0)) for i, s in enumerate(sizes)]
    pad: list[int] = []
    for s, t in reversed(list(zip(sizes, targets))):
        pad += [0, t - s]
    return (F.pad(x, pad) if any(pad) else x), sizes


def _check(cancelled: Cancelled) -> None:
    if cancelled is not None and cancelled():
        raise SegmentationCancelled("segmentation cancelled")


def _store_dtype(n_classes: int, numel: int) -> torch.dtype:
    """float32 posteriors, or float16 when they would exceed :data:`POSTERIOR_BUDGET` (many classes)."""
    return torch.float16 if n_classes * numel * 4 > POSTERIOR_BUDGET else torch.float32


def _posteriors_slices(model, image: torch.Tensor, batch_size: int, progress: Progress,
                       cancelled: Cancelled) -> torch.Tensor:
    """2D models: softmax posteriors (C, *sp) of every slice along ``model.slice_axis``, padded to the
    net's multiple, in batches. Slices that are entirely 0 (after normalisation: nothing above the
    0.5th percentile) are background without running the network (training never shows the network
    such slices)."""
    axis = model.slice_axis
    slices = image.movedim(axis, 0).unsqueeze(1)  # (S, 1, a, b)
    sizes = list(slices.shape[2:])
    n_classes = model.table.n_classes
    post = torch.zeros((slices.shape[0], n_classes, *sizes), dtype=_store_dtype(n_classes, image.numel()),
                       device=image.device)
    post[:, 0] = 1
    todo = torch.nonzero(slices.flatten(1).ne(0).any(1)).flatten().tolist()
    n = max(len(todo), 1)
    if progress is not None:
        progress(0.0)
    for start in range(0, len(todo), batch_size):
        _check(cancelled)
        index = todo[start:start + batch_size]
        batch, _ = _pad_to_multiple(slices[index], model.net_multiple)
        p = torch.softmax(model.net(batch).float(), dim=1)
        post[index] = p[(slice(None), slice(None), *[slice(0, s) for s in sizes])].to(post.dtype)
        if progress is not None:
            progress(min(1.0, (start + len(index)) / n))
    _check(cancelled)
    if progress is not None:
        progress(1.0)
    return post.movedim(0, axis + 1)


def _importance(window: Sequence[int], blend: str, device: torch.device) -> torch.Tensor:
    """Per-voxel weight of a window's prediction: a Gaussian (sigma = window/8, as in nnU-Net)
    that down-weights window borders, or uniform."""
    if blend == "uniform":
        return torch.ones(tuple(window), device=device)
    weight = torch.ones((), device=device)
    for w in window:
        x = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
        g = torch.exp(-0.5 * (x / max(w / 8, 1e-3)) ** 2)
        weight = weight[..., None] * g
    weight = weight / weight.max()
    return weight.clamp(min=1e-3)


def _window_starts(size: int, window: int, overlap: float) -> list[int]:
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1 - overlap))))
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


def _posteriors_windows(model, image: torch.Tensor, overlap: float, batch_size: int, progress: Progress,
                        cancelled: Cancelled, blend: str = "gaussian") -> torch.Tensor:
    """3D models: softmax posteriors (C, *sp) from a sliding window of ``model.patch_size`` (the
    whole padded volume when empty), blended with :func:`_importance` weights where windows overlap."""
    m = model.net_multiple
    window = list(model.patch_size) if model.patch_size else list(image.shape)
    window = [-(-w // m) * m for w in window]
    volume, sizes = _pad_to_multiple(image[None, None], m, window)
    spatial = list(volume.shape[2:])
    if not model.patch_size:
        window = spatial
    n_classes = model.table.n_classes
    probs = torch.zeros((n_classes, *spatial), dtype=_store_dtype(n_classes, math.prod(spatial)), device=image.device)
    weight = torch.zeros(spatial, device=image.device)
    importance = _importance(window, blend, image.device)
    corners = list(itertools.product(*[_window_starts(s, w, overlap) for s, w in zip(spatial, window)]))
    if progress is not None:
        progress(0.0)
    for start in range(0, len(corners), batch_size):
        _check(cancelled)
        group = corners[start:start + batch_size]
        region = [tuple(slice(c, c + w) for c, w in zip(corner, window)) for corner in group]
        batch = torch.cat([volume[(slice(None), slice(None), *r)] for r in region])
        p = torch.softmax(model.net(batch).float(), dim=1)
        for k, r in enumerate(region):
            probs[(slice(None), *r)] += (p[k] * importance).to(probs.dtype)
            weight[r] += importance
        if progress is not None:
            progress(min(1.0, (start + len(group)) / len(corners)))
    _check(cancelled)
    probs = probs[(slice(None), *[slice(0, s) for s in sizes])]
    probs /= weight[tuple(slice(0, s) for s in sizes)].clamp(min=1e-6).to(probs.dtype)
    return probs


def flip_plan(model) -> tuple[Optional[list[int]], str]:
    """(class permutation of the left/right flipped pass, '') or (None, why there is none)."""
    perm = model.table.flip_classes()
    if perm is None:
        name = f" {model.table.name!r}" if model.table.name else ""
        return None, (f"the model's label table{name} does not say which classes are left/right (no lr_pairs, "
                      f"and not FreeSurfer ids with both sides as classes): segmenting without the flipped pass")
    if model.ndim == 2 and model.slice_axis == 0:
        return None, ("the model segments sagittal slices (data.slice_axis 0): a left/right flip only reorders "
                      "them, so the flipped pass would add nothing and is skipped")
    return perm, ""


@contextlib.contextmanager
def _memory_guard(device: torch.device, batch_size: int, ndim: int) -> Iterator[None]:
    """Running out of device memory becomes a one-line :class:`DeviceMemoryError`."""
    try:
        yield
    except L2SError:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_out_of_memory(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            unit = "slices" if ndim == 2 else "windows"
            raise DeviceMemoryError(f"out of memory on {device} while segmenting (batches of {batch_size} {unit}): "
                                    f"use a smaller batch size or the CPU (--device cpu)") from None
        raise


def _posteriors(model, x: torch.Tensor, overlap: float, batch_size: int, progress: Progress, cancelled: Cancelled,
                blend: str) -> torch.Tensor:
    if model.ndim == 2:
        return _posteriors_slices(model, x, batch_size, progress, cancelled)
    return _posteriors_windows(model, x, overlap, max(1, batch_size // 4), progress, cancelled, blend)


@torch.inference_mode()
def predict_posteriors(model, image: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                       overlap: float = 0.5, batch_size: int = 8, progress: Progress = None,
                       cancelled: Cancelled = None, blend: str = "gaussian",
                       flip_classes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Softmax posteriors (C, *image.shape) on ``device`` for a normalised 3D ``image`` in RAS order.

    ``flip_classes``: the class permutation of a left/right flip (:func:`flip_plan`): the image
    flipped along axis 0 is segmented too, and its posteriors, flipped back with the classes
    permuted, are averaged with the first pass. Other arguments: :func:`segment_array`.
    """
    if np.ndim(image) != 3:
        raise InputError(f"expected a 3D image, got shape {tuple(np.shape(image))}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = torch.device(device)
    model.net.to(device).eval()
    x = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image,
                        dtype=torch.float32, device=device)
    passes = 1 if flip_classes is None else 2

    def part(k: int) -> Progress:
        return None if progress is None else (lambda f: progress((k + f) / passes))

    with _memory_guard(device, batch_size, model.ndim):
        post = _posteriors(model, x, overlap, batch_size, part(0), cancelled, blend)
        if flip_classes is not None:
            flipped = _posteriors(model, x.flip(0), overlap, batch_size, part(1), cancelled, blend)
            for c, source in enumerate(flip_classes):  # class by class: one class-sized temporary
                post[c].add_(flipped[int(source)].flip(0)).mul_(0.5)
            del flipped
    return post


@torch.inference_mode()
def segment_array(model, image: np.ndarray, device: torch.device | str = "cpu", overlap: float = 0.5,
                  batch_size: int = 8, progress: Progress = None, cancelled: Cancelled = None,
                  blend: str = "gaussian", flip: bool = False) -> np.ndarray:
    """Class ids (int64, same shape) for a normalised 3D ``image`` in the training voxel order (RAS).

    ``model`` needs ``net``, ``table``, ``ndim``, ``slice_axis``, ``patch_size`` and ``net_multiple``
    (a :class:`~l2s_gui.model_io.LoadedModel`). 2D models: ``batch_size`` slices per forward pass.
    3D models: windows of ``model.patch_size`` overlapping by ``overlap`` (fraction of the window),
    ``max(1, batch_size // 4)`` windows per pass, ``blend`` 'gaussian' or 'uniform'.
    ``flip``: add the left/right flipped pass when :func:`flip_plan` allows it.
    ``progress(fraction)`` is called after each batch; ``cancelled()`` is polled before each batch
    and raises :class:`SegmentationCancelled` when it returns True. Running out of device memory
    raises :class:`~l2s_gui.errors.DeviceMemoryError`.
    """
    perm = flip_plan(model)[0] if flip else None
    post = predict_posteriors(model, image, device, overlap, batch_size, progress, cancelled, blend, perm)
    return post.argmax(0).cpu().numpy()


def keep_largest_components(post: torch.Tensor) -> int:
    """In place: for each structure (class > 0) of ``post.argmax(0)``, set the structure's posterior
    to 0 outside its largest 26-connected component and renormalise those voxels, so that they go to
    their next most probable class. Returns the number of voxels reassigned."""
    from scipy import ndimage

    classes = post.argmax(0).cpu().numpy()
    structure = np.ones((3,) * classes.ndim, dtype=bool)
    changed = np.zeros(classes.shape, dtype=bool)
    for c, box in enumerate(ndimage.find_objects(classes), start=1):
        if box is None:
            continue
        mask = classes[box] == c
        components, n = ndimage.label(mask, structure)
        if n <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        drop = mask & (components != int(sizes.argmax()))
        post[c][box][torch.from_numpy(drop).to(post.device)] = 0
        changed[box] |= drop
    if changed.any():
        where = torch.from_numpy(changed).to(post.device)
        sub = post[:, where].float()
        total = sub.sum(0, keepdim=True)
        sub = torch.where(total > 0, sub / total.clamp(min=1e-30), sub)
        post[:, where] = sub.to(post.dtype)
    return int(changed.sum())


def posteriors_to_grid(post: torch.Tensor, shape: Sequence[int], voxel_mm3: float) -> tuple[np.ndarray, np.ndarray]:
    """(argmax classes on ``shape`` (int64), soft volume per class in mm^3) from posteriors (C, *sp)
    resampled (trilinear, the :mod:`~l2s_gui.resample` grid convention) onto ``shape`` over the same
    field of view, :data:`CHUNK_BYTES` of classes at a time."""
    shape = [int(s) for s in shape]
    n_classes = post.shape[0]
    dims = tuple(range(1, 1 + len(shape)))
    if list(post.shape[1:]) == shape:
        soft = post.sum(dims, dtype=torch.float64) * voxel_mm3
        return post.argmax(0).cpu().numpy(), soft.cpu().numpy()
    chunk = max(1, CHUNK_BYTES // (4 * math.prod(shape)))
    best = torch.full(shape, -1.0, device=post.device)
    index = torch.zeros(shape, dtype=torch.long, device=post.device)
    soft = torch.zeros(n_classes, dtype=torch.float64, device=post.device)
    for c0 in range(0, n_classes, chunk):
        up = F.interpolate(post[None, c0:c0 + chunk].float(), size=shape, mode="trilinear", align_corners=False)[0]
        value, arg = up.max(0)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + c0, index)
        soft[c0:c0 + up.shape[0]] = up.sum(dims, dtype=torch.float64) * voxel_mm3
        del up
    return index.cpu().numpy(), soft.cpu().numpy()


@dataclass
class Segmentation:
    """The result of :func:`segment_scan`."""

    labels: np.ndarray                 # original label values on the scan's grid and voxel order
    volumes_mm3: dict[int, float]      # soft volume of every non-background table value (mm^3)
    flipped: bool = False              # the flipped pass was averaged in
    cleaned_voxels: int = 0            # voxels reassigned by the connected-component clean-up
    notes: list[str] = field(default_factory=list)  # things to tell the user once (no flipped pass, ...)


def segment_scan(model, scan: Volume, device: torch.device | str = "cpu", overlap: float = 0.5,
                 batch_size: int = 8, progress: Progress = None, cancelled: Cancelled = None, flip: bool = True,
                 clean: bool = False) -> Segmentation:
    """Segment ``scan`` (module docstring): labels on its own voxel grid, soft volumes, notes.

    ``model``: as for :func:`segment_array`, plus ``voxel_size`` (the training voxel size in mm;
    empty: segment on the scan's own grid). ``flip``: average a left/right flipped pass when the
    label table allows it (else a note). ``clean``: keep each structure's largest connected component.
    """
    if scan.data.ndim != 3:
        raise InputError(f"{scan.name}: expected a 3D volume, got shape {scan.data.shape}")
    if not np.isfinite(scan.data).all():
        raise InputError(f"{scan.name}: contains NaN or Inf values")
    data_ras, affine_ras, start = to_ras(np.asarray(scan.data, dtype=np.float32), scan.affine)
    image = normalize_intensities(data_ras)
    if model.voxel_size:  # segment on the training voxel size, then back onto the scan's grid
        sizes = voxel_sizes(affine_ras)
        target = target_voxel_size(model.voxel_size)
        if model.ndim == 2:  # 2D models: in-plane only; the slices stay the scan's own
            target[model.slice_axis] = sizes[model.slice_axis]
        image = resample(image, target_shape(image.shape, sizes, target), False)
    perm, note = flip_plan(model) if flip else (None, "")
    device = torch.device(device)
    post = predict_posteriors(model, image, device, overlap, batch_size, progress, cancelled, flip_classes=perm)
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(scan.affine, dtype=np.float64)[:3, :3])))
    with torch.inference_mode(), _memory_guard(device, batch_size, model.ndim):
        cleaned = keep_largest_components(post) if clean else 0
        _check(cancelled)
        classes, soft = posteriors_to_grid(post, data_ras.shape, voxel_mm3)
    del post
    table = model.table
    volumes = {int(v): float(soft[i]) for i, v in enumerate(table.values) if v != 0}
    return Segmentation(from_ras(table.to_values(classes), start), volumes, perm is not None, cleaned,
                        [note] if note else [])


def segment_volume(model, scan: Volume, device: torch.device | str = "cpu", overlap: float = 0.5,
                   batch_size: int = 8, progress: Progress = None, cancelled: Cancelled = None,
                   flip: bool = True, clean: bool = False) -> np.ndarray:
    """Original label values for ``scan``, on its own voxel grid (same shape and orientation):
    the labels of :func:`segment_scan`."""
    return segment_scan(model, scan, device, overlap, batch_size, progress, cancelled, flip, clean).labels


def label_volumes(labels: np.ndarray, affine: np.ndarray, table: LabelTable) -> dict[int, tuple[int, float]]:
    """value -> (voxel count, hard volume in mm^3) for every non-background label of ``table`` (0 when
    absent) and any other non-zero value present."""
    voxel = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    flat = np.asarray(labels).reshape(-1)
    if flat.size and flat.min() >= 0 and flat.max() < (1 << 20):
        counts = np.bincount(flat.astype(np.intp, copy=False))
        found = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    else:
        values, n = np.unique(flat, return_counts=True)
        found = dict(zip(values.tolist(), n.tolist()))
    out = {int(v): (found.get(int(v), 0), found.get(int(v), 0) * voxel) for v in table.values if v != 0}
    for v, n in found.items():
        if v != 0 and v not in out:
            out[int(v)] = (int(n), n * voxel)
    return out


def label_volumes_mm3(labels: np.ndarray, affine: np.ndarray, table: LabelTable) -> dict[int, float]:
    """Volume in mm^3 of every non-background label of ``table`` (0 for absent labels)."""
    values = set(int(v) for v in table.values if v != 0)
    return {v: mm3 for v, (_n, mm3) in label_volumes(labels, affine, table).items() if v in values}


def segment_image(model, data: np.ndarray, affine: np.ndarray, device: torch.device | str = "cpu",
                  source: Optional[str] = None, progress: Progress = None, cancelled: Cancelled = None,
                  flip: bool = True, clean: bool = False) -> Segmentation:
    """:func:`segment_scan` for an array in voxel order (a viewer's layer): 2D images are one slice;
    the labels come back in the image's shape, as uint8 when they fit (else int32). ``source`` names
    the image in messages."""
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise InputError(f"{source or 'image'}: expected a 2D or 3D scan, got shape {data.shape}")
    if data.dtype.kind not in "iuf" or data.dtype == np.bool_:
        raise InputError(f"{source or 'image'}: unsupported data type {data.dtype} for a scan")
    squeeze = data.ndim == 2
    array = np.asarray(data, dtype=np.float32)
    volume = Volume(array[..., None] if squeeze else array, np.asarray(affine, float), None,
                    Path(source) if source else None)
    result = segment_scan(model, volume, device, progress=progress, cancelled=cancelled, flip=flip, clean=clean)
    labels = np.asarray(result.labels)
    if squeeze and labels.ndim == 3:
        labels = labels[..., 0]
    small = labels.size and labels.max() <= 255 and labels.min() >= 0
    result.labels = labels.astype(np.uint8 if small else np.int32, copy=False)
    return result


def write_volumes_csv(path: str | Path, rows: list[tuple[str, dict[int, float]]], table: LabelTable,
                      overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """One row per subject, one column per label (``name (value)``), volumes in mm^3 (``l2s segment
    --vol`` writes soft volumes: :attr:`Segmentation.volumes_mm3`), ``total`` their sum."""
    path = check_output_path(path, overwrite, inputs)
    values = [v for v in table.values if v != 0]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["subject", "total"] + [f"{table.name_of(v)} ({v})" for v in values])
            for subject, volumes in rows:
                writer.writerow([subject, f"{sum(volumes.values()):.1f}"]
                                + [f"{volumes.get(v, 0.0):.1f}" for v in values])
    return path


def check_writable(path: str | Path) -> None:
    """Refuse early an output whose folder cannot be written (read-only place, no permission)."""
    path = Path(path).expanduser()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write (no write permission in {folder})")


NOT_VOLUME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".csv", ".txt", ".json", ".yaml", ".yml", ".npy",
                       ".npz", ".safetensors", ".pt", ".pth", ".gz", ".zip", ".nrrd", ".mha", ".mhd", ".dcm", ".img",
                       ".hdr")
"""Suffixes of an ``-o`` that is surely meant as a file, but not a volume format we write."""


def output_paths(files: Sequence[Path], output: str | Path) -> list[Path]:
    """Where :func:`segment_files` writes: ``output`` itself for one input when it names a volume
    file (.nii, .nii.gz, .mgz), else ``output/<stem>_seg.nii.gz`` for each input."""
    out = Path(output).expanduser()
    if not out.is_dir() and volume_suffix(out) is None and out.suffix.lower() in NOT_VOLUME_SUFFIXES:
        raise InputError(f"{out}: unsupported output type; give a .nii, .nii.gz or .mgz file or a folder")
    as_file = len(files) == 1 and volume_suffix(out) is not None and not out.is_dir()
    if len(files) > 1 and volume_suffix(out) is not None and not out.is_dir():
        raise InputError(f"{out}: {len(files)} inputs need an output folder, not a file name")
    if as_file:
        return [out]
    targets = [out / f"{strip_suffix(Path(f).name)}_seg.nii.gz" for f in files]
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets):
        if t in seen:
            raise InputError(f"{seen[t]} and {f}: both would be written to {t}; segment them into separate folders")
        seen[t] = f
    return targets


def segment_files(model_path: str, inputs: list[str], output: str, vol_csv: Optional[str] = None,
                  device: str | torch.device = "auto", overwrite: bool = False, progress: Progress = None,
                  batch_size: int = 8, overlap: float = 0.5, flip: bool = True, clean: bool = False,
                  log: Optional[Callable[[str], None]] = None) -> list[Path]:
    """Segment files for the CLI; return the written segmentations.

    ``inputs``: scans or folders of scans. ``output``: a file for one input, else a folder (created)
    receiving ``<stem>_seg.nii.gz`` per input. ``vol_csv``: optional per-label soft volumes (mm^3:
    posteriors summed on the scan's grid, as SynthSeg's --vol), one row per input. ``flip`` and
    ``clean``: see :func:`segment_scan`; its notes go to ``log`` once each. Inputs are never
    overwritten; existing outputs only with ``overwrite``. Every output path is checked before any
    work starts. ``progress(fraction)`` covers all inputs.
    """
    from .model_io import load_model

    files = expand_paths(inputs, "inputs")
    targets = output_paths(files, output)
    protected = list(files) + [Path(model_path), Path(model_path).with_suffix(".json")]
    for target in targets:  # check every output before any work
        check_output_path(target, overwrite, protected)
        check_writable(target)
    if vol_csv:
        for target in targets:
            if Path(vol_csv).expanduser().resolve() == target.resolve():
                raise InputError(f"{vol_csv}: the volumes CSV and a segmentation would be the same file; "
                                 f"give --vol another name")
        check_output_path(vol_csv, overwrite, protected)
        check_writable(vol_csv)
    torch_device = device if isinstance(device, torch.device) else resolve_device(str(device), key="--device")
    model = load_model(model_path, torch_device)
    rows = []
    said: set[str] = set()
    for i, (source, target) in enumerate(zip(files, targets)):
        scan = load_scan(source)
        sub = None if progress is None else (lambda f, i=i: progress((i + f) / len(files)))
        result = segment_scan(model, scan, torch_device, overlap=overlap, batch_size=batch_size, progress=sub,
                              flip=flip, clean=clean)
        for note in result.notes:
            if note not in said and log is not None:
                log(note)
            said.add(note)
        save_volume(target, result.labels.astype(np.int32), scan, overwrite=overwrite, inputs=protected)
        rows.append((str(source), result.volumes_mm3))
    if vol_csv:
        write_volumes_csv(vol_csv, rows, model.table, overwrite=overwrite, inputs=protected + list(targets))
    return targets
