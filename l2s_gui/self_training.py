"""Self-training on unlabelled scans (GBA paper, Sec. II-D and Fig. 5), as rounds around the Trainer.

Round 0 is the configured training (the *teacher*), exactly as without self-training. Each round
r = 1, 2, ... then:

1. pseudo-labels: the current network segments every unlabelled scan on the training grid -- the
   scans are prepared as real scans are (:func:`~l2s_gui.data.scan_on_training_grid`: RAS order,
   normalised, resampled to ``data.voxel_size``) -- with the segmentation code
   (:func:`~l2s_gui.segment.predict_posteriors`: every slice of a 2D model, sliding windows of a 3D
   model, the left/right flipped pass averaged in when the label table allows one). The label is
   the argmax of the posteriors; voxels whose largest posterior is below
   ``self_training.confidence`` are marked ignored (:data:`ignore <SelfTraining.ignore_index>`);
2. the *student* trains ``self_training.steps`` iterations with theta fixed at the teacher's (no
   hyper-step): in each batch the last ``round(pseudo_fraction * B)`` samples (at least one) are
   (scan, pseudo-label) slices or patches drawn as real pairs are
   (:meth:`~l2s_gui.data.TrainingData.sample_pair_batch`), the others augmented synthetic images;
   the loss is the soft Dice with the ignored voxels masked out
   (:func:`~l2s_gui.losses.ignore_masked_dice_loss`). It starts from the teacher
   (``student_init: teacher``) or from round 0's starting weights (``initial``);
3. its mean validation Dice is compared with the previous round's: self-training stops when the
   change is below ``self_training.tolerance`` in absolute value (the paper's 0.3%) or after
   ``self_training.rounds`` rounds (:func:`stop_reason`). The student becomes the next teacher.

One run folder holds everything: the step count runs on across rounds, each round ends with a
checkpoint and a :class:`~l2s_gui.events.RoundEvent`, and ``model.safetensors`` is always the latest
network: at the end, the **last** student's. Stop ends cleanly with the current network; resume
works inside round 0 only (:func:`check_resumable`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .config import SYNTHESIS_METHODS, Config
from .data import PairVolumes, scan_on_training_grid
from .errors import ConfigError, InputError
from .events import DoneEvent, Event, LogEvent, RoundEvent
from .io import expand_paths
from .losses import ignore_masked_dice_loss
from .model_io import LoadedModel
from .runs import RunFolder
from .segment import flip_plan, predict_posteriors
from .trainer import Trainer

__all__ = ["SelfTraining", "add_unlabelled", "check_resumable", "load_unlabelled_scans", "pseudo_labels", "stop_reason"]

KEY = "data.unlabelled_images"
PseudoPairs = tuple[PairVolumes | None, float, bool]
"""(volumes of (scan, pseudo-label) pairs to sample or None, fraction of the voxels kept, stopped)."""


def add_unlabelled(data: dict, paths: Sequence[str]) -> dict:
    """A config mapping with ``paths`` (``l2s train --unlabelled``, relative to the working folder)
    added to ``data.unlabelled_images``."""
    section = data.setdefault("data", {})
    if not isinstance(section, dict):
        raise ConfigError("data: expected a section (mapping)")
    listed = section.get(KEY.split(".")[1]) or []
    listed = [listed] if isinstance(listed, str) else list(listed)
    section[KEY.split(".")[1]] = listed + [str(Path(p).expanduser().resolve()) for p in paths]
    return data


def load_unlabelled_scans(config: Config) -> list[tuple[str, Tensor]]:
    """(name, image) of every scan of ``data.unlabelled_images`` (files, folders in sorted order) on
    the training grid; one-line errors name the setting or the file."""
    paths = expand_paths(config.data.unlabelled_images, KEY)
    return [(str(p), scan_on_training_grid(p, config.data.voxel_size)) for p in paths]


def in_memory_scans(images: Sequence[Tensor], config: Config) -> list[tuple[str, Tensor]]:
    """The in-memory seam: normalised images on the training grid in RAS order, (X, Y, Z), or in 2D
    one (H, W) slice (it becomes a one-slice volume along ``data.slice_axis``)."""
    out = []
    for i, image in enumerate(images):
        image = torch.as_tensor(image, dtype=torch.float32).detach().cpu()
        if image.dim() == 2 and config.data.ndim == 2:
            image = image.unsqueeze(config.data.slice_axis)
        if image.dim() != 3:
            raise InputError(f"unlabelled image {i + 1}: expected (X, Y, Z) (or (H, W) in 2D), got "
                             f"{tuple(image.shape)}")
        out.append((f"unlabelled image {i + 1}", image))
    if not out:
        raise InputError(f"{KEY}: no unlabelled images given")
    return out


def stop_reason(round_index: int, change: float | None, tolerance: float, max_rounds: int) -> str:
    """Why self-training ends after ``round_index`` ('' when it goes on): the mean validation Dice
    changed by less than ``tolerance`` since the previous round, or ``max_rounds`` are done.

    >>> [stop_reason(r, c, 0.003, 3) for r, c in [(0, None), (1, 0.05), (2, 0.001)]]
    ['', '', 'converged: the mean Dice changed by +0.0010 (tolerance 0.003)']
    """
    if round_index >= 1 and change is not None and abs(change) < tolerance:
        return f"converged: the mean Dice changed by {change:+.4f} (tolerance {tolerance:g})"
    if round_index >= max_rounds:
        return f"{max_rounds} round{'s' * (max_rounds != 1)} done (self_training.rounds)"
    return ""


def check_resumable(config: Config, step: int) -> None:
    """A self-training run resumes inside round 0 only: later, the teacher of the pseudo-labels is gone."""
    if step >= config.training.steps:
        raise InputError(f"resuming self-training after round 0 (checkpoint at step {step}, round 0 ends at "
                         f"{config.training.steps}) is not supported: use the run's model.safetensors, or start "
                         f"anew with `l2s train CONFIG -o RUN --overwrite`")


@torch.no_grad()
def pseudo_labels(trainer: Trainer, image: Tensor, confidence: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(labels, kept) of one scan (X, Y, Z) on the training grid: the argmax class of the network's
    posteriors (flipped pass averaged in when the label table allows it), ``ignore_index`` where the
    largest posterior is below ``confidence``; ``kept`` the boolean mask of the voxels kept."""
    model = LoadedModel(net=trainer.net, augmentation=trainer.aug, table=trainer.table, config=trainer.cfg,
                        spatial_shape=list(trainer.data.spatial_shape), step=trainer.step)
    flip, _why = flip_plan(model)
    was_training = trainer.net.training
    try:
        post = predict_posteriors(model, image, trainer.device, batch_size=trainer.cfg.data.batch_size,
                                  flip_classes=flip)
    finally:
        trainer.net.train(was_training)
    best, labels = post.clone().float().max(0)
    kept = best >= confidence
    return torch.where(kept, labels, torch.full_like(labels, ignore_index)).cpu(), kept.cpu()


class SelfTraining:
    """The rounds of the module docstring; iterate :meth:`run` for the events (as :meth:`Trainer.run`).

    ``unlabelled_images``: the in-memory seam (:func:`in_memory_scans`), used instead of
    ``data.unlabelled_images`` (e.g. an experiment's corrupted synthetic images in recovery mode).
    Raises a one-line error before anything is written when the method or the data does not allow
    self-training."""

    def __init__(self, config: Config, run: RunFolder | None = None, resume: bool = False,
                 control: Callable[[], str | None] | None = None,
                 unlabelled_images: Sequence[Tensor] | None = None):
        st = config.self_training
        if st.rounds < 1:
            raise ConfigError("self_training.rounds: set at least 1 round to self-train")
        if config.training.method not in SYNTHESIS_METHODS:
            raise ConfigError(f"training.method: self-training mixes synthetic and pseudo-labelled images; use "
                              f"{', '.join(SYNTHESIS_METHODS)} (or set self_training.rounds: 0)")
        self.cfg = config
        self.run_folder = run
        self._control = control or (run.read_control if run is not None else (lambda: None))
        self.scans = in_memory_scans(unlabelled_images, config) if unlabelled_images is not None \
            else load_unlabelled_scans(config)
        self.teacher = Trainer(config, run=run, resume=resume, control=control)
        self.current = self.teacher
        """The latest round's trainer (its network is the run's model)."""
        if resume:
            check_resumable(config, self.teacher.step)
        if self.teacher.validation_set() is None:
            raise ConfigError("self_training: it stops on the validation Dice, and this run has none: list at least "
                              "2 real pairs with data.val_fraction > 0, use recovery mode (recovery.enabled), or "
                              "set self_training.rounds: 0")
        self.ignore_index = self.teacher.n_classes
        self.history: list[RoundEvent] = []

    # events
    def _emit(self, event: Event) -> Iterator[Event]:
        if self.teacher.writes and self.run_folder is not None:
            self.run_folder.append_event(event)
        yield event

    def _stage(self, trainer: Trainer, first: bool) -> Generator[Event, None, bool]:
        """One round's training; returns whether it finished (a stop or an error has ended the run,
        its DoneEvent written and yielded)."""
        finished = False
        for event in trainer.run(first=first, last=False):
            if isinstance(event, DoneEvent):
                finished = event.reason == "finished"
                if not finished:
                    yield event
            else:
                yield event
        return finished

    def _round_event(self, trainer: Trainer, index: int, kept_fraction: float | None) -> RoundEvent:
        val = trainer.validate()
        mean = float("nan") if val is None else val.mean_dice
        previous = self.history[-1].mean_dice if self.history else None
        change = None if previous is None else mean - previous
        stop = stop_reason(index, change, self.cfg.self_training.tolerance, self.cfg.self_training.rounds)
        return RoundEvent(step=trainer.step, round=index, mean_dice=mean, dice=dict(val.dice) if val else {},
                          change=change, kept_fraction=kept_fraction, stop=stop)

    # pseudo-labels and students
    def _pseudo_pairs(self, teacher: Trainer, index: int) -> Generator[Event, None, PseudoPairs]:
        """Pseudo-label every scan: (volumes to sample, or None when every scan came out as
        background; fraction of the voxels kept; whether a stop was asked meanwhile)."""
        st = self.cfg.self_training
        images: list[Tensor] = []
        labels: list[Tensor] = []
        names: list[str] = []
        kept = total = 0
        dtype = torch.uint8 if self.ignore_index < 256 else torch.int32
        for name, image in self.scans:
            if self._control() == "stop":
                return None, 0.0, True
            lab, keep = pseudo_labels(teacher, image, st.confidence, self.ignore_index)
            kept += int(keep.sum())
            total += keep.numel()
            if not bool(lab.ne(0).any()):
                yield from self._emit(LogEvent(step=teacher.step, level="warning",
                                               message=f"round {index}: {name}: all background, left out"))
                continue
            images.append(image)
            labels.append(lab.to(dtype))
            names.append(name)
        fraction = kept / max(total, 1)
        yield from self._emit(LogEvent(
            step=teacher.step, level="info",
            message=f"self-training round {index}: {len(images)}/{len(self.scans)} scans pseudo-labelled, "
                    f"{100 * fraction:.1f}% of the voxels at confidence >= {st.confidence:g}"))
        return (teacher.data.extra_pairs(images, labels, names) if images else None), fraction, False

    def _student(self, teacher: Trainer, index: int, pairs: PairVolumes) -> Trainer:
        """The round's student with its seams: no hyper-step, pseudo-labelled samples mixed in, the
        masked loss, the round's own learning-rate schedule."""
        st, t = self.cfg.self_training, self.cfg.training
        start, steps = teacher.step, st.steps or t.steps
        cfg = copy.deepcopy(teacher.cfg)
        cfg.training.steps = start + steps
        if st.student_init == "teacher":
            student = teacher
            student.cfg = cfg
        else:
            student = Trainer(cfg, run=self.run_folder, control=self._control, data=teacher.data,
                              augmentation=teacher.aug)
            student.step, student.elapsed = start, teacher.elapsed
            student.gen_data.manual_seed(t.seed * 1000 + 101 * index)
        data, device = student.data, student.device
        n_pseudo = min(cfg.data.batch_size, max(1, round(st.pseudo_fraction * cfg.data.batch_size)))
        base_mix = student.mix_batch

        def mix(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            x, y = base_mix(x, y)
            x_p, y_p = data.sample_pair_batch(pairs, n_pseudo, student.gen_data, device)
            x, y = x.clone(), y.clone()
            x[-n_pseudo:], y[-n_pseudo:] = x_p.to(x.dtype), y_p.to(y.dtype)
            return x, y

        def learning_rate(step: int) -> float:
            if t.lr_segmentation_schedule == "constant":
                return t.lr_segmentation
            frac = min(max((step - start) / max(steps - 1, 1), 0.0), 1.0)
            final = t.lr_segmentation_final
            return t.lr_segmentation * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))

        student.hyper_schedule = lambda step: False
        student.mix = mix
        student.loss_fn = ignore_masked_dice_loss(self.ignore_index)
        student.segmentation_lr = learning_rate
        return student

    # the loop
    def run(self) -> Iterator[Event]:
        """Round 0, then students until :func:`stop_reason` says stop; the events of every round, one
        RoundEvent per round, and one DoneEvent at the end."""
        teacher = self.teacher
        if not (yield from self._stage(teacher, first=True)):
            return
        event = self._round_event(teacher, 0, None)
        self.history.append(event)
        yield from self._emit(event)
        why = event.stop
        while not why:
            index = event.round + 1
            pairs, kept, stopped = yield from self._pseudo_pairs(teacher, index)
            if stopped:
                yield from teacher.finish_run("stopped")
                return
            if pairs is None:
                why = "no pseudo-labels: every unlabelled scan was segmented as background"
                break
            student = self._student(teacher, index, pairs)
            if not (yield from self._stage(student, first=False)):
                return
            event = self._round_event(student, index, kept)
            self.history.append(event)
            yield from self._emit(event)
            why = event.stop
            teacher = self.current = student
        yield from self._emit(LogEvent(step=teacher.step, level="info",
                                       message=f"self-training ends after round {event.round} ({why}); the model "
                                               f"is round {event.round}'s network"))
        yield from teacher.finish_run("finished")
