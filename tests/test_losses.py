"""soft_dice_loss and hard_dice."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jvp

from l2s_gui.losses import hard_dice, soft_dice_loss


def onehot_logits(labels, n, scale):
    return scale * F.one_hot(labels, n).movedim(-1, 1).double()


@pytest.mark.parametrize("spatial", [(8, 7), (4, 5, 6)])
def test_perfect_prediction_limit(spatial):
    labels = torch.randint(0, 3, (2, *spatial))
    labels.view(-1)[:3] = torch.tensor([0, 1, 2])  # every class present
    losses = [soft_dice_loss(onehot_logits(labels, 3, s), labels).item() for s in (5.0, 20.0, 60.0)]
    assert losses[0] > losses[1] > losses[2] >= 0
    assert losses[2] < 1e-6


def test_range_and_value():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 6, 6))
    loss = soft_dice_loss(logits, labels)
    assert 0.0 <= loss.item() <= 1.0
    p = logits.softmax(1)
    dices = []
    for c in range(4):
        y = (labels == c).double()
        dices.append(2 * (p[:, c] * y).sum() / ((p[:, c] ** 2).sum() + (y ** 2).sum() + 1e-5))
    torch.testing.assert_close(loss, 1 - torch.stack(dices).mean())
    # completely wrong confident prediction -> about 1
    wrong = onehot_logits((labels + 1) % 4, 4, 60.0)
    assert soft_dice_loss(wrong, labels).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        soft_dice_loss(logits, labels[0])


def test_background_included_and_absent_class():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    # class 2 absent everywhere: contributes dice 0, loss -> 1/3 for a perfect prediction
    loss = soft_dice_loss(onehot_logits(labels, 3, 60.0), labels)
    assert loss.item() == pytest.approx(1 / 3, abs=1e-6)


def test_jvp_and_double_backward():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 5))
    t = torch.randn_like(logits)
    _, tan = jvp(lambda z: soft_dice_loss(z, labels), (logits.detach(),), (t,))
    h = 1e-6
    fd = (soft_dice_loss(logits.detach() + h * t, labels) - soft_dice_loss(logits.detach() - h * t, labels)) / (2 * h)
    torch.testing.assert_close(tan, fd, rtol=1e-6, atol=1e-9)
    # forward-over-reverse Hessian-vector product == double backward
    _, hvp = jvp(grad(lambda z: soft_dice_loss(z, labels)), (logits.detach(),), (t,))
    (g,) = torch.autograd.grad(soft_dice_loss(logits, labels), logits, create_graph=True)
    (hvp2,) = torch.autograd.grad((g * t).sum(), logits)
    torch.testing.assert_close(hvp, hvp2)
    small = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    lab = torch.tensor([[[0, 1, 1], [0, 0, 1], [1, 0, 0]]])
    assert torch.autograd.gradcheck(lambda z: soft_dice_loss(z, lab), (small,))
    assert torch.autograd.gradgradcheck(lambda z: soft_dice_loss(z, lab), (small,))


def test_hard_dice_hand_example():
    pred = torch.tensor([[[0, 0, 1], [1, 1, 2], [0, 3, 3]]])
    true = torch.tensor([[[0, 1, 1], [1, 1, 2], [2, 0, 0]]])
    d = hard_dice(pred, true, 5)
    assert d.shape == (5,)
    # class 0: pred 3, true 3, both 1 -> 2/6; class 1: pred 3, true 4, both 3 -> 6/7
    # class 2: pred 1, true 2, both 1 -> 2/3; class 3: pred 2, true 0 -> 0; class 4: absent -> NaN
    expected = [2 / 6, 6 / 7, 2 / 3, 0.0]
    assert d[:4].tolist() == pytest.approx(expected)
    assert math.isnan(d[4].item())
    assert hard_dice(true, true, 3).tolist() == [1.0, 1.0, 1.0]
    # batch of 3D maps
    a = torch.randint(0, 3, (2, 4, 4, 4))
    assert torch.equal(hard_dice(a, a, 3), torch.ones(3))
    with pytest.raises(ValueError):
        hard_dice(pred, true, 3)
