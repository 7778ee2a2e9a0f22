"""A Linear synapse fused with a spiking neuron whose backward touches only the active set
(Perez-Nieves & Goodman 2021; the definition, what it drops and for which neurons:
``spikeforge.kernels.sparse_backward``).

``sparse_spiking_linear(x, weight, bias, spec, params, surrogate=...)`` returns the spikes
``z`` (T, B, out) of ``spec`` driven by ``x W^T + b``. Its forward runs the product (the
spike-sparse kernel of ``SpikeLinear`` for a {0, 1} input below its crossover, else
``F.linear``) and the neuron's fused kernel, and records the active set; its backward gives

* ``grad W``, ``grad b``: equal to the dense ones with the reset detached and the surrogate
  zero outside its support (or ``cutoff``);
* ``grad x``: equal to the dense one at the active entries of the layer that produced ``x``
  when ``x`` is the output of another ``sparse_spiking_linear`` (that layer reads no other
  entry, so the others are left 0; below 1/8 of the entries, ``nn.sparse.COMPACT_BELOW``, it is
  a sparse COO tensor on them, which that layer's backward reads in place), else equal to the
  dense one everywhere.

Its module form is ``SpikingLinear(..., backward=Backward.SPARSE)`` (``nn.spiking_linear``).

``sparse_spiking_conv2d(x, weight, bias, spec, params, stride=..., padding=...)`` is the same
for a 2-D convolution (module form: ``SpikingConv2d(..., backward=Backward.SPARSE)``):
``x`` (T, B, C, H, W), spikes (T, B, out, OH, OW). The membrane adjoint
is the same reverse scan; the weight gradient scatters a {0, 1} input's events (the kernel of
``SpikeConv2d``; torch's dense weight gradient for other input), and ``grad x`` is computed only
at the active entries of the ``sparse_spiking_conv2d`` that produced ``x`` (torch's transposed
convolution, dense, otherwise).
"""
from __future__ import annotations

import enum
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import functional as SF
from ..kernels import sparse as _spl
from ..kernels import sparse_backward as K
from ..kernels import sparse_conv as _spc
from ..kernels._fused import first_order
from ..neurons import NeuronSpec
from ..surrogate import Surrogate, Triangle
from .sparse import ACTIVE_COO as _COO
from .sparse import ACTIVE_SET as _ATTR
from .sparse import active_set, mark_active
from .sparse import compact as _compact
from .sparse import sparse_input_grad
from .sparse import crossover
from .sparse_conv import crossover as conv_crossover
from .sparse_conv import _geometry

__all__ = ["sparse_spiking_linear", "sparse_spiking_conv2d", "WeightGrad", "active_fraction"]



def _linear(x2: Tensor, weight: Tensor, bias: Tensor | None, scatter: bool):
    """``(y, csr)``: the product, and the CSR ``(off, idx)`` of ``x2`` when it is {0, 1} and sparse
    enough for the scatter kernels (``SpikeLinear``'s crossover; any density if ``scatter``), else
    ``None``."""
    off, bad, mask = _spl.count_active(x2, mask=True)
    if bad == 0 and (scatter or int(off[-1]) < crossover(True, weight.shape[0]) * x2.numel()):
        y, idx = _spl.forward(x2, off, weight.detach(), None if bias is None else bias.detach(), mask)
        return y, (off, idx)
    return F.linear(x2, weight.detach(), None if bias is None else bias.detach()), None


# AUTO's rule for a dense (non-spike) input: TRACE when it reads fewer than 1/TRACE_VS_GEMM of the
# rows a dense product would (a trace row is read from memory at random; the product is blocked and
# compute-bound). A cautious guess, not measured; on {0, 1} input SCATTER measured faster than TRACE
# at 1.4-6 % activity (RESULTS.md section 17).
TRACE_VS_GEMM = 8


class WeightGrad(enum.Enum):
    """How the backward forms the weight gradient (all exact). AUTO: SCATTER for a {0, 1} input
    below ``SpikeLinear``'s crossover, else TRACE when it applies and the layer is sparse enough
    (``TRACE_VS_GEMM``), else DENSE."""
    AUTO = "auto"
    TRACE = "trace"      # from the active entries and the input's leak trace: O(|A| in) (the paper's)
    SCATTER = "scatter"  # by scattering a {0, 1} input's spikes: O(nnz(x) out)
    DENSE = "dense"      # gI^T x, one dense product


def _weight_source(how, x2, csr, off, idx, a, g1, T, B, N):
    """``(WeightGrad, tensors backward needs)``. TRACE needs one leak for all neurons and a reset
    slope of 0 or 1 (``uniform_leak``) and costs |A| in (twice with a hard reset); SCATTER needs a
    {0, 1} input (AUTO: below ``SpikeLinear``'s crossover density) and costs nnz(x) out."""
    leak, IN = K.uniform_leak(a, g1), x2.shape[1]
    if how is WeightGrad.TRACE and leak is None:
        raise K.NotSparse("weight_grad=TRACE needs one leak for all neurons and a hard or soft reset")
    if how is WeightGrad.SCATTER and csr is None:
        raise K.NotSparse("weight_grad=SCATTER needs an input of 0s and 1s")
    if how is WeightGrad.AUTO:   # measured (benchmarks/sparse_backward.py): SCATTER beat TRACE on spike input
        rows = idx.numel() * (2 if float(g1[0]) == 0 else 1)   # trace rows read (at most, hard reset)
        fast = leak is not None and rows * TRACE_VS_GEMM < x2.shape[0] * N
        how = WeightGrad.SCATTER if csr is not None else (WeightGrad.TRACE if fast else WeightGrad.DENSE)
    if how is WeightGrad.TRACE:
        return how, (K.leak_trace(x2, T, B, leak), *K.by_neuron(off, idx, N))
    return (how, csr) if how is WeightGrad.SCATTER else (how, (x2,))


def _neuron(y3: Tensor, spec, params, surrogate, width: float, backend, coef) -> tuple:
    """``(z, off, idx, sg, soff, sidx)``: the neuron's spikes for the synaptic input ``y3`` (T, B, N),
    run from rest by its fused kernel, and its active set (``kernels.sparse_backward.forward_sets``)."""
    z, _, trace, _ = SF.run(spec, y3, None, params, surrogate=surrogate, backend=backend, record=True)
    v0 = SF.rest_state(spec, params, y3[0])[0]
    form = K.fire_form(spec, params, y3.shape[2], y3.dtype)
    return (z, *K.forward_sets(y3, trace[0], v0, form, z, surrogate, width, K.gated(coef[2])))


class _SparseSpikingLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, spec, params, surrogate, width, backend, prev, how, coef, coo_in, coo):
        T, B, IN = x.shape
        N = weight.shape[0]
        x2 = x.detach().reshape(T * B, IN).contiguous()
        y2, csr = _linear(x2, weight, bias, how is WeightGrad.SCATTER)
        z, off, idx, sg, soff, sidx = _neuron(y2.view(T, B, N), spec, params, surrogate, width, backend, coef)
        a, c, g1 = coef
        mode, wsrc = _weight_source(how, x2, csr, off, idx, a, g1, T, B, N)
        ctx.save_for_backward(weight, soff, sidx, off, idx, sg, a, c, g1, *wsrc, *(prev if prev is not None else ()))
        ctx.shape, ctx.mode, ctx.has_prev, ctx.has_bias = (T, B, IN, N), mode, prev is not None, bias is not None
        ctx.coo_in, ctx.coo = coo_in, coo   # the COO indices of the input's and of this layer's active set
        ctx.mark_non_differentiable(off, idx)
        ctx.set_materialize_grads(False)
        return z, off, idx

    @staticmethod
    @first_order("the dense backward (Backward.DENSE, or the neuron with backend='reference')")
    def backward(ctx, gz, _goff, _gidx):
        if gz is None:
            return (None,) * 13
        weight, soff, sidx, off, idx, sg, a, c, g1, *rest = ctx.saved_tensors
        T, B, IN, N = ctx.shape
        if gz.is_sparse:   # from a layer after this one: its values in place if on this layer's active set
            ours = ctx.coo and gz.is_coalesced() and gz._indices().data_ptr() == ctx.coo[0].data_ptr()
            gz = gz._values() if ours else gz.to_dense()
        csr = (rest[0], rest[1]) if ctx.mode is WeightGrad.SCATTER else None
        by_trace = tuple(rest[:4]) if ctx.mode is WeightGrad.TRACE else None
        spikes = (soff, sidx) if soff.numel() else None
        prev = (rest[-2], rest[-1]) if ctx.has_prev and ctx.needs_input_grad[0] else None
        coo_gx = prev is not None and _compact(ctx.coo_in, prev[1], T * B * IN)
        gi, gw, gb, gx = K.backward(gz, spikes, (off, idx, sg), (a, c, g1), weight, csr, prev, by_trace=by_trace,
                                    want_gi=ctx.mode is WeightGrad.DENSE or (ctx.needs_input_grad[0] and prev is None),
                                    shape=(T, B, N), compact_gx=coo_gx)
        if not ctx.needs_input_grad[1]:
            gw = None
        elif ctx.mode is WeightGrad.DENSE:
            gw = gi.t() @ rest[0]
        gb = gb if ctx.has_bias and ctx.needs_input_grad[2] else None
        if ctx.needs_input_grad[0] and coo_gx:
            gx = sparse_input_grad((T, B, IN), ctx.coo_in, *prev, gx)
        elif ctx.needs_input_grad[0]:
            gx = gx.view(T, B, IN) if prev is not None else (gi @ weight.detach()).view(T, B, IN)
        return gx, gw, gb, None, None, None, None, None, None, None, None, None, None


def _check(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (T, B, in_features) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.device.type != "cpu" or x.dtype not in _spl.DTYPES:
        raise ValueError(f"x must be a CPU float32/float64 tensor for the sparse backward, got {x.dtype} on {x.device}")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[1] != x.shape[2] or weight.dtype != x.dtype:
        got = f"{tuple(weight.shape)} {weight.dtype}" if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a (out, {x.shape[2]}) tensor of dtype {x.dtype}, got {got}")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],) or bias.dtype != x.dtype):
        got = f"{tuple(bias.shape)} {bias.dtype}" if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"bias must be a ({weight.shape[0]},) tensor of dtype {x.dtype}, got {got}")


def _setup(spec, params, surrogate, cutoff, n: int, dtype) -> tuple:
    """``(surrogate, width, params, coef)`` for ``n`` neurons; refuses an unsupported neuron or
    surrogate before any work."""
    SF.check_spec(spec)
    surrogate = Triangle(1.0) if surrogate is None else surrogate
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {type(surrogate).__name__}")
    width = K.cutoff_of(surrogate, cutoff)
    p = SF.make_params(spec, SF.param_values(spec, params), features=(n,), dtype=dtype)
    return surrogate, width, p, K.linear_form(spec, p, n, dtype)


def sparse_spiking_linear(x: Tensor, weight: Tensor, bias: Tensor | None, spec: NeuronSpec, params=None, *,
                          surrogate: Surrogate | None = None, cutoff: float | None = None,
                          backend: str | None = None, weight_grad: WeightGrad = WeightGrad.AUTO) -> Tensor:
    """Spikes (T, B, out) of ``spec`` driven by ``x W^T + b`` from rest, with the sparse backward
    (module docstring). ``surrogate`` defaults to ``Triangle(1.0)``; ``cutoff`` is required for
    a surrogate without bounded support (see ``kernels.sparse_backward``); ``weight_grad``: a
    ``WeightGrad``."""
    _check(x, weight, bias)
    if not isinstance(weight_grad, WeightGrad):
        raise ValueError(f"weight_grad must be a spikeforge.nn.sparse_backward.WeightGrad, got {weight_grad!r}")
    surrogate, width, p, coef = _setup(spec, params, surrogate, cutoff, weight.shape[0], x.dtype)
    coo: list = []
    z, off, idx = _SparseSpikingLinear.apply(x, weight, bias, spec, p, surrogate, width, backend,
                                             active_set(x), weight_grad, coef, getattr(x, _COO, None), coo)
    mark_active(z, off, idx)
    setattr(z, _COO, coo)
    return z


def _conv(xp: Tensor, weight: Tensor, bias: Tensor | None, geo) -> tuple:
    """``(y, csr)`` as ``_linear`` for the convolution of the (padded) input ``xp`` (N, C, H, W):
    ``SpikeConv2d``'s kernels for a {0, 1} input below its crossover, else ``F.conv2d``."""
    w, b = weight.detach(), None if bias is None else bias.detach()
    off, bad, mask = _spl.count_active(xp.view(geo.n * geo.c, geo.h * geo.w), mask=True)
    if bad == 0 and int(off[-1]) < conv_crossover(True, geo.og) * xp.numel():
        y, idx = _spc.forward(xp, off, w, b, geo, mask)
        return y, (off, idx)
    return F.conv2d(xp, w, b, geo.stride, geo.pad, geo.dilation, geo.groups), None


class _SparseSpikingConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, spec, params, surrogate, width, backend, prev, coef, geo, pad):
        T, B = x.shape[:2]
        x4 = x.detach().reshape(T * B, *x.shape[2:])
        xp = (x4 if pad is None else F.pad(x4, pad)).contiguous()
        y, csr = _conv(xp, weight, bias, geo)
        wsrc = csr if csr is not None else (xp,)
        z, off, idx, sg, soff, sidx = _neuron(y.view(T, B, math.prod(y.shape[1:])), spec, params, surrogate, width,
                                               backend, coef)
        ctx.save_for_backward(weight, soff, sidx, off, idx, sg, *coef, *wsrc, *(prev if prev is not None else ()))
        ctx.geo, ctx.pad, ctx.x_shape, ctx.has_prev, ctx.has_bias = geo, pad, x.shape, prev is not None, bias is not None
        ctx.scatter = csr is not None
        ctx.mark_non_differentiable(off, idx)
        return z.view(T, B, *y.shape[1:]), off, idx

    @staticmethod
    @first_order("the dense backward (Backward.DENSE, or the neuron with backend='reference')")
    def backward(ctx, gz, _goff, _gidx):
        weight, soff, sidx, off, idx, sg, a, c, g1, *rest = ctx.saved_tensors
        geo, x_shape = ctx.geo, ctx.x_shape
        spikes = (soff, sidx) if soff.numel() else None
        gi, _, gb, _ = K.backward(gz.reshape(x_shape[0], x_shape[1], math.prod(gz.shape[2:])), spikes, (off, idx, sg), (a, c, g1), None,
                                  None, None, want_gi=True)
        gy = gi.view(geo.n, geo.groups * geo.og, geo.oh, geo.ow)
        args = (geo.stride, geo.pad, geo.dilation, geo.groups)
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gw = (_spc.grad_weight(rest[0], rest[1], gy, geo) if ctx.scatter
                  else torch.nn.grad.conv2d_weight(rest[0], weight.shape, gy, *args))
        if ctx.needs_input_grad[0]:
            if ctx.has_prev and ctx.pad is None:
                gx = _spc.grad_input_at(rest[-2], rest[-1], gy, weight, geo)
            else:
                gx = torch.nn.grad.conv2d_input((geo.n, geo.c, geo.h, geo.w), weight.detach(), gy, *args)
                if ctx.pad is not None:   # (left, right, top, bottom) added before the convolution
                    left, right, top, bottom = ctx.pad
                    gx = gx[:, :, top:geo.h - bottom, left:geo.w - right]
            gx = gx.reshape(x_shape)
        gb = gb.view(geo.groups * geo.og, geo.oh * geo.ow).sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None, None, None, None, None, None, None


def sparse_spiking_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, spec: NeuronSpec, params=None, *,
                          stride=1, padding=0, dilation=1, groups: int = 1, surrogate: Surrogate | None = None,
                          cutoff: float | None = None, backend: str | None = None) -> Tensor:
    """Spikes (T, B, out, OH, OW) of ``spec`` driven by ``conv2d(x[t], weight, bias, stride, padding,
    dilation, groups)`` at each step, from rest, with the sparse backward (module docstring).
    ``x`` is (T, B, C, H, W); the neuron's parameters are numbers or tensors that broadcast to the
    output's neurons (out, OH, OW) as they would in the unfused pair (one per channel: (out, 1, 1);
    a 1-D tensor broadcasts along OW, as torch broadcasts it); ``surrogate`` and ``cutoff`` as in
    ``sparse_spiking_linear``."""
    if not isinstance(x, Tensor) or x.dim() != 5:
        raise ValueError(f"x must be a (T, B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.device.type != "cpu" or x.dtype not in _spl.DTYPES:
        raise ValueError(f"x must be a CPU float32/float64 tensor for the sparse backward, got {x.dtype} on {x.device}")
    if not isinstance(weight, Tensor) or weight.dtype != x.dtype or weight.device != x.device:
        raise ValueError(f"weight must be a tensor of x's dtype {x.dtype} on the CPU, got "
                         f"{weight.dtype if isinstance(weight, Tensor) else type(weight).__name__}")
    if weight.dim() == 4 and isinstance(groups, int) and x.shape[2] != weight.shape[1] * groups:
        raise ValueError(f"x must have shape (T, B, {weight.shape[1] * groups}, H, W) for weight "
                         f"{tuple(weight.shape)} and groups={groups}, got {tuple(x.shape)}")
    try:
        pad, geo = _geometry(x.detach().flatten(0, 1), weight, stride, padding, dilation, groups)
    except ValueError as e:   # it sees the (T * B, C, H, W) frames
        raise ValueError(f"x {tuple(x.shape)}: {e}") from None
    out = geo.groups * geo.og
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (out,) or bias.dtype != x.dtype):
        raise ValueError(f"bias must be ({out},) of dtype {x.dtype}, got "
                         f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
    params = SF.param_values(spec, params)
    shape = (out, geo.oh, geo.ow)
    params = params and {k: _per_neuron(k, v, shape) for k, v in params.items()}
    surrogate, width, p, coef = _setup(spec, params, surrogate, cutoff, out * geo.oh * geo.ow, x.dtype)
    z, off, idx = _SparseSpikingConv2d.apply(x, weight, bias, spec, p, surrogate, width, backend,
                                             active_set(x), coef, geo, pad)
    mark_active(z, off, idx)
    return z


def _per_neuron(name: str, v, shape: tuple) -> Tensor | float:
    """A neuron parameter of a convolution's neurons as the flat (out * OH * OW,) values: a tensor
    broadcast to ``shape`` = (out, OH, OW) as the unfused pair broadcasts it (trailing dimensions
    first: per channel is (out, 1, 1)); a number or a 0-d tensor as it is."""
    if not isinstance(v, Tensor) or v.dim() == 0:
        return v
    try:
        return torch.broadcast_to(v, shape).reshape(-1)
    except RuntimeError:
        raise ValueError(f"params[{name!r}] must broadcast to the output's neurons {shape} (per channel: "
                         f"({shape[0]}, 1, 1)), got shape {tuple(v.shape)}") from None


def active_fraction(z: Tensor) -> float | None:
    """The fraction of (t, b, j) entries that were active in the layer that produced ``z``
    (``None`` when ``z`` is not the output of ``sparse_spiking_linear`` or ``sparse_spiking_conv2d``)."""
    s = getattr(z, _ATTR, None)
    return None if s is None else s[1].numel() / z.numel()
