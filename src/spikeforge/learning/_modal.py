"""A neuron's sub-threshold dynamics as decoupled exponential modes, read from its spec.

The event-based simulator needs the exact solution of the spec's continuous-time face
between events. For the linear neurons (IF, LIF, CubaLIF, ALIF, their readouts) the
derivative is ``ds/dt = A s + c + b x``; it is read off ``spec.derivative`` by evaluating it
at the origin and at unit vectors (and checked to be linear at random points). With
``A = V diag(lam) V^-1`` the modal coordinates ``y = V^-1 s`` evolve independently:
``y(t0 + d) = exp(lam d) y(t0) + phi1(lam, d) c_hat`` with ``phi1 = (exp(lam d) - 1) / lam``
(``d`` when ``lam = 0``). The spike condition ``spec.threshold`` is linear in ``s`` too,
so ``g = g_hat . y - g0`` in modal coordinates. Everything is differentiable in the
parameters (``tau`` enters through ``lam`` and ``V``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..neurons._spec import NeuronSpec

__all__ = ["Modes", "modes_of", "NotLinear", "crossing", "bracket", "find_root", "attach", "driven"]


class NotLinear(ValueError):
    """A neuron whose continuous-time form is not linear below threshold (EventProp's exact
    solver needs it to be), or that declares no continuous-time form at all."""


def _unit(d: int, k: int, like: Tensor) -> tuple:
    return tuple(torch.ones_like(like) if j == k else torch.zeros_like(like) for j in range(d))


def _stack(values: tuple, like: Tensor) -> Tensor:
    return torch.stack(torch.broadcast_tensors(*(torch.as_tensor(v, dtype=like.dtype) + like for v in values)), -1)


def _affine(fn, d: int, like: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """``(M, m0)`` with ``fn(s) = M s + m0`` for a function of the state tuple returning a
    tuple (``M``: ``(..., k, d)``) after checking linearity at a random point."""
    zero = _unit(d, -1, like)
    m0 = fn(zero)
    cols = [tuple(a - b for a, b in zip(fn(_unit(d, k, like)), m0)) for k in range(d)]
    M = torch.stack([_stack(c, like) for c in cols], -1)           # (..., k, d)
    m0 = _stack(m0, like)
    g = torch.Generator().manual_seed(1)
    s = torch.randn(d, generator=g, dtype=like.dtype).mul(3.0).add(0.5)
    got = _stack(fn(tuple(s[k] + like for k in range(d))), like).detach()
    want = (M @ s.to(M.dtype) + m0).detach()
    tol = 1000 * torch.finfo(like.dtype).eps
    if not torch.allclose(got, want, rtol=tol, atol=tol * (1 + want.abs().max().item())):
        raise NotLinear(f"{name} is not linear in the state (EventProp's exact solver needs linear "
                        f"sub-threshold dynamics: IF, LIF, CubaLIF, ALIF, LI, CubaLI)")
    return M, m0


@dataclass(frozen=True)
class Modes:
    """The modal form of one layer: eigenvalues ``lam`` ``(n, d)``, ``V``/``Vinv``
    ``(n, d, d)``, the constant drive ``c_hat`` ``(n, d)`` (leak and bias), the jump per unit
    of input weight ``b_hat`` ``(n, d)``, and the threshold ``g_hat . y - g0``."""

    lam: Tensor
    V: Tensor
    Vinv: Tensor
    c_hat: Tensor
    b_hat: Tensor
    g_hat: Tensor | None
    g0: Tensor | None
    y_inf: Tensor | None = None     # the fixed point -c_hat / lam; None when a mode has lam = 0

    def to_state(self, y: Tensor) -> Tensor:
        return (self.V @ y.unsqueeze(-1)).squeeze(-1)

    def from_state(self, s: Tensor) -> Tensor:
        return (self.Vinv @ s.unsqueeze(-1)).squeeze(-1)

    def advance(self, y: Tensor, d: Tensor) -> Tensor:
        """``y`` ``(B, n, d)`` after a time ``d`` ``(B, n)`` (>= 0) of free evolution:
        ``y + expm1(lam d) (y - y_inf)`` towards the fixed point ``y_inf = -c_hat / lam``
        (``y + c_hat d`` for a mode with ``lam = 0``, as IF's membrane)."""
        d = d.unsqueeze(-1)
        if self.y_inf is None:
            return y + phi1(self.lam, d) * (self.lam * y + self.c_hat)
        return y + torch.expm1(self.lam * d) * (y - self.y_inf)

    def g(self, y: Tensor) -> Tensor:
        return _dot(self.g_hat, y) - self.g0

    def g_rate(self, y: Tensor) -> Tensor:
        """``dg/dt`` at state ``y``: ``g_hat . (lam y + c_hat)``."""
        return _dot(self.g_hat * self.lam, y) + (self.g_hat * self.c_hat).sum(-1)


def _dot(a: Tensor, y: Tensor) -> Tensor:
    """``(a * y).sum(-1)`` over the few modes as separate products: 2-3x faster than the
    reduction on the large ``(B, K, n, d)`` tensors here (d <= 3)."""
    out = a[..., 0] * y[..., 0]
    for k in range(1, y.shape[-1]):
        out = out + a[..., k] * y[..., k]
    return out


def phi1(lam: Tensor, d: Tensor) -> Tensor:
    """``(exp(lam d) - 1) / lam``, continuous at ``lam = 0`` (where it is ``d``)."""
    small = lam.abs() < 1e-12
    safe = torch.where(small, torch.ones_like(lam), lam)
    return torch.where(small, d + 0.0 * lam, torch.expm1(safe * d) / safe)


def _triangular_eig(A: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(..., d)`` and eigenvectors (columns of ``(..., d, d)``) of a triangular
    ``A`` with real ops only (so gradients flow through plain arithmetic): the diagonal, and
    back-substitution. Every linear neuron here is triangular (a state variable feeds only
    the ones after it, e.g. CubaLIF's current feeds the membrane)."""
    d = A.shape[-1]
    if d > 1 and A.detach().triu(1).abs().max() > 0:
        if A.detach().tril(-1).abs().max() > 0:
            raise NotLinear(f"{name}: coupled state variables (a non-triangular derivative) are not supported by "
                            f"the exact solver")
        lam, V = _triangular_eig(A.flip(-1, -2), name)
        return lam.flip(-1), V.flip(-1, -2)
    lam = torch.diagonal(A, dim1=-2, dim2=-1)
    cols = []
    for k in range(d):
        v = [torch.zeros_like(lam[..., 0])] * k + [torch.ones_like(lam[..., 0])]
        for j in range(k + 1, d):
            acc = sum(A[..., j, m] * v[m] for m in range(k, j))
            v.append(acc / (lam[..., k] - lam[..., j]))
        cols.append(torch.stack(v, -1))
    return lam, torch.stack(cols, -1)


def modes_of(spec: NeuronSpec, p: tuple, n: int, bias: Tensor | None, dtype: torch.dtype) -> Modes:
    """The modal form of ``spec`` with parameters ``p`` for ``n`` neurons. A spike in the
    layer's input of weight ``w`` is a pulse of area ``spec.dt`` (as a spike of value 1 for one
    Euler step), so it makes the state jump by ``dt * (ds/dt per unit input) * w``; ``bias``
    ``(n,)`` is a constant input."""
    name = type(spec).__name__
    d = len(spec.state)
    like = torch.zeros(n, dtype=dtype)
    p = type(p)(*(torch.as_tensor(v).to(dtype) for v in p))
    try:
        A, c = _affine(lambda s: spec.derivative(0.0, s, p), d, like, f"{name}.derivative")
        _, cx = _affine(lambda s: spec.derivative(1.0, s, p), d, like, f"{name}.derivative")
    except NotImplementedError as e:
        raise NotLinear(f"{name} declares no continuous-time form ({e})") from None
    bx = cx - c                                                     # ds/dt per unit of input
    if bias is not None:
        c = c + bx * bias.to(dtype).unsqueeze(-1)
    lam, V = _triangular_eig(A, name)
    gap = (lam.unsqueeze(-1) - lam.unsqueeze(-2)).abs() + torch.eye(d, dtype=dtype)
    if gap.min() < 1e-9 * (1 + lam.abs().max()):
        raise NotLinear(f"{name}: two equal time constants (a repeated eigenvalue of its dynamics, e.g. "
                        f"tau_syn == tau_mem) are not supported by the exact solver; make them differ")
    Vinv = torch.linalg.inv(V)
    mv = lambda M, v: (M @ v.unsqueeze(-1)).squeeze(-1)
    g_hat = g0 = None
    if spec.spiking:
        G, gc = _affine(lambda s: (spec.threshold(s, p),), d, like, f"{name}.threshold")
        g_hat = (G[..., 0, :].unsqueeze(-2) @ V).squeeze(-2)
        g0 = -gc[..., 0]
    c_hat = mv(Vinv, c)
    y_inf = None if bool((lam == 0).any()) else -c_hat / lam
    return Modes(lam, V, Vinv, c_hat, mv(Vinv, spec.dt * bx), g_hat, g0, y_inf)


# -- threshold crossings of the modal solution (no gradient; ``attach`` adds it) ----------
@torch.no_grad()
def crossing(modes: Modes, y: Tensor, t: Tensor, target: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Which neurons cross threshold in ``(t, target]`` and the first crossing time (no
    gradient): a bracket on which ``g`` rises (``bracket``), then Newton with bisection."""
    span = (target - t).clamp(min=0)
    found, lo, hi = bracket(modes, y, span, samples)
    if not bool(found.any()):
        return found, target
    return found, torch.where(found, t + find_root(modes, y, lo, hi), target)


@torch.no_grad()
def find_root(modes: Modes, y: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The time ``tau`` in ``[lo, hi]`` where ``g(advance(y, tau))`` crosses 0, given that it
    rises there: Newton inside the bracket, bisection where Newton would leave it."""
    for _ in range(ROOT_STEPS):
        mid = 0.5 * (lo + hi)
        ys = modes.advance(y, mid)
        gm = modes.g(ys)
        below = gm < 0
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        newton = mid - gm / modes.g_rate(ys).clamp(min=torch.finfo(y.dtype).tiny)
        inside = (newton > lo) & (newton < hi)
        gn = modes.g(modes.advance(y, newton))
        lo = torch.where(inside & (gn < 0), newton, lo)
        hi = torch.where(inside & (gn >= 0), newton, hi)
    root = 0.5 * (lo + hi)
    for _ in range(2):               # polish: the bracket has shrunk to where Newton converges
        ys = modes.advance(y, root)
        step = modes.g(ys) / modes.g_rate(ys).clamp(min=torch.finfo(y.dtype).tiny)
        root = torch.minimum(torch.maximum(root - step, lo), hi)
    return root


ROOT_STEPS = 8


def bracket(modes: Modes, y: Tensor, span: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(found, lo, hi)``: ``g(lo) < 0 <= g(hi)`` within ``[0, span]`` where the threshold
    function crosses. Exact for one or two modes: ``g`` is a constant plus at most two
    exponentials, so it has at most one extremum, at ``exp((lam0 - lam1) tau) = -a1 / a0``
    (``a = g_hat lam (y - y_inf)``), and is monotone on either side of it. Otherwise ``samples``
    equally spaced points are tried (a crossing that rises and falls back between two is missed)."""
    g_end = modes.g(modes.advance(y, span))
    lo, hi = torch.zeros_like(span), span
    if y.shape[-1] == 1:
        return (g_end >= 0) & (span > 0), lo, hi
    if y.shape[-1] == 2 and modes.y_inf is not None:
        lam = modes.lam
        a = modes.g_hat * lam * (y - modes.y_inf)
        ratio = -a[..., 1] / a[..., 0]
        ext = torch.log(ratio.clamp(min=torch.finfo(y.dtype).tiny)) / (lam[..., 0] - lam[..., 1])
        inside = (ratio > 0) & (ext > 0) & (ext < span)
        ext = torch.where(inside, ext, span)
        g_ext = modes.g(modes.advance(y, ext))
        peak = inside & (g_ext >= 0)                  # rises through 0 before the extremum
        late = ~peak & (g_end >= 0)                   # ... or after it (or without one)
        lo = torch.where(late & inside, ext, lo)
        hi = torch.where(peak, ext, span)
        return (peak | late) & (span > 0), lo, hi
    found = torch.zeros_like(span, dtype=torch.bool)
    for m in range(1, samples + 1):
        tau = span * (m / samples)
        new = (modes.g(modes.advance(y, tau)) >= 0) & ~found & (span > 0)
        lo = torch.where(new, span * ((m - 1) / samples), lo)
        hi = torch.where(new, tau, hi)
        found |= new
    return found, lo, hi


# A crossing that only grazes the threshold (g' -> 0 at the root) has an unbounded exact
# gradient; below this rate (threshold units per time unit) it is taken as RATE_FLOOR.
RATE_FLOOR = 1e-4


def attach(modes: Modes, y: Tensor, t: Tensor, tc: Tensor, hit: Tensor) -> Tensor:
    """The crossing times ``tc`` (found without gradient) with their exact gradient:
    ``tc - g / g'`` at the crossing, where ``g`` carries the gradient of the state ``y``, of
    the interval's start ``t`` and of the parameters (implicit function theorem; its value
    is a last Newton step). Where the crossing grazes the threshold (``g' < RATE_FLOOR``,
    ``g' = 0`` happens in float32 at a tangency) the value stays ``tc`` and the gradient is
    that of ``g / RATE_FLOOR``: finite, where ``g / g'`` would give inf or NaN."""
    yc = modes.advance(y, tc.detach() - t)
    g = torch.where(hit, modes.g(yc), 0.0)
    rate = modes.g_rate(yc).detach()
    graze = hit & (rate < RATE_FLOOR)
    g = torch.where(graze, g - g.detach(), g)
    rate = torch.where(graze, RATE_FLOOR, torch.where(hit, rate, 1.0))
    return tc.detach() - g / rate


def driven(modes: Modes, events, W: Tensor, at: Tensor, on: Tensor) -> Tensor:
    """The modal state that the input spikes ``events`` (``.times``, ``.index``: (B, K)) drive,
    ``sum_k on[b, e, k] exp(lam (at - t_k)) b_hat w_k``, at times ``at`` ``(B or 1, E)`` ->
    ``(B, E, n, d)``; ``on`` ``(B, E, K)`` says which spikes count (those before each time)."""
    w = W.t()[events.index]                                              # (B, K, n)
    tk = torch.where(on.any(1), events.times, torch.zeros_like(events.times))    # (B, K); unused: 0
    lam = modes.lam
    if bool((lam == lam[:1]).all()) and factors(lam, tk, at):
        # one decay per mode for all neurons, and exp(lam (at - tk)) = exp(lam at) exp(-lam tk): a
        # masked matrix product per mode, O(B E K + B K n) exps instead of O(B E K)
        mask = on.to(w.dtype)
        return torch.stack([torch.exp(lam[0, j] * at).unsqueeze(-1)
                            * torch.bmm(mask, torch.exp(-lam[0, j] * tk).unsqueeze(-1) * w) * modes.b_hat[:, j]
                            for j in range(lam.shape[-1])], -1)
    dt = torch.where(on, at.unsqueeze(-1) - tk.unsqueeze(1), 0.0)         # (B, E, K), >= 0 where on
    if bool((lam == lam[:1]).all()):     # one decay per mode for all neurons: a batched matmul per mode
        return torch.stack([torch.bmm(torch.where(on, torch.exp(lam[0, j] * dt), 0.0), w) * modes.b_hat[:, j]
                            for j in range(lam.shape[-1])], -1)
    decay = torch.where(on[..., None, None], torch.exp(lam * dt[..., None, None]), 0.0)   # (B, E, K, n, d)
    return torch.einsum("bekid,bki,id->beid", decay, w, modes.b_hat)


def factors(lam: Tensor, tk: Tensor, at: Tensor) -> bool:
    """Whether ``exp(-lam tk)`` and ``exp(lam at)`` stay finite and normal in this dtype, so that
    ``driven`` may split each decay into those two factors. The rounding error is then that of
    the direct sum: each partial sum is scaled by ``exp(lam at)`` with ``at`` no earlier than
    the spikes it holds (``on``), so every rescaled term is at most its weight."""
    if not FACTORED or tk.numel() == 0:
        return False
    reach = float(lam.detach().abs().max()) * max(float(tk.detach().abs().max()), float(at.detach().abs().max()))
    return reach < 0.4 * math.log(torch.finfo(lam.dtype).max)


#: ``driven`` by factored decays where they stay in range (``factors``); False: always direct
FACTORED = True
