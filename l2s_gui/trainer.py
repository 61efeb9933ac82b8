"""The bilevel trainer (Learn2Synth eq. 1-5) and its baselines, as a generator of typed events.

Per iteration (``method='learn2synth'``):
1. synthetic pass: label maps -> SynthSeg image x -> A_theta(x) -> S_phi; phi <- update(phi, g)
   (eq. 1-2); only phi changes;
2. every ``hyper_every`` iterations, real pass: L_real(phi*) (eq. 3) and theta <- Adam(theta, eq. 4)
   (eq. 5); real images never train phi.

Baselines with the same code: ``synthseg`` (theta fixed at its initial values: only step 1) and
``supervised`` (phi trained on the real training pairs, no synthesis, no augmentation); ``synthmix``
(:mod:`l2s_gui.synthmix`): step 1 on batches partly made of real scans mixed with aligned synthetic
images, theta fixed.

With ``torch.distributed`` initialised (``torchrun``), every rank draws its own batches and the
gradients of phi and theta are averaged across ranks before each update (what
DistributedDataParallel does for a plain step; done explicitly here because the hyper-step
differentiates through the update); rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import Tensor

from .augment import build_augmentation, theta_groups
from .augment.base import Augmentation
from .config import SYNTHESIS_METHODS, Config, check_data_present
from .data import TrainingData
from .device import autocast_factory, describe_device, is_out_of_memory, resolve_device
from .errors import ConfigError, DeviceMemoryError, InputError, L2SError, out_of_memory_message
from .events import CheckpointEvent, DoneEvent, Event, LogEvent, PreviewEvent, StartEvent, StepEvent, ValidationEvent
from .hypergrad import InnerOptimizer, hyper_step, loss_and_grads
from .losses import hard_dice, soft_dice_loss
from .model_io import build_network, export_model, load_warm_start
from .recovery_corruption import PresetCorruption
from .runs import RunFolder
from .synthesis import build_generator, set_intensity_prior
from .synthesis.intensity_prior import class_intensities, describe, generation_prior
from .synthmix import AlignedSynthesis, aligned_mix, mix_count, recovery_aligned_pairs

OUTER_ADAM_EPS = 1e-15
"""Adam epsilon for theta: hypergradients are of order 1e-7..1e-9 (lr times a second derivative),
so the usual 1e-8 would swamp them; Adam's step is otherwise independent of the gradient scale."""


def _cosine(value: float, final: float, first: int, last: int, step: int) -> float:
    """A half cosine from ``value`` at ``first`` to ``value * final`` at ``last`` (flat outside)."""
    frac = min(max((step - first) / max(last - first, 1), 0.0), 1.0)
    return value * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * frac)))


class StopTraining(Exception):
    pass


def error_message(exc: BaseException, where: object = None) -> str:
    """The one-line message of an L2SError, or of an OSError as 'PATH: cannot write (reason)'
    (``where``, e.g. the run folder, when the error names no file)."""
    if isinstance(exc, OSError):
        from .errors import os_error_reason

        return f"{exc.filename or where or 'run folder'}: cannot write ({os_error_reason(exc)})"
    if isinstance(exc, L2SError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


SyntheticBatch = tuple[Tensor, Tensor, dict[str, Tensor]]
"""(x_synth, y_synth, draw): a SynthSeg image batch, its training classes and the augmentation's
random draw (``A_theta.sample``), so that every pass of a hyper-step sees the same A_theta(x)."""
RealBatch = tuple[Tensor, Tensor]
"""(x_real, y_real) of eq. 3."""
StepHook = Callable[["Trainer", float, float | None], None]
"""Called after each iteration of :meth:`Trainer.run` with (trainer, L_synth or L_supervised,
L_real or None); ``trainer.step`` is the number of iterations done."""


class Trainer:
    """Train from a :class:`Config`; iterate :meth:`run` to get events.

    ``run``: a :class:`RunFolder` that receives config, metrics, previews and checkpoints (rank 0).
    ``control``: polled every iteration; returns None, 'pause', 'resume' or 'stop'. Defaults to the
    run folder's control file. :meth:`request_stop` stops in-process.

    Seams (keyword arguments, kept as public attributes of the same names, which may also be
    replaced after construction, e.g. by a benchmark that fixes a batch it drew from the defaults):

    * ``synthetic_batches() -> SyntheticBatch``: default :meth:`sample_synthetic_batch`;
    * ``real_batches() -> RealBatch``: default :meth:`sample_real_batch`;
    * ``augmentation``: the module A_theta (default: built from ``config.augmentation``), kept as
      ``aug``;
    * ``hyper_schedule(step) -> bool``: whether iteration ``step`` (0-based) takes the hyper-step;
      default :meth:`is_hyper_step` (``hyper_start``, ``hyper_every``);
    * ``segmentation_lr(step)`` / ``theta_lr(step) -> float``: the learning rates of eq. 2 and
      eq. 5; defaults :meth:`segmentation_learning_rate` / :meth:`theta_learning_rate`;
    * ``on_step``: a :data:`StepHook` called after every iteration of :meth:`run`;
    * ``loss_fn(logits, labels) -> Tensor``: the segmentation loss of every pass; default
      :func:`~l2s_gui.losses.soft_dice_loss`;
    * ``mix(x_aug, y) -> (x, y)``: the batch of a plain synthetic step from the augmented synthetic
      batch; default :meth:`mix_batch` (real pairs mixed in for 'mixed', else unchanged).
    """

    def __init__(self, config: Config, run: RunFolder | None = None, resume: bool = False,
                 control: Callable[[], str | None] | None = None, data: TrainingData | None = None, *,
                 synthetic_batches: Callable[[], SyntheticBatch] | None = None,
                 real_batches: Callable[[], RealBatch] | None = None,
                 augmentation: Augmentation | None = None,
                 hyper_schedule: Callable[[int], bool] | None = None,
                 segmentation_lr: Callable[[int], float] | None = None,
                 theta_lr: Callable[[int], float] | None = None,
                 on_step: StepHook | None = None,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None):
        self.cfg = config
        self.run_folder = run
        self.rank, self.world = _distributed()
        self.writes = run is not None and self.rank == 0
        self._control = control or (run.read_control if run is not None else (lambda: None))
        self._requested: str | None = None
        t = config.training
        check_data_present(config)
        self.device = resolve_device(t.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.autocast = autocast_factory(self.device, t.precision)
        self.method = t.method
        torch.manual_seed(t.seed)
        n_levels = len(config.network.widths)
        rec = config.recovery
        self.data = data or TrainingData.from_config(
            config.data, seed=t.seed, need_label_maps=self.method in SYNTHESIS_METHODS or rec.enabled,
            need_real=not rec.enabled and (self.method != "synthseg" or bool(config.data.real_images)),
            pad_multiple=2 ** (n_levels - 1),
            val_label_maps=rec.val_label_maps if rec.enabled else (),
            val_map_fraction=config.data.val_fraction if rec.enabled else 0.0)
        self.table = self.data.table
        self.n_classes = self.data.n_classes
        self.net = build_network(config, self.n_classes).to(self.device)
        if augmentation is None:
            augmentation = build_augmentation(config.augmentation, config.data.ndim)
        self.aug: Augmentation = augmentation.to(self.device)
        vox = list(config.data.voxel_size) * (3 // max(len(config.data.voxel_size), 1)) or None
        if vox and config.data.ndim == 2:
            vox = [v for i, v in enumerate(vox) if i != config.data.slice_axis]
        self.synth = build_generator(config.synthesis, self.data.n_generation_labels, config.data.ndim,
                                     self.data.generation_classes,
                                     flip_permutation=self.data.generation_flip_permutation(),
                                     flip_axis=self.data.flip_axis,
                                     extracerebral=self.data.generation_extracerebral(),
                                     voxel_size_mm=vox).to(self.device)
        self.corruption = PresetCorruption(config.recovery).to(self.device) if config.recovery.enabled else None
        self.aligned = (AlignedSynthesis(config.synthesis, self.n_classes, config.data.ndim, vox).to(self.device)
                        if self.method == "synthmix" and self.corruption is None else None)
        self.prior_message = self._apply_intensity_prior()
        self._val_cache: tuple[Tensor, Tensor] | None = None
        self.inner = InnerOptimizer(t.inner_optimizer, t.lr_segmentation)
        theta = [p for p in self.aug.parameters() if p.requires_grad]
        self.learns_theta = self.method == "learn2synth" and bool(theta)
        self.outer = (torch.optim.Adam(theta_groups(self.aug, t.lr_inu_scale), lr=t.lr_augmentation,
                                       eps=OUTER_ADAM_EPS) if theta else None)
        self.gen_data = torch.Generator().manual_seed(t.seed * 1000 + self.rank)
        self.gen_device = torch.Generator(device=self.device).manual_seed(t.seed * 1000 + 500 + self.rank)
        self.step = 0
        self.elapsed = 0.0
        resuming = resume and self.run_folder is not None and self.run_folder.latest_checkpoint() is not None
        if not resuming:
            if t.init_from:
                load_warm_start(t.init_from, self.table, config, net=self.net)
            if t.init_theta_from:
                load_warm_start(t.init_theta_from, self.table, config, augmentation=self.aug)
        self._broadcast_parameters()
        if resume:
            self._load_latest_checkpoint()
        self.synthetic_batches = synthetic_batches or self.sample_synthetic_batch
        self.real_batches = real_batches or self.sample_real_batch
        self.hyper_schedule = hyper_schedule or self.is_hyper_step
        self.segmentation_lr = segmentation_lr or self.segmentation_learning_rate
        self.theta_lr = theta_lr or self.theta_learning_rate
        self.on_step = on_step
        self.loss_fn = loss_fn or soft_dice_loss
        self.mix = mix or self.mix_batch
        self.inspector = self._build_inspector()

    def _apply_intensity_prior(self) -> str:
        """``synthesis.intensity_prior: real``: the generator's GMM drawn around the class intensities
        of the real training pairs (:mod:`l2s_gui.synthesis.intensity_prior`); returns the log line."""
        if self.cfg.synthesis.intensity_prior != "real" or self.method not in SYNTHESIS_METHODS:
            return ""
        pairs = self.data.train_pairs
        if not pairs:
            raise ConfigError(f"synthesis.intensity_prior: 'real' estimates the class intensities from the real "
                              f"training pairs, and all {self.data.n_val} pairs are held out for validation: "
                              f"lower data.val_fraction or list more pairs")
        stats = class_intensities([p.image for p in pairs], [p.labels for p in pairs], self.n_classes)
        set_intensity_prior(self.synth, *generation_prior(stats, self.data.generation_classes))
        self.synth.to(self.device)  # the prior's buffers on the device once, not copied every draw
        if self.aligned is not None:  # SynthMix's aligned images: one generation label per class
            set_intensity_prior(self.aligned.generator, stats.mean, stats.std)
            self.aligned.to(self.device)
        return describe(stats, self.table.names)

    def _build_inspector(self):
        """The Inspector (config ``inspector``; rank 0 only), or None: :mod:`l2s_gui.inspector_run`."""
        if not self.cfg.inspector.enabled or self.rank != 0:
            return None
        from .inspector_run import TrainingInspector

        return TrainingInspector(self)

    # control
    def request_stop(self) -> None:
        self._requested = "stop"

    def _poll(self) -> str | None:
        if self._requested is not None:
            return self._requested
        return self._control() if self.rank == 0 else None

    def _wait_if_paused(self) -> Iterator[Event]:
        command = self._poll()
        if command == "pause":
            yield self._log("info", "paused")
            self._write_state("paused")
            while command == "pause":
                time.sleep(0.2)
                command = self._poll()
            if command != "stop":
                yield self._log("info", "resumed")
                self._write_state("running")
        if self.world > 1:
            flag = torch.tensor([1.0 if command == "stop" else 0.0], device=self.device)
            dist.all_reduce(flag)
            command = "stop" if flag.item() > 0 else None
        if command == "stop":
            raise StopTraining

    # one iteration
    def _params(self) -> dict[str, Tensor]:
        return dict(self.net.named_parameters())

    def _all_reduce(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.world == 1:
            return grads
        for g in grads.values():
            dist.all_reduce(g)
            g /= self.world
        return grads

    def _broadcast_parameters(self) -> None:
        if self.world > 1:
            for p in list(self.net.parameters()) + list(self.aug.parameters()):
                dist.broadcast(p.data, src=0)

    def sample_synthetic_batch(self) -> SyntheticBatch:
        """Label maps -> SynthSeg images (``synthesis``) and the augmentation's draw, on the device."""
        labels = self.data.sample_generation_batch(self.cfg.data.batch_size, self.gen_data, self.device)
        with torch.no_grad():
            x, y = self.synth(labels, self.gen_device)
            draw = self.aug.sample(x, self.gen_device)
        return x, y, draw

    def sample_real_batch(self) -> RealBatch:
        """Real training pairs, or (recovery experiments) synthetic images with preset corruption."""
        if self.corruption is None:
            return self.data.sample_real_batch(self.cfg.data.batch_size, self.gen_data, self.device)
        labels = self.data.sample_generation_batch(self.cfg.data.batch_size, self.gen_data, self.device)
        with torch.no_grad():
            x, y = self.synth(labels, self.gen_device)
            return self.corruption(x, self.gen_device), y

    def validation_set(self) -> tuple[Tensor, Tensor] | None:
        """The fixed validation images and labels (None without validation data)."""
        if self._val_cache is None:
            if self.corruption is not None:
                gen_data = torch.Generator().manual_seed(self.cfg.training.seed + 7919)
                gen_device = torch.Generator(device=self.device).manual_seed(self.cfg.training.seed + 7919)
                images, labels = [], []
                with torch.no_grad():
                    for _ in range(self.cfg.recovery.val_batches):  # from held-out maps, never synthesised from
                        maps = self.data.sample_generation_batch(self.cfg.data.batch_size, gen_data, self.device,
                                                                 held_out=True)
                        x, y = self.synth(maps, gen_device)
                        images.append(self.corruption(x, gen_device))
                        labels.append(y)
                self._val_cache = torch.cat(images), torch.cat(labels)
            elif self.data.n_val:
                self._val_cache = self.data.validation_batch(self.device)
        return self._val_cache

    def mix_real(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed SynthSeg (Learn2Synth Sec. 4.2.1): the first ``round(mixed_real_fraction * B)``
        samples (at least one) of the synthetic batch ``(x, y)`` replaced by real training pairs."""
        n = min(x.shape[0], max(1, round(self.cfg.training.mixed_real_fraction * x.shape[0])))
        x_real, y_real = self.real_batches()
        x, y = x.clone(), y.clone()
        x[:n], y[:n] = x_real[:n].to(x.dtype), y_real[:n].to(y.dtype)
        return x, y

    def sample_aligned_batch(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` aligned pairs for SynthMix: ``(x_real, A_theta(G'(y)), y)`` (:mod:`l2s_gui.synthmix`),
        x_real and y from ``real_batches``; in recovery mode the corrupted "real" image and a second
        contrast draw of the same deformed generation-label map."""
        with torch.no_grad():
            if self.corruption is None:
                assert self.aligned is not None  # built for synthmix outside recovery mode
                x_real, y = (t[:n] for t in self.real_batches())
                x_synth = self.aligned(y, self.gen_device)
            else:
                labels = self.data.sample_generation_batch(n, self.gen_data, self.device)
                x_real, x_synth, y = recovery_aligned_pairs(self.synth, self.corruption, labels, self.gen_device)
            x_synth = self.aug(x_synth, self.aug.sample(x_synth, self.gen_device))
        return x_real, x_synth, y

    def synthmix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """SynthMix (Sec. 2.2): the first ``round(synthmix_fraction * B)`` samples (at least one) of the
        synthetic batch ``(x, y)`` replaced by aligned mixes ``M * x_real + (1 - M) * A_theta(G'(y_real))``
        (eq. 2) with the real labels (eq. 3: both images share them)."""
        t = self.cfg.training
        n = mix_count(t.synthmix_fraction, x.shape[0])
        x_real, x_synth, y_real = self.sample_aligned_batch(n)
        x, y = x.clone(), y.clone()
        x[:n] = aligned_mix(x_real, x_synth, t.synthmix_grid, t.synthmix_ratio, self.gen_device).to(x.dtype)
        y[:n] = y_real.to(y.dtype)
        return x, y

    def mix_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The default ``mix``: :meth:`mix_real` for method 'mixed', :meth:`synthmix` for 'synthmix',
        else ``(x, y)`` unchanged."""
        if self.method == "mixed":
            return self.mix_real(x, y)
        return self.synthmix(x, y) if self.method == "synthmix" else (x, y)

    def is_hyper_step(self, step: int) -> bool:
        """The configured schedule: iteration ``step`` (0-based) takes the hyper-step when it is at
        least ``hyper_start`` and ``step + 1`` is a multiple of ``hyper_every``."""
        t = self.cfg.training
        return step >= t.hyper_start and (step + 1) % t.hyper_every == 0

    def train_step(self, hyper: bool | None = None) -> tuple[float, float | None]:
        """One iteration; returns (L_synth or L_supervised, L_real or None).

        ``hyper``: take the hyper-step (True) or a plain synthetic step (False); None: as
        ``hyper_schedule`` says, when theta is learnt. Does not advance ``step`` (:meth:`run` does)."""
        phi = self._params()
        self.inner.lr = self.segmentation_lr(self.step)
        if self.method not in SYNTHESIS_METHODS:  # supervised, finetuned: real pairs only
            x, y = self.real_batches()
            loss, grads = loss_and_grads(self.net, phi, x, y, self.loss_fn, self.autocast)
            self.inner.step_(phi, self._all_reduce(grads))
            self._last_batch: tuple[Tensor, Any, Tensor] = (x, x, y)  # (x, draw, y); no draw here
            return float(loss), None
        if hyper is None:
            hyper = self.learns_theta and self.hyper_schedule(self.step)
        elif hyper and not self.learns_theta:
            raise ValueError(f"method {self.method!r} with this augmentation learns no theta: no hyper-step")
        x, y, draw = self.synthetic_batches()
        if hyper:
            t = self.cfg.training
            x_real, y_real = self.real_batches()
            loss_synth, loss_real, grads, phi_star, hypergradient = hyper_step(
                self.net, self.aug, self.inner, x, draw, y, x_real, y_real, self.loss_fn,
                mode=t.hypergradient, autocast=self.autocast, exact_route=t.hypergradient_route)
            if self.world > 1:
                grads = self._all_reduce(grads)
                phi_star = self.inner.update({k: p.detach() for k, p in phi.items()}, grads)
            with torch.no_grad():
                for k, p in phi.items():
                    p.copy_(phi_star[k])
            self.inner.commit(grads)
            hypergradient = self._all_reduce(hypergradient)
            for name, p in self.aug.named_parameters():
                p.grad = hypergradient[name].to(p.dtype)
            assert self.outer is not None  # learns_theta: theta has parameters
            for group in self.outer.param_groups:
                group["lr"] = self.theta_lr(self.step) * group.get("lr_scale", 1.0)
            self.outer.step()
            self.outer.zero_grad(set_to_none=True)
            self.aug.constrain_()
            result: tuple[float, float | None] = float(loss_synth), float(loss_real)
        else:
            with torch.no_grad():
                x_aug = self.aug(x, draw)
            x_train, y_train = self.mix(x_aug, y)
            loss, grads = loss_and_grads(self.net, phi, x_train, y_train, self.loss_fn, self.autocast)
            self.inner.step_(phi, self._all_reduce(grads))
            result = float(loss), None
        self._last_batch = (x, draw, y)
        return result

    def theta_learning_rate(self, step: int) -> float:
        """theta's learning rate at iteration ``step`` (0-based): constant, or a half cosine from
        ``lr_augmentation`` at the first hyper-step (``hyper_start``) to ``lr_augmentation *
        lr_augmentation_final`` at the last step."""
        t = self.cfg.training
        if t.lr_augmentation_schedule == "constant":
            return t.lr_augmentation
        return _cosine(t.lr_augmentation, t.lr_augmentation_final, t.hyper_start, t.steps - 1, step)

    def segmentation_learning_rate(self, step: int) -> float:
        """phi's learning rate at iteration ``step``: constant, or a half cosine over the run."""
        t = self.cfg.training
        if t.lr_segmentation_schedule == "constant":
            return t.lr_segmentation
        return _cosine(t.lr_segmentation, t.lr_segmentation_final, 0, t.steps - 1, step)

    # evaluation
    @torch.no_grad()
    def validate(self) -> ValidationEvent | None:
        val = self.validation_set()
        if val is None:
            return None
        images, labels = val
        scores = torch.zeros(self.n_classes, device=self.device)
        counts = torch.zeros(self.n_classes, device=self.device)
        for start in range(0, images.shape[0], self.cfg.data.batch_size):
            x = images[start:start + self.cfg.data.batch_size]
            y = labels[start:start + self.cfg.data.batch_size]
            with self.autocast():
                pred = self.net(x).argmax(1)
            batch_dice = hard_dice(pred, y, self.n_classes)
            # the classes the labels hold (a class only predicted is an error of the true classes,
            # already in their Dice; scoring it 0 on its own would count those voxels twice)
            present = torch.bincount(y.flatten(), minlength=self.n_classes)[:self.n_classes] > 0
            scores[present] += batch_dice[present] * x.shape[0]
            counts[present] += x.shape[0]
        values = self.table.values
        dice = {str(values[c]): float(scores[c] / counts[c]) for c in range(1, self.n_classes) if counts[c] > 0}
        mean = float(np.mean(list(dice.values()))) if dice else float("nan")
        return ValidationEvent(step=self.step, dice=dice, mean_dice=mean)

    @torch.no_grad()
    def preview(self) -> PreviewEvent | None:
        x, draw, y = self._last_batch
        j = int(y.flatten(1).ne(0).sum(1).argmax())  # the sample with the most foreground (not a pole slice)
        x, y = x[j:j + 1], y[j:j + 1]
        if self.method not in SYNTHESIS_METHODS:
            augmented = x
        else:
            augmented = self.aug(x, {k: v[j:j + 1] for k, v in draw.items()})
        val = self.validation_set()
        if val is not None:  # the validation item with the most foreground (not an edge slice)
            i = int(val[1].flatten(1).ne(0).sum(1).argmax())
            real, real_labels = val[0][i:i + 1], val[1][i:i + 1]
        else:
            real, real_labels = x[:1], y[:1]
        with self.autocast():
            pred = self.net(real).argmax(1)
        take = self._preview_slice
        return PreviewEvent(
            step=self.step,
            synthetic=take(x[0, 0]).astype(np.float32),
            augmented=take(augmented[0, 0]).astype(np.float32),
            real=take(real[0, 0]).astype(np.float32),
            prediction=self.table.to_values(take(pred[0])).astype(np.int32),
            real_labels=self.table.to_values(take(real_labels[0])).astype(np.int32),
        )

    def _preview_slice(self, t: Tensor) -> np.ndarray:
        a = t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
        if a.ndim == 3:
            axis = self.cfg.data.slice_axis
            a = np.take(a, a.shape[axis] // 2, axis=axis)
        return a

    def theta(self) -> dict:
        return self.aug.theta()

    # checkpoints
    @property
    def _folder(self) -> RunFolder:
        """The run folder, on the paths that write (``self.writes``) or resume: it exists there."""
        assert self.run_folder is not None
        return self.run_folder

    def save_checkpoint(self) -> CheckpointEvent | None:
        if not self.writes:
            return None
        tmp, final = self._folder.new_checkpoint_dir(self.step)
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"aug.{k}": v for k, v in self.aug.state_dict().items()})
        tensors.update({f"inner.{k}": v for k, v in self.inner.state_tensors().items()})
        outer_meta = None
        if self.outer is not None:
            sd = self.outer.state_dict()
            for idx, state in sd["state"].items():
                for key, value in state.items():
                    tensors[f"outer.{idx}.{key}"] = torch.as_tensor(value)
            outer_meta = sd["param_groups"]
        tensors["rng.data"] = self.gen_data.get_state()
        tensors["rng.device"] = self.gen_device.get_state()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self._folder.save_tensors(tensors, tmp / "state.safetensors")
        meta = {"step": self.step, "inner_t": self.inner.t, "outer_param_groups": outer_meta,
                "elapsed_s": self.elapsed, "label_table": self.table.to_json()}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        self._folder.commit_checkpoint(tmp, final, self.cfg.training.keep_checkpoints)
        self.export(self._folder.model_path)
        return CheckpointEvent(step=self.step, path=str(final))

    def export(self, path) -> None:
        export_model(path, self.net, self.aug, self.table, self.cfg, list(self.data.spatial_shape), self.step,
                     theta=self.theta())

    def _load_latest_checkpoint(self) -> None:
        folder = self.run_folder.latest_checkpoint() if self.run_folder else None
        if folder is None:
            return
        meta = json.loads((folder / "state.json").read_text())
        if meta["label_table"] != self.table.to_json():
            raise InputError(f"{self._folder.path}: the label maps' labels changed since this run started; "
                             f"resume with the original data or start a new run")
        tensors = load_file(str(folder / "state.safetensors"))
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.aug.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aug.")})
        self.inner.load_state({k[6:]: v.to(self.device) for k, v in tensors.items() if k.startswith("inner.")},
                              meta["inner_t"])
        if self.outer is not None and meta["outer_param_groups"] is not None:
            state: dict[int, dict] = {}
            for k, v in tensors.items():
                if k.startswith("outer."):
                    _, idx, key = k.split(".", 2)
                    state.setdefault(int(idx), {})[key] = v if key != "step" else v.float()
            self.outer.load_state_dict({"state": state, "param_groups": meta["outer_param_groups"]})
        self.gen_data.set_state(tensors["rng.data"])
        self.gen_device.set_state(tensors["rng.device"].to(self.gen_device.get_state().device))
        self.step = int(meta["step"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))

    # the loop
    def _log(self, level: str, message: str) -> LogEvent:
        return LogEvent(step=self.step, level=level, message=message)

    def _write_state(self, status: str, message: str = "") -> None:
        if self.writes:
            import os

            self._folder.write_state(status=status, step=self.step, total_steps=self.cfg.training.steps,
                                        pid=os.getpid(), device=describe_device(self.device), message=message)

    def _emit(self, event: Event | None) -> Iterator[Event]:
        if event is None:
            return
        if self.writes:
            self._folder.append_event(event)
        if self.rank == 0:
            yield event

    def run(self, *, first: bool = True, last: bool = True) -> Iterator[Event]:
        """Train until ``training.steps``; yield events. Errors end with a DoneEvent('error').

        A run in stages (self-training rounds) calls ``run`` once per stage: ``first=False`` keeps the
        control file (a stop sent between stages still stops); ``last=False``: a stage that finishes
        saves its checkpoint and yields its DoneEvent('finished') without writing it or the state,
        and :meth:`finish_run` ends the whole run later (a stop or an error ends it at once)."""
        t = self.cfg.training
        total = t.steps
        resumed = self.step > 0
        if self.writes and first:
            self._folder.clear_control()
        self._write_state("running")
        yield from self._emit(StartEvent(step=self.step, total_steps=total, device=describe_device(self.device),
                                         method=self.method, n_classes=self.n_classes,
                                         label_values=list(self.table.values), resumed=resumed))
        if self.prior_message and not resumed:
            yield from self._emit(self._log("info", self.prior_message))
        times: deque[float] = deque(maxlen=20)
        reason, message = "finished", ""
        try:
            while self.step < total:
                yield from self._wait_if_paused()
                start = time.perf_counter()
                loss_synth, loss_real = self.train_step()
                self._check_losses(loss_synth, loss_real)
                self.step += 1
                if self.on_step is not None:
                    self.on_step(self, loss_synth, loss_real)
                if self.inspector is not None:
                    self.inspector.after_step(self)
                duration = time.perf_counter() - start
                self.elapsed += duration
                times.append(duration)
                if self.step % t.log_every == 0 or self.step == total:
                    rate = len(times) / sum(times) if sum(times) > 0 else 0.0
                    yield from self._emit(StepEvent(step=self.step, loss_synth=loss_synth, loss_real=loss_real,
                                                    theta=self.theta(), it_per_s=rate, elapsed_s=self.elapsed))
                if self.step % t.preview_every == 0 or self.step == total:
                    yield from self._emit(self.preview())
                if self.step % t.val_every == 0 or self.step == total:
                    yield from self._emit(self.validate())
                if self.inspector is not None and self.inspector.due(self.step, total):
                    yield from self._emit(self.inspector.event(self))
                if self.step % t.checkpoint_every == 0 and self.step != total:
                    yield from self._emit(self.save_checkpoint())
                    self._write_state("running")
        except (StopTraining, KeyboardInterrupt):
            reason = "stopped"
        except (L2SError, OSError) as exc:
            reason, message = "error", error_message(exc, self._folder.path if self.writes else None)
        except Exception as exc:  # noqa: BLE001 - reported to the user, details in the run folder
            if is_out_of_memory(exc):
                reason, message = "error", str(DeviceMemoryError(out_of_memory_message(
                    f"training step {self.step + 1}", str(self.device))))
            else:
                reason, message = "error", f"internal error at step {self.step + 1}: {type(exc).__name__}: {exc}"
                if self.writes:
                    self._folder.write_error_log(traceback.format_exc())
        yield from self._end(reason, message, last)

    def _end(self, reason: str, message: str, last: bool = True) -> Iterator[Event]:
        """The final checkpoint, state and DoneEvent, each guarded: a failing write (disk full) turns
        the run into an error but still ends it cleanly; non-finite weights are never saved."""
        if (reason != "error" or self.step > 0) and not getattr(self, "_diverged", False) and self._finite_weights():
            try:
                yield from self._emit(self.save_checkpoint())
            except Exception as exc:  # noqa: BLE001 - whatever happens, the run still ends cleanly
                if reason != "error":
                    reason, message = "error", f"the final checkpoint could not be saved: {error_message(exc)}"
                if self.writes:
                    self._folder.clean_leftovers()  # frees the unfinished checkpoint's space
        if not last and reason == "finished":
            if self.rank == 0:
                yield DoneEvent(step=self.step, reason=reason, model_path=self._model_path())
            return
        yield from self.finish_run(reason, message)

    def _model_path(self) -> str | None:
        return str(self._folder.model_path) if self.writes and self._folder.model_path.is_file() else None

    def finish_run(self, reason: str, message: str = "") -> Iterator[Event]:
        """The run's final state and DoneEvent (after its last stage, :meth:`run` with ``last=False``)."""
        model_path = self._model_path()
        done = DoneEvent(step=self.step, reason=reason, model_path=model_path, message=message)
        try:
            self._write_state(reason, message)
            if self.writes:
                self._folder.append_event(done)
        except (L2SError, OSError):
            pass  # nothing more can be written; the message still reaches the caller
        if self.rank == 0:
            yield done

    def _check_losses(self, *losses: float | None) -> None:
        """Stop a diverging run: a NaN or Inf loss ends it with an error; the step's weights are not
        saved (the last good checkpoint and model stay)."""
        bad = any(loss is not None and not np.isfinite(loss) for loss in losses)
        if self.world > 1:  # every rank stops together (else the others wait in all_reduce forever)
            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            dist.all_reduce(flag)
            bad = flag.item() > 0
        if bad:
            self._diverged = True
            shown = " / ".join(str(v) for v in losses if v is not None)
            raise L2SError(f"training diverged at step {self.step + 1} (loss {shown}); lower "
                           f"training.lr_segmentation / lr_augmentation (the diverged weights are not saved)")

    def _finite_weights(self) -> bool:
        with torch.no_grad():
            return all(bool(torch.isfinite(p).all()) for p in list(self.net.parameters()) + list(self.aug.parameters()))
