"""The inner update of phi (Learn2Synth eq. 2) and the hypergradient of theta (eq. 4).

Notation: ``phi`` are the segmentation network's parameters, ``theta`` the augmentation's.
L_synth(phi, theta) = SoftDice(S_phi(A_theta(x_synth)), y_synth)          (eq. 1)
phi* = update(phi, g),  g = dL_synth/dphi                                  (eq. 2)
L_real(phi*) = SoftDice(S_phi*(x_real), y_real)                            (eq. 3)
dL_real/dtheta = v^T (dphi*/dg) (d^2 L_synth / dphi dtheta^T)              (eq. 4), v = dL_real/dphi*

The update rules (SGD; Adam with its moment history held constant, as in the reference code) act
elementwise, so D = dphi*/dg is diagonal and eq. 4 equals d/dtheta <dL_synth/dphi(phi, theta), u>
with the constant u = D v (one cheap JVP of the update rule).

Three routes to eq. 4:

* ``naive``: double backward through a differentiable update (the reference code's route).
* ``exact`` (default): theta acts on the image only, x_aug = A_theta(x_synth). By the chain rule
  eq. 4 = (dx_aug/dtheta)^T w with w = d/dx <dL_synth/dphi(phi, x), u> at x = x_aug, the mixed
  second derivative of L_synth in (x, phi) applied to u. w is computed forward-over-reverse
  (``torch.func.jvp`` in phi along u of ``torch.func.grad`` in x): the doubled pass back-propagates
  to the image only (no weight gradients), and the augmentation is then differentiated once.
* ``approx``: w by a central finite difference of grad_x L along u, in float64; a validation tool
  (see tests), not faster on GPUs where float64 is slow.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
_V_FLOOR = 1e-30
LossFn = Callable[[Tensor, Tensor], Tensor]


class InnerOptimizer:
    """The update() of eq. 2, written functionally so that it can be differentiated.

    ``kind='sgd'``: phi* = phi - lr g.
    ``kind='adam'``: phi* = phi - lr m_hat / (sqrt(v_hat) + eps) with m = b1 m_prev + (1 - b1) g,
    v = b2 v_prev + (1 - b2) g^2 and bias corrections; m_prev, v_prev are constants (detached).
    """

    def __init__(self, kind: str, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown inner optimiser {kind!r}")
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        self.m: Params = {}
        self.v: Params = {}
        self.t = 0

    def update(self, params: Params, grads: Params) -> Params:
        """phi* = update(phi, g), differentiable in params and grads; does not change the state."""
        if self.kind == "sgd":
            return {k: p - self.lr * grads[k] for k, p in params.items()}
        b1, b2 = self.betas
        t = self.t + 1
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        out = {}
        for k, p in params.items():
            g = grads[k]
            m = (1 - b1) * g if k not in self.m else b1 * self.m[k] + (1 - b1) * g
            v = (1 - b2) * g * g if k not in self.v else b2 * self.v[k] + (1 - b2) * g * g
            # sqrt of v clamped at a tiny floor: where g = 0 and v_prev = 0 (dead ReLU units) the
            # plain sqrt has an infinite derivative and the tangent / double backward give NaN; the
            # floor (<< eps) leaves the values unchanged and gives the derivative's true limit there
            out[k] = p - self.lr * (m / bc1) / (torch.sqrt((v / bc2).clamp_min(_V_FLOOR)) + self.eps)
        return out

    def tangent(self, params: Params, grads: Params, direction: Params) -> Params:
        """u = (dphi*/dg) direction: the update's (diagonal) Jacobian applied to ``direction``."""
        if self.kind == "sgd":
            return {k: -self.lr * direction[k] for k in params}
        names = list(params)
        fixed = {k: params[k].detach() for k in names}

        def step(*gs: Tensor) -> tuple[Tensor, ...]:
            new = self.update(fixed, dict(zip(names, gs)))
            return tuple(new[k] for k in names)

        _, tangents = torch.func.jvp(step, tuple(grads[k].detach() for k in names),
                                     tuple(direction[k].detach() for k in names))
        return dict(zip(names, tangents))

    @torch.no_grad()
    def commit(self, grads: Params) -> None:
        """Advance the optimiser state with the gradients that ``update`` used."""
        if self.kind == "adam":
            b1, b2 = self.betas
            for k, g in grads.items():
                g = g.detach()
                self.m[k] = (1 - b1) * g if k not in self.m else b1 * self.m[k] + (1 - b1) * g
                self.v[k] = (1 - b2) * g * g if k not in self.v else b2 * self.v[k] + (1 - b2) * g * g
        self.t += 1

    @torch.no_grad()
    def step_(self, params: Params, grads: Params) -> None:
        """In-place update of the parameter tensors (a plain, non-differentiated step)."""
        new = self.update({k: p.detach() for k, p in params.items()}, {k: g.detach() for k, g in grads.items()})
        for k, p in params.items():
            p.copy_(new[k])
        self.commit(grads)

    def state_tensors(self) -> dict[str, Tensor]:
        out = {f"m.{k}": t for k, t in self.m.items()}
        out.update({f"v.{k}": t for k, t in self.v.items()})
        return out

    def load_state(self, tensors: dict[str, Tensor], t: int) -> None:
        self.m = {k[2:]: v for k, v in tensors.items() if k.startswith("m.")}
        self.v = {k[2:]: v for k, v in tensors.items() if k.startswith("v.")}
        self.t = t


def _full(t: Tensor) -> Tensor:
    """Losses are computed in at least float32 (autocast may give bf16 logits)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _detached(params: Params) -> Params:
    return {k: p.detach() for k, p in params.items()}


def _theta_grads(x_aug: Tensor, theta: Params, w: Tensor) -> Params:
    """(dx_aug/dtheta)^T w: one backward through the augmentation."""
    names = [k for k, t in theta.items() if t.requires_grad]
    grads = torch.autograd.grad(x_aug, [theta[k] for k in names], grad_outputs=w, allow_unused=True)
    out = {k: torch.zeros_like(t) for k, t in theta.items()}
    for k, g in zip(names, grads):
        if g is not None:
            out[k] = g
    return out


def _augment_with_graph(aug: nn.Module, theta: Params, x: Tensor, draw: dict[str, Tensor]) -> tuple[Params, Tensor]:
    theta_req = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    with torch.enable_grad():
        x_aug = functional_call(aug, theta_req, (x, draw))
    return theta_req, x_aug


def hypergradient_exact(net: nn.Module, aug: nn.Module, phi: Params, theta: Params, x: Tensor,
                        draw: dict[str, Tensor], y: Tensor, u: Params, loss_fn: LossFn,
                        autocast: Callable[[], object] = nullcontext) -> Params:
    """Eq. 4 by forward-over-reverse: w = jvp_phi[grad_x L_synth](u), then (dx_aug/dtheta)^T w."""
    theta_req, x_aug = _augment_with_graph(aug, theta, x, draw)
    x0 = x_aug.detach()
    phi0 = _detached(phi)

    def grad_wrt_image(params: Params) -> Tensor:
        def loss_of_image(image: Tensor) -> Tensor:
            with autocast():
                logits = functional_call(net, params, (image,))
            return loss_fn(_full(logits), y)
        return torch.func.grad(loss_of_image)(x0)

    _, w = torch.func.jvp(grad_wrt_image, (phi0,), ({k: u[k].detach() for k in phi0},))
    return _theta_grads(x_aug, theta_req, w.to(x_aug.dtype))


def hypergradient_approx(net: nn.Module, aug: nn.Module, phi: Params, theta: Params, x: Tensor,
                         draw: dict[str, Tensor], y: Tensor, u: Params, loss_fn: LossFn,
                         rel_step: float = 1e-4) -> Params:
    """Eq. 4 with w by a central finite difference of grad_x L_synth along u, in float64."""
    theta_req, x_aug = _augment_with_graph(aug, theta, x, draw)
    x64 = x_aug.detach().double()
    phi64 = {k: p.detach().double() for k, p in phi.items()}
    u64 = {k: u[k].detach().double() for k in phi64}
    u_norm = torch.sqrt(sum((t * t).sum() for t in u64.values()))
    p_norm = torch.sqrt(sum((t * t).sum() for t in phi64.values()))
    if float(u_norm) == 0.0:
        return {k: torch.zeros_like(t) for k, t in theta.items()}
    eps = rel_step * float(p_norm + 1.0) / float(u_norm)

    def grad_at(sign: float) -> Tensor:
        params = {k: phi64[k] + sign * eps * u64[k] for k in phi64}
        image = x64.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(functional_call(net, params, (image,)), y)
            return torch.autograd.grad(loss, image)[0]

    w = (grad_at(1.0) - grad_at(-1.0)) / (2 * eps)
    return _theta_grads(x_aug, theta_req, w.to(x_aug.dtype))


def hypergradient_naive(net: nn.Module, aug: nn.Module, inner: InnerOptimizer, phi: Params, theta: Params,
                        x: Tensor, draw: dict[str, Tensor], y: Tensor, x_real: Tensor, y_real: Tensor,
                        loss_fn: LossFn, autocast: Callable[[], object] = nullcontext
                        ) -> tuple[Params, Tensor, Tensor, Params, Params]:
    """Eq. 4 by double backward through a differentiable update (the reference code's route).

    Returns (hypergradient, L_real at phi*, L_synth, g, phi*)."""
    phi_req = {k: p.detach().requires_grad_(True) for k, p in phi.items()}
    theta_req = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    with torch.enable_grad():
        x_aug = functional_call(aug, theta_req, (x, draw))
        with autocast():
            logits = functional_call(net, phi_req, (x_aug,))
        loss = loss_fn(_full(logits), y)
        names = list(phi_req)
        grads = torch.autograd.grad(loss, [phi_req[k] for k in names], create_graph=True)
        phi_star = inner.update(phi_req, dict(zip(names, grads)))
        with autocast():
            logits_real = functional_call(net, phi_star, (x_real,))
        loss_real = loss_fn(_full(logits_real), y_real)
        used = [k for k, t in theta_req.items()]
        hyper = torch.autograd.grad(loss_real, [theta_req[k] for k in used], allow_unused=True)
    out = {k: (g if g is not None else torch.zeros_like(theta_req[k])) for k, g in zip(used, hyper)}
    return (out, loss_real.detach(), loss.detach(), {k: g.detach() for k, g in zip(names, grads)},
            {k: p.detach() for k, p in phi_star.items()})


def loss_and_grads(net: nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn: LossFn,
                   autocast: Callable[[], object] = nullcontext) -> tuple[Tensor, Params]:
    """L and dL/dparams for the network run with ``params`` on (x, y) (first order)."""
    req = {k: p.detach().requires_grad_(True) for k, p in params.items()}
    with torch.enable_grad():
        with autocast():
            logits = functional_call(net, req, (x,))
        loss = loss_fn(_full(logits), y)
        names = list(req)
        grads = torch.autograd.grad(loss, [req[k] for k in names])
    return loss.detach(), dict(zip(names, grads))


def hyper_step(net: nn.Module, aug: nn.Module, inner: InnerOptimizer, x: Tensor, draw: dict[str, Tensor],
               y: Tensor, x_real: Tensor, y_real: Tensor, loss_fn: LossFn, mode: str = "exact",
               autocast: Callable[[], object] = nullcontext) -> tuple[Tensor, Tensor, Params, Params, Params]:
    """One Learn2Synth iteration without side effects.

    Returns (L_synth, L_real(phi*), g = dL_synth/dphi, phi*, hypergradient dL_real/dtheta)."""
    phi = dict(net.named_parameters())
    theta = dict(aug.named_parameters())
    if mode == "naive":
        hyper, loss_real, loss_synth, grads, phi_star = hypergradient_naive(
            net, aug, inner, phi, theta, x, draw, y, x_real, y_real, loss_fn, autocast)
        return loss_synth, loss_real, grads, phi_star, hyper
    with torch.no_grad():
        x_aug = functional_call(aug, _detached(theta), (x, draw))
    loss_synth, grads = loss_and_grads(net, phi, x_aug, y, loss_fn, autocast)
    phi_star = inner.update(_detached(phi), grads)
    loss_real, v = loss_and_grads(net, phi_star, x_real, y_real, loss_fn, autocast)
    u = inner.tangent(phi, grads, v)
    if mode == "exact":
        hyper = hypergradient_exact(net, aug, phi, theta, x, draw, y, u, loss_fn, autocast)
    elif mode == "approx":
        hyper = hypergradient_approx(net, aug, phi, theta, x, draw, y, u, loss_fn)
    else:
        raise ValueError(f"unknown hypergradient mode {mode!r}")
    return loss_synth, loss_real, grads, phi_star, hyper
