"""The inner update of phi (Learn2Synth eq. 2) and the hypergradient of theta (eq. 4).

Notation: ``phi`` are the segmentation network's parameters, ``theta`` the augmentation's.
L_synth(phi, theta) = SoftDice(S_phi(A_theta(x_synth)), y_synth)          (eq. 1)
phi* = update(phi, g),  g = dL_synth/dphi                                  (eq. 2)
L_real(phi*) = SoftDice(S_phi*(x_real), y_real)                            (eq. 3)
dL_real/dtheta = v^T (dphi*/dg) (d^2 L_synth / dphi dtheta^T)              (eq. 4), v = dL_real/dphi*

The update rules (SGD; Adam with its moment history held constant, as in the reference code) act
elementwise, so D = dphi*/dg is diagonal and eq. 4 equals d/dtheta <dL_synth/dphi(phi, theta), u>
with the constant u = D v (closed form, :meth:`InnerOptimizer.tangent`).

Three modes for eq. 4:

* ``naive``: double backward through a differentiable update (the reference code's route).
* ``exact`` (default), two routes giving the same value (``exact_route`` of :func:`hyper_step`, the
  config key ``training.hypergradient_route``):

  - ``"reverse"`` (default): the synthetic pass that gives g is taken with ``create_graph=True``,
    and once u is known, eq. 4 = d/dtheta <g, u> is one more backward through that graph
    (reverse-over-reverse). The synthetic forward and backward are computed once and serve both
    the inner update and the hypergradient (about 9 convolution-sized passes per iteration where a
    plain step is 3; the second backward computes no weight gradient, :func:`_engine_needs`).
    Convolutions in that pass go through :class:`DecomposedConvolutions`: their backward is written
    with first-order convolution ops (input gradient as a transposed convolution, weight gradient
    as a weight-only ``convolution_backward``), so that the second backward never reaches
    ``_convolution_double_backward``'s weight term, a convolution whose kernel is the whole image,
    computed even when no weight gradient is asked for (what makes the naive route 13-59x a plain
    step on GPUs, GUIDE Sec. 3).
  - ``"jvp"``: theta acts on the image only, x_aug = A_theta(x_synth). By the chain rule eq. 4 =
    (dx_aug/dtheta)^T w with w = d/dx <dL_synth/dphi(phi, x), u> at x = x_aug, computed
    forward-over-reverse (``torch.func.jvp`` in phi along u of ``torch.func.grad`` in x); the
    synthetic forward and the backward to the image are recomputed (about 12 passes).

* ``approx``: w by a central finite difference of grad_x L along u, in float64; a validation tool
  (see tests), not faster on GPUs where float64 is slow, and unreliable where the network is only
  piecewise smooth (ReLU, max-pooling switches).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.profiler import record_function

Params = dict[str, Tensor]
Autocast = Callable[[], AbstractContextManager]
"""A zero-argument factory of the networks' autocast context (or ``nullcontext``)."""
LossFn = Callable[[Tensor, Tensor], Tensor]
_V_FLOOR = 1e-30
EXACT_ROUTES = ("reverse", "jvp")
"""Routes of ``mode='exact'``: reverse-over-reverse (the default) and forward-over-reverse."""


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

    @torch.no_grad()
    def tangent(self, params: Params, grads: Params, direction: Params) -> Params:
        """u = (dphi*/dg) direction: the update's (diagonal) Jacobian applied to ``direction``.

        Closed form (a ``torch.func.jvp`` of :meth:`update` costs a large fixed overhead per
        parameter tensor, and loses all precision where |g| >> sqrt(v_prev)). For Adam, with
        a = (1 - b1) / bc1, c = (1 - b2) / bc2, r = sqrt(v_hat) and D = r + eps::

            d(m_hat / D)/dg = a / D - c m_hat g / (r D^2)
                            = (a eps + (a b2 v_prev / bc2 - c b1 m_prev g / bc1) / r) / D^2

        (the g^2 terms of a v_hat - c m_hat g cancel exactly, so the second form has no
        cancellation: at the first step it is a eps / D^2, whose first form is the difference of two
        terms ~1/|g|); where v_hat is at the floor of :meth:`update` the derivative is a / D."""
        if self.kind == "sgd":
            return {k: -self.lr * direction[k].detach() for k in params}
        b1, b2 = self.betas
        t = self.t + 1
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        a, c = (1 - b1) / bc1, (1 - b2) / bc2
        out = {}
        for k in params:
            g, d = grads[k].detach(), direction[k].detach()
            v_hat = c * g * g if k not in self.v else (b2 / bc2) * self.v[k] + c * g * g
            root = torch.sqrt(v_hat.clamp_min(_V_FLOOR))
            denom = root + self.eps
            rest = torch.zeros_like(g)
            if k in self.v:
                rest = rest + (a * b2 / bc2) * self.v[k]
            if k in self.m:
                rest = rest - (c * b1 / bc1) * self.m[k] * g
            slope = (a * self.eps + rest / root) / (denom * denom)
            slope = torch.where(v_hat >= _V_FLOOR, slope, a / denom)
            out[k] = (-self.lr) * slope * d
        return out

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


def _phase(label: str) -> record_function:
    """A named range in ``torch.profiler`` traces (``benchmarks/profile_hypergrad.py``); no effect on values."""
    return record_function(f"phase: {label}")


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


def _engine_needs(t: Tensor) -> bool:
    """Whether the running backward pass uses the gradient of ``t`` (an input of a custom function).

    ``ctx.needs_input_grad`` only says that ``t`` requires grad; the engine prunes built-in nodes by
    what the pass asks for (``torch.autograd.grad``'s inputs), not custom ones. The hypergradient's
    second backward asks for theta only, so without this each convolution also computed a weight
    gradient that is thrown away (and the synthetic pass an input gradient of the first layer)."""
    try:
        return bool(torch._C._will_engine_execute_node(get_gradient_edge(t).node))
    except (AttributeError, RuntimeError):  # no such private API, or not inside a backward pass
        return True


class _Convolution(torch.autograd.Function):
    """``aten.convolution`` whose backward is made of first-order convolution ops (see
    :class:`DecomposedConvolutions`), so that a second backward through it stays cheap."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], padding: list[int],
                dilation: list[int], transposed: bool, output_padding: list[int], groups: int) -> Tensor:
        return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding,
                                          groups)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, transposed, output_padding, groups = ctx.conv
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] and _engine_needs(x):
            if transposed:  # the input gradient of a transposed convolution is a convolution
                grad_x = torch.ops.aten.convolution(grad, weight, None, stride, padding, dilation, False,
                                                    [0] * len(stride), groups)
            else:  # ... and that of a convolution a transposed one (output_padding restores the size)
                extra = [x.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                           + dilation[i] * (weight.shape[2 + i] - 1) + 1) for i in range(len(stride))]
                grad_x = torch.ops.aten.convolution(grad, weight, None, stride, padding, dilation, True, extra, groups)
        if ctx.needs_input_grad[1] and _engine_needs(weight):
            grad_w = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, transposed,
                                                         output_padding, groups, [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum([0] + list(range(2, grad.dim())))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def _as_list(value, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * n


_CONVOLUTIONS = {getattr(F, f"conv{n}d"): (n, False) for n in (1, 2, 3)}
_CONVOLUTIONS.update({getattr(F, f"conv_transpose{n}d"): (n, True) for n in (1, 2, 3)})
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


class DecomposedConvolutions(TorchFunctionMode):
    """Within this context, ``F.conv{1,2,3}d`` and ``F.conv_transpose{1,2,3}d`` (hence ``nn.ConvNd``)
    run through :class:`_Convolution`: same values, but their backward is built from a transposed
    convolution (input gradient) and a weight-only ``convolution_backward`` (weight gradient).

    Differentiating that backward again (reverse-over-reverse) then costs about two convolutions
    per layer, all of them ordinary ones, whereas the built-in ``ConvolutionBackward`` node's double
    backward also evaluates a weight-gradient term as a convolution with the gradient image as kernel
    whenever an input-gradient adjoint arrives, asked for or not. Under autocast, inputs, weights
    and biases are cast to the autocast dtype outside the function (casts that autograd records)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        spec = _CONVOLUTIONS.get(func)
        if spec is None:
            return func(*args, **kwargs)
        n, transposed = spec
        bound = dict(zip(_CONV_T_ARGS if transposed else _CONV_ARGS, args))
        bound.update(kwargs)
        if isinstance(bound.get("padding", 0), str):  # padding='same'/'valid': keep the built-in op
            return func(*args, **kwargs)
        x, weight, bias = bound["input"], bound["weight"], bound.get("bias")
        conv_args = (_as_list(bound.get("stride", 1), n), _as_list(bound.get("padding", 0), n),
                     _as_list(bound.get("dilation", 1), n), transposed,
                     _as_list(bound.get("output_padding", 0), n) if transposed else [0] * n,
                     int(bound.get("groups", 1)))
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
            with torch.autocast(device_type, enabled=False):
                return _Convolution.apply(x, weight, bias, *conv_args)
        return _Convolution.apply(x, weight, bias, *conv_args)


def synthetic_pass_with_graph(net: nn.Module, aug: nn.Module, phi: Params, theta: Params, x: Tensor,
                              draw: dict[str, Tensor], y: Tensor, loss_fn: LossFn,
                              autocast: Autocast = nullcontext
                              ) -> tuple[Tensor, list[str], tuple[Tensor, ...], list[str], list[Tensor]]:
    """L_synth and g = dL_synth/dphi as differentiable functions of theta (``create_graph=True``).

    Returns (L_synth, parameter names, g per name, theta names, theta leaves)."""
    phi_req = {k: p.detach().requires_grad_(True) for k, p in phi.items()}
    theta_names = list(theta)
    theta_req = [theta[k].detach().requires_grad_(True) for k in theta_names]
    names = list(phi_req)
    with torch.enable_grad():
        x_aug = functional_call(aug, dict(zip(theta_names, theta_req)), (x, draw))
        with DecomposedConvolutions():
            with autocast():
                logits = functional_call(net, phi_req, (x_aug,))
            loss = loss_fn(_full(logits), y)
            grads = torch.autograd.grad(loss, [phi_req[k] for k in names], create_graph=True)
    return loss, names, grads, theta_names, theta_req


def hypergradient_reverse(names: list[str], grads: tuple[Tensor, ...], theta_names: list[str],
                          theta_req: list[Tensor], u: Params) -> Params:
    """Eq. 4 = d/dtheta <g, u>: one backward through the graph of :func:`synthetic_pass_with_graph`."""
    used = [(g, u[k].detach().to(g.dtype)) for k, g in zip(names, grads) if g.requires_grad]
    if not used:
        return {k: torch.zeros_like(t) for k, t in zip(theta_names, theta_req)}
    with torch.enable_grad():
        hyper = torch.autograd.grad([g for g, _ in used], theta_req, grad_outputs=[d for _, d in used],
                                    allow_unused=True)
    return {k: (h if h is not None else torch.zeros_like(t)) for k, t, h in zip(theta_names, theta_req, hyper)}


def hypergradient_jvp(net: nn.Module, aug: nn.Module, phi: Params, theta: Params, x: Tensor,
                        draw: dict[str, Tensor], y: Tensor, u: Params, loss_fn: LossFn,
                        autocast: Autocast = nullcontext) -> Params:
    """Eq. 4 by forward-over-reverse (the 'jvp' route of mode 'exact'): w = jvp_phi[grad_x
    L_synth](u), then (dx_aug/dtheta)^T w."""
    theta_req, x_aug = _augment_with_graph(aug, theta, x, draw)
    x0 = x_aug.detach()
    phi0 = _detached(phi)

    def grad_wrt_image(params: Params) -> Tensor:
        def loss_of_image(image: Tensor) -> Tensor:
            with autocast():
                logits = functional_call(net, params, (image,))
            return loss_fn(_full(logits), y)
        return torch.func.grad(loss_of_image)(x0)

    w = torch.func.jvp(grad_wrt_image, (phi0,), ({k: u[k].detach() for k in phi0},))[1]
    return _theta_grads(x_aug, theta_req, w.to(x_aug.dtype))


def hypergradient_approx(net: nn.Module, aug: nn.Module, phi: Params, theta: Params, x: Tensor,
                         draw: dict[str, Tensor], y: Tensor, u: Params, loss_fn: LossFn,
                         rel_step: float = 1e-4) -> Params:
    """Eq. 4 with w by a central finite difference of grad_x L_synth along u, in float64."""
    theta_req, x_aug = _augment_with_graph(aug, theta, x, draw)
    x64 = x_aug.detach().double()
    phi64 = {k: p.detach().double() for k, p in phi.items()}
    u64 = {k: u[k].detach().double() for k in phi64}
    u_norm = torch.sqrt(functools.reduce(operator.add, [(t * t).sum() for t in u64.values()]))
    p_norm = torch.sqrt(functools.reduce(operator.add, [(t * t).sum() for t in phi64.values()]))
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
                        loss_fn: LossFn, autocast: Autocast = nullcontext
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
                   autocast: Autocast = nullcontext) -> tuple[Tensor, Params]:
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
               autocast: Autocast = nullcontext, exact_route: str = "reverse"
               ) -> tuple[Tensor, Tensor, Params, Params, Params]:
    """One Learn2Synth iteration without side effects.

    ``mode``: 'exact' (by ``exact_route``: 'reverse', reverse-over-reverse, or 'jvp',
    forward-over-reverse), 'naive' or 'approx' (see the module docstring). Returns (L_synth,
    L_real(phi*), g = dL_synth/dphi, phi*, hypergradient dL_real/dtheta)."""
    phi: Params = dict(net.named_parameters())
    theta: Params = dict(aug.named_parameters())
    if mode == "naive":
        with _phase("naive hypergradient"):
            hyper, loss_real, loss_synth, grads, phi_star = hypergradient_naive(
                net, aug, inner, phi, theta, x, draw, y, x_real, y_real, loss_fn, autocast)
        return loss_synth, loss_real, grads, phi_star, hyper
    if mode not in ("exact", "approx"):
        raise ValueError(f"unknown hypergradient mode {mode!r}")
    route = exact_route if mode == "exact" else None
    if route is not None and route not in EXACT_ROUTES:
        raise ValueError(f"unknown exact route {route!r} (one of {EXACT_ROUTES})")
    if route == "reverse":
        with _phase("synthetic pass with graph"):
            loss, names, graph_grads, theta_names, theta_req = synthetic_pass_with_graph(
                net, aug, phi, theta, x, draw, y, loss_fn, autocast)
        loss_synth = loss.detach()
        grads = {k: g.detach() for k, g in zip(names, graph_grads)}
    else:
        with _phase("first-order pass (synthetic)"):
            with torch.no_grad():
                x_aug = functional_call(aug, _detached(theta), (x, draw))
            loss_synth, grads = loss_and_grads(net, phi, x_aug, y, loss_fn, autocast)
    phi_star = inner.update(_detached(phi), grads)
    with _phase("first-order pass (real)"):
        loss_real, v = loss_and_grads(net, phi_star, x_real, y_real, loss_fn, autocast)
    with _phase("inner update tangent"):
        u = inner.tangent(phi, grads, v)
    with _phase(f"{mode} hypergradient" + (f" ({route})" if route else "")):
        if route == "reverse":
            hyper = hypergradient_reverse(names, graph_grads, theta_names, theta_req, u)
        elif route == "jvp":
            hyper = hypergradient_jvp(net, aug, phi, theta, x, draw, y, u, loss_fn, autocast)
        else:
            hyper = hypergradient_approx(net, aug, phi, theta, x, draw, y, u, loss_fn)
    return loss_synth, loss_real, grads, phi_star, hyper
