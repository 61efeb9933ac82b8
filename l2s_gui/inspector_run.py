"""The Inspector alongside a training run (config section ``inspector``): which images it sees, when
it learns, its fixed evaluation set and its :class:`~l2s_gui.events.InspectorEvent`.

Which images:

* "real": ``trainer.real_batches()`` (the real training pairs, or in recovery mode the preset-
  corrupted synthetic images), drawn with the trainer's generators restored afterwards, so that
  enabling the Inspector leaves the training's own random draws, and therefore phi and theta,
  exactly as they are without it;
* "synthetic": what the method trains on, A_theta(x) of the iteration's SynthSeg batch for
  learn2synth, synthseg, mixed and synthmix (without the real samples mixed puts in and the aligned
  real/synthetic mixes of synthmix: those are, or hold, real images), and the real training batch
  itself for the real-pair-only methods (finetuned, supervised: the map then shows a training vs
  validation gap, expected near 0.5);
* evaluation: the validation images (real side) vs a fixed draw of ``eval_batches`` synthetic
  batches (SynthSeg images and the augmentation's random draw fixed once, seeded; the current
  A_theta applied at every evaluation, so the accuracy follows theta), from the Inspector's own
  generators; for real-pair-only methods a fixed draw of real training batches.

It runs on rank 0 only (torchrun); its weights are not part of the exported model nor of the
checkpoints: a resumed run starts a fresh Inspector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .config import SYNTHESIS_METHODS
from .events import InspectorEvent
from .inspector import DomainInspector

if TYPE_CHECKING:
    from .trainer import Trainer

SEED_OFFSET = 104729
"""Offsets the Inspector's seeds (weights, masks, evaluation draw) from the training seed."""


class TrainingInspector:
    """The Inspector of one :class:`~l2s_gui.trainer.Trainer` (built by the trainer when
    ``inspector.enabled``): :meth:`after_step` after each iteration, :meth:`event` when due."""

    def __init__(self, trainer: Trainer):
        cfg = trainer.cfg.inspector
        self.cfg = cfg
        seed = trainer.cfg.training.seed + SEED_OFFSET
        self.inspector = DomainInspector(trainer.cfg.data.ndim, cfg.widths, cfg.grid, cfg.lr, cfg.mix_ratio,
                                         trainer.device, seed=seed)
        self._gen_data = torch.Generator().manual_seed(seed)
        self._gen_device = torch.Generator(device=trainer.device).manual_seed(seed)
        self._eval_synthetic: tuple[Tensor, dict[str, Tensor] | None] | None = None
        self.updates = 0

    def synthetic_side(self, trainer: Trainer) -> Tensor:
        """The iteration's "synthetic" batch: what the method trained on (module docstring)."""
        x, draw, _y = trainer._last_batch
        if trainer.method not in SYNTHESIS_METHODS:
            return x.detach()
        with torch.no_grad():
            return trainer.aug(x, draw).detach()

    def real_side(self, trainer: Trainer) -> Tensor:
        """A real batch from ``trainer.real_batches()``, the trainer's generators left as they were."""
        states = trainer.gen_data.get_state(), trainer.gen_device.get_state()
        try:
            with torch.no_grad():
                x, _y = trainer.real_batches()
        finally:
            trainer.gen_data.set_state(states[0])
            trainer.gen_device.set_state(states[1])
        return x.detach()

    def after_step(self, trainer: Trainer) -> float | None:
        """Update the Inspector when ``trainer.step`` (iterations done) is a multiple of
        ``update_every``; returns its loss, or None when it did not learn this iteration."""
        if trainer.step % self.cfg.update_every != 0:
            return None
        self.updates += 1
        return self.inspector.update(self.real_side(trainer), self.synthetic_side(trainer))

    def due(self, step: int, total: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == total

    def evaluation_synthetic(self, trainer: Trainer) -> Tensor:
        """The fixed synthetic evaluation images with the current A_theta applied (module docstring)."""
        if self._eval_synthetic is None:
            batch = trainer.cfg.data.batch_size
            images, draws = [], []
            with torch.no_grad():
                for _ in range(self.cfg.eval_batches):
                    if trainer.method in SYNTHESIS_METHODS:
                        maps = trainer.data.sample_generation_batch(batch, self._gen_data, trainer.device)
                        x, _y = trainer.synth(maps, self._gen_device)
                        draws.append(trainer.aug.sample(x, self._gen_device))
                    elif trainer.corruption is not None:  # recovery mode: the preset-corrupted training pairs
                        maps = trainer.data.sample_generation_batch(batch, self._gen_data, trainer.device)
                        x, _y = trainer.synth(maps, self._gen_device)
                        x = trainer.corruption(x, self._gen_device)
                    else:
                        x, _y = trainer.data.sample_real_batch(batch, self._gen_data, trainer.device)
                    images.append(x)
            self._eval_synthetic = torch.cat(images), (
                {k: torch.cat([d[k] for d in draws]) for k in draws[0]} if draws else None)
        x, draw = self._eval_synthetic
        if draw is None:
            return x
        with torch.no_grad():
            return torch.cat([trainer.aug(x[i:i + trainer.cfg.data.batch_size],
                                          {k: v[i:i + trainer.cfg.data.batch_size] for k, v in draw.items()})
                              for i in range(0, x.shape[0], trainer.cfg.data.batch_size)])

    def event(self, trainer: Trainer) -> InspectorEvent | None:
        """Accuracy on the validation images vs the fixed synthetic set, and the map P(real) over the
        real preview image (the validation item trainer.preview shows; one slice for 3D runs)."""
        val = trainer.validation_set()
        if val is None:
            return None
        images, labels = val
        index = int(labels.flatten(1).ne(0).sum(1).argmax())  # the item trainer.preview shows
        scores = self.inspector.evaluate(images, self.evaluation_synthetic(trainer), index,
                                         trainer.cfg.data.batch_size)
        real_map = trainer._preview_slice(torch.from_numpy(scores.real_map))
        preview_shape = trainer._preview_slice(images[index, 0]).shape
        return InspectorEvent(step=trainer.step, accuracy=scores.accuracy, accuracy_real=scores.accuracy_real,
                              accuracy_synthetic=scores.accuracy_synthetic, loss=scores.loss, grid=self.cfg.grid,
                              updates=self.updates, map=real_map.astype("float32"),
                              preview_shape=[int(s) for s in preview_shape])
