"""Segmentation losses and metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["soft_dice_loss", "hard_dice", "ignore_masked_dice_loss"]


def soft_dice_loss(logits: Tensor, labels: Tensor, eps: float = 1e-5, mask: Tensor | None = None) -> Tensor:
    """Soft Dice loss with squared denominators (V-Net / SynthSeg variant).

    ``p = softmax(logits, 1)``, ``y = one_hot(labels)``; for each class ``c``, with sums over the
    batch and all voxels, ``dice_c = 2 sum(p_c y_c) / (sum(p_c^2) + sum(y_c^2) + eps)``; the loss is
    ``1 - mean_c dice_c`` over *all* classes, background included. A class absent from the whole
    batch contributes ``dice_c = 0`` (a constant, with zero gradient), so the loss reaches 0 only
    when every class is present. Values lie in [0, 1]. Smooth: supports forward-mode AD and double
    backward.

    Parameters
    ----------
    logits: ``(B, C, *spatial)`` floating.
    labels: ``(B, *spatial)`` int64 class indices in ``0..C-1``.
    mask: optional ``(B, *spatial)`` bool or 0/1 weights: voxels where it is 0 are left out of every
        sum (self-training's confidence mask on pseudo-labels); all ones gives the unmasked loss.
    """
    if logits.dim() != labels.dim() + 1 or logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"logits (B, C, *spatial) and labels (B, *spatial) do not match: "
                         f"{tuple(logits.shape)} vs {tuple(labels.shape)}")
    n_classes = logits.shape[1]
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(labels.long(), n_classes).movedim(-1, 1).to(p.dtype)
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"mask and labels shapes differ: {tuple(mask.shape)} vs {tuple(labels.shape)}")
        weight = mask.unsqueeze(1).to(p.dtype)
        p, y = p * weight, y * weight
    dims = [0] + list(range(2, p.dim()))
    inter = (p * y).sum(dims)
    denom = (p * p).sum(dims) + (y * y).sum(dims)
    dice = 2 * inter / (denom + eps)
    return 1 - dice.mean()


@torch.no_grad()
def hard_dice(pred: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Per-class Dice ``2 |P_c & Y_c| / (|P_c| + |Y_c|)`` of two label maps, over the whole batch.

    ``pred`` and ``labels`` are ``(B, *spatial)`` integer maps with values in ``0..n_classes-1``.
    Returns a float tensor ``(n_classes,)``, NaN where a class is absent from both.
    """
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels shapes differ: {tuple(pred.shape)} vs {tuple(labels.shape)}")
    pred, labels = pred.reshape(-1).long(), labels.reshape(-1).long()
    for name, t in (("pred", pred), ("labels", labels)):
        if t.numel() and (t.min() < 0 or t.max() >= n_classes):
            raise ValueError(f"{name} values must be in [0, {n_classes - 1}], got [{int(t.min())}, {int(t.max())}]")
    n_pred = torch.bincount(pred, minlength=n_classes)
    n_true = torch.bincount(labels, minlength=n_classes)
    n_both = torch.bincount(pred[pred == labels], minlength=n_classes)
    denom = (n_pred + n_true).double()
    dice = torch.where(denom > 0, 2 * n_both.double() / denom.clamp(min=1), torch.full_like(denom, float("nan")))
    return dice.to(torch.get_default_dtype())


def ignore_masked_dice_loss(ignore_index: int):
    """A ``loss(logits, labels)`` that is :func:`soft_dice_loss` with the voxels labelled
    ``ignore_index`` masked out (self-training: low-confidence pseudo-labels carry that value)."""
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        keep = labels != ignore_index
        return soft_dice_loss(logits, torch.where(keep, labels, torch.zeros_like(labels)), mask=keep)

    return loss
