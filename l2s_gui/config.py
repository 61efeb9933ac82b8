"""Training configuration: nested dataclasses, loaded from YAML/JSON and validated.

Every invalid value raises :class:`~l2s_gui.errors.ConfigError` whose message names the dotted key
(e.g. ``training.lr_segmentation``) and says what is expected.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Where the label maps and real pairs come from and how they are cut into training samples."""

    label_maps: list[str] = field(default_factory=list)
    """Label maps used for synthesis: files (.nii, .nii.gz, .mgz) or folders holding them."""
    real_images: list[str] = field(default_factory=list)
    """Real scans (files or folders), paired in sorted order with ``real_labels``."""
    real_labels: list[str] = field(default_factory=list)
    """Label maps of the real scans (files or folders)."""
    val_fraction: float = 0.25
    """Fraction of the real pairs held out for validation (seeded split; at least one pair each)."""
    label_table: str = "auto"
    """'auto' (every label value found becomes a class), a shipped table name such as
    'freesurfer_4class', or a path to a JSON label table."""
    ndim: Literal[2, 3] = 2
    """2: train on slices along ``slice_axis``; 3: train on volumes or patches."""
    slice_axis: int = 1
    """Voxel axis orthogonal to the 2D slices (1 is coronal for RAS-oriented volumes)."""
    patch_size: list[int] = field(default_factory=list)
    """Spatial size of training samples (2 values in 2D, 3 in 3D); empty = the whole slice/volume,
    padded to a multiple of the network's down-sampling factor."""
    batch_size: int = 4
    """Samples per synthetic batch and per real batch."""
    voxel_size: list[float] = field(default_factory=list)
    """Resample every input to this voxel size in mm (1 value: isotropic, or 3 values along the RAS
    axes) before training, and new scans before segmenting (the result is mapped back to the scan's
    own grid); empty = use each file's own grid (inputs should then share a resolution)."""


@dataclass
class SynthesisConfig:
    """SynthSeg-style generator (Billot et al.): deformation, GMM, gamma, blur, normalisation."""

    rotation: float = 15.0
    """Maximum rotation in degrees (uniform in [-r, r] about each axis)."""
    scaling: float = 0.15
    """Maximum relative scaling (uniform in [1-s, 1+s])."""
    shear: float = 0.012
    translation: float = 0.0
    """Maximum translation in voxels."""
    elastic: float = 0.015
    """Std of the elastic displacement as a fraction of the field of view (0.015 is about 3 voxels
    at 192 voxels, as in SynthSeg; above ~0.02 the warped label maps start to fold)."""
    elastic_nodes: int = 10
    """Control points per axis of the elastic field."""
    mean_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """Range of the per-class intensity means (uniform)."""
    std_range: list[float] = field(default_factory=lambda: [0.0, 0.1])
    """Range of the per-class intensity standard deviations (uniform)."""
    gamma_std: float = 0.5
    """Std of log(gamma) (log gamma ~ N(0, gamma_std^2), SynthSeg's code: 0.5; 0.25 before issue 9)."""
    blur_max: float = 1.0
    """Maximum blur sigma in voxels (uniform in [0, blur_max])."""
    backend: Literal["torch", "cornucopia"] = "torch"
    """'torch': batched generator on the training device (fast); 'cornucopia': the reference
    SynthFromLabelTransform applied per sample (slow, for comparison)."""
    elastic_kind: Literal["svf", "displacement"] = "svf"
    """'svf': diffeomorphic elastic field, a stationary velocity field (``svf_std``, ``svf_scale``)
    integrated by scaling and squaring (``svf_steps``), as SynthSeg; 'displacement': the pre-issue-9
    field, a smooth displacement of std ``elastic`` (fraction of the FOV) on ``elastic_nodes`` nodes,
    not integrated (can fold). ``elastic``/``elastic_nodes`` apply to 'displacement' only."""
    svf_std: float = 4.0
    """'svf': the velocity nodes have std ~ U(0, svf_std) voxels per sample (SynthSeg nonlin_std)."""
    svf_scale: float = 0.04
    """'svf': velocity nodes per axis = max(2, ceil(svf_scale * size)) (SynthSeg nonlin_scale, 1/25)."""
    svf_steps: int = 7
    """'svf': scaling-and-squaring steps (the field is v / 2^steps composed 2^steps times)."""
    flip: bool = True
    """Left/right flip with probability 0.5 per sample, swapping left and right labels (SynthSeg
    flipping). Needs the label table's L/R pairs; along axis 0 (RAS x); 2D with slice_axis 0: none."""
    resolution: bool = True
    """Random acquisition resolution and partial volume (SynthSeg randomise_res): per sample an
    isotropic (U(1, max_res_iso) mm) or one thick axis (U(1, max_res_aniso) mm) acquisition, blur
    matched to it, down- and up-sampling back to the training grid. Replaces the U(0, blur_max) blur.
    In mm of ``data.voxel_size`` (the training grid counts as 1 mm when it is not set); in 2D the
    acquisition is simulated in the slice plane (the thick axis is one of the two in-plane axes)."""
    max_res_iso: float = 4.0
    """Largest isotropic acquisition voxel size in mm (SynthSeg max_res_iso)."""
    max_res_aniso: float = 8.0
    """Largest slice spacing in mm of a thick-slice acquisition (SynthSeg max_res_aniso)."""
    prob_iso: float = 0.1
    """Probability of an isotropic (vs thick-slice) acquisition (SynthSeg SampleResolution prob_iso)."""
    prob_min: float = 0.05
    """Probability of keeping the training grid resolution (SynthSeg SampleResolution prob_min)."""
    skull_strip_probability: float = 0.0
    """Per sample, probability of sending the extra-cerebral generation labels (non-zero values the
    label table maps to background: skull, scalp, eyes, ...) to 0 before synthesis (skull stripping)."""
    skull_strip_sharp: bool = False
    """Stripped samples (``skull_strip_probability``) are also set to 0 outside the brain after the
    acquisition simulation, so that their edge is as sharp as a skull-stripped scan's (the demo's
    sample is one); off: the resolution blur smears the brain into the background."""


@dataclass
class AugmentationConfig:
    """The learnable augmentation A_theta (Learn2Synth Sec. 3.3-3.4)."""

    kind: Literal["parametric", "nonparametric", "none"] = "parametric"
    noise: Literal["fixed", "per_image", "uniform", "none"] = "fixed"
    """'fixed': x + sigma*eps (eq. 8); 'per_image': x + sigma*s*eps with s ~ N(0,1) (eq. 9);
    'uniform': x + sigma_i*eps with sigma_i ~ U[sigma_range] per image, not learned (naive SynthSeg
    at the paper's U[0.025, 0.2] setting)."""
    sigma_init: float = 0.05
    """Initial noise sigma (kept >= 0)."""
    sigma_range: list[float] = field(default_factory=lambda: [0.025, 0.2])
    """[low, high] of the per-image sigma of noise 'uniform'."""
    inu: bool = True
    """Intensity non-uniformity (eq. 6-7); parametric kind only."""
    inu_nodes: list[int] = field(default_factory=lambda: [2, 4, 8])
    """M_k: nodes per axis of each of the K random fields."""
    inu_c_init: list[float] = field(default_factory=lambda: [0.25])
    """Initial exponents c_k (kept in [0, c_max]): one value for every field, or one per field."""
    inu_c_max: float = 2.0
    residual_widths: list[int] = field(default_factory=lambda: [8, 16, 16, 16])
    """Widths of the residual UNet of the nonparametric augmentation (eq. 10-11), one per level:
    4 levels see about 45 pixels, enough to express the 2- and 4-node INU fields."""


@dataclass
class NetworkConfig:
    """Segmentation UNet S_phi."""

    widths: list[int] = field(default_factory=lambda: [16, 24, 32, 48, 64])
    """Channels at each level (the number of levels is len(widths)); used exactly as given."""
    activation: Literal["elu", "relu", "leaky_relu"] = "elu"
    norm: Literal["none", "instance", "group"] = "none"
    convs_per_level: int = 2


@dataclass
class TrainingConfig:
    """Bilevel optimisation (Learn2Synth eq. 1-5) and bookkeeping."""

    method: Literal["learn2synth", "synthseg", "supervised"] = "learn2synth"
    """'learn2synth': learn theta by hypergradients; 'synthseg': naive SynthSeg with theta fixed at
    its initial values; 'supervised': train phi on the real training pairs only."""
    steps: int = 1000
    lr_segmentation: float = 1e-3
    """Learning rate of the inner update of phi (eq. 2)."""
    lr_segmentation_schedule: Literal["constant", "cosine"] = "constant"
    """'cosine': phi's learning rate decays by a half cosine over the run to lr_segmentation *
    lr_segmentation_final (the hypergradient differentiates through the update at the current rate)."""
    lr_segmentation_final: float = 0.1
    """Final fraction of lr_segmentation under the cosine schedule."""
    lr_augmentation: float = 1e-3
    """Learning rate of the Adam update of theta (eq. 5)."""
    lr_augmentation_schedule: Literal["constant", "cosine"] = "constant"
    """'cosine': theta's learning rate decays by a half cosine from lr_augmentation at the first
    hyper-step to lr_augmentation * lr_augmentation_final at the last step, so that theta settles
    instead of walking by about the learning rate per hyper-step."""
    lr_augmentation_final: float = 0.1
    """Final fraction of lr_augmentation under the cosine schedule."""
    inner_optimizer: Literal["adam", "sgd"] = "adam"
    """The update() of eq. 2, differentiated through for the hypergradient."""
    hypergradient: Literal["exact", "naive", "approx"] = "exact"
    """'exact': forward-over-reverse (fast); 'naive': double backward (reference route, slow);
    'approx': finite-difference Hessian-vector product in float64."""
    hyper_every: int = 1
    """Take the hyper-step (real pass + theta update) every k-th iteration."""
    hyper_start: int = 0
    """Iterations of plain synthetic training (theta fixed) before the first hyper-step: the
    hypergradient of an untrained network carries little information about theta."""
    init_from: str = ""
    """Warm start: a model (.safetensors) or a run folder (its model.safetensors) whose network
    weights start this run (same classes, dimensionality and network settings); empty: random."""
    init_theta_from: str = ""
    """A model or run folder whose learned augmentation (sigma, c_k, residual net) starts theta
    (often the same as init_from); empty: theta starts from the augmentation settings."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA if present, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocast for the networks (CUDA); the hypergradient arithmetic stays float32."""
    val_every: int = 100
    preview_every: int = 25
    checkpoint_every: int = 250
    log_every: int = 1
    keep_checkpoints: int = 2


@dataclass
class RecoveryConfig:
    """Synthetic-recovery experiments (Learn2Synth Sec. 4.1): "real" images are synthetic images
    corrupted with preset parameters, x_real = A_theta_hat(x_synth), drawn from the label maps on the
    fly; no real files are needed."""

    enabled: bool = False
    sigma: float = 0.1
    """Preset noise sigma of the "real" images (eq. 8)."""
    sigma_range: list[float] = field(default_factory=list)
    """[low, high]: sigma ~ U[low, high] per image instead of the fixed ``sigma``."""
    inu_c: list[float] = field(default_factory=list)
    """Preset INU exponents c_k (empty: no INU in the "real" images)."""
    inu_nodes: list[int] = field(default_factory=lambda: [2, 4, 8])
    val_batches: int = 4
    """Fixed validation batches of corrupted synthetic images."""
    val_label_maps: list[str] = field(default_factory=list)
    """Label maps (files or folders) of the validation images, never used for synthesis; empty:
    data.val_fraction of data.label_maps is held out (seeded; at least one map each way)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Config":
        cfg = _build(cls, data or {}, "")
        validate(cfg)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; a readable message names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data, training, ...)")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            inner = typing.get_args(tp)[0]
            if (inner is str and isinstance(value, str)) or (
                    inner is float and isinstance(value, (int, float)) and not isinstance(value, bool)):
                value = [value]
            else:
                raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(typing.get_args(tp)[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is Union:  # Optional[...]
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(args[0], value, key)
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting (known: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    """Range and consistency checks beyond types; raise ConfigError naming the key."""
    from .config_limits import check_limits; check_limits(cfg)  # noqa: E702 - finite numbers, sane sizes
    d, s, a, n, t = cfg.data, cfg.synthesis, cfg.augmentation, cfg.network, cfg.training
    _require(0.0 <= d.val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    _require(0 <= d.slice_axis <= 2, "data.slice_axis", f"must be 0, 1 or 2, got {d.slice_axis}")
    _require(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}")
    _require(len(d.voxel_size) in (0, 1, 3) and all(v > 0 for v in d.voxel_size), "data.voxel_size",
             f"must be empty, one size in mm or three positive sizes, got {d.voxel_size}")
    if d.patch_size:
        _require(len(d.patch_size) == d.ndim, "data.patch_size",
                 f"needs {d.ndim} values for data.ndim={d.ndim}, got {d.patch_size}")
        factor = 2 ** (len(n.widths) - 1)
        _require(all(p >= factor and p % factor == 0 for p in d.patch_size), "data.patch_size",
                 f"each size must be a positive multiple of {factor} (2^(levels-1) for "
                 f"{len(n.widths)} network levels), got {d.patch_size}")
    _require(len(s.mean_range) == 2 and s.mean_range[0] <= s.mean_range[1], "synthesis.mean_range",
             f"must be [low, high] with low <= high, got {s.mean_range}")
    _require(len(s.std_range) == 2 and 0 <= s.std_range[0] <= s.std_range[1], "synthesis.std_range",
             f"must be [low, high] with 0 <= low <= high, got {s.std_range}")
    for key in ("rotation", "scaling", "shear", "translation", "elastic", "gamma_std", "blur_max"):
        _require(getattr(s, key) >= 0, f"synthesis.{key}", f"must be >= 0, got {getattr(s, key)}")
    _require(s.scaling < 1, "synthesis.scaling", f"must be < 1, got {s.scaling}")
    _require(s.elastic_nodes >= 2, "synthesis.elastic_nodes", f"must be >= 2, got {s.elastic_nodes}")
    for key in ("svf_std", "svf_scale", "skull_strip_probability"):
        _require(getattr(s, key) >= 0, f"synthesis.{key}", f"must be >= 0, got {getattr(s, key)}")
    _require(s.elastic_kind in ("svf", "displacement"), "synthesis.elastic_kind",
             f"must be 'svf' or 'displacement', got {s.elastic_kind!r}")
    _require(0 <= s.svf_steps <= 20, "synthesis.svf_steps", f"must be in [0, 20], got {s.svf_steps}")
    _require(s.max_res_iso >= 1 and s.max_res_aniso >= 1, "synthesis.max_res_iso",
             f"max_res_iso and max_res_aniso must be >= 1 mm, got {s.max_res_iso}, {s.max_res_aniso}")
    for key in ("prob_iso", "prob_min", "skull_strip_probability"):
        _require(0 <= getattr(s, key) <= 1, f"synthesis.{key}", f"must be in [0, 1], got {getattr(s, key)}")
    _require(a.sigma_init >= 0, "augmentation.sigma_init", f"must be >= 0, got {a.sigma_init}")
    _require(len(a.inu_nodes) >= 1 and all(m >= 2 for m in a.inu_nodes), "augmentation.inu_nodes",
             f"must be a non-empty list of node counts >= 2, got {a.inu_nodes}")
    _require(a.inu_c_max > 0, "augmentation.inu_c_max", f"must be > 0, got {a.inu_c_max}")
    _require(len(a.inu_c_init) in (1, len(a.inu_nodes)) and all(0 <= c <= a.inu_c_max for c in a.inu_c_init),
             "augmentation.inu_c_init", f"must be one value or one per field ({len(a.inu_nodes)}), each in "
             f"[0, inu_c_max={a.inu_c_max}], got {a.inu_c_init}")
    _require(len(a.sigma_range) == 2 and 0 <= a.sigma_range[0] <= a.sigma_range[1], "augmentation.sigma_range",
             f"must be [low, high] with 0 <= low <= high, got {a.sigma_range}")
    _require(len(a.residual_widths) >= 1 and all(w >= 1 for w in a.residual_widths),
             "augmentation.residual_widths", f"must be a non-empty list of positive widths, got {a.residual_widths}")
    _require(len(n.widths) >= 1 and all(w >= 1 for w in n.widths), "network.widths",
             f"must be a non-empty list of positive channel counts, got {n.widths}")
    _require(n.convs_per_level >= 1, "network.convs_per_level", f"must be >= 1, got {n.convs_per_level}")
    _require(t.steps >= 0, "training.steps", f"must be >= 0, got {t.steps}")
    for key in ("lr_segmentation", "lr_augmentation"):
        _require(getattr(t, key) > 0, f"training.{key}", f"must be > 0, got {getattr(t, key)}")
    for key in ("lr_segmentation_final", "lr_augmentation_final"):
        _require(0 < getattr(t, key) <= 1, f"training.{key}", f"must be in (0, 1], got {getattr(t, key)}")
    _require(t.hyper_start >= 0, "training.hyper_start", f"must be >= 0, got {t.hyper_start}")
    for key in ("hyper_every", "val_every", "preview_every", "checkpoint_every", "log_every", "keep_checkpoints"):
        _require(getattr(t, key) >= 1, f"training.{key}", f"must be >= 1, got {getattr(t, key)}")
    r = cfg.recovery
    _require(r.sigma >= 0, "recovery.sigma", f"must be >= 0, got {r.sigma}")
    _require(not r.sigma_range or (len(r.sigma_range) == 2 and 0 <= r.sigma_range[0] <= r.sigma_range[1]),
             "recovery.sigma_range", f"must be empty or [low, high] with 0 <= low <= high, got {r.sigma_range}")
    _require(all(c >= 0 for c in r.inu_c), "recovery.inu_c", f"must be >= 0, got {r.inu_c}")
    _require(len(r.inu_c) <= len(r.inu_nodes), "recovery.inu_c",
             f"has {len(r.inu_c)} values but recovery.inu_nodes only {len(r.inu_nodes)} fields")
    _require(r.val_batches >= 1, "recovery.val_batches", f"must be >= 1, got {r.val_batches}")
    _require(not (r.enabled and t.method == "supervised"), "recovery.enabled",
             "the recovery experiment trains on synthetic data: use method learn2synth or synthseg")
    dev = t.device
    _require(dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             "training.device", f"must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")
    if t.method == "learn2synth":
        _require(a.kind != "none", "augmentation.kind",
                 "learn2synth needs a learnable augmentation (parametric or nonparametric)")
        _require(not (a.kind == "parametric" and a.noise in ("none", "uniform") and not a.inu), "augmentation",
                 "the parametric augmentation has nothing to learn: enable learnable noise (fixed or "
                 "per_image) or inu")


def check_data_present(cfg: Config) -> None:
    """The inputs a training method needs are listed (files are checked when loaded)."""
    d, method = cfg.data, cfg.training.method
    if method in ("learn2synth", "synthseg"):
        _require(bool(d.label_maps), "data.label_maps", "list at least one label map (file or folder) for synthesis")
    if method in ("learn2synth", "supervised") and not cfg.recovery.enabled:
        _require(bool(d.real_images), "data.real_images", f"{method} needs real scans (files or folder)")
        _require(bool(d.real_labels), "data.real_labels", f"{method} needs the real scans' label maps")
