"""Sanity bounds on config numbers, checked by :func:`l2s_gui.config.validate` before the type-specific
range checks: every number finite, sizes small enough to allocate (network widths, levels, patches,
batches, node counts), so a typo (or a crafted model file, whose config goes through the same check)
gives one line naming the key instead of an allocation of terabytes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ConfigError

MAX_INT = 10 ** 9
"""Any integer setting (steps, intervals, seed, sizes) must be within +-MAX_INT."""
MAX_WIDTH = 1024
MAX_LEVELS = 8
MAX_CONVS_PER_LEVEL = 8
MAX_NETWORK_PARAMETERS = 200_000_000
"""About 800 MB of float32 weights (the default 2D network has about 0.3 M)."""
MAX_PATCH = 1024
MAX_BATCH = 4096
MAX_BATCH_VOXELS = 1 << 30
MAX_NODES = 64
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 100.0


def _walk(obj: Any, prefix: str):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _walk(value, key + ".")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield f"{key}[{i}]", v
        else:
            yield key, value


def network_parameters(ndim: int, widths: list[int], convs_per_level: int, n_classes: int = 2) -> int:
    """Parameter count of :class:`~l2s_gui.nets.UNet` (an upper estimate within a few percent)."""
    k = 3 ** ndim
    total, previous = 0, 1
    for w in widths:  # encoder
        total += (previous * w * k + w) + (convs_per_level - 1) * (w * w * k + w)
        previous = w
    for i in range(len(widths) - 2, -1, -1):  # up-convolution, concatenation, convolutions
        w, coarse = widths[i], widths[i + 1]
        total += coarse * w * 2 ** ndim + w
        total += (2 * w * w * k + w) + (convs_per_level - 1) * (w * w * k + w)
    return total + widths[0] * n_classes + n_classes


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_limits(cfg: Any) -> None:
    """Raise ConfigError naming the key of a non-finite or unreasonably large number."""
    for key, value in _walk(cfg, ""):
        if isinstance(value, bool):
            continue
        if isinstance(value, float):
            _require(math.isfinite(value), key, f"must be a finite number, got {value}")
        elif isinstance(value, int):
            _require(abs(value) <= MAX_INT, key, f"must be at most {MAX_INT:.0e} in size, got {value}")
    d, n, a = cfg.data, cfg.network, cfg.augmentation
    _require(cfg.training.steps >= 1, "training.steps", f"must be >= 1, got {cfg.training.steps}")
    _require(len(n.widths) <= MAX_LEVELS, "network.widths", f"at most {MAX_LEVELS} levels, got {len(n.widths)}")
    _require(all(w <= MAX_WIDTH for w in n.widths), "network.widths",
             f"each width must be at most {MAX_WIDTH} channels, got {n.widths}")
    _require(n.convs_per_level <= MAX_CONVS_PER_LEVEL, "network.convs_per_level",
             f"must be at most {MAX_CONVS_PER_LEVEL}, got {n.convs_per_level}")
    if n.widths and all(w >= 1 for w in n.widths) and n.convs_per_level >= 1 and d.ndim in (2, 3):
        count = network_parameters(d.ndim, list(n.widths), n.convs_per_level)
        _require(count <= MAX_NETWORK_PARAMETERS, "network.widths",
                 f"a network of {count / 1e6:.0f} M parameters is too large (at most "
                 f"{MAX_NETWORK_PARAMETERS / 1e6:.0f} M); use fewer or narrower levels")
    _require(len(a.residual_widths) <= MAX_LEVELS and all(w <= MAX_WIDTH for w in a.residual_widths),
             "augmentation.residual_widths", f"at most {MAX_LEVELS} widths of at most {MAX_WIDTH}, "
                                             f"got {a.residual_widths}")
    _require(all(p <= MAX_PATCH for p in d.patch_size), "data.patch_size",
             f"each size must be at most {MAX_PATCH}, got {d.patch_size}")
    _require(d.batch_size <= MAX_BATCH, "data.batch_size", f"must be at most {MAX_BATCH}, got {d.batch_size}")
    if d.patch_size and all(p > 0 for p in d.patch_size):
        _require(math.prod(d.patch_size) * max(d.batch_size, 1) <= MAX_BATCH_VOXELS, "data.batch_size",
                 f"{d.batch_size} patches of {d.patch_size} voxels are too large for one batch")
    _require(all(MIN_VOXEL_MM <= v <= MAX_VOXEL_MM for v in d.voxel_size if v > 0), "data.voxel_size",
             f"each size must be in [{MIN_VOXEL_MM}, {MAX_VOXEL_MM}] mm, got {d.voxel_size}")
    for key in ("augmentation.inu_nodes", "recovery.inu_nodes"):
        section, name = key.split(".")
        nodes = getattr(getattr(cfg, section), name)
        _require(len(nodes) <= 16 and all(m <= MAX_NODES for m in nodes), key,
                 f"at most 16 fields of at most {MAX_NODES} nodes, got {nodes}")
    _require(cfg.synthesis.elastic_nodes <= MAX_NODES, "synthesis.elastic_nodes",
             f"must be at most {MAX_NODES}, got {cfg.synthesis.elastic_nodes}")
