"""``SpikeLinear``: a drop-in ``nn.Linear`` that skips the zeros of a binary spike input.

For ``x`` in {0, 1}, ``y[n] = b + sum(W[:, i] for i with x[n, i] = 1)``: only the weight
columns of active inputs are read and added, so the forward costs ``density x`` the dense
product. Backward is exact: ``grad W = grad_y^T x`` is a sum of sparse outer products (each
active (n, i) adds ``grad_y[n]`` to column ``i``), ``grad x = grad_y W`` stays dense (the
neuron layer before this one needs it at every position) and ``grad b = sum_n grad_y[n]``.

The sparse path is a small C kernel, ``spikeforge.kernels.sparse`` (compiled on first use with
the fused CPU backend's ``build``, cached on disk): a counting pass (each row's nonzeros and
the entries that are not 0 or 1), then the product from the active indices, kept as CSR for
the weight gradient.

``mode``: ``SparseMode.DENSE`` always runs ``F.linear``; ``SparseMode.SPARSE`` always runs the
kernel and raises ``ValueError`` if the input holds a value other than 0 and 1 (the check is
part of the counting pass, free) or cannot run it (not a CPU float32/float64 tensor, no C
compiler); ``SparseMode.AUTO`` runs the counting pass and takes the sparse path only for a
{0, 1} input on CPU whose density is below the measured crossover (``crossover``:
``CROSSOVER_FORWARD`` without a weight gradient, ``CROSSOVER_TRAIN`` with one, lower for layers
with few outputs, none at ``NARROW_OUT`` or fewer, except after a sparse spiking layer) and whose
product is not tiny (``MIN_WORK``). ``module.last_path`` says which path ran ('dense' or 'sparse') and
``module.last_density`` the density it measured (``None`` when it did not count).
Formulations measured and the crossovers: benchmarks/sparse_linear.py, benchmarks/RESULTS_sparse.md.
"""
from __future__ import annotations

import enum
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import sparse as _kernel
from ..kernels import sparse_backward as _sbw
from ..kernels._fused import first_order
from ..kernels.sparse import build as _build
from ..kernels.sparse import count_active

__all__ = ["SparseMode", "SpikeLinear", "spike_linear", "count_active", "crossover",
           "CROSSOVER_FORWARD", "CROSSOVER_TRAIN", "NARROW_OUT", "MIN_WORK"]

log = logging.getLogger("spikeforge")

# Densities (fraction of nonzero inputs) below which the sparse path beats F.linear on this
# project's 2-core CPUs (float32, 2 threads), measured by benchmarks/sparse_linear.py and
# recorded in benchmarks/RESULTS_sparse.md: the smallest crossover over the five sizes measured
# on either host, rounded down. AMD EPYC (2026-11-24): 0.153-0.34 forward, 0.122-0.31 forward +
# backward (the smallest at 8000x2048->2048); Intel Xeon with AVX-512 (2026-12-03, W^T packed in
# column tiles, two runs): 0.140-0.262 forward, 0.143-0.209 forward + backward.
CROSSOVER_FORWARD = 0.14   # forward only (inference, or no gradient for the weight)
CROSSOVER_TRAIN = 0.12     # forward + backward with a weight gradient
# A narrow layer crosses lower: the sparse kernels also scan every input entry (finding the spikes),
# a cost per input that the product with few outputs does not repay. AUTO's threshold is the crossover
# above times (1 - NARROW_OUT / out_features), 0 (dense, not counted) at NARROW_OUT outputs or fewer.
# Measured on the Intel host (2026-12-03, benchmarks/sparse_linear.py, 8000 rows, 256-1024 inputs):
# crossovers forward / forward + backward 0.01 / 0.04 at 32 outputs, 0.01 / 0.07 at 40, 0.06 / 0.10 at
# 64, >= 0.1 at 128; 20 outputs were slower sparse at every density from 0.01 (0.5x forward).
NARROW_OUT = 40
# Below this many multiply-adds of the dense product (rows x in x out) AUTO stays dense without
# counting: per-call overheads win there (same benchmark, tiny sizes at 5 % density: 2M
# multiply-adds ran 0.6-0.7x as fast as dense, 13M and 17M ran 1.3-1.4x as fast).
MIN_WORK = 10_000_000
_ERRORS: set = set()
# On the output z of a layer with the sparse spiking backward: the CSR (off, idx) over its (t, b)
# rows of the entries whose output gradient that layer reads (nn.sparse_backward).
ACTIVE_SET = "_sf_active_set"
# ... and a list holding the COO indices of that set once a layer after it has built them: such a layer
# returns its input gradient as a sparse COO tensor on them (the values where the sparse layer reads
# them, nothing else written), which the sparse layer's backward reads in place.
ACTIVE_COO = "_sf_active_coo"
# ... and the autograd node that produced it: the set holds only while the output is still that node's
# (not made under no_grad and then given requires_grad, not changed in place), see ``active_set``.
ACTIVE_FN = "_sf_active_fn"
# The COO form costs 3 indices and a value per entry (28 bytes in float32) against 4 bytes per element
# of the dense gradient: it is taken below 1/COMPACT_BELOW of the elements. Measured on the SHD
# network's backward (benchmarks/sparse_backward.py's, T = 500, one thread), COO against dense:
# 107 / 72 ms at 50 % active entries, 34 / 34 at 12-15 %, 21 / 25 at 6-7 % (RESULTS.md 17h).
COMPACT_BELOW = 8


def compact(holder: list | None, idx: Tensor, numel: int) -> bool:
    """Whether a layer after a sparse layer returns its input gradient in COO form on that layer's
    active set (``idx``, ``holder``: ``sparse_input_grad``) rather than dense."""
    return holder is not None and idx.numel() * COMPACT_BELOW <= numel


def sparse_input_grad(shape: tuple, holder: list, off: Tensor, idx: Tensor, values: Tensor) -> Tensor:
    """The input gradient given at the active set (off, idx) of the layer that produced the input
    (``values``, in the set's order) as a sparse COO tensor of the input's ``shape`` (T, B, N),
    on that layer's indices (``holder``: built by the first layer after it that needs them)."""
    if not holder:
        holder.append(_sbw.coo_indices(off, idx, shape[1]))
    return torch.sparse_coo_tensor(holder[0], values, shape, is_coalesced=True, check_invariants=False)


class SparseMode(enum.Enum):
    """How ``SpikeLinear`` computes its product."""
    AUTO = "auto"      # sparse below the measured crossover density, for {0, 1} CPU input
    DENSE = "dense"    # always F.linear
    SPARSE = "sparse"  # always the spike kernel; non-binary input raises ValueError


def crossover(train: bool, out_features: int, narrow: bool = True) -> float:
    """The density of nonzero inputs below which ``SparseMode.AUTO`` takes the sparse path for a
    layer with ``out_features`` outputs: ``CROSSOVER_TRAIN`` (with a weight gradient) or
    ``CROSSOVER_FORWARD``, scaled down for narrow layers (``NARROW_OUT``) unless ``narrow`` is
    False (the input is a sparse spiking layer's output whose gradient is wanted: the sparse path
    then also skips most of the input gradient's product, which a narrow layer's forward does not;
    measured for 256 -> 20 after a sparse layer, forward + backward 1.2 against 1.7-1.9 ms at
    3200 rows, 4.4 against 4.0 ms at 16000)."""
    base = CROSSOVER_TRAIN if train else CROSSOVER_FORWARD
    return narrowed(base, out_features, NARROW_OUT) if narrow else base


def narrowed(crossover: float, outputs: int, narrow: int) -> float:
    """A measured crossover density for a layer with ``outputs`` outputs (per group):
    ``crossover * (1 - narrow / outputs)``, 0 for ``narrow`` outputs or fewer (the kernels'
    scan of every input entry is a cost per input that few outputs do not repay)."""
    return crossover * max(0.0, 1.0 - narrow / max(1, outputs))


def _unsupported(x: Tensor, weight: Tensor) -> str | None:
    """Why the sparse kernel cannot run on these tensors, or None."""
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return f"it runs on CPU tensors only, got {x.device.type}"
    if x.dtype not in _kernel.DTYPES or weight.dtype != x.dtype:
        return f"it needs float32 or float64 input and weight of one dtype, got {x.dtype} and {weight.dtype}"
    lib = _build()
    return lib if isinstance(lib, str) else None


class _SpikeLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x2, off, weight, bias, read, mask, coo):
        y, idx = _kernel.forward(x2, off, weight, bias, mask)
        ctx.save_for_backward(off, idx, weight, *(read or ()))
        ctx.in_features, ctx.x_shape, ctx.coo = x2.shape[1], x.shape, coo
        return y

    @staticmethod
    @first_order("mode=SparseMode.DENSE")
    def backward(ctx, gy):
        off, idx, weight, *read = ctx.saved_tensors
        gy = gy.contiguous()
        gx = None
        if ctx.needs_input_grad[0] and read and compact(ctx.coo, read[1], math.prod(ctx.x_shape)):
            gx = sparse_input_grad(ctx.x_shape, ctx.coo, *read, _sbw.grad_input_at(gy, weight, *read, compact=True))
        elif ctx.needs_input_grad[0]:
            gx = (_sbw.grad_input_at(gy, weight, *read) if read else gy @ weight).view(ctx.x_shape)
        gw = _kernel.grad_weight(off, idx, gy, ctx.in_features) if ctx.needs_input_grad[3] else None
        gb = gy.sum(0) if ctx.needs_input_grad[4] else None
        return gx, None, None, gw, gb, None, None, None


def mark_active(z: Tensor, off: Tensor, idx: Tensor) -> None:
    """Leave the active set (CSR ``off``, ``idx``) of the sparse layer that produced ``z`` on it."""
    setattr(z, ACTIVE_SET, (off, idx))
    setattr(z, ACTIVE_FN, z.grad_fn)


def active_set(x: Tensor, rows: int | None = None) -> tuple[Tensor, Tensor] | None:
    """The active set that the layer which produced ``x`` left on it (``mark_active``), if it
    covers ``rows`` rows (any, if ``None``) and ``x`` is still that layer's output in the autograd
    graph: not a view or copy, not changed in place, not made without grad (a later
    ``requires_grad_()`` makes it a leaf, whose whole gradient is wanted)."""
    read = getattr(x, ACTIVE_SET, None)
    if read is None or x.grad_fn is None or getattr(x, ACTIVE_FN, None) is not x.grad_fn:
        return None
    return read if rows is None or read[0].numel() == rows + 1 else None


def _flat(x: Tensor, weight: Tensor) -> Tensor:
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input must have shape (..., {weight.shape[1]}), got {tuple(x.shape)}")
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1]).contiguous()


def _sparse(x: Tensor, x2: Tensor, off: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor) -> Tensor:
    read = active_set(x, x2.shape[0])
    coo = getattr(x, ACTIVE_COO, None) if read is not None and x.dim() == 3 else None
    y = _SpikeLinearFn.apply(x, x2.detach(), off, weight, bias, read, mask, coo)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def spike_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                 mode: SparseMode = SparseMode.AUTO) -> tuple[Tensor, str, float | None]:
    """``F.linear(x, weight, bias)`` computed as ``mode`` says; returns
    ``(y, path, density)`` with ``path`` 'dense' or 'sparse' and the measured density of
    nonzero inputs (``None`` when it was not counted)."""
    if not isinstance(mode, SparseMode):
        raise TypeError(f"mode must be a SparseMode, got {mode!r}")
    train = torch.is_grad_enabled() and weight.requires_grad
    narrow = not (torch.is_grad_enabled() and x.requires_grad and active_set(x, math.prod(x.shape[:-1])) is not None)
    limit = crossover(train, weight.shape[0], narrow)
    if mode is SparseMode.DENSE or (mode is SparseMode.AUTO and (x.numel() * weight.shape[0] < MIN_WORK
                                                                 or limit <= 0)):
        return F.linear(x, weight, bias), "dense", None
    reason = _unsupported(x, weight)
    if reason is not None:
        if mode is SparseMode.SPARSE:
            raise ValueError(f"SpikeLinear's sparse path cannot run: {reason}")
        if reason not in _ERRORS:
            _ERRORS.add(reason)
            log.warning("spikeforge: SpikeLinear runs dense (sparse path: %s)", reason)
        return F.linear(x, weight, bias), "dense", None
    x2 = _flat(x, weight)
    off, bad, mask = count_active(x2, mask=True)
    density = int(off[-1]) / max(1, x2.numel())
    if mode is SparseMode.SPARSE:
        if bad:
            raise ValueError(f"SpikeLinear's sparse path needs binary input (every value 0 or 1); "
                             f"{bad} of {x2.numel()} values are neither (use SparseMode.AUTO or DENSE)")
        return _sparse(x, x2, off, weight, bias, mask), "sparse", density
    if bad or density >= limit:
        return F.linear(x, weight, bias), "dense", density
    return _sparse(x, x2, off, weight, bias, mask), "sparse", density


class SpikeLinear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state dict) whose product skips the
    zeros of a binary spike input ``(..., in_features)``, e.g. ``(T, B, in)`` or ``(N, in)``.

    ``mode``: ``SparseMode.AUTO`` (sparse below the measured crossover density, ``crossover``,
    for {0, 1} input on CPU, more than ``NARROW_OUT`` outputs and products of at least ``MIN_WORK``
    multiply-adds), ``DENSE`` or ``SPARSE``
    (raises ``ValueError`` on input that is not all 0/1).
    After each call ``last_path`` is 'dense' or 'sparse' and ``last_density`` the measured
    fraction of nonzero inputs (``None`` if not counted)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 mode: SparseMode = SparseMode.AUTO, device=None, dtype=None) -> None:
        if not isinstance(mode, SparseMode):
            raise TypeError(f"mode must be a SparseMode, got {mode!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.mode = mode
        self.last_path: str | None = None
        self.last_density: float | None = None

    def forward(self, x: Tensor) -> Tensor:
        y, self.last_path, self.last_density = spike_linear(x, self.weight, self.bias, self.mode)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode.name}"
