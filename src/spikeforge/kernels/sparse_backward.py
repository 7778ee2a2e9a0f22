"""Sparse spiking backward (Perez-Nieves & Goodman, "Sparse Spiking Gradient Descent",
NeurIPS 2021): the backward pass of a Linear synapse fused with its neuron, computed from
the *active* entries only, those where the surrogate derivative is nonzero.

What the paper computes (read from the paper and its reference implementation; no code
taken): with ``u[t] = h[t] - v_threshold`` the argument of the spike function, an entry
``(t, b, j)`` is active when ``|u| < B`` (the paper: ``B_th < v < 2 v_th - B_th``) and the
surrogate is taken as zero elsewhere. The reset is not differentiated (its spike is a
constant in the backward). Under these two choices the gradient is *exact*, and sparse:

* ``ds = grad_z * g(u)`` is nonzero only at active entries (``g`` the surrogate derivative);
* the membrane adjoint follows the leak backwards through time, ``dh[t] = ds[t] +
  gate[t] * a * dh[t+1]`` (``a`` the leak ``dh[t+1]/dv[t]``; ``gate`` is 1, or the slope of
  the detached reset at a spike: 0 for a hard reset, 1 for a soft one); it is not dropped;
* the synaptic current's gradient is ``gI = c * dh`` (``c = dh/dI``); the weight gradient
  ``gW = gI^T x`` and the input gradient ``gx = gI W`` are needed by the previous layer only
  where *its* surrogate is nonzero, so ``gx`` is computed only at the previous layer's
  active entries (the paper's "active input" set) and left 0 elsewhere.

Here: the forward runs the neuron's own fused kernel and records the active set compactly
(CSR over the (t, b) rows: column indices and the surrogate derivative there; ``u`` is computed
from the affine form below, equal to the step's own arithmetic up to rounding); the backward
is one reverse scan of ``dh`` (C, O(T B N), no recomputation), ``gW`` by scattering the
input's spikes for a {0, 1} input (O(nnz(x) N); the gI rows buffered and summed per input,
``GROUP_BYTES``), and ``gx`` by one dot product per active entry of the previous layer
(O(|A_prev| N)), dense or only those values (``compact_gx``; ``nn.sparse.sparse_input_grad``
makes them a sparse COO gradient, which the previous layer's backward takes as ``gz``).

Which neurons: single-state spiking neurons whose sub-threshold step is affine in the
membrane and the input (``h = a v + c I + d``: IF, LIF in both input forms, either reset);
``a``, ``c`` and the reset's slope are read from the neuron's own ``step`` by probing it
(and the probe checks the affinity), so no neuron is named here. Others (several state
variables, a nonlinear membrane, learnable parameters) are refused with an error naming
them. Which surrogates: those with bounded support (``Surrogate.support``: ``Triangle``,
``PiecewiseQuadratic``) give the dense gradient exactly; for the others a ``cutoff`` must
be given, and the gradient is that of the surrogate truncated to ``|u| < cutoff``.
"""
from __future__ import annotations

import ctypes
from ctypes import c_int64
from functools import lru_cache

import torch
from torch import Tensor

from ..allocator import empty
from ._threads import threads
from ._sparse_backward_c import BLOCK, _HEADER, _SOURCE
from .sparse import DTYPES, load, transpose

__all__ = ["build", "linear_form", "cutoff_of", "fire_form", "forward_sets", "gated", "by_neuron", "leak_trace",
           "uniform_leak", "backward", "grad_input_at", "NotSparse"]

_PARALLEL_MIN = 1 << 16
#: the grouped weight-gradient scatter (``backward``) buffers up to this many bytes of gI rows per
#: thread (in L2 beside a (IN, N) gradient slice) before adding them up by input spike
GROUP_BYTES = 512 << 10
GROUP_SPIKES = 1 << 16   # ... or input spikes (at least IN)
#: the active test is |u| < support * (1 + SLACK): a boundary entry that rounding puts just
#: outside is kept (its exact surrogate value, possibly 0, is used), never dropped
SLACK = 1e-6


class NotSparse(ValueError):
    """A neuron, surrogate or parameter the sparse backward cannot take (the message says which)."""


@lru_cache(maxsize=None)
def build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes, one library, the loader of ``kernels.sparse``), or why not."""
    return load(_HEADER, _SOURCE, {"sf_sbw_fcount": None, "sf_sbw_fcompact": None, "sf_sbw_trace": None,
                                   "sf_sbw_backward": None, "sf_sbw_gw": None, "sf_sbw_gx": None, "sf_sbw_coo": None})


def _fn(name: str, dtype: torch.dtype):
    lib = build()
    if isinstance(lib, str):
        raise RuntimeError(f"sparse spiking backward: {lib}")
    return getattr(lib, f"sf_sbw_{name}_{DTYPES[dtype]}")


def _p(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _name(spec) -> str:
    return type(spec).__name__


def linear_form(spec, params, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, c, g1)``, each (n,): the neuron's step is ``h = a v + c I + d`` below threshold and
    the detached reset has slope ``g1`` in ``h`` at a spike. Read by probing ``spec.step`` (in
    float64) and checked at random points; raises ``NotSparse`` naming the neuron otherwise."""
    if not spec.spiking or len(spec.state) != 1:
        raise NotSparse(f"{_name(spec)}: the sparse backward takes single-state spiking neurons (IF, LIF); "
                        f"{_name(spec)} has state {spec.state} and spiking={spec.spiking}")
    for name, p in zip(spec.params, params):
        if isinstance(p, Tensor) and p.requires_grad:
            raise NotSparse(f"{_name(spec)}: parameter {name} requires a gradient, which the sparse backward "
                            f"does not compute; detach it or use the dense backward")
    p64, m = _probe_params(params, n)

    def h(v, x, spikes: bool):
        fire = (lambda u: torch.ones_like(u)) if spikes else (lambda u: torch.zeros_like(u))
        return spec.step(x + torch.zeros(m, dtype=torch.float64), (v + torch.zeros(m, dtype=torch.float64),),
                         p64, fire)[1][0]

    d = h(0.0, 0.0, False)
    a, c = h(1.0, 0.0, False) - d, h(0.0, 1.0, False) - d
    g = torch.Generator().manual_seed(0)
    v, x = torch.randn(m, generator=g, dtype=torch.float64), torch.randn(m, generator=g, dtype=torch.float64)
    err = (h(v, x, False) - (a * v + c * x + d)).abs()
    if not bool((err <= 1e-9 * (1 + (a * v).abs() + (c * x).abs() + d.abs())).all()):
        raise NotSparse(f"{_name(spec)}: its membrane step is not affine in the membrane and the input, so "
                        f"the adjoint does not reduce to a leak; the sparse backward takes IF/LIF-type neurons")
    r0 = h(0.0, 0.0, True)
    sv, sx = h(1.0, 0.0, True) - r0, h(0.0, 1.0, True) - r0
    g1 = torch.where(a.abs() >= c.abs(), sv / torch.where(a == 0, 1.0, a), sx / torch.where(c == 0, 1.0, c))
    return tuple(_widen(t, n, dtype) for t in (a, c, g1))


def fire_form(spec, params, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(au, cu, eu)``, each (n,): the argument the step passes to the spike function is
    ``u = au v + cu I + eu`` (probed like ``linear_form``; one call of the spike function per
    step is required)."""
    p64, m = _probe_params(params, n)

    def u(v, x):
        box = []

        def fire(arg):
            box.append(arg)
            return torch.zeros_like(arg)
        spec.step(x + torch.zeros(m, dtype=torch.float64), (v + torch.zeros(m, dtype=torch.float64),), p64, fire)
        if len(box) != 1:
            raise NotSparse(f"{_name(spec)}: its step calls the spike function {len(box)} times; the sparse "
                            f"backward needs exactly one threshold per step")
        return box[0]

    e = u(0.0, 0.0)
    return tuple(_widen(t, n, dtype) for t in (u(1.0, 0.0) - e, u(0.0, 1.0) - e, e))


#: probe points when every parameter is one number (the coefficients are then the same for all neurons)
PROBE_POINTS = 64


def _probe_width(params, n: int) -> int:
    """How many neurons to probe: all ``n`` when a parameter has one value per neuron, else
    ``PROBE_POINTS`` (a 128 k-neuron conv layer's probes took 20 ms per call at full width)."""
    return n if any(torch.as_tensor(p).numel() > 1 for p in params) else min(n, PROBE_POINTS)


def _probe_params(params, n: int) -> tuple:
    """``(params in float64 at the probe width, that width)`` for probing ``n`` neurons' step."""
    m = _probe_width(params, n)
    return type(params)(*(torch.as_tensor(p).detach().double().expand(m) for p in params)), m


def _widen(t: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """``t`` (probed neurons) as ``n`` contiguous values of ``dtype`` (the first repeated when narrower)."""
    return (t if t.numel() == n else t[:1].expand(n)).to(dtype).contiguous()


def cutoff_of(surrogate, cutoff: float | None) -> float:
    """The half-width of the active set: ``cutoff`` if given (a positive number), else the
    surrogate's bounded ``support``; a surrogate without one and no cutoff is refused."""
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
            raise ValueError(f"cutoff must be a positive number, got {cutoff!r}")
        return float(cutoff)
    if surrogate.support is None:
        raise NotSparse(f"{surrogate!r} has no bounded support: give cutoff= (the gradient is then that of the "
                        f"surrogate set to 0 where |v - v_threshold| >= cutoff) or use Triangle/PiecewiseQuadratic")
    return float(surrogate.support)


def forward_sets(y3: Tensor, vtr: Tensor, v0: Tensor, form: tuple, z: Tensor, surrogate, width: float,
                 gated: bool) -> tuple:
    """``(off, idx, sg, soff, sidx)`` in one pass over the sequence: the active set of a layer whose
    Linear output is ``y3`` (T, B, N), recorded states ``vtr`` (T, B, N) from ``v0`` (B, N) and spikes
    ``z`` — the CSR over the T*B rows of the entries with ``|u| < width`` (``u = au v + cu y + eu``,
    ``form`` = (au, cu, eu) from ``fire_form``; int64 offsets, int32 columns), the surrogate
    derivative there (0 where ``|u| >= width`` even if the surrogate is not), and the spikes' CSR
    (``gated``; else two empty tensors)."""
    T, B, N = y3.shape
    y3, vtr, v0, z = (t.contiguous() for t in (y3, vtr, v0, z))
    au, cu, eu = (t.contiguous() for t in form)
    R, th = T * B, threads(y3.numel(), _PARALLEL_MIN)
    w = y3.new_tensor(width * (1 + SLACK)).item()
    scalar = ctypes.c_float if y3.dtype == torch.float32 else ctypes.c_double
    common = (c_int64(T), c_int64(B), c_int64(N), th, _p(y3), _p(vtr), _p(v0), _p(au), _p(cu), _p(eu), _p(z))
    cnt, scnt = torch.empty(R, dtype=torch.int64), torch.empty(R, dtype=torch.int64)
    amask = torch.empty(R, (N + 63) // 64, dtype=torch.int64)   # bit masks (uint64 in the kernels)
    smask = torch.empty_like(amask) if gated else None
    _fn("fcount", y3.dtype)(*common, scalar(w), _p(amask), _opt(smask), _p(cnt), _p(scnt))
    off, soff = torch.zeros(R + 1, dtype=torch.int64), torch.zeros(R + 1 if gated else 0, dtype=torch.int64)
    torch.cumsum(cnt, 0, out=off[1:])
    if gated:
        torch.cumsum(scnt, 0, out=soff[1:])
    idx, uk = torch.empty(int(off[-1]), dtype=torch.int32), torch.empty(int(off[-1]), dtype=y3.dtype)
    sidx = torch.empty(int(soff[-1]) if gated else 0, dtype=torch.int32)
    _fn("fcompact", y3.dtype)(*common, _p(amask), _opt(smask), _p(off), _p(idx), _p(uk),
                              _opt(soff if gated else None), _opt(sidx))
    sg = torch.where(uk.abs() < width, surrogate.grad(uk), torch.zeros_like(uk))
    return off, idx, sg.contiguous(), soff, sidx


def _opt(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def leak_trace(x2: Tensor, T: int, B: int, a: float) -> Tensor:
    """``tr`` (T * B, IN): the input filtered by the leak, ``tr[t] = a tr[t - 1] + x[t]``."""
    x2 = x2.contiguous()
    tr = empty(tuple(x2.shape), x2.dtype)
    scalar = ctypes.c_float if x2.dtype == torch.float32 else ctypes.c_double
    _fn("trace", x2.dtype)(c_int64(T), c_int64(B), c_int64(x2.shape[1]), threads(x2.numel(), _PARALLEL_MIN),
                           scalar(a), _p(x2), _p(tr))
    return tr


def by_neuron(off: Tensor, idx: Tensor, N: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(joff, perm, rows)``: the active entries grouped by neuron (``perm[joff[j]:joff[j+1]]`` are
    neuron j's) and the row of each entry."""
    joff = torch.zeros(N + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(idx, minlength=N), 0, out=joff[1:])
    perm = torch.sort(idx, stable=True)[1]
    rows = torch.repeat_interleave(torch.arange(off.numel() - 1), off.diff())
    return joff, perm, rows


def gated(g1: Tensor) -> bool:
    """Whether the adjoint changes at a spike (a reset slope other than 1): backward then reads the
    spikes' CSR."""
    return not bool((g1 == 1).all())


def uniform_leak(a: Tensor, g1: Tensor) -> float | None:
    """The leak ``a`` when the weight gradient can run from the active set and a leak trace of the
    input: one leak for all neurons and a reset slope of 0 (hard) or 1 (soft/none); else None."""
    if not (bool((a == a[0]).all()) and bool((g1 == g1[0]).all()) and float(g1[0]) in (0.0, 1.0)):
        return None
    return float(a[0])


def grad_input_at(g: Tensor, weight: Tensor, off: Tensor, idx: Tensor, compact: bool = False) -> Tensor:
    """``g @ weight`` (R, IN) at the entries (r, idx[k]) for k in off[r]:off[r + 1], 0 elsewhere: the
    input gradient where the sparse layer that produced the input reads it; ``compact``: only those
    values, (nnz,) in the entries' order."""
    (R, N), IN = g.shape, weight.shape[1]
    g, wt = g.contiguous(), transpose(weight.detach())
    gx = torch.empty(idx.numel(), dtype=g.dtype) if compact else empty((R, IN), g.dtype)   # rows zeroed by the kernel
    _fn("gx", g.dtype)(c_int64(R), c_int64(N), c_int64(IN), threads(idx.numel() * N, _PARALLEL_MIN), _p(off),
                       _p(idx), _p(wt), _p(g), _opt(None if compact else gx), _opt(gx if compact else None))
    return gx


def coo_indices(off: Tensor, idx: Tensor, B: int) -> Tensor:
    """The (3, nnz) int64 COO indices (t, b, column) of the CSR entries (off, idx) over the rows
    r = t B + b of a (T, B, N) tensor, in the CSR's order (which is COO's coalesced order)."""
    ind = torch.empty(3, idx.numel(), dtype=torch.int64)
    _fn("coo", torch.float32)(c_int64(off.numel() - 1), c_int64(B), _p(off), _p(idx), _p(ind))
    return ind


def backward(gz: Tensor, spikes: tuple | None, active: tuple, coef: tuple, weight: Tensor | None, x_csr: tuple | None,
             prev: tuple | None, want_gi: bool, by_trace: tuple | None = None, shape: tuple | None = None,
             compact_gx: bool = False) -> tuple:
    """``(gI or None, gW or None, gb, gx or None)`` for gz (T, B, N); ``spikes`` = (off, idx), the
    spikes' CSR (``forward_sets``; ``None`` when the reset's slope is 1), ``active`` = (off, idx,
    sg) of this layer, ``coef`` = (a, c, g1) (``linear_form``). The weight gradient: with
    ``by_trace`` = (tr, joff, perm, rows): the leak trace of the input (``leak_trace``) and the
    active entries grouped by neuron (``by_neuron``), from the active entries
    (O(|A| IN); with a hard reset the entries between two spikes share one correction at the
    earlier spike, which stops the adjoint);
    else with ``x_csr`` = (off, idx) of a {0, 1} input by scattering the input's spikes
    (O(nnz(x) N)); else ``want_gi`` returns ``gI`` (R, N) for a dense product. ``prev`` = (off,
    idx) of the previous layer's active set gives ``gx`` (R, IN), exact there and 0 elsewhere (with
    ``compact_gx``: only those values, in the set's order). ``gz`` may be given at this layer's
    active entries only (1-D, in the set's order; ``shape`` = (T, B, N)).
    ``weight`` (N, IN) is read only for ``gx`` and ``by_trace`` (``None``: another synapse, such as
    a convolution, forms both from ``gI``)."""
    T, B, N = shape if gz.dim() == 1 else gz.shape
    IN, dt = (weight.shape[1] if weight is not None else 0), gz.dtype
    (off, idx, sg), (a, c, g1) = active, (t.contiguous() for t in coef)
    gz = gz.contiguous()
    gzk, gz = (gz, None) if gz.dim() == 1 else (None, gz)
    wt = transpose(weight.detach()) if prev is not None else None   # (W^T is read only for gx)
    nt = threads(T * B * N * max(1, IN // 16), _PARALLEL_MIN).value
    if by_trace is not None:
        x_csr = None
    gwt = empty((nt, IN, N), dt) if x_csr is not None else None   # each thread zeroes its slice
    gW = torch.empty(N, IN, dtype=dt) if x_csr is not None else None   # in the weight's layout, from gwt
    hard, nA = ctypes.c_int(int(float(g1[0]) == 0)), idx.numel()
    coef, fval = (torch.empty(nA, dtype=dt), torch.empty(nA, dtype=dt)) if by_trace is not None else (None, None)
    frow = torch.empty(nA, dtype=torch.int32) if by_trace is not None else None
    lastk = torch.empty(nt, 2 * N, dtype=torch.int64) if by_trace is not None else None
    tr, joff, perm, rows = by_trace if by_trace is not None else (None,) * 4
    soff, sidx = spikes if spikes is not None else (None, None)
    apow = (a[0].double() ** torch.arange(T + 1, dtype=torch.float64)).to(dt) if by_trace is not None else None
    gb, work, dv = torch.empty(nt, N, dtype=dt), torch.empty(nt, 2 * N, dtype=dt), torch.empty(B, N, dtype=dt)
    curs = torch.empty(nt, 2 * T, dtype=torch.int64)   # per-step CSR cursors (column blocks of wide layers)
    gx = None   # compact: (nnz,) values at prev's entries; else (R, IN), pooled, each row zeroed by the kernel
    if prev is not None:
        gx = torch.empty(prev[1].numel(), dtype=dt) if compact_gx else empty((T * B, IN), dt)
    gi = empty((T * B, N), dt) if want_gi else None
    xo, xi = x_csr if x_csr is not None else (None, None)
    group = x_csr is not None and N <= BLOCK   # wider: column blocks, per-spike scatter
    hrows = max(1, min(T * B, GROUP_BYTES // (N * sg.element_size()))) if group else 0
    lcap = max(IN, GROUP_SPIKES)
    hb = empty((nt, hrows, N), dt) if group else None
    hrow = torch.empty(nt, hrows, dtype=torch.int64) if group else None
    lst = torch.empty(nt, lcap, dtype=torch.int32) if group else None
    st = torch.empty(nt, IN + 1, dtype=torch.int32) if group else None
    po, pi = prev if prev is not None else (None, None)
    _fn("backward", dt)(c_int64(T), c_int64(B), c_int64(N), c_int64(IN), ctypes.c_int(nt), _p(off), _p(idx),
                        _p(sg), _opt(gz), _p(a), _p(c), _p(g1), _opt(xo), _opt(xi), _opt(po), _opt(pi),
                        hard, _opt(soff), _opt(sidx), _opt(apow), _opt(coef), _opt(fval), _opt(frow),
                        _opt(lastk), _opt(wt), _p(dv), _opt(gwt), _p(gb), _opt(None if compact_gx else gx), _opt(gi),
                        _p(work), _p(curs), _opt(hb), c_int64(hrows), _opt(hrow), _opt(lst), c_int64(lcap), _opt(st),
                        _opt(gzk), _opt(gx if compact_gx else None), _opt(gW))
    if by_trace is not None:
        gW = torch.empty(N, IN, dtype=dt)
        _fn("gw", dt)(c_int64(N), c_int64(IN), threads(nA * IN, _PARALLEL_MIN), _p(joff), _p(perm), _p(rows),
                      _p(coef), _p(fval), _p(frow), _p(tr), _p(gW))
    return gi, gW, gb.sum(0), gx
