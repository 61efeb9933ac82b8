"""Training configuration: nested dataclasses, loaded from YAML/JSON and validated.

Every invalid value raises :class:`~l2s_gui.errors.ConfigError` whose message names the dotted key
(e.g. ``training.lr_segmentation``) and says what is expected.

The dataclasses are the one schema: each field's default, type (``Literal`` choices), range
(:func:`setting`) and docstring are read by :func:`config_fields`, which drives :func:`validate`, the
shipped ``resources/configs/default.yaml`` and the README's table (``scripts/config_docs.py`` writes
both; tests check they are current) and the napari form's fields and ranges.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .config_limits import (
    MAX_BATCH,
    MAX_CONVS_PER_LEVEL,
    MAX_NODES,
    MAX_PATCH,
    MAX_VOXEL_MM,
    MAX_WIDTH,
    MIN_VOXEL_MM,
    check_limits,
)
from .errors import ConfigError

__all__ = ["AugmentationConfig", "Config", "DataConfig", "FieldSpec", "InspectorConfig", "NetworkConfig",
           "RecoveryConfig", "SelfTrainingConfig", "SynthesisConfig", "TrainingConfig", "apply_overrides",
           "check_data_present", "config_fields", "field_spec", "read_config_file", "self_training_enabled",
           "setting", "validate"]


def setting(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, max_key: str | None = None, lengths: tuple[int, ...] | None = None,
            min_length: int = 0) -> Any:
    """A dataclass field with its range: ``ge``/``gt`` (>=, >) and ``le``/``lt`` (<=, <) bound a number
    or each item of a list; ``max_key``: the dotted key of the setting whose value is the upper bound;
    ``lengths``: the allowed list lengths; ``min_length``: the shortest list. The help text is the
    attribute docstring below the field (read by :func:`config_fields`)."""
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise ValueError("give one lower and one upper bound at most")
    metadata = {"min": gt if gt is not None else ge, "min_exclusive": gt is not None,
                "max": lt if lt is not None else le, "max_exclusive": lt is not None,
                "max_key": max_key, "lengths": lengths, "min_length": min_length}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Where the label maps and real pairs come from and how they are cut into training samples."""

    label_maps: list[str] = setting([])
    """Label maps used for synthesis: files (.nii, .nii.gz, .mgz) or folders holding them."""
    real_images: list[str] = setting([])
    """Real scans (files or folders), paired in sorted order with ``real_labels``."""
    real_labels: list[str] = setting([])
    """Label maps of the real scans (files or folders)."""
    val_fraction: float = setting(0.25, ge=0, lt=1)
    """Fraction of the real pairs held out for validation (seeded split; at least one pair each)."""
    label_table: str = setting("auto")
    """'auto' (every label value found becomes a class), a shipped table name such as
    'freesurfer_4class' (the paper's WM / cortical GM / subcortical GM / ventricles+CSF), or a path to
    a JSON label table."""
    ndim: Literal[2, 3] = setting(2)
    """2: train on slices along ``slice_axis``; 3: train on volumes or patches."""
    slice_axis: int = setting(1, ge=0, le=2)
    """Voxel axis orthogonal to the 2D slices (1 is coronal: volumes are reoriented to RAS)."""
    patch_size: list[int] = setting([], ge=1, le=MAX_PATCH)
    """Spatial size of training samples (2 values in 2D, 3 in 3D, multiples of 2^(levels-1)); empty =
    the whole slice/volume, padded to a multiple of the network's down-sampling factor."""
    batch_size: int = setting(4, ge=1, le=MAX_BATCH)
    """Samples per synthetic batch and per real batch."""
    voxel_size: list[float] = setting([], ge=MIN_VOXEL_MM, le=MAX_VOXEL_MM, lengths=(0, 1, 3))
    """Resample every input to this voxel size in mm (1 value: isotropic, or 3 values along the RAS
    axes) before training, and new scans before segmenting (the result is mapped back to the scan's
    own grid); models record it (``voxel_size_mm``; without it, the median voxel size of the training
    inputs); empty = use each file's own grid (inputs should then share a resolution)."""
    unlabelled_images: list[str] = setting([])
    """Unlabelled target scans (files or folders of .nii, .nii.gz, .mgz; folders in sorted order)
    for self-training (section ``self_training``); empty: no self-training."""


@dataclass
class SynthesisConfig:
    """SynthSeg-style generator (Billot et al.): deformation, GMM, gamma, blur, normalisation."""

    rotation: float = setting(15.0, ge=0)
    """Maximum rotation in degrees (uniform in [-r, r] about each axis)."""
    scaling: float = setting(0.15, ge=0, lt=1)
    """Maximum relative scaling (uniform in [1-s, 1+s])."""
    shear: float = setting(0.012, ge=0)
    """Maximum shear (uniform in [-s, s] for each of the d(d-1)/2 shear terms of the affine)."""
    translation: float = setting(0.0, ge=0)
    """Maximum translation in voxels."""
    elastic: float = setting(0.015, ge=0)
    """'displacement' elastic field: std of the displacement as a fraction of the field of view (0.015
    is about 3 voxels at 192 voxels; above ~0.02 the warped label maps start to fold)."""
    elastic_nodes: int = setting(10, ge=2, le=MAX_NODES)
    """'displacement' elastic field: control points per axis."""
    mean_range: list[float] = setting([0.0, 1.0], lengths=(2,))
    """[low, high] of the per-class intensity means (uniform)."""
    std_range: list[float] = setting([0.0, 0.1], ge=0, lengths=(2,))
    """[low, high] of the per-class intensity standard deviations (uniform)."""
    gamma_std: float = setting(0.5, ge=0)
    """Std of log(gamma) (log gamma ~ N(0, gamma_std^2), SynthSeg's code: 0.5; 0.25 before issue 9)."""
    blur_max: float = setting(1.0, ge=0)
    """Maximum blur sigma in voxels (uniform in [0, blur_max]) when ``resolution`` is off."""
    backend: Literal["torch", "cornucopia"] = setting("torch")
    """'torch': batched generator on the training device (fast); 'cornucopia': the reference
    SynthFromLabelTransform applied per sample (slow, for comparison; no flip, resolution or skull
    strip)."""
    elastic_kind: Literal["svf", "displacement"] = setting("svf")
    """'svf': diffeomorphic elastic field, a stationary velocity field (``svf_std``, ``svf_scale``)
    integrated by scaling and squaring (``svf_steps``), as SynthSeg; 'displacement': the pre-issue-9
    field, a smooth displacement of std ``elastic`` (fraction of the FOV) on ``elastic_nodes`` nodes,
    not integrated (can fold). ``elastic``/``elastic_nodes`` apply to 'displacement' only."""
    svf_std: float = setting(4.0, ge=0)
    """'svf': the velocity nodes have std ~ U(0, svf_std) voxels per sample (SynthSeg nonlin_std)."""
    svf_scale: float = setting(0.04, ge=0)
    """'svf': velocity nodes per axis = max(2, ceil(svf_scale * size)) (SynthSeg nonlin_scale, 1/25)."""
    svf_steps: int = setting(7, ge=0, le=20)
    """'svf': scaling-and-squaring steps (the field is v / 2^steps composed 2^steps times)."""
    flip: bool = setting(True)
    """Left/right flip with probability 0.5 per sample, swapping left and right labels (SynthSeg
    flipping). Needs the label table's L/R pairs; along axis 0 (RAS x); 2D with slice_axis 0: none."""
    resolution: bool = setting(True)
    """Random acquisition resolution and partial volume (SynthSeg randomise_res): per sample an
    isotropic (U(1, max_res_iso) mm) or one thick axis (U(1, max_res_aniso) mm) acquisition, blur
    matched to it, down- and up-sampling back to the training grid. Replaces the U(0, blur_max) blur.
    In mm of ``data.voxel_size`` (the training grid counts as 1 mm when it is not set); in 2D the
    acquisition is simulated in the slice plane (the thick axis is one of the two in-plane axes)."""
    max_res_iso: float = setting(4.0, ge=1)
    """Largest isotropic acquisition voxel size in mm (SynthSeg max_res_iso)."""
    max_res_aniso: float = setting(8.0, ge=1)
    """Largest slice spacing in mm of a thick-slice acquisition (SynthSeg max_res_aniso)."""
    prob_iso: float = setting(0.1, ge=0, le=1)
    """Probability of an isotropic (vs thick-slice) acquisition (SynthSeg SampleResolution prob_iso)."""
    prob_min: float = setting(0.05, ge=0, le=1)
    """Probability of keeping the training grid resolution (SynthSeg SampleResolution prob_min)."""
    skull_strip_probability: float = setting(0.0, ge=0, le=1)
    """Per sample, probability of sending the extra-cerebral generation labels (non-zero values the
    label table maps to background: skull, scalp, eyes, ...) to 0 before synthesis (skull stripping)."""
    contrast_blend_probability: float = setting(0.0, ge=0, le=1)
    """GBA-style contrast augmentation (Generative Blending Augmentation, eq. 5 and 7, without the
    SinGAN): per sample with this probability, one random foreground generation label has its
    intensities scaled by lambda ~ U(``contrast_blend_lambda``), blended back into the image through
    its mask dilated by ``contrast_blend_dilation`` voxels and smoothed (Gaussian, std
    ``contrast_blend_smoothing`` voxels). 0: off (draws nothing)."""
    contrast_blend_lambda: list[float] = setting([0.6, 1.5], gt=0, lengths=(2,))
    """[low, high] of the intensity scaling factor lambda (the GBA paper used 0.6 to 1.5)."""
    contrast_blend_dilation: int = setting(2, ge=0)
    """Dilation of the structure's mask in voxels before smoothing (the weighting mask of eq. 7)."""
    contrast_blend_smoothing: float = setting(1.5, ge=0)
    """Std in voxels of the Gaussian that smooths the dilated mask into the weights of eq. 7."""
    intensity_prior: Literal["uniform", "real"] = setting("uniform")
    """'uniform': every class mean ~ U(mean_range), any contrast (SynthSeg); 'real': each class mean
    ~ N(m_c, intensity_prior_spread^2) and std ~ U(0, s_c), with m_c, s_c the intensities under
    class c in the real training pairs (SynthSeg-rule: the contrast of your scans; needs
    data.real_images and data.real_labels; classes they lack stay uniform)."""
    intensity_prior_spread: float = setting(0.1, ge=0, le=1)
    """'real' intensity prior: std of each class mean around the real scans' class mean."""
    skull_strip_sharp: bool = setting(False)
    """Stripped samples (``skull_strip_probability``) are also set to 0 outside the brain after the
    acquisition simulation, so that their edge is as sharp as a skull-stripped scan's (the demo's
    sample is one); off: the resolution blur smears the brain into the background."""


@dataclass
class AugmentationConfig:
    """The learnable augmentation A_theta (Learn2Synth Sec. 3.3-3.4)."""

    kind: Literal["parametric", "nonparametric", "none"] = setting("parametric")
    """'parametric': INU (eq. 6-7) and noise (eq. 8/9); 'nonparametric': a residual network (eq.
    10-11) and eq. 9 noise; 'none': no augmentation."""
    noise: Literal["fixed", "per_image", "uniform", "none"] = setting("fixed")
    """'fixed': x + sigma*eps (eq. 8); 'per_image': x + sigma*s*eps with s ~ N(0,1) (eq. 9);
    'uniform': x + sigma_i*eps with sigma_i ~ U[sigma_range] per image, not learned (naive SynthSeg
    at the paper's U[0.025, 0.2] setting); 'none': no noise."""
    sigma_init: float = setting(0.05, ge=0)
    """Initial noise sigma (kept >= 0)."""
    sigma_range: list[float] = setting([0.025, 0.2], ge=0, lengths=(2,))
    """[low, high] of the per-image sigma of noise 'uniform'."""
    inu: bool = setting(True)
    """Intensity non-uniformity (eq. 6-7); parametric kind only."""
    inu_nodes: list[int] = setting([2, 4, 8], ge=2, le=MAX_NODES, min_length=1)
    """M_k: nodes per axis of each of the K random fields (K = the number of values)."""
    inu_c_init: list[float] = setting([0.25], ge=0, max_key="augmentation.inu_c_max", min_length=1)
    """Initial exponents c_k (kept in [0, inu_c_max]): one value for every field, or one per field."""
    inu_c_max: float = setting(2.0, gt=0)
    """Upper bound of the exponents c_k (kept by projection after each update)."""
    residual_widths: list[int] = setting([8, 16, 16, 16], ge=1, le=MAX_WIDTH, min_length=1)
    """Widths of the residual UNet of the nonparametric augmentation (eq. 10-11), one per level:
    4 levels see about 45 pixels, enough to express the 2- and 4-node INU fields."""


@dataclass
class NetworkConfig:
    """Segmentation UNet S_phi."""

    widths: list[int] = setting([16, 24, 32, 48, 64], ge=1, le=MAX_WIDTH, min_length=1)
    """Channels at each level (the number of levels is len(widths)); used exactly as given."""
    activation: Literal["elu", "relu", "leaky_relu"] = setting("elu")
    """Activation after each convolution."""
    norm: Literal["none", "instance", "group"] = setting("none")
    """Normalisation after each convolution."""
    convs_per_level: int = setting(2, ge=1, le=MAX_CONVS_PER_LEVEL)
    """Convolutions per level in the encoder and the decoder."""


@dataclass
class TrainingConfig:
    """Bilevel optimisation (Learn2Synth eq. 1-5) and bookkeeping."""

    method: Literal["learn2synth", "synthseg", "mixed", "finetuned", "supervised", "synthmix"] = setting(
        "learn2synth")
    """'learn2synth': learn theta by hypergradients; 'synthseg': naive SynthSeg with theta fixed at
    its initial values; 'mixed': Mixed SynthSeg (Sec. 4.2.1), synthetic batches in which a fraction
    ``mixed_real_fraction`` of the samples are real training pairs; 'finetuned': Finetuned SynthSeg,
    the model of ``init_from`` trained further on the real pairs; 'supervised': phi on the real
    training pairs only, from a random network; 'synthmix': SynthMix-style aligned mix-up (SynthMix
    Sec. 2.2), a fraction ``synthmix_fraction`` of each synthetic batch replaced by real scans mixed
    cell by cell with A_theta of a synthetic image of their own label map (theta fixed)."""
    mixed_real_fraction: float = setting(0.25, gt=0, lt=1)
    """'mixed': fraction of each batch taken from the real training pairs (at least one sample)."""
    steps: int = setting(1000, ge=1)
    """Training iterations."""
    lr_segmentation: float = setting(1e-3, gt=0)
    """Learning rate of the inner update of phi (eq. 2)."""
    lr_segmentation_schedule: Literal["constant", "cosine"] = setting("constant")
    """'cosine': phi's learning rate decays by a half cosine over the run to lr_segmentation *
    lr_segmentation_final (the hypergradient differentiates through the update at the current rate)."""
    lr_segmentation_final: float = setting(0.1, gt=0, le=1)
    """Final fraction of lr_segmentation under the cosine schedule."""
    lr_augmentation: float = setting(1e-3, gt=0)
    """Learning rate of the Adam update of theta (eq. 5)."""
    lr_augmentation_schedule: Literal["constant", "cosine"] = setting("constant")
    """'cosine': theta's learning rate decays by a half cosine from lr_augmentation at the first
    hyper-step to lr_augmentation * lr_augmentation_final at the last step, so that theta settles
    instead of walking by about the learning rate per hyper-step."""
    lr_augmentation_final: float = setting(0.1, gt=0, le=1)
    """Final fraction of lr_augmentation under the cosine schedule."""
    lr_inu_scale: float = setting(1.0, gt=0, le=100)
    """The INU exponents' learning rate as a multiple of theta's (eq. 6-7, updated by eq. 5). Adam
    moves every parameter by about its learning rate per hyper-step whatever its scale: sigma's
    presets are about 0.1, the exponents' about 0.5, so the exponents cover their range several
    times more slowly at one shared rate. The schedule applies to both."""
    inner_optimizer: Literal["adam", "sgd"] = setting("adam")
    """The update() of eq. 2, differentiated through for the hypergradient."""
    hypergradient: Literal["exact", "naive", "approx"] = setting("exact")
    """How eq. 4 is computed: 'exact' (by ``hypergradient_route``); 'naive': double backward through
    a differentiable update (the reference code's route); 'approx': a float64 finite difference of
    the image gradient (a validation tool)."""
    hypergradient_route: Literal["reverse", "jvp"] = setting("reverse")
    """Route of 'exact': 'reverse' (reverse-over-reverse through the synthetic pass's own graph, with
    first-order convolution backwards; 3.5x a plain step vs 4.3x for 'jvp' in 2D on the 2-core CPU,
    benchmarks/results/cpu-1thread.md) or 'jvp' (forward-over-reverse, torch.func.jvp over the image
    gradient, then (dx_aug/dtheta)^T w); same value."""
    hyper_every: int = setting(1, ge=1)
    """Take the hyper-step (real pass + theta update) every k-th iteration."""
    hyper_start: int = setting(0, ge=0)
    """Iterations of plain synthetic training (theta fixed) before the first hyper-step: the
    hypergradient of an untrained network carries little information about theta."""
    init_from: str = setting("")
    """Warm start: a model (.safetensors), a run folder (its model.safetensors) or 'starter' (the
    shipped starter model) whose network weights start this run (same classes, dimensionality and
    network settings); empty: random."""
    init_theta_from: str = setting("")
    """A model or run folder whose learned augmentation (sigma, c_k, residual net) starts theta
    (often the same as init_from); empty: theta starts from the augmentation settings."""
    seed: int = setting(0)
    """Seed of the weights, the data split and every random draw."""
    device: str = setting("auto")
    """'auto' (CUDA if present, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    precision: Literal["fp32", "bf16"] = setting("fp32")
    """bf16 autocast for the networks (CUDA); the hypergradient arithmetic stays float32."""
    val_every: int = setting(100, ge=1)
    """Validation Dice every k iterations (and at the end)."""
    preview_every: int = setting(25, ge=1)
    """Preview images every k iterations (and at the end)."""
    checkpoint_every: int = setting(250, ge=1)
    """Checkpoint (and model export) every k iterations (and at the end)."""
    log_every: int = setting(1, ge=1)
    """Step event (losses, theta, it/s) every k iterations."""
    keep_checkpoints: int = setting(2, ge=1)
    """Newest checkpoints kept in the run folder."""
    synthmix_fraction: float = setting(0.5, gt=0, le=1)
    """'synthmix': share of each batch made of aligned mixes (at least one sample); the rest are
    ordinary synthetic images. A mix is M * x_real + (1 - M) * A_theta(G'(y_real)) (SynthMix eq. 2),
    G'(y_real) a synthetic image of the real pair's own label map without flip or deformation, so
    aligned with the scan, and its labels are y_real (eq. 3). theta is not learnt: it is the
    augmentation settings, or a learnt Learn2Synth model's via init_theta_from. In recovery mode the
    pair is the corrupted "real" image and a second contrast draw of its deformed label map."""
    synthmix_grid: int = setting(8, ge=1, le=MAX_PATCH)
    """'synthmix': k, cells per axis of the random mix-up mask (cells of ceil(size / k) voxels;
    SynthMix found k = 8 best)."""
    synthmix_ratio: float = setting(0.5, ge=0, le=1)
    """'synthmix': lambda, the probability that a cell of the mask takes the real image (eq. 2); 1:
    the real scans whole (as 'mixed'), 0: their aligned synthetic images only."""


@dataclass
class RecoveryConfig:
    """Synthetic-recovery experiments (Learn2Synth Sec. 4.1): "real" images are synthetic images
    corrupted with preset parameters, x_real = A_theta_hat(x_synth), drawn from the label maps on the
    fly; no real files are needed."""

    enabled: bool = setting(False)
    """Replace the real pairs by synthetic images with the preset corruption below (for every method:
    Learn2Synth's L_real, the real share of mixed, finetuned and supervised training)."""
    sigma: float = setting(0.1, ge=0)
    """Preset noise sigma of the "real" images (eq. 8)."""
    sigma_range: list[float] = setting([], ge=0, lengths=(0, 2))
    """[low, high]: sigma ~ U[low, high] per image instead of the fixed ``sigma``."""
    inu_c: list[float] = setting([], ge=0)
    """Preset INU exponents c_k (empty: no INU in the "real" images)."""
    inu_nodes: list[int] = setting([2, 4, 8], ge=2, le=MAX_NODES)
    """Nodes per axis of the preset INU fields (at least one per value of ``inu_c``)."""
    val_batches: int = setting(4, ge=1)
    """Fixed validation batches of corrupted synthetic images."""
    val_label_maps: list[str] = setting([])
    """Label maps (files or folders) of the validation images, never used for synthesis; empty:
    data.val_fraction of data.label_maps is held out (seeded; at least one map each way)."""


@dataclass
class SelfTrainingConfig:
    """Self-training on unlabelled scans (GBA paper, Sec. II-D, Fig. 5): after the configured
    training (round 0, the teacher), each round pseudo-labels ``data.unlabelled_images`` with the
    current network and trains a student on synthetic images plus (scan, pseudo-label) samples; the
    student becomes the next teacher."""

    rounds: int = setting(3, ge=0)
    """Most student rounds after round 0 (the GBA paper converged in 3); 0, or no
    ``data.unlabelled_images``: no self-training."""
    confidence: float = setting(0.9, ge=0, lt=1)
    """Pseudo-labelled voxels whose largest teacher posterior is below this are left out of the
    student's loss (a masked soft Dice); 0 keeps every voxel."""
    tolerance: float = setting(0.003, ge=0)
    """Self-training stops when the mean validation Dice changes by less than this from one round to
    the next (0.003: the paper's 0.3%, in Dice units), or after ``rounds`` rounds."""
    steps: int = setting(0, ge=0)
    """Training iterations of each student round; 0: ``training.steps``."""
    pseudo_fraction: float = setting(0.5, gt=0, lt=1)
    """Share of each student batch taken from the pseudo-labelled scans (at least one sample); the
    rest are augmented synthetic images."""
    student_init: Literal["teacher", "initial"] = setting("teacher")
    """Weights a student starts from: 'teacher' continues the teacher's network and optimiser (cheaper:
    the default); 'initial' retrains from what round 0 started from (random or ``training.init_from``),
    as the GBA paper retrains each student."""


@dataclass
class InspectorConfig:
    """The Inspector (SynthMix Sec. 2.3): a patch classifier trained alongside any method on real vs
    synthetic patches, a live map of where synthetic images still differ from real ones. It never
    trains the segmenter or theta; resuming a run restarts it."""

    enabled: bool = setting(False)
    """Train the Inspector and report its accuracy and map (needs real images: real pairs or recovery)."""
    grid: int = setting(8, ge=2, le=64)
    """k: the Inspector judges a k x k grid of patches (k^3 in 3D; SynthMix found k = 8 best)."""
    update_every: int = setting(1, ge=1)
    """One Inspector update every k training iterations."""
    lr: float = setting(1e-3, gt=0)
    """Learning rate of the Inspector's Adam optimiser."""
    widths: list[int] = setting([8, 16, 32], ge=1, le=MAX_WIDTH, min_length=1)
    """Channels of the Inspector's encoder levels (each level after the first halves the grid)."""
    mix_ratio: float = setting(0.5, gt=0, lt=1)
    """Probability that a cell of the random k x k mask takes the synthetic image in the unaligned
    mixes of eq. 2."""
    eval_every: int = setting(100, ge=1)
    """Accuracy and map on the fixed evaluation set every k iterations (and at the end)."""
    eval_batches: int = setting(2, ge=1, le=64)
    """Batches of synthetic images (``data.batch_size`` each, drawn once) evaluated against the
    validation images."""


@dataclass
class Config:
    """A whole training configuration: seven sections, every setting with a default."""

    data: DataConfig = field(default_factory=DataConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)
    inspector: InspectorConfig = field(default_factory=InspectorConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Config:
        cfg = _build(cls, data or {}, "")
        validate(cfg)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> Config:
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


@dataclass(frozen=True)
class FieldSpec:
    """One setting of the schema, as :func:`config_fields` lists them (for validation, the shipped
    default.yaml, the README's table and the GUI's form).

    ``type`` is the annotation (``float``, ``list[int]``, ``Literal[...]``); ``item_type`` the type of
    a number, string or list item (``float`` for ``list[float]``); ``choices`` the allowed values of a
    ``Literal`` (else None); ``min``/``max`` bound a number or each list item (exclusive where
    ``min_exclusive``/``max_exclusive``); ``max_key`` names the setting whose value is the upper
    bound (``augmentation.inu_c_init`` <= ``augmentation.inu_c_max``); ``lengths``: the allowed list
    lengths (None: any, from ``min_length``); ``help``: the docstring's first sentence, ``doc`` all of it.
    """

    key: str
    type: Any
    item_type: Any
    default: Any
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    max_key: str | None = None
    lengths: tuple[int, ...] | None = None
    min_length: int = 0
    help: str = ""
    doc: str = ""

    @property
    def section(self) -> str:
        return self.key.split(".")[0]

    @property
    def name(self) -> str:
        return self.key.split(".")[1]

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.type) is list

    def value(self, cfg: Config) -> Any:
        """This setting's value in ``cfg``."""
        return getattr(getattr(cfg, self.section), self.name)

    def upper_bound(self, cfg: Config | None = None) -> float | None:
        """``max``, or the value of the ``max_key`` setting in ``cfg`` (default: the defaults)."""
        if self.max_key is None:
            return self.max
        section, name = self.max_key.split(".")
        return getattr(getattr(cfg if cfg is not None else Config(), section), name)

    def lengths_text(self) -> str:
        """The allowed list lengths in words ('2 values', '0, 1 or 3 values'); '' if any."""
        return f"{_either(self.lengths)} values" if self.lengths else ""

    def range_text(self, cfg: Config | None = None) -> str:
        """The allowed numbers in words, '>= 0', '> 0', 'in [0, 1)', 'in [0, inu_c_max=2]'; '' if any."""
        high = self.upper_bound(cfg)
        high_text = f"{self.max_key.split('.')[1]}={high:g}" if self.max_key and high is not None else (
            f"{high:g}" if high is not None else "")
        if self.min is not None and high is not None:
            return (f"in {'(' if self.min_exclusive else '['}{self.min:g}, {high_text}"
                    f"{')' if self.max_exclusive else ']'}")
        if self.min is not None:
            return f"{'>' if self.min_exclusive else '>='} {self.min:g}"
        if high is not None:
            return f"{'<' if self.max_exclusive else '<='} {high_text}"
        return ""

    def check(self, value: Any, cfg: Config | None = None) -> None:
        """Raise ConfigError naming the key if ``value`` (already of the right type) is out of range."""
        if self.is_list:
            if self.lengths is not None:
                _require(len(value) in self.lengths, self.key, f"must have {self.lengths_text()}, got {value}")
            _require(len(value) >= self.min_length, self.key,
                     f"must have at least {self.min_length} value{'s' * (self.min_length > 1)}, got {value}")
            items = value
        else:
            items = [value]
        if self.item_type not in (int, float):
            return
        high = self.upper_bound(cfg)
        low_ok = self.min is None or all(v > self.min if self.min_exclusive else v >= self.min for v in items)
        high_ok = high is None or all(v < high if self.max_exclusive else v <= high for v in items)
        what = "each value must be" if self.is_list else "must be"
        _require(low_ok and high_ok, self.key, f"{what} {self.range_text(cfg)}, got {value}")


def _either(counts: tuple[int, ...]) -> str:
    """'2', '0 or 2', '0, 1 or 3'."""
    words = [str(n) for n in counts]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal below each annotated attribute of a class (its docstring, by convention)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (frozen application): no help texts
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            out[node.target.id] = inspect.cleandoc(after.value.value)
    return out


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.search(r"\.\s+(?=[A-Z])", text)
    return text[:match.start() + 1] if match else text


@functools.cache
def config_fields() -> tuple[FieldSpec, ...]:
    """Every setting of :class:`Config` in file order, with its type, default, range, choices and help.

    >>> spec = {f.key: f for f in config_fields()}["training.lr_segmentation"]
    >>> spec.default, spec.min, spec.min_exclusive, spec.range_text()
    (0.001, 0, True, '> 0')
    """
    out = []
    defaults = Config()
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        docs = _attribute_docstrings(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
            choices = typing.get_args(item) if typing.get_origin(item) is Literal else None
            meta = f.metadata
            doc = docs.get(f.name, "")
            out.append(FieldSpec(
                key=f"{section.name}.{f.name}", type=tp, item_type=type(choices[0]) if choices else item,
                default=copy.deepcopy(getattr(getattr(defaults, section.name), f.name)), choices=choices,
                min=meta.get("min"), max=meta.get("max"), min_exclusive=meta.get("min_exclusive", False),
                max_exclusive=meta.get("max_exclusive", False), max_key=meta.get("max_key"),
                lengths=meta.get("lengths"), min_length=meta.get("min_length", 0), help=_first_sentence(doc),
                doc=" ".join(doc.split())))
    return tuple(out)


def field_spec(key: str) -> FieldSpec:
    """The :class:`FieldSpec` of a dotted key such as ``'training.lr_segmentation'``."""
    for spec in config_fields():
        if spec.key == key:
            return spec
    raise KeyError(key)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    """Check every setting's range (:func:`config_fields`) and the settings' consistency; raise
    ConfigError naming the dotted key."""
    check_limits(cfg)  # finite numbers, sizes that can be allocated
    for spec in sorted(config_fields(), key=lambda f: f.max_key is not None):  # a bound before its users
        spec.check(spec.value(cfg), cfg)
    d, s, a, n, t, r = cfg.data, cfg.synthesis, cfg.augmentation, cfg.network, cfg.training, cfg.recovery
    if d.patch_size:
        _require(len(d.patch_size) == d.ndim, "data.patch_size",
                 f"needs {d.ndim} values for data.ndim={d.ndim}, got {d.patch_size}")
        factor = 2 ** (len(n.widths) - 1)
        _require(all(p % factor == 0 for p in d.patch_size), "data.patch_size",
                 f"each size must be a positive multiple of {factor} (2^(levels-1) for "
                 f"{len(n.widths)} network levels), got {d.patch_size}")
    for key, (low, high) in (("synthesis.mean_range", s.mean_range), ("synthesis.std_range", s.std_range),
                             ("augmentation.sigma_range", a.sigma_range)):
        _require(low <= high, key, f"must be [low, high] with low <= high, got {[low, high]}")
    _require(s.intensity_prior == "uniform" or s.backend == "torch", "synthesis.intensity_prior",
             f"'{s.intensity_prior}' needs synthesis.backend: torch (the cornucopia backend draws its own "
             f"intensities), got backend '{s.backend}'")
    _require(not r.sigma_range or r.sigma_range[0] <= r.sigma_range[1], "recovery.sigma_range",
             f"must be empty or [low, high] with low <= high, got {r.sigma_range}")
    _require(len(a.inu_c_init) in (1, len(a.inu_nodes)), "augmentation.inu_c_init",
             f"must be one value or one per field ({len(a.inu_nodes)}), got {a.inu_c_init}")
    _require(len(r.inu_c) <= len(r.inu_nodes), "recovery.inu_c",
             f"has {len(r.inu_c)} values but recovery.inu_nodes only {len(r.inu_nodes)} fields")
    _require(not (r.enabled and t.method == "synthmix" and s.backend != "torch"), "synthesis.backend",
             "synthmix in recovery mode renders two images of one deformed label map, which only the 'torch' "
             "backend can do: set synthesis.backend: torch")
    _require(t.method != "finetuned" or bool(t.init_from), "training.init_from",
             "method finetuned fine-tunes a model on the real pairs: give the model to start from "
             "(a .safetensors file, a run folder or 'starter')")
    dev = t.device
    _require(dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             "training.device", f"must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")
    _require(not self_training_enabled(cfg) or t.method in SYNTHESIS_METHODS, "training.method",
             f"self-training (data.unlabelled_images with self_training.rounds > 0) mixes synthetic and "
             f"pseudo-labelled images: use {', '.join(SYNTHESIS_METHODS)}, or set self_training.rounds: 0")
    if t.method == "learn2synth":
        _require(a.kind != "none", "augmentation.kind",
                 "learn2synth needs a learnable augmentation (parametric or nonparametric)")
        _require(not (a.kind == "parametric" and a.noise in ("none", "uniform") and not a.inu), "augmentation",
                 "the parametric augmentation has nothing to learn: enable learnable noise (fixed or "
                 "per_image) or inu")


SYNTHESIS_METHODS = ("learn2synth", "synthseg", "mixed", "synthmix")
"""Training methods that synthesise images from label maps (``data.label_maps`` needed)."""
REAL_PAIR_METHODS = ("learn2synth", "mixed", "finetuned", "supervised", "synthmix")
"""Training methods that use real (scan, labels) pairs (``data.real_images`` / ``real_labels``)."""


def check_data_present(cfg: Config) -> None:
    """The inputs a training method needs are listed (files are checked when loaded)."""
    d, method = cfg.data, cfg.training.method
    if method in SYNTHESIS_METHODS:
        _require(bool(d.label_maps), "data.label_maps", "list at least one label map (file or folder) for synthesis")
    if method in REAL_PAIR_METHODS and not cfg.recovery.enabled:
        _require(bool(d.real_images), "data.real_images", f"{method} needs real scans (files or folder)")
        _require(bool(d.real_labels), "data.real_labels", f"{method} needs the real scans' label maps")
    if cfg.synthesis.intensity_prior == "real" and method in SYNTHESIS_METHODS:
        _require(not cfg.recovery.enabled, "synthesis.intensity_prior",
                 "'real' estimates the contrast of real scans, and a recovery run has none: use 'uniform'")
        _require(bool(d.real_images) and bool(d.real_labels), "synthesis.intensity_prior",
                 "'real' estimates the class intensities from real scans with labels: list data.real_images "
                 "and data.real_labels, or use 'uniform'")
    if cfg.inspector.enabled and not cfg.recovery.enabled:
        _require(bool(d.real_images) and bool(d.real_labels), "inspector.enabled",
                 f"the Inspector compares real and synthetic images, and this {method} run has no real "
                 f"images: list data.real_images and data.real_labels, or turn inspector.enabled off")


def self_training_enabled(cfg: Config) -> bool:
    """Self-training is on: ``self_training.rounds`` > 0 and unlabelled scans listed."""
    return cfg.self_training.rounds > 0 and bool(cfg.data.unlabelled_images)
