"""``SpikingLinear``: a Linear synapse fused with the neuron layer it drives.

``SpikingLinear(in_features, out_features, neuron)`` computes exactly
``neuron(TimeDistributed(Linear)(x))`` on a sequence ``x`` of shape (T, B, in_features),
for any registered neuron (``neuron`` is a neuron module such as ``sf.nn.LIF(tau=2.0)``:
its spec, parameters, surrogate and backend are used as they are). Its parameters are the
pair's (``linear.weight``, ``linear.bias``, ``neuron.<param>``), so a state dict moves
between the two forms.

On the fused CPU backend the sequence runs in time chunks of ``chunk`` steps: the chunk's
Linear output is one GEMM into a slice of a (T, B, n) buffer and the neuron's fused kernel
reads it at once, while it is in cache, carrying the state from chunk to chunk. Backward
walks the chunks in reverse (the neuron's reverse-time kernel from the chunk's saved start
state) and turns each chunk's gradient into the weight, bias and input gradients; how it
does so is ``Backward.DENSE`` (``_dense``); ``Backward.SPARSE`` runs the sparse spiking
backward of ``spikeforge.nn.sparse_backward`` instead (IF/LIF, bounded surrogates).

Elsewhere (another backend chosen or forced, ``record=True``, half precision, input of
rank other than 3) the layer runs the unfused pair; ``last_fused`` and ``last_backend``
report what ran, and a fallback from a layer that asked for fusion is logged once with
its reason. ``step(x_t)`` is the unfused pair on one step (streaming carries the neuron's
state, as the pair does); ``carry_state`` and ``batch_first`` are the neuron's.

Public API: ``SpikingLinear``, ``spiking_linear`` (the functional form) and ``Backward``.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .. import _validation
from .. import functional as F
from ..allocator import empty
from .. import kernels
from ..kernels._fused import first_order, flat_params
from ..kernels.cpu import _ptrs, _rows, streams
from ..kernels.sparse_backward import cutoff_of
from .neuron import Neuron, where

__all__ = ["SpikingLinear", "spiking_linear", "Backward"]

log = logging.getLogger("spikeforge")

# Default chunk: at least MIN_ROWS rows per GEMM, longer while the chunk's Linear output stays
# under CHUNK_BYTES. Measured on the shared 2-core EPYC (RESULTS.md section 18): MKL's 2-thread
# GEMM loses 15-50 % per row below ~8000 rows at n = 512, and every chunk adds OpenMP barriers
# that cost far more than the cache saves on a loaded machine; so by default a T = 500, B = 16
# sequence is one chunk, and only longer sequences are cut.
MIN_ROWS = 8192
CHUNK_BYTES = 4 << 20
WEIGHT_BYTES = 2 << 20  # a weight up to this size (L2) takes its gradient chunk by chunk
_FUSED_DTYPES = (torch.float32, torch.float64)


class Backward(enum.Enum):
    """Which backward ``SpikingLinear`` trains with."""

    DENSE = "dense"   # every chunk's gradient, then dense GEMMs (``dense``)
    SPARSE = "sparse"  # only the active set (Perez-Nieves & Goodman 2021): SpikingLinear runs
                       # spikeforge.nn.sparse_backward.sparse_spiking_linear (from rest) instead


@dataclass
class _Saved:
    """What the backward receives. ``y``: the Linear output (T, B, n) when the
    neuron's backward reads it, else ``None``; ``checkpoints[k][j]``: state ``k`` at time
    ``min(j * K, T)`` (``K``: the kernel's checkpoint interval, which divides every chunk's
    start); ``bounds``: the chunks' (t0, t1)."""

    kernel: object            # the neuron's compiled cpu.Kernel
    x: Tensor                 # (T * B, in_features), contiguous
    weight: Tensor
    bias: Tensor | None
    y: Tensor | None
    checkpoints: list[Tensor]  # per state: (ceil(T / K) + 1, B, n)
    params: list[Tensor]      # flat neuron parameters (1 or n values each)
    bounds: list[tuple[int, int]]
    shape: tuple[int, int, int]   # (T, B, n)
    want: tuple[bool, ...]    # gradient wanted: x, weight, bias, then each neuron parameter


def _neuron_grads(s: _Saved, gz: Tensor, gfinal: list[Tensor], consume: Callable[[int, Tensor], None],
                 into: Tensor | None = None) -> list:
    """Reverse time over the chunks, calling ``consume(c, gy_c)`` with ``gy_c`` the gradient
    of chunk ``c``'s Linear output: ``into[t0:t1]`` when ``into`` (T, B, n) is given, else a
    reused (t1 - t0, B, n) buffer, valid during the call.
    Afterwards ``gfinal`` holds the gradient of the initial state; returns the per-lane
    gradients (B * n values) of the neuron parameters (``None`` where not wanted)."""
    T, B, n = s.shape
    k = s.kernel
    base, sT, sB = _rows(gz)
    gpar = [torch.zeros(B * n, dtype=gz.dtype) if w else None for w in s.want[3:]]
    gp_c = [torch.empty(B * n, dtype=gz.dtype) if w else None for w in s.want[3:]]
    longest = max(t1 - t0 for t0, t1 in s.bounds)
    buf = empty((longest * B * n,), gz.dtype) if into is None else None   # pooled: no fresh pages
    gst, gtr, pp = _ptrs(gfinal), _ptrs([None] * len(gfinal)), _ptrs(s.params)
    size = gz.element_size()
    for c in range(len(s.bounds) - 1, -1, -1):
        t0, t1 = s.bounds[c]
        L = t1 - t0
        gy = buf[: L * B * n].view(L, B, n) if into is None else into[t0:t1]
        y = s.y[t0:t1].data_ptr() if s.y is not None else None
        j0 = t0 // k.K
        k.lib.sf_backward(L, B, n, _threads(L * B * n), y, _ptrs([ck[j0] for ck in s.checkpoints]),
                          _ptrs([ck[j0 + 1] for ck in s.checkpoints]), k.K, pp,
                          base.data_ptr() + t0 * sT * size, sT, sB, gst, gtr, gy.data_ptr(), _ptrs(gp_c),
                          0)   # ordinary stores: the chunk's gradient is read next, from cache
        for a, g in zip(gpar, gp_c):
            if a is not None:
                a.add_(g)
        consume(c, gy)
    return gpar


def _dense(s: _Saved, gz: Tensor, gfinal: list[Tensor]):
    """``Backward.DENSE``: ``(gx, gweight, gbias, gparams per lane)``; the initial state's
    gradient is left in ``gfinal``. Each chunk's gy goes into the input gradient while in
    cache; the weight gradient either accumulates per chunk (when the weight fits in cache)
    or is one GEMM over the whole gy."""
    T, B, n = s.shape
    want_x, want_w, want_b = s.want[:3]
    gx = empty(s.x.shape, s.x.dtype) if want_x else None
    gb = gz.new_zeros(n) if want_b else None
    per_chunk = s.weight.numel() * s.weight.element_size() <= WEIGHT_BYTES
    gw = s.weight.new_zeros(s.weight.shape) if want_w and per_chunk else None
    gy_all = empty((T, B, n), gz.dtype) if want_w and not per_chunk else None

    def consume(c: int, gy: Tensor) -> None:
        t0, t1 = s.bounds[c]
        gy2 = gy.view(-1, n)
        rows = slice(t0 * B, t1 * B)
        if gx is not None:
            torch.mm(gy2, s.weight, out=gx[rows])
        if gb is not None:
            gb.add_(gy2.sum(0))
        if gw is not None:
            gw.addmm_(gy2.t(), s.x[rows])

    gpar = _neuron_grads(s, gz, gfinal, consume, gy_all)
    if gy_all is not None:
        gw = torch.mm(gy_all.view(T * B, n).t(), s.x)
    return gx, gw, gb, gpar


def _threads(numel: int) -> int:
    return 1 if numel < (1 << 15) else torch.get_num_threads()


class _Fused(torch.autograd.Function):
    """x, weight, bias, *state, *params -> z, *final state, chunk by chunk."""

    @staticmethod
    def forward(ctx, kernel, chunk, want, ns, x, weight, bias, *tensors):
        state, params = tensors[:ns], tensors[ns:]
        T, B, _ = x.shape
        n = weight.shape[0]
        x2 = x.reshape(T * B, x.shape[2]).contiguous()
        bounds = [(t0, min(t0 + chunk, T)) for t0 in range(0, T, chunk)]
        grad = any(want)
        keep_y = grad and (kernel.reads_x or kernel.recompute)
        y = empty((T, B, n) if keep_y else (min(chunk, T), B, n), x.dtype)
        z = empty((T, B, n), x.dtype)
        K = kernel.K
        cks = [x.new_empty(-(-T // K) + 1, B, n) for _ in range(ns)]
        for ck, s0 in zip(cks, state):
            ck[0].copy_(s0)
        wt = weight.t()
        pp = _ptrs(params)
        bad = 0
        for c, (t0, t1) in enumerate(bounds):
            L = t1 - t0
            yc = (y[t0:t1] if keep_y else y[:L]).view(L * B, n)
            if bias is None:
                torch.mm(x2[t0 * B: t1 * B], wt, out=yc)
            else:
                torch.addmm(bias, x2[t0 * B: t1 * B], wt, out=yc)
            j0, jf = t0 // K, -(-t1 // K)   # the chunk's start and end in the checkpoints
            for ck in cks:
                ck[jf].copy_(ck[j0])
            bad |= kernel.lib.sf_forward(L, B, n, _threads(L * B * n), yc.data_ptr(), z[t0:t1].data_ptr(),
                                         _ptrs([ck[jf] for ck in cks]), _ptrs([ck[j0 + 1] for ck in cks]),
                                         K, (L - 1) // K, pp, streams(z))
        if bad and _validation.enabled():
            raise _validation.not_finite("the Linear's output (the neuron's input)")
        ctx.set_materialize_grads(False)
        if grad:   # tensors through save_for_backward (version checks); the rest as attributes
            ctx.save_for_backward(x2, weight, bias, y if keep_y else None, *cks, *params)
            ctx.info = (kernel, bounds, (T, B, n), want, x.shape, ns)
        finals = [ck[-1].clone() for ck in cks]
        return (z, *finals)

    @staticmethod
    @first_order("the unfused pair: the neuron with backend='reference'")
    def backward(ctx, gz, *gfinal):
        kernel, bounds, (T, B, n), want, x_shape, ns = ctx.info
        x2, weight, bias, y, *rest = ctx.saved_tensors
        s = _Saved(kernel, x2, weight, bias, y, list(rest[:ns]), list(rest[ns:]), bounds, (T, B, n), want)
        if gz is None:
            gz = s.x.new_zeros(()).expand(T, B, n)
        gst = [torch.zeros(B, n, dtype=s.x.dtype) if g is None else g.contiguous().clone() for g in gfinal]
        gx, gw, gb, gpar = _dense(s, gz, gst)
        gparams = [None if g is None else (g.view(B, n).sum(0) if p.numel() > 1 else g.sum().reshape(1)).to(p.dtype)
                   for g, p in zip(gpar, s.params)]
        gx = None if gx is None else gx.view(x_shape)
        return (None, None, None, None, gx, gw, gb, *gst, *gparams)


def _fusion_reason(spec, surrogate, backend, x: Tensor, record: bool) -> str | None:
    """``None`` when the fused path can run, else why the unfused pair runs."""
    if record:
        return "record=True keeps every step's state (the unfused pair records them)"
    if x.dim() != 3:
        return f"the fused path takes x of shape (T, B, in_features), got {x.dim()} dims"
    if x.dtype not in _FUSED_DTYPES:
        return f"the fused path computes in float32/float64, got {x.dtype}"
    name = kernels.select_name(backend, spec, surrogate, x.device, x.dtype)
    if name != "cpu":
        return f"the neuron runs on the {name!r} backend (the fused path needs 'cpu')"
    return None


def _chunk_steps(chunk: int | None, K: int, B: int, n: int, itemsize: int) -> int:
    """Steps per chunk: ``chunk``, else ``MIN_ROWS`` GEMM rows or ``CHUNK_BYTES`` of Linear
    output, whichever is longer; rounded up to a multiple of the kernel's checkpoint interval ``K``."""
    steps = chunk if chunk is not None else max(-(-MIN_ROWS // max(1, B)), CHUNK_BYTES // max(1, B * n * itemsize))
    return -(-steps // K) * K


def spiking_linear(spec, x: Tensor, weight: Tensor, bias: Tensor | None = None, state=None, params=None, *,
                   surrogate=None, backend: str | None = None, chunk: int | None = None):
    """``spec`` run on ``x @ weight.T + bias`` for ``x`` of shape (T, B, in_features), fused.

    Returns ``(z, final State, backend name, fused)``: the same values and gradients as
    ``F.run(spec, torch.nn.functional.linear(x, weight, bias), state, params)``; ``fused``
    says whether the chunked path ran (else the unfused pair). ``chunk``: time steps per
    chunk (default: at least ``MIN_ROWS`` GEMM rows, more while the chunk's Linear output stays
    under ``CHUNK_BYTES``)."""
    F.check_spec(spec)
    _check_linear(x, weight, bias, chunk)
    reason = _fusion_reason(spec, surrogate or F.DEFAULT_SURROGATE, backend, x, False)
    if reason is not None:
        y = torch.nn.functional.linear(x, weight, bias)
        z, s, _, name = F.run(spec, y, state, params, surrogate=surrogate, backend=backend)
        return z, s, name, False
    T, B, _ = x.shape
    n = weight.shape[0]
    like = x.new_empty((1, B, n))
    surrogate, state, params = F._prepare(spec, like, state, params, surrogate, 2, finite=False)
    flat = flat_params(params, (n,))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias, *state, *flat)
                                           if t is not None)
    want = ((x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad,
             *(p.requires_grad for p in flat)) if grad else (False,) * (3 + len(flat)))
    kernel = kernels._get("cpu").kernel(spec, surrogate, x.dtype, tuple(p.numel() > 1 for p in flat),
                                        (True, *want[3:]))
    steps = _chunk_steps(chunk, kernel.K, B, n, x.element_size())
    ns = len(state)
    out = _Fused.apply(kernel, steps, want, ns, x, weight, bias, *state, *flat)
    return out[0], spec.State(*out[1:]), "cpu", True


def _check_linear(x, weight, bias, chunk) -> None:
    F.check_input(x, "x", 2, finite=False)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-d tensor (out_features, in_features), got "
                         f"{tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have shape (T, B, {weight.shape[1]}) to match weight "
                         f"{tuple(weight.shape)}, got {tuple(x.shape)}")
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (weight.shape[0],)):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got "
                         f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive int (time steps) or None, got {chunk!r}")


class _NeuronLayer(nn.Module):
    """What a synapse fused with its neuron module (``self.neuron``) shares: the argument checks,
    the neuron's state and backend, reset."""

    @staticmethod
    def _check(neuron, backward, cutoff) -> None:
        if not isinstance(neuron, Neuron):
            raise TypeError(f"neuron must be a spikeforge neuron module (e.g. sf.nn.LIF()), got "
                            f"{type(neuron).__name__}")
        if not isinstance(backward, Backward):
            raise ValueError(f"backward must be a spikeforge.nn.spiking_linear.Backward, got {backward!r}")
        if cutoff is not None:
            if backward is not Backward.SPARSE:
                raise ValueError(f"cutoff is the sparse backward's (backward=Backward.SPARSE), got it with {backward}")
            cutoff_of(None, cutoff)   # validates a given cutoff (the surrogate is not read then)

    @property
    def last_backend(self) -> str | None:
        return self.neuron.last_backend

    @property
    def state(self):
        return self.neuron.state

    def reset(self) -> None:
        self.neuron.reset()

    def _sparse_backend(self, x: Tensor) -> str:
        """The backend the sparse path ran the neuron's forward on (``last_backend``)."""
        nrn = self.neuron
        return kernels.select_name(nrn.backend, nrn.spec, nrn.surrogate, x.device, x.dtype)

    def _sparse_neuron(self) -> Neuron:
        """The neuron, refused for ``Backward.SPARSE`` where it asks for what that path cannot do."""
        nrn = self.neuron
        for flag, why in (("carry_state", "runs each sequence from rest"), ("record", "keeps no per-step states")):
            if getattr(nrn, flag):
                raise ValueError(f"{where(self)}: backward=Backward.SPARSE {why}; {flag}=True is not supported")
        if getattr(nrn.spec, "detach_reset", True) is False:
            _log_once("backward=Backward.SPARSE trains with the reset detached (the gradient of Perez-Nieves & "
                      "Goodman 2021); the neuron's detach_reset=False is not followed", "")
        return nrn


class SpikingLinear(_NeuronLayer):
    """``neuron(TimeDistributed(Linear(in_features, out_features, bias)))`` run fused (see
    the module docstring). ``neuron``: a neuron module (``sf.nn.LIF(...)``); ``chunk``:
    time steps per chunk (``None``: automatic); ``backward``: a ``Backward`` strategy."""

    def __init__(self, in_features: int, out_features: int, neuron: Neuron, *, bias: bool = True,
                 chunk: int | None = None, backward: Backward = Backward.DENSE, cutoff: float | None = None) -> None:
        super().__init__()
        self._check(neuron, backward, cutoff)
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be a positive int (time steps) or None, got {chunk!r}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.neuron = neuron
        self.chunk, self.backward_strategy, self.cutoff = chunk, backward, cutoff
        self.last_fused = None     # did the last call run fused?

    def forward(self, x: Tensor) -> Tensor:
        nrn = self.neuron
        if nrn.batch_first and isinstance(x, Tensor) and x.dim() >= 2:
            x = x.transpose(0, 1)
        if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-1] != self.linear.in_features:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{where(self)}: x must have shape (T, B, {self.linear.in_features}), got {got}"
                             + ("; for one time step use .step()" if isinstance(x, Tensor) and x.dim() == 2 else ""))
        if self.backward_strategy is Backward.SPARSE:
            return self._sparse(x)
        reason = _fusion_reason(nrn.spec, nrn.surrogate, nrn.backend, x, nrn.record)
        if reason is not None:
            _log_once(reason)
            z = nrn(self.linear(x).transpose(0, 1) if nrn.batch_first else self.linear(x))
            self.last_fused = False
            return z
        state = nrn.state if nrn.carry_state else None
        try:
            z, s, name, self.last_fused = spiking_linear(
                nrn.spec, x, self.linear.weight, self.linear.bias, state, nrn.params(),
                surrogate=nrn.surrogate, backend=nrn.backend, chunk=self.chunk)
        except _validation.NotFiniteError as e:
            raise _validation.NotFiniteError(f"{where(self)}: {e}") from None
        nrn.last_backend = name
        nrn.trace = None
        if nrn.carry_state:
            nrn.state = s
        return z.transpose(0, 1) if nrn.batch_first else z

    def _sparse(self, x: Tensor) -> Tensor:
        """``backward=Backward.SPARSE``: the sparse spiking backward (``nn.sparse_backward``); it
        takes the neuron's spec, parameters, surrogate (bounded support) and backend."""
        from .sparse_backward import sparse_spiking_linear

        nrn = self._sparse_neuron()
        z = sparse_spiking_linear(x, self.linear.weight, self.linear.bias, nrn.spec, nrn.params(),
                                  surrogate=nrn.surrogate, cutoff=self.cutoff, backend=nrn.backend)
        self.last_fused = False
        nrn.last_backend = self._sparse_backend(x)
        return z.transpose(0, 1) if nrn.batch_first else z

    def step(self, x: Tensor) -> Tensor:
        """One step (B, in_features): the unfused pair (the neuron carries its state)."""
        return self.neuron.step(self.linear(x))

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, out_features={self.linear.out_features}, "
                f"chunk={self.chunk}, backward={self.backward_strategy.name}"
                + ("" if self.cutoff is None else f", cutoff={self.cutoff}"))


_LOGGED: set = set()


def _log_once(reason: str, what: str = "SpikingLinear runs Linear and the neuron unfused: ") -> None:
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.info("spikeforge: %s%s", what, reason)
