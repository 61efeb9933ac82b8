"""Model export and loading: one ``.safetensors`` file holding the segmentation network's and the
augmentation's weights, with the JSON config and label table in its metadata.

Loading reads tensors and JSON only (safetensors), so it never unpickles code. A ``.json`` copy of
the metadata is written beside the model for people and other tools.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from .atomic import atomic_write_bytes, atomic_write_text
from .augment import build_augmentation
from .config import Config
from .errors import ConfigError, InputError
from .labels import LabelTable
from .nets import UNet

FORMAT = "l2s-gui-model"
FORMAT_VERSION = 1


def build_network(cfg: Config, n_classes: int) -> UNet:
    n = cfg.network
    return UNet(cfg.data.ndim, 1, n_classes, widths=list(n.widths), activation=n.activation, norm=n.norm,
                convs_per_level=n.convs_per_level)


@dataclass
class LoadedModel:
    """A trained model ready for segmentation or for applying its learned augmentation."""

    net: UNet
    augmentation: nn.Module
    table: LabelTable
    config: Config
    spatial_shape: list[int]
    step: int
    path: Path | None = None

    @property
    def ndim(self) -> int:
        return self.config.data.ndim

    @property
    def slice_axis(self) -> int:
        return self.config.data.slice_axis

    trained_voxel_size: list[float] | None = None  # "voxel_size_mm" of the model file (None: older models)

    @property
    def voxel_size(self) -> list[float]:
        """The voxel size in mm (RAS axes) the model was trained at: the file's ``voxel_size_mm``,
        else (older models) ``data.voxel_size``; empty: unknown (segment on the scan's own grid)."""
        if self.trained_voxel_size:
            return list(self.trained_voxel_size)
        return list(self.config.data.voxel_size)

    @property
    def patch_size(self) -> list[int]:
        return list(self.spatial_shape)

    @property
    def net_multiple(self) -> int:
        return 2 ** (len(self.config.network.widths) - 1)

    def to(self, device: torch.device | str) -> LoadedModel:
        self.net.to(device)
        self.augmentation.to(device)
        return self


def training_voxel_size(config: Config, voxel_size: Sequence[float] | None = None,
                        max_files: int = 16) -> list[float] | None:
    """The voxel size (mm along the RAS axes: 1 value isotropic, or 3) a model is trained at:
    ``data.voxel_size`` when set (every input is resampled to it, as given), else ``voxel_size``
    when given, else the median voxel
    size of the training inputs read from the headers of (up to ``max_files``) label maps, or real
    scans when there are no label maps. None when none can be read."""
    from .resample import target_voxel_size

    if config.data.voxel_size:
        return [float(v) for v in config.data.voxel_size]
    if voxel_size:
        return [float(v) for v in target_voxel_size(voxel_size)]
    try:
        import nibabel as nib
        from nibabel import orientations

        from .io import expand_paths

        items = config.data.label_maps or config.data.real_images
        sizes = []
        for f in expand_paths(items, "data")[:max_files] if items else []:
            affine = nib.load(str(f)).affine  # type: ignore[attr-defined]  # every supported format has one
            zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
            ras = np.empty(3)
            ras[orientations.io_orientation(affine)[:, 0].astype(int)] = zooms
            sizes.append(ras)
    except Exception:  # noqa: BLE001 - the inputs moved or are unreadable: nothing to record
        return None
    return [round(float(v), 6) for v in np.median(np.array(sizes), axis=0)] if sizes else None


def export_model(path: str | Path, net: nn.Module, augmentation: nn.Module, table: LabelTable, config: Config,
                 spatial_shape: list[int], step: int, theta: dict[str, Any] | None = None,
                 voxel_size: Sequence[float] | None = None) -> Path:
    """Write ``path`` (.safetensors) and ``path.with_suffix('.json')`` atomically.

    The metadata record ``voxel_size_mm``, the voxel size the model was trained at
    (:func:`training_voxel_size`; ``voxel_size``: the training inputs' voxel size when known)."""
    path = Path(path)
    trained_at = training_voxel_size(config, voxel_size)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "label_table": table.to_json(),
        "spatial_shape": list(spatial_shape),
        "step": int(step),
        "theta": theta or {},
    }
    if trained_at:
        meta["voxel_size_mm"] = trained_at
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"aug.{k}": v.detach().cpu().contiguous() for k, v in augmentation.state_dict().items()})
    blob = safetensors_save(tensors, metadata={"l2s": json.dumps(meta)})
    atomic_write_bytes(path, blob)
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    return path


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # safetensors raises several types for a corrupt header
        raise InputError(f"{path}: not a readable model file (expected an l2s .safetensors model)") from None
    try:
        data = json.loads(meta["l2s"])
    except (KeyError, ValueError, TypeError, RecursionError):
        raise InputError(f"{path}: a safetensors file but not an l2s model (no l2s metadata)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a safetensors file but not an l2s model (its l2s metadata is not a JSON object)")
    version = data.get("format_version", 0)
    if data.get("format") != FORMAT or not _is_int(version) or version > FORMAT_VERSION:
        raise InputError(f"{path}: unsupported model format {str(data.get('format'))[:40]!r} "
                         f"version {str(version)[:20]!r}; update l2s-gui")
    _check_metadata(path, data)
    return data


MAX_MODEL_CLASSES = 1024
MAX_SPATIAL = 4096
MAX_SPATIAL_VOXELS = 1 << 27


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata(path: Path, data: dict[str, Any]) -> None:
    """Types and sizes of a model's metadata: nothing in a model file is trusted (its config goes
    through the same validation and size limits as a training config)."""
    def bad(what: str) -> InputError:
        return InputError(f"{path}: damaged or unsupported model metadata ({what})")

    for key, kind in (("config", dict), ("label_table", dict), ("spatial_shape", list)):
        if not isinstance(data.get(key), kind):
            raise bad(f"'{key}' missing or not a {kind.__name__}")
    if not _is_int(data.get("step")) or data["step"] < 0:
        raise bad("'step' missing or not a non-negative integer")
    shape = data["spatial_shape"]
    if len(shape) not in (0, 2, 3) or not all(_is_int(v) and 0 < v <= MAX_SPATIAL for v in shape):
        raise bad(f"'spatial_shape' must be 2 or 3 sizes in 1..{MAX_SPATIAL}")
    if shape and float(np.prod(np.asarray(shape, dtype=np.float64))) > MAX_SPATIAL_VOXELS:
        raise bad(f"'spatial_shape' {shape} is too large")
    if data.get("theta") is not None and not isinstance(data["theta"], dict):
        raise bad("'theta' is not a mapping")
    labels = data["label_table"].get("labels")
    if not isinstance(labels, (list, dict)) or not 2 <= len(labels) <= MAX_MODEL_CLASSES:
        raise bad(f"the label table needs 2..{MAX_MODEL_CLASSES} labels")


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load an exported model (tensors and JSON only) onto ``device``, in eval mode."""
    path = Path(path)
    meta = read_model_metadata(path)
    try:
        config = Config.from_dict(meta["config"])
    except ConfigError as exc:
        raise InputError(f"{path}: damaged or unsupported model config ({exc})") from None
    if meta["spatial_shape"] and len(meta["spatial_shape"]) != config.data.ndim:
        raise InputError(f"{path}: damaged or unsupported model metadata (spatial_shape "
                         f"{meta['spatial_shape']} for a {config.data.ndim}D model)")
    table = LabelTable.from_json(meta["label_table"], source=f"{path} (label table)")
    if table.n_classes > MAX_MODEL_CLASSES:
        raise InputError(f"{path}: damaged or unsupported model metadata ({table.n_classes} classes)")
    try:
        net = build_network(config, table.n_classes)
        aug = build_augmentation(config.augmentation, config.data.ndim)
    except (MemoryError, RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot build the model's network ({first})") from None
    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        aug.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aug.")})
    except Exception as exc:  # noqa: BLE001 - safetensors/torch raise several types for bad weights
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: model weights do not match its config ({first[:200]})") from None
    if not all(bool(torch.isfinite(p).all()) for p in list(net.parameters()) + list(aug.parameters())):
        raise InputError(f"{path}: the model's weights contain NaN or Inf values (a diverged training?)")
    trained_at = meta.get("voxel_size_mm")
    trained_at = [float(v) for v in trained_at] if isinstance(trained_at, list) and len(trained_at) in (1, 3) and all(
        isinstance(v, (int, float)) and v > 0 for v in trained_at) else None
    model = LoadedModel(net.eval(), aug.eval(), table, config, list(meta["spatial_shape"]), int(meta["step"]), path,
                        trained_at)
    return model.to(device)


def resolve_model_path(path: str | Path) -> Path:
    """A model file, a run folder's ``model.safetensors``, or the shipped starter model (``"starter"``)."""
    from .starter import resolve_model_spec

    path = Path(resolve_model_spec(str(path)))
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise InputError(f"{path}: a folder without model.safetensors (not a run folder with a saved model)")
        return candidate
    return path


def load_warm_start(source: str | Path, table: LabelTable, config: Config, net: nn.Module | None = None,
                    augmentation: nn.Module | None = None) -> LoadedModel:
    """Copy a saved model's network weights into ``net`` (``training.init_from``) and/or its learned
    augmentation into ``augmentation`` (``training.init_theta_from``). Refused in one line naming the
    file when the model segments other classes, in another dimensionality, or (for ``net``) with
    other network settings, or (for ``augmentation``) with another augmentation."""
    path = resolve_model_path(source)
    key = "training.init_from" if net is not None else "training.init_theta_from"
    where = f"{key}: {path}"
    try:
        model = load_model(path)
    except InputError as exc:
        raise InputError(f"{key}: {exc}") from None
    if model.ndim != config.data.ndim:
        raise InputError(f"{where}: a {model.ndim}D model, but this run trains in {config.data.ndim}D (data.ndim)")
    if model.table.values != table.values:
        raise InputError(f"{where}: the model segments the label values {model.table.values}, this run "
                         f"{table.values}; use the same label table")
    if net is not None:
        ours, theirs = dataclasses.asdict(config.network), dataclasses.asdict(model.config.network)
        diff = [k for k in ours if ours[k] != theirs.get(k)]
        if diff:
            k = diff[0]
            raise InputError(f"{where}: the model's network.{k} is {theirs.get(k)!r}, this run's {ours[k]!r}; "
                             f"set network.{k} to the model's value to start from it")
        net.load_state_dict(model.net.state_dict())
    if augmentation is not None:
        try:
            augmentation.load_state_dict(model.augmentation.state_dict())
        except RuntimeError:
            raise InputError(f"{where}: the model's augmentation ({model.config.augmentation.kind}, "
                             f"{model.config.augmentation.noise} noise, inu {model.config.augmentation.inu}) does "
                             f"not match this run's augmentation settings") from None
    return model
