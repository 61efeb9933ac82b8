"""Segmentation of new volumes with a trained model.

The scan is reoriented to RAS voxel order (axis permutations/flips only, as in training),
normalised exactly as in training (:func:`~l2s_gui.intensity.normalize_intensities`), resampled
to the model's ``data.voxel_size`` when it has one (:mod:`l2s_gui.resample`), segmented
slice by slice along the model's slice axis (2D models) or with an overlapping sliding window
(3D models; softmax probabilities averaged where windows overlap), and mapped back to the input's
grid (nearest neighbour), voxel order and original label values. Written outputs keep the input's affine and header geometry.
"""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .device import is_out_of_memory, resolve_device
from .errors import DeviceMemoryError, InputError, L2SError, OutputError, write_error
from .intensity import normalize_intensities
from .io import (Volume, check_output_path, expand_paths, from_ras, load_scan, save_volume, strip_suffix, to_ras,
                 volume_suffix)
from .labels import LabelTable
from .resample import resample, target_shape, voxel_sizes


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


def _segment_slices(model, image: torch.Tensor, batch_size: int, progress: Progress, cancelled: Cancelled) -> torch.Tensor:
    """2D models: every slice along ``model.slice_axis``, padded to the net's multiple, in batches.
    Slices that are entirely 0 (after normalisation: nothing above the 0.5th percentile) are
    background without running the network (training never shows the network such slices)."""
    axis = model.slice_axis
    slices = image.movedim(axis, 0).unsqueeze(1)  # (S, 1, a, b)
    sizes = list(slices.shape[2:])
    out = torch.zeros((slices.shape[0], *sizes), dtype=torch.long, device=image.device)
    todo = torch.nonzero(slices.flatten(1).ne(0).any(1)).flatten().tolist()
    n = max(len(todo), 1)
    if progress is not None:
        progress(0.0)
    for start in range(0, len(todo), batch_size):
        _check(cancelled)
        index = todo[start:start + batch_size]
        batch, _ = _pad_to_multiple(slices[index], model.net_multiple)
        logits = model.net(batch)
        out[index] = logits.argmax(1)[(slice(None), *[slice(0, s) for s in sizes])]
        if progress is not None:
            progress(min(1.0, (start + len(index)) / n))
    _check(cancelled)
    if progress is not None:
        progress(1.0)
    return out.movedim(0, axis)


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


def _segment_windows(model, image: torch.Tensor, overlap: float, batch_size: int, progress: Progress,
                     cancelled: Cancelled, blend: str = "gaussian") -> torch.Tensor:
    """3D models: sliding window of ``model.patch_size`` (the whole padded volume when empty);
    softmax probabilities blended with :func:`_importance` weights where windows overlap."""
    m = model.net_multiple
    window = list(model.patch_size) if model.patch_size else list(image.shape)
    window = [-(-w // m) * m for w in window]
    volume, sizes = _pad_to_multiple(image[None, None], m, window)
    spatial = list(volume.shape[2:])
    if not model.patch_size:
        window = spatial
    n_classes = model.table.n_classes
    probs = torch.zeros((n_classes, *spatial), device=image.device)
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
            probs[(slice(None), *r)] += p[k] * importance
            weight[r] += importance
        if progress is not None:
            progress(min(1.0, (start + len(group)) / len(corners)))
    _check(cancelled)
    labels = (probs / weight.clamp(min=1e-6)).argmax(0)
    return labels[tuple(slice(0, s) for s in sizes)]


@torch.inference_mode()
def segment_array(model, image: np.ndarray, device: torch.device | str = "cpu", overlap: float = 0.5,
                  batch_size: int = 8, progress: Progress = None, cancelled: Cancelled = None,
                  blend: str = "gaussian") -> np.ndarray:
    """Class ids (int64, same shape) for a normalised 3D ``image`` in the training voxel order (RAS).

    ``model`` needs ``net``, ``table``, ``ndim``, ``slice_axis``, ``patch_size`` and ``net_multiple``
    (a :class:`~l2s_gui.model_io.LoadedModel`). 2D models: ``batch_size`` slices per forward pass.
    3D models: windows of ``model.patch_size`` overlapping by ``overlap`` (fraction of the window),
    ``max(1, batch_size // 4)`` windows per pass, ``blend`` 'gaussian' or 'uniform'.
    ``progress(fraction)`` is called after each batch; ``cancelled()`` is polled before each batch
    and raises :class:`SegmentationCancelled` when it returns True. Running out of device memory
    raises :class:`~l2s_gui.errors.DeviceMemoryError`.
    """
    if np.ndim(image) != 3:
        raise InputError(f"expected a 3D image, got shape {np.shape(image)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = torch.device(device)
    model.net.to(device).eval()
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)
    try:
        if model.ndim == 2:
            out = _segment_slices(model, x, batch_size, progress, cancelled)
        else:
            out = _segment_windows(model, x, overlap, max(1, batch_size // 4), progress, cancelled, blend)
    except L2SError:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_out_of_memory(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            unit = "slices" if model.ndim == 2 else "windows"
            raise DeviceMemoryError(f"out of memory on {device} while segmenting (batches of {batch_size} {unit}): "
                                    f"use a smaller batch size or the CPU (--device cpu)") from None
        raise
    return out.cpu().numpy()


def segment_volume(model, scan: Volume, device: torch.device | str = "cpu", overlap: float = 0.5,
                   batch_size: int = 8, progress: Progress = None, cancelled: Cancelled = None) -> np.ndarray:
    """Original label values for ``scan``, on its own voxel grid (same shape and orientation).

    ``model``: as for :func:`segment_array`, plus ``voxel_size`` (the training ``data.voxel_size``;
    empty: segment on the scan's own grid)."""
    if scan.data.ndim != 3:
        raise InputError(f"{scan.name}: expected a 3D volume, got shape {scan.data.shape}")
    if not np.isfinite(scan.data).all():
        raise InputError(f"{scan.name}: contains NaN or Inf values")
    data_ras, affine_ras, start = to_ras(np.asarray(scan.data, dtype=np.float32), scan.affine)
    image = normalize_intensities(data_ras)
    voxel_size = model.voxel_size
    if voxel_size:  # segment on the training voxel size, then back onto the scan's grid
        image = resample(image, target_shape(image.shape, voxel_sizes(affine_ras), voxel_size), False)
    classes = segment_array(model, image, device, overlap, batch_size, progress, cancelled)
    if classes.shape != data_ras.shape:
        classes = resample(classes, data_ras.shape, True)
    return from_ras(model.table.to_values(classes), start)


def label_volumes_mm3(labels: np.ndarray, affine: np.ndarray, table: LabelTable) -> dict[int, float]:
    """Volume in mm^3 of every non-background label of ``table`` (0 for absent labels)."""
    voxel = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    values, counts = np.unique(labels, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    return {int(v): found.get(int(v), 0) * voxel for v in table.values if v != 0}


def write_volumes_csv(path: str | Path, rows: list[tuple[str, dict[int, float]]], table: LabelTable,
                      overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """One row per subject, one column per label (``name (value)``), volumes in mm^3."""
    path = check_output_path(path, overwrite, inputs)
    values = [v for v in table.values if v != 0]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["subject", "total"] + [f"{table.name_of(v)} ({v})" for v in values])
            for subject, volumes in rows:
                writer.writerow([subject, f"{sum(volumes.values()):.1f}"]
                                + [f"{volumes.get(v, 0.0):.1f}" for v in values])
        tmp.replace(path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise write_error(path, exc) from None
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
                  batch_size: int = 8, overlap: float = 0.5) -> list[Path]:
    """Segment files for the CLI; return the written segmentations.

    ``inputs``: scans or folders of scans. ``output``: a file for one input, else a folder (created)
    receiving ``<stem>_seg.nii.gz`` per input. ``vol_csv``: optional per-label volumes (mm^3), one row
    per input. Inputs are never overwritten; existing outputs only with ``overwrite``. Every output
    path is checked before any work starts. ``progress(fraction)`` covers all inputs.
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
    for i, (source, target) in enumerate(zip(files, targets)):
        scan = load_scan(source)
        sub = None if progress is None else (lambda f, i=i: progress((i + f) / len(files)))
        labels = segment_volume(model, scan, torch_device, overlap=overlap, batch_size=batch_size, progress=sub)
        save_volume(target, labels.astype(np.int32), scan, overwrite=overwrite, inputs=protected)
        rows.append((str(source), label_volumes_mm3(labels, scan.affine, model.table)))
    if vol_csv:
        write_volumes_csv(vol_csv, rows, model.table, overwrite=overwrite, inputs=protected + list(targets))
    return targets
