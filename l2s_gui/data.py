"""Training data: label maps for synthesis and real (scan, labels) pairs, cut into 2D slices or 3D
patches of one common spatial size, sampled reproducibly with a caller-supplied ``torch.Generator``.

Loading (``TrainingData.from_config``):

- Every volume is reoriented to the closest RAS voxel order (axis permutations/flips only), so
  ``data.slice_axis`` means the same anatomical plane for every file (0 sagittal, 1 coronal,
  2 axial), then, when ``data.voxel_size`` is set, resampled to that voxel size
  (:mod:`l2s_gui.resample`: linear for scans, nearest for label maps). :mod:`l2s_gui.segment` does
  the same to new scans and maps the result back to their own grid.
- Label maps for synthesis keep every original label value as its own *generation label*
  (SynthSeg's generation vs segmentation labels): each structure gets its own random intensity
  even when the label table merges it with others (e.g. FreeSurfer -> the paper's 4 classes) or
  sends it to background (``"unlisted": "background"``). :attr:`TrainingData.generation_classes`
  maps generation labels to training classes; :func:`l2s_gui.synthesis.build_generator` applies it
  to the deformed maps, so the network's targets are classes.
  :meth:`TrainingData.generation_flip_permutation` swaps the generation labels of a left/right
  flip (left value <-> right value, from the table's ``lr_pairs`` and FreeSurfer's pairs, checked
  against the table's class flip) and :meth:`TrainingData.generation_extracerebral` flags the
  generation labels a skull strip removes (non-zero values the table sends to background).
- Label values become contiguous classes through the label table (``data.label_table``; 'auto' is
  the union of the values found in every label map *and* real label map listed in the config, so
  the class set does not depend on the training method). Class arrays are kept in memory as uint8
  tensors (int16 when there are 256 classes or more).
- Real scans and label maps are paired in the order listed (each folder's files sorted by name);
  each pair must share one voxel grid. Scans are normalised with
  :func:`~l2s_gui.intensity.normalize_intensities`, exactly as at segmentation time.
- Train/validation split of the real pairs: the pairs are sorted by path and permuted with
  ``numpy.random.default_rng(seed)``; ``round(val_fraction * n)`` pairs go to validation, clamped
  so that at least one pair trains and, when there are two pairs or more and ``val_fraction > 0``,
  at least one validates (a single pair always trains; then there is no validation set). The split
  depends only on the seed and the set of files, not on the order they were listed in.

Samples: in 2D a slice along ``slice_axis`` drawn uniformly among all slices holding foreground; in
3D the whole volume, or (with ``patch_size``) a patch centred on a random foreground voxel 80% of
the time and placed uniformly otherwise. Each sample is cropped/padded (with background / 0) to
:attr:`TrainingData.spatial_shape`: ``patch_size`` when given, else the largest slice/volume shape
rounded up to a multiple of ``pad_multiple``. Smaller samples are centred in the padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import DataConfig
from .errors import InputError
from .intensity import normalize_intensities
from .io import check_pair, expand_paths, load_label_map, load_scan, to_ras
from .labels import LabelTable, freesurfer_lr_pairs, load_label_table, unique_values
from .resample import resample, target_shape, voxel_sizes

__all__ = ["PairVolumes", "TrainingData", "RealPair", "scan_on_training_grid", "split_pairs"]

FOREGROUND_BIAS = 0.8  # 3D patches (and 2D patches): probability of centring on a foreground voxel
_COORD_STRIDE = 4      # foreground voxels remembered on a grid of this stride (3D patch centres)


@dataclass
class RealPair:
    image_path: Path
    label_path: Path
    image: Tensor   # (X, Y, Z) float32 in [0, 1], RAS voxel order
    labels: Tensor  # (X, Y, Z) uint8/int16 classes, RAS voxel order


def _class_dtype(n_classes: int) -> torch.dtype:
    return torch.uint8 if n_classes < 256 else (torch.int16 if n_classes < 32768 else torch.int32)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def split_pairs(pairs: Sequence[tuple[Path, Path]], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (into ``pairs``) of the training and validation pairs; see the module docstring."""
    n = len(pairs)
    order = sorted(range(n), key=lambda i: (str(Path(pairs[i][0]).resolve()), str(Path(pairs[i][1]).resolve())))
    if n >= 2 and val_fraction > 0:
        n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    val_sorted = sorted(int(p) for p in perm[:n_val])
    train_sorted = sorted(int(p) for p in perm[n_val:])
    return [order[i] for i in train_sorted], [order[i] for i in val_sorted]


MAX_AUTO_CLASSES = 256
"""With ``label_table: auto``, more distinct values than this is almost surely a scan given as a
label map: a label table is asked for instead of silently training that many classes."""


def _training_grid(data: np.ndarray, affine: np.ndarray, labels: bool, voxel_size: Sequence[float]) -> np.ndarray:
    """``data`` in RAS voxel order, resampled to ``voxel_size`` when one is set."""
    data, affine_ras, _ = to_ras(data, affine)
    if not voxel_size:
        return data
    shape = target_shape(data.shape, voxel_sizes(affine_ras), voxel_size)
    return resample(data, shape, labels)


def scan_on_training_grid(path: str | Path, voxel_size: Sequence[float]) -> Tensor:
    """A scan file prepared as the real scans are for training: loaded and checked
    (:func:`~l2s_gui.io.load_scan`), normalised, in RAS voxel order, resampled to ``voxel_size``
    when one is set; float32 (X, Y, Z)."""
    scan = load_scan(path)
    image = _training_grid(normalize_intensities(scan.data), scan.affine, False, voxel_size)
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def _compress(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index array) with a small index dtype: a compact form of a label map."""
    values = unique_values(arr)
    dtype = np.uint8 if len(values) <= 256 else (np.uint16 if len(values) <= 65536 else np.int32)
    if values[-1] < (1 << 24):
        lut = np.zeros(int(values[-1]) + 1, dtype=dtype)
        lut[values] = np.arange(len(values), dtype=dtype)
        return values, lut[arr]
    return values, np.searchsorted(values, arr).astype(dtype)


class _Volumes:
    """Class volumes with their foreground bookkeeping for fast sampling."""

    def __init__(self, labels: list[Tensor], images: list[Tensor] | None, slice_axis: int, names: list[str],
                 is_foreground: Tensor | None = None):
        self.labels = labels
        self.images = images
        self.slice_axis = slice_axis
        self.names = names
        self.is_foreground = is_foreground  # bool per stored id (generation labels); None: id != 0
        # 2D: every (volume, slice) holding foreground
        entries = []
        for i, lab in enumerate(labels):
            other = tuple(d for d in range(3) if d != slice_axis)
            fg = self.foreground(lab).any(dim=other[1]).any(dim=other[0])
            idx = torch.nonzero(fg).flatten()
            if idx.numel() == 0:
                raise InputError(f"{names[i]}: no foreground left after applying the label table "
                                 f"(every voxel is background)")
            entries.append(torch.stack([torch.full_like(idx, i), idx], dim=1))
        self.slices = torch.cat(entries) if entries else torch.zeros((0, 2), dtype=torch.long)
        # 3D: foreground voxels on a coarse grid
        s = _COORD_STRIDE
        self.coords = [torch.nonzero(self.foreground(lab[::s, ::s, ::s])).to(torch.int32) * s for lab in labels]

    def image(self, i: int) -> Tensor:
        """The ``i``-th scan (only for volume sets loaded with their scans)."""
        assert self.images is not None, "a label-only volume set has no scans"
        return self.images[i]

    def foreground(self, lab: Tensor) -> Tensor:
        """Boolean mask of the voxels whose class is not background."""
        if self.is_foreground is None:
            return lab.ne(0)
        return self.is_foreground[lab.long()]

    def __len__(self) -> int:
        return len(self.labels)


PairVolumes = _Volumes
"""Volumes of (scan, labels) pairs ready to sample (:meth:`TrainingData.extra_pairs`)."""


def _fit(tensors: list[Tensor], target: Sequence[int], center: Sequence[int] | None,
         generator: torch.Generator | None) -> list[Tensor]:
    """Crop (around ``center``, or at a random place) and/or centre-pad tensors sharing one shape."""
    shape = tensors[0].shape
    src, dst = [], []
    for d, (size, t) in enumerate(zip(shape, target)):
        if size > t:
            if center is not None:
                start = int(min(max(int(center[d]) - t // 2, 0), size - t))
            else:
                start = int(torch.randint(0, size - t + 1, (1,), generator=generator))
            src.append(slice(start, start + t))
            dst.append(slice(0, t))
        else:
            before = (t - size) // 2
            src.append(slice(0, size))
            dst.append(slice(before, before + size))
    outs = []
    for x in tensors:
        out = x.new_zeros(tuple(target))
        out[tuple(dst)] = x[tuple(src)]
        outs.append(out)
    return outs


class TrainingData:
    """Label maps and real pairs in memory, with seeded sampling of fixed-size batches."""

    def __init__(self, table: LabelTable, ndim: int, slice_axis: int, spatial_shape: Sequence[int],
                 patch_mode: bool, label_maps: list[Tensor], label_map_paths: list[Path],
                 train: list[RealPair], val: list[RealPair], seed: int = 0,
                 generation_classes: Tensor | None = None, held_out_maps: Sequence[int] = (),
                 generation_values: Sequence[int] | None = None):
        """``label_maps`` hold generation labels when ``generation_classes`` (generation label ->
        class, int64) is given, else classes. ``held_out_maps`` (indices into ``label_maps``) are
        kept apart from synthesis: only ``sample_generation_batch(held_out=True)`` draws from them
        (the validation images of the recovery experiments). ``generation_values``: the original
        label value of each generation label (default: the table's values, one per class)."""
        self.table = table
        if generation_classes is None:  # the maps hold classes: generation label = class
            generation_classes = torch.arange(table.n_classes)
            generation_values = list(table.values) if generation_values is None else generation_values
        self.generation_classes = generation_classes.to(torch.int64)
        self.generation_values = ([int(v) for v in generation_values] if generation_values is not None
                                  else None)
        self.ndim = int(ndim)
        self.slice_axis = int(slice_axis)
        self.spatial_shape = [int(s) for s in spatial_shape]
        self.patch_mode = bool(patch_mode)
        held = sorted(set(int(i) for i in held_out_maps))
        keep = [i for i in range(len(label_maps)) if i not in held]
        if held and not keep:
            raise InputError("every label map is held out for validation: keep at least one for synthesis")
        self.label_map_paths = [label_map_paths[i] for i in keep] if label_map_paths else []
        self.held_out_map_paths = [label_map_paths[i] for i in held] if label_map_paths else []
        self.train_pairs = list(train)
        self.val_pairs = list(val)
        self.seed = int(seed)
        names = [str(p) for p in label_map_paths] or [f"label map {i + 1}" for i in range(len(label_maps))]
        self._maps = _Volumes([label_maps[i] for i in keep], None, self.slice_axis, [names[i] for i in keep],
                              is_foreground=self.generation_classes.ne(0))
        self._held_out = _Volumes([label_maps[i] for i in held], None, self.slice_axis, [names[i] for i in held],
                                  is_foreground=self.generation_classes.ne(0)) if held else None
        self._train = _Volumes([p.labels for p in train], [p.image for p in train], self.slice_axis,
                               [str(p.label_path) for p in train])
        self._val = _Volumes([p.labels for p in val], [p.image for p in val], self.slice_axis,
                             [str(p.label_path) for p in val])
        self._val_cache: dict[int, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: DataConfig, seed: int, need_label_maps: bool, need_real: bool,
                    pad_multiple: int = 1, log: Callable[[str], None] | None = None,
                    val_label_maps: Sequence[str] = (), val_map_fraction: float = 0.0) -> TrainingData:
        """Load what ``cfg`` lists (see the module docstring for every rule).

        Held-out label maps (recovery experiments: validation images from maps that synthesis
        never sees): ``val_label_maps`` (files or folders), or else a seeded ``val_map_fraction`` of
        ``cfg.label_maps`` (at least one map each way; an error with fewer than two maps)."""
        say = log or (lambda _msg: None)
        map_paths = expand_paths(cfg.label_maps, "data.label_maps") if cfg.label_maps else []
        held_out: list[int] = []
        if val_label_maps:
            extra = expand_paths(list(val_label_maps), "recovery.val_label_maps")
            shared = sorted({str(p.resolve()) for p in extra} & {str(p.resolve()) for p in map_paths})
            if shared:
                raise InputError(f"recovery.val_label_maps: {shared[0]} is also in data.label_maps; validation "
                                 f"maps must be held out from synthesis")
            held_out = list(range(len(map_paths), len(map_paths) + len(extra)))
            map_paths = map_paths + extra
        elif val_map_fraction > 0 and need_label_maps:
            if len(map_paths) < 2:
                raise InputError(f"data.label_maps: {len(map_paths)} label map found; validation images must come "
                                 f"from label maps held out from synthesis: list at least 2 maps, or set "
                                 f"recovery.val_label_maps")
            _, held_out = split_pairs([(p, p) for p in map_paths], val_map_fraction, seed)
        if need_label_maps and not map_paths:
            raise InputError("data.label_maps: list at least one label map (file or folder) for synthesis")
        image_paths = expand_paths(cfg.real_images, "data.real_images") if cfg.real_images else []
        label_paths = expand_paths(cfg.real_labels, "data.real_labels") if cfg.real_labels else []
        if need_real and not image_paths:
            raise InputError("data.real_images: list the real scans (files or folders)")
        if need_real and len(image_paths) != len(label_paths):
            raise InputError(f"data.real_images lists {len(image_paths)} scans but data.real_labels lists "
                             f"{len(label_paths)} label maps; they are paired in order (folders sorted by name)")
        auto = cfg.label_table == "auto"
        load_maps = need_label_maps or (auto and bool(map_paths))
        load_real_labels = need_real or (auto and bool(label_paths))

        # label maps: compact (values, index) form until the table is known
        compact: list[tuple[Path, np.ndarray, np.ndarray]] = []
        if load_maps:
            for i, path in enumerate(map_paths):
                say(f"loading label map {i + 1}/{len(map_paths)}: {path}")
                vol = load_label_map(path)
                data = _training_grid(vol.data, vol.affine, True, cfg.voxel_size)
                values, index = _compress(data)
                compact.append((path, values, index))
        # real pairs
        pairs = list(zip(image_paths, label_paths))
        real_compact: list[tuple[Path, Path, np.ndarray | None, np.ndarray, np.ndarray]] = []
        if need_real:
            for i, (ip, lp) in enumerate(pairs):
                say(f"loading real pair {i + 1}/{len(pairs)}: {ip}, {lp}")
                scan, lab = load_scan(ip), load_label_map(lp)
                check_pair(scan, lab)
                image = _training_grid(normalize_intensities(scan.data), scan.affine, False, cfg.voxel_size)
                data = _training_grid(lab.data, lab.affine, True, cfg.voxel_size)
                values, index = _compress(data)
                real_compact.append((ip, lp, image, values, index))
        elif load_real_labels:
            for lp in label_paths:
                lab = load_label_map(lp)
                real_compact.append((lp, lp, None, unique_values(lab.data), np.zeros(0, np.uint8)))

        if auto:
            found = set()
            for _, values, _ in compact:
                found.update(values.tolist())
            for *_, values, _ in real_compact:
                found.update(values.tolist())
            table = LabelTable.from_values(found)
            if table.n_classes > MAX_AUTO_CLASSES:
                raise InputError(
                    f"data.label_maps: {table.n_classes} distinct label values (label_table 'auto' makes each a "
                    f"class); is a scan listed as a label map? To train this many classes give data.label_table "
                    f"(a JSON table or freesurfer_4class)")
        else:
            table = load_label_table(cfg.label_table)
        cdtype = _class_dtype(table.n_classes)

        def to_tensor(values: np.ndarray, index: np.ndarray, source: Path) -> Tensor:
            classes = table.to_classes(values, source=source)
            return torch.from_numpy(classes[index.astype(np.intp, copy=False)]).to(cdtype)

        maps: list[Tensor] = []
        generation_classes = None
        gen_values = np.zeros(0, np.int64)
        if need_label_maps:
            for path, values, _ in compact:
                table.to_classes(values, source=path)  # every value must be known to the table
            gen_values = np.unique(np.concatenate([np.zeros(1, np.int64)]
                                                  + [v.astype(np.int64) for _, v, _ in compact]))
            generation_classes = torch.from_numpy(table.to_classes(gen_values)).to(torch.int64)
            gdtype = _class_dtype(len(gen_values))
            for _, values, index in compact:
                gen_ids = np.searchsorted(gen_values, values.astype(np.int64))
                maps.append(torch.from_numpy(gen_ids[index.astype(np.intp, copy=False)]).to(gdtype))
        real: list[RealPair] = []
        if need_real:
            for ip, lp, scan_data, values, index in real_compact:
                assert scan_data is not None  # need_real: every pair was loaded with its scan
                real.append(RealPair(Path(ip), Path(lp), torch.from_numpy(np.ascontiguousarray(scan_data)),
                                     to_tensor(values, index, lp)))
        train_idx, val_idx = split_pairs(pairs, cfg.val_fraction, seed) if need_real else ([], [])
        train = [real[i] for i in train_idx]
        val = [real[i] for i in val_idx]

        ndim, axis = int(cfg.ndim), int(cfg.slice_axis)
        if cfg.patch_size:
            spatial = [int(s) for s in cfg.patch_size]
        else:
            shapes = [tuple(m.shape) for m in maps] + [tuple(p.labels.shape) for p in real]
            if not shapes:
                raise InputError("no training data: list label maps (data.label_maps) or real pairs")
            if ndim == 2:
                shapes = [tuple(s for d, s in enumerate(sh) if d != axis) for sh in shapes]
            spatial = [_round_up(max(sh[d] for sh in shapes), max(int(pad_multiple), 1)) for d in range(ndim)]
        return cls(table, ndim, axis, spatial, bool(cfg.patch_size), maps, [p for p, _, _ in compact] if maps else [],
                   train, val, seed, generation_classes, held_out_maps=held_out if maps else (),
                   generation_values=gen_values.tolist() if generation_classes is not None else None)

    # ------------------------------------------------------------------ counts
    @property
    def n_classes(self) -> int:
        return self.table.n_classes

    @property
    def n_label_maps(self) -> int:
        return len(self._maps)

    @property
    def n_train(self) -> int:
        return len(self.train_pairs)

    @property
    def n_val(self) -> int:
        return len(self.val_pairs)

    # ------------------------------------------------------------------ sampling
    def _draw(self, vols: _Volumes, generator: torch.Generator, with_image: bool,
              fg_always: bool = False) -> tuple[Tensor | None, Tensor]:
        """One sample (image or None, labels) of :attr:`spatial_shape`, on the CPU."""
        if self.ndim == 2:
            j = int(torch.randint(0, len(vols.slices), (1,), generator=generator))
            v, s = (int(t) for t in vols.slices[j])
            lab = vols.labels[v].select(self.slice_axis, s)
            img = vols.image(v).select(self.slice_axis, s) if with_image else None
            center = None
            if self.patch_mode and any(a > b for a, b in zip(lab.shape, self.spatial_shape)):
                if fg_always or float(torch.rand((1,), generator=generator)) < FOREGROUND_BIAS:
                    nz = torch.nonzero(vols.foreground(lab))
                    center = nz[int(torch.randint(0, len(nz), (1,), generator=generator))].tolist()
        else:
            v = int(torch.randint(0, len(vols), (1,), generator=generator))
            lab = vols.labels[v]
            img = vols.image(v) if with_image else None
            center = None
            if self.patch_mode and any(a > b for a, b in zip(lab.shape, self.spatial_shape)):
                coords = vols.coords[v]
                if len(coords) and (fg_always or float(torch.rand((1,), generator=generator)) < FOREGROUND_BIAS):
                    c = coords[int(torch.randint(0, len(coords), (1,), generator=generator))]
                    jitter = torch.randint(0, _COORD_STRIDE, (3,), generator=generator)
                    center = (c + jitter).tolist()
        parts = [lab] + ([img] if img is not None else [])
        out = _fit(parts, self.spatial_shape, center, generator)
        return (out[1] if img is not None else None), out[0]

    @property
    def n_generation_labels(self) -> int:
        """Number of generation labels (distinct original values in the label maps, 0 included)."""
        return int(self.generation_classes.numel())

    @property
    def flip_axis(self) -> int | None:
        """The sample axis that runs left/right (RAS x): 0 in 3D and in 2D with slice_axis 1 or 2;
        None for sagittal slices (slice_axis 0), which have no left/right axis."""
        return None if self.ndim == 2 and self.slice_axis == 0 else 0

    def generation_flip_permutation(self) -> Tensor | None:
        """Generation label -> its label after a left/right flip (int64), or None when no flip is
        valid: the table allows none (:meth:`LabelTable.flip_classes`), or the swapped generation
        labels do not land on the flipped classes (a side without its other side in the maps).

        Values swap with their partner from the table's stated ``lr_pairs`` or FreeSurfer's pairs
        when both are generation labels; every other value maps to itself."""
        flip = self.table.flip_classes()
        values = self.generation_values
        if flip is None or values is None:
            return None
        identity = torch.equal(self.generation_classes, torch.arange(self.table.n_classes))
        if identity and values == list(self.table.values):
            return torch.tensor(flip, dtype=torch.int64)
        partner: dict[int, int] = {}
        for left, right in freesurfer_lr_pairs() + list(self.table.lr_pairs or []):
            partner[int(left)], partner[int(right)] = int(right), int(left)
        index = {v: i for i, v in enumerate(values)}
        perm = torch.tensor([index.get(partner.get(v, v), i) for i, v in enumerate(values)], dtype=torch.int64)
        classes = self.generation_classes
        if not torch.equal(perm[perm], torch.arange(len(values))) or \
                not torch.equal(classes[perm], torch.tensor(flip, dtype=torch.int64)[classes]):
            return None
        return perm

    def generation_extracerebral(self) -> Tensor:
        """Bool per generation label: True for the non-zero values the table sends to background
        (extra-cerebral labels of a FreeSurfer/SynthSeg head map: skull, scalp, eyes, ...), which a
        simulated skull strip sets to 0."""
        values = torch.tensor(self.generation_values or [0] * self.n_generation_labels, dtype=torch.int64)
        return self.generation_classes.eq(0) & values.ne(0)

    def sample_generation_batch(self, batch_size: int, generator: torch.Generator,
                                device: torch.device | str = "cpu", held_out: bool = False) -> Tensor:
        """Label maps for synthesis: LongTensor (B, *spatial_shape) of generation labels on ``device``;
        ``held_out=True``: from the held-out maps instead (never used for synthesis)."""
        vols = self._held_out if held_out else self._maps
        if vols is None or not len(vols):
            raise RuntimeError("no held-out label maps" if held_out else
                               "no label maps were loaded (need_label_maps=False)")
        labs = [self._draw(vols, generator, False)[1] for _ in range(batch_size)]
        return torch.stack(labs).to(device).long()

    def sample_label_batch(self, batch_size: int, generator: torch.Generator,
                           device: torch.device | str = "cpu") -> Tensor:
        """Label maps as training classes: LongTensor (B, *spatial_shape) on ``device``."""
        gen = self.sample_generation_batch(batch_size, generator, device)
        return self.generation_classes.to(gen.device)[gen]

    def sample_real_batch(self, batch_size: int, generator: torch.Generator,
                          device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """From the training pairs: images (B, 1, *sp) float32 and labels (B, *sp) int64 on ``device``."""
        if not self.n_train:
            raise RuntimeError("no real training pairs were loaded (need_real=False)")
        return self.sample_pair_batch(self._train, batch_size, generator, device)

    def extra_pairs(self, images: Sequence[Tensor], labels: Sequence[Tensor], names: Sequence[str]) -> PairVolumes:
        """Other (scan, labels) volumes (X, Y, Z) in RAS order on the training grid -- e.g. pseudo-labelled
        scans -- to be sampled as the real pairs are (:meth:`sample_pair_batch`); every label map
        needs foreground (a non-zero value)."""
        return _Volumes(list(labels), list(images), self.slice_axis, list(names))

    def sample_pair_batch(self, volumes: PairVolumes, batch_size: int, generator: torch.Generator,
                          device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """A batch of slices/patches drawn from ``volumes`` exactly as the real pairs are drawn:
        images (B, 1, *sp) float32 and labels (B, *sp) int64 on ``device``."""
        draws = [self._draw(volumes, generator, True) for _ in range(batch_size)]
        images = torch.stack([image for image, _ in draws if image is not None]).unsqueeze(1)  # with_image: all
        labels = torch.stack([d[1] for d in draws])
        return images.to(device), labels.to(device).long()

    def validation_batch(self, device: torch.device | str = "cpu", max_items: int = 16) -> tuple[Tensor, Tensor] | None:
        """A fixed set (the same at every call) of up to ``max_items`` samples from the validation
        pairs: (images (N, 1, *sp), labels (N, *sp) int64) on ``device``; None without validation pairs.

        2D: a seeded random choice among the foreground slices of the validation pairs (all of them
        when there are few). 3D: each validation volume (whole-volume mode), or foreground-centred
        patches cycling over the validation volumes (patch mode).
        """
        if not self.n_val:
            return None
        if max_items not in self._val_cache:
            g = torch.Generator().manual_seed(self.seed * 7919 + 104729)
            vols = self._val
            items: list[tuple[Tensor, Tensor]] = []
            if self.ndim == 2:
                n = len(vols.slices)
                chosen = torch.randperm(n, generator=g)[:max_items].sort().values if n > max_items else torch.arange(n)
                for j in chosen.tolist():
                    v, s = (int(t) for t in vols.slices[j])
                    lab = vols.labels[v].select(self.slice_axis, s)
                    img = vols.image(v).select(self.slice_axis, s)
                    center = None
                    if self.patch_mode and any(a > b for a, b in zip(lab.shape, self.spatial_shape)):
                        nz = torch.nonzero(vols.foreground(lab))
                        center = nz[int(torch.randint(0, len(nz), (1,), generator=g))].tolist()
                    lab, img = _fit([lab, img], self.spatial_shape, center, g)
                    items.append((img, lab))
            else:
                count = max_items if self.patch_mode else min(max_items, len(vols))
                for k in range(count):
                    v = k % len(vols)
                    lab, img = vols.labels[v], vols.image(v)
                    center = None
                    if self.patch_mode and any(a > b for a, b in zip(lab.shape, self.spatial_shape)):
                        coords = vols.coords[v]
                        if len(coords):
                            center = coords[int(torch.randint(0, len(coords), (1,), generator=g))].tolist()
                    lab, img = _fit([lab, img], self.spatial_shape, center, g)
                    items.append((img, lab))
            images = torch.stack([it[0] for it in items]).unsqueeze(1)
            labels = torch.stack([it[1] for it in items]).long()
            self._val_cache[max_items] = (images, labels)
        images, labels = self._val_cache[max_items]
        return images.to(device), labels.to(device)
