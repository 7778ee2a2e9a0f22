"""``SpikeConv2d``: a drop-in ``nn.Conv2d`` that skips the zeros of a binary spike input.

For ``x`` in {0, 1}, each active input event (n, c, h, w) adds the weight vector
``W[:, c, kh, kw]`` (the outputs of c's group) to the output positions it reaches through the
taps (kh, kw), so the forward costs ``density x`` the dense convolution. Backward is exact:
the weight gradient scatters the same events the other way
(``grad W[o, c, kh, kw] += grad_y[n, o, oh, ow]`` for each active event), ``grad x`` stays
dense (torch's own transposed convolution: the neuron layer before this one needs it at every
position) and ``grad b = grad_y`` summed over batch and positions.

The sparse path is a small C kernel, ``spikeforge.kernels.sparse_conv`` (compiled on first
use with the fused CPU backend's ``build``, cached on disk); the density and the binary check
come from ``SpikeLinear``'s counting pass on the (N*C, H*W) view of the input.

``mode`` as in ``SpikeLinear``: ``SparseMode.DENSE`` always runs ``F.conv2d``;
``SparseMode.SPARSE`` always runs the kernel and raises ``ValueError`` for an input value other
than 0 and 1 or a tensor it cannot take (not a CPU float32/float64 tensor, no C compiler);
``SparseMode.AUTO`` takes the sparse path only for a {0, 1} CPU input whose density is below
the measured crossover (``crossover``: ``CROSSOVER_FORWARD`` without a weight gradient,
``CROSSOVER_TRAIN`` with one, lower for few output channels per group, none at ``NARROW_OUT`` or
fewer) and whose convolution is not small (``MIN_WORK_FORWARD`` / ``MIN_WORK`` multiply-adds). ``last_path`` and
``last_density`` report what ran. Crossovers: benchmarks/sparse_conv.py, benchmarks/RESULTS_sparse.md.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..kernels import sparse_conv as _kernel
from ..kernels._fused import first_order
from ..kernels.sparse import count_active
from .sparse import SparseMode, _unsupported, narrowed

__all__ = ["SpikeConv2d", "spike_conv2d", "crossover", "CROSSOVER_FORWARD", "CROSSOVER_TRAIN", "NARROW_OUT", "MIN_WORK",
           "MIN_WORK_FORWARD"]

log = logging.getLogger("spikeforge")

# Densities below which the sparse path beats F.conv2d on this project's 2-core CPUs (float32,
# 2 threads), measured by benchmarks/sparse_conv.py and recorded in benchmarks/RESULTS_sparse.md:
# the smallest crossover of the three large layers (N x C x H x W -> O: 32x64x32x32->128,
# 16x64x32x32->128 and 32x128x16x16->256, 3x3) on either host, rounded down. AMD EPYC (two runs,
# 2026-12-02): forward 0.136-0.227, forward + backward 0.147-0.210; Intel Xeon with AVX-512
# (2026-12-03, the kernels of that day): forward 0.111-0.150, forward + backward 0.137-0.183.
CROSSOVER_FORWARD = 0.11   # forward only (inference, or no gradient for the weight)
CROSSOVER_TRAIN = 0.13     # forward + backward with a weight gradient
# Below these many multiply-adds of the dense convolution AUTO stays dense without counting.
# Forward only: a 19 M multiply-add layer (8x32x16x16->32) ran 0.5-2.2x as fast as F.conv2d at
# 0.5-5 % density on the AMD host, the 1.2-2.4 G layers 1.8-7x. With a weight gradient the 19 M
# layer ran 1.8-2.9x as fast there but 0.88-0.99x at 5-15 % on the Intel host (crossover 4.6 %),
# and a 9.4 M one (32x2x32x32->16) 1.0-1.6x there and 0.8-0.9x on Intel at every density.
MIN_WORK_FORWARD = 100_000_000
MIN_WORK = 20_000_000
# Few outputs per group cross lower, as for SpikeLinear (nn.sparse.narrowed): AUTO's threshold is the
# crossover above times (1 - NARROW_OUT / (out_channels / groups)). Measured on the Intel host
# (2026-12-03, 32 x 64 x 32 x 32, 3x3): forward / forward + backward crossovers 0.039 / 0.024 at 16
# outputs, 0.061 / 0.061 at 32; 0.092 / >= 0.1 at 64 (16 inputs); 0.11-0.15 / 0.14-0.18 at 128-256.
NARROW_OUT = 20
_ERRORS: set = set()


def _padding(padding, k: tuple, dil: tuple, stride: tuple) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding from an int, a pair, 'valid' or 'same'."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        th, tw = dil[0] * (k[0] - 1), dil[1] * (k[1] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = _int_pair(padding, "padding", 0)
    return ph, ph, pw, pw


def _int_pair(value, name: str, low: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= ``low``) as a pair; the kernel takes exactly two."""
    pair = _pair(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in pair):
        raise ValueError(f"{name} must be an int >= {low} or a pair of them, got {value!r}")
    return tuple(pair)


def _geometry(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> tuple[tuple | None, _kernel.Geometry]:
    """The convolution's geometry, and the ``F.pad`` argument that the sparse path applies to the
    input first when the padding is asymmetric (else None); checks the shapes."""
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (out, in / groups, kH, kW), got {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be a positive int dividing out_channels={weight.shape[0]}, got {groups!r}")
    if x.dim() != 4 or x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"input must have shape (N, {weight.shape[1] * groups}, H, W), got {tuple(x.shape)}")
    k, s, d = tuple(weight.shape[2:]), _int_pair(stride, "stride", 1), _int_pair(dilation, "dilation", 1)
    top, bottom, left, right = _padding(padding, k, d, s)
    n, c, h, w = x.shape
    pad = None
    if (top, left) != (bottom, right):  # asymmetric ('same' with an even kernel): pad, stays binary
        pad, h, w, top, left = (left, right, top, bottom), h + top + bottom, w + left + right, 0, 0
    oh = (h + 2 * top - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + 2 * left - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"input {tuple(x.shape)} is smaller than the dilated kernel {k} with padding {padding!r}")
    return pad, _kernel.Geometry(n, c, h, w, groups, weight.shape[0] // groups, k[0], k[1], oh, ow, s, (top, left), d)


class _SpikeConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, off, weight, bias, geo, mask):
        y, idx = _kernel.forward(x, off, weight, bias, geo, mask)
        ctx.save_for_backward(off, idx, weight)
        ctx.geo, ctx.x_shape = geo, x.shape
        return y

    @staticmethod
    @first_order("mode=SparseMode.DENSE")
    def backward(ctx, gy):
        off, idx, weight = ctx.saved_tensors
        geo, gy = ctx.geo, gy.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(ctx.x_shape, weight, gy, geo.stride, geo.pad, geo.dilation, geo.groups)
        if ctx.needs_input_grad[2]:
            gw = _kernel.grad_weight(off, idx, gy, geo)
        if ctx.needs_input_grad[3]:
            gb = gy.sum((0, 2, 3))
        return gx, None, gw, gb, None, None


def _fallback(reason: str, mode: SparseMode) -> None:
    if mode is SparseMode.SPARSE:
        raise ValueError(f"SpikeConv2d's sparse path cannot run: {reason}")
    if reason not in _ERRORS:
        _ERRORS.add(reason)
        log.warning("spikeforge: SpikeConv2d runs dense (sparse path: %s)", reason)


def crossover(train: bool, out_per_group: int) -> float:
    """The density of nonzero inputs below which ``SparseMode.AUTO`` takes the sparse path for a
    convolution with ``out_per_group`` output channels per group: ``CROSSOVER_TRAIN`` (with a
    weight gradient) or ``CROSSOVER_FORWARD``, scaled down for few outputs (``NARROW_OUT``)."""
    return narrowed(CROSSOVER_TRAIN if train else CROSSOVER_FORWARD, out_per_group, NARROW_OUT)


def spike_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
                 groups: int = 1, mode: SparseMode = SparseMode.AUTO) -> tuple[Tensor, str, float | None]:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` for ``x`` of shape
    (N, C, H, W) or (C, H, W), computed as ``mode`` says; returns ``(y, path, density)`` with
    ``path`` 'dense' or 'sparse' and the measured density of nonzero inputs (``None`` when it
    was not counted)."""
    if not isinstance(mode, SparseMode):
        raise TypeError(f"mode must be a SparseMode, got {mode!r}")
    if x.dim() == 3:  # unbatched, as F.conv2d takes it
        y, path, density = spike_conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, mode)
        return y.squeeze(0), path, density
    pad, geo = _geometry(x, weight, stride, padding, dilation, groups)
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"bias must have shape ({weight.shape[0]},) (one value per output channel), got "
                         f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
    work = geo.n * geo.og * geo.groups * geo.oh * geo.ow * (geo.c // geo.groups) * geo.kh * geo.kw
    train = torch.is_grad_enabled() and weight.requires_grad
    limit = crossover(train, geo.og)
    if mode is SparseMode.DENSE or (mode is SparseMode.AUTO and (work < (MIN_WORK if train else MIN_WORK_FORWARD)
                                                                 or limit <= 0)):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups), "dense", None
    reason = _unsupported(x, weight)
    if reason is None and bias is not None and (bias.dtype != x.dtype or bias.device.type != "cpu"):
        reason = f"the bias must be a CPU tensor of the input's dtype, got {bias.dtype} on {bias.device.type}"
    if reason is not None:
        _fallback(reason, mode)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups), "dense", None
    xp = (x if pad is None else F.pad(x, pad)).contiguous()
    off, bad, mask = count_active(xp.view(geo.n * geo.c, geo.h * geo.w), mask=True)
    density = int(off[-1]) / max(1, x.numel())
    if mode is SparseMode.SPARSE and bad:
        raise ValueError(f"SpikeConv2d's sparse path needs binary input (every value 0 or 1); "
                         f"{bad} of {xp.numel()} values are neither (use SparseMode.AUTO or DENSE)")
    if mode is SparseMode.AUTO and (bad or density >= limit):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups), "dense", density
    return _SpikeConv2dFn.apply(xp, off, weight, bias, geo, mask), "sparse", density


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters, initialisation and state dict) whose
    convolution skips the zeros of a binary spike input (N, C, H, W) or (C, H, W); fold time
    into the batch with ``sf.nn.TimeDistributed``.

    ``mode``: ``SparseMode.AUTO`` (sparse below the measured crossover density, for {0, 1}
    input on CPU and convolutions of at least ``MIN_WORK_FORWARD`` (no weight gradient) or
    ``MIN_WORK`` (with one) multiply-adds), ``DENSE`` or
    ``SPARSE`` (raises ``ValueError`` on input that is not all 0/1). After each call
    ``last_path`` is 'dense' or 'sparse' and ``last_density`` the measured fraction of nonzero
    inputs (``None`` if not counted). Non-zero ``padding_mode`` pads first, as ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 mode: SparseMode = SparseMode.AUTO, device=None, dtype=None) -> None:
        if not isinstance(mode, SparseMode):
            raise TypeError(f"mode must be a SparseMode, got {mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self.mode = mode
        self.last_path: str | None = None
        self.last_density: float | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, mode: SparseMode = SparseMode.AUTO) -> "SpikeConv2d":
        """A ``SpikeConv2d`` with ``conv``'s arguments and a copy of its parameters."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, mode=mode,
                device=conv.weight.device, dtype=conv.weight.dtype)
        m.load_state_dict(conv.state_dict())
        return m

    def forward(self, x: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        y, self.last_path, self.last_density = spike_conv2d(
            x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups, self.mode)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode.name}"

