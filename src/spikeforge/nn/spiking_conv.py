"""``SpikingConv2d``: a 2-D convolution and the neuron layer it drives, as one module.

``SpikingConv2d(in_channels, out_channels, kernel_size, neuron, stride=..., padding=...)``
computes ``neuron(TimeDistributed(Conv2d(...))(x))`` on a sequence ``x`` of shape
(T, B, C, H, W) (or (B, T, C, H, W) with the neuron's ``batch_first``). Its parameters are
the pair's (``conv.weight``, ``conv.bias``, ``neuron.<param>``), so a state dict moves between
the two forms. ``backward=Backward.DENSE`` runs exactly that pair; ``Backward.SPARSE`` runs
``spikeforge.nn.sparse_backward.sparse_spiking_conv2d`` (IF/LIF, surrogates of bounded support,
each sequence from rest): the same spikes, and the sparse spiking backward of Perez-Nieves &
Goodman (2021), whose gradients equal the dense ones with the reset detached where the surrogate
is nonzero. ``step(x_t)`` is the pair on one step.
"""
from __future__ import annotations

from torch import Tensor, nn

from .neuron import Neuron, where
from .spiking_linear import Backward, _NeuronLayer

__all__ = ["SpikingConv2d"]


class SpikingConv2d(_NeuronLayer):
    """``neuron(TimeDistributed(Conv2d(in_channels, out_channels, kernel_size, stride, padding,
    dilation, groups, bias)))`` (see the module docstring). ``neuron``: a neuron module
    (``sf.nn.LIF(...)``); ``backward``: ``Backward.DENSE`` or ``Backward.SPARSE``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, neuron: Neuron, *, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 backward: Backward = Backward.DENSE, cutoff: float | None = None) -> None:
        super().__init__()
        self._check(neuron, backward, cutoff)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        self.neuron = neuron
        self.backward_strategy, self.cutoff = backward, cutoff

    def forward(self, x: Tensor) -> Tensor:
        nrn = self.neuron
        if nrn.batch_first and isinstance(x, Tensor) and x.dim() >= 2:
            x = x.transpose(0, 1)
        if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[2] != self.conv.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{where(self)}: x must have shape (T, B, {self.conv.in_channels}, H, W), got {got}")
        if self.backward_strategy is Backward.SPARSE:
            z = self._sparse(x)
            nrn.last_backend = self._sparse_backend(x)
            return z.transpose(0, 1) if nrn.batch_first else z
        y = self.conv(x.flatten(0, 1))
        y = y.view(*x.shape[:2], *y.shape[1:])
        return nrn(y.transpose(0, 1) if nrn.batch_first else y)   # the neuron's layout in and out

    def _sparse(self, x: Tensor) -> Tensor:
        """``backward=Backward.SPARSE``: ``sparse_spiking_conv2d`` with the neuron's spec, parameters
        (which it broadcasts to the output's (out, OH, OW)), surrogate and backend."""
        from .sparse_backward import sparse_spiking_conv2d

        nrn, conv = self._sparse_neuron(), self.conv
        if conv.padding_mode != "zeros":
            raise ValueError(f"{where(self)}: backward=Backward.SPARSE takes padding_mode='zeros', got "
                             f"{conv.padding_mode!r}")
        return sparse_spiking_conv2d(x, conv.weight, conv.bias, nrn.spec, nrn.params(), surrogate=nrn.surrogate,
                                     cutoff=self.cutoff, backend=nrn.backend, stride=conv.stride, padding=conv.padding,
                                     dilation=conv.dilation, groups=conv.groups)

    def step(self, x: Tensor) -> Tensor:
        """One step (B, C, H, W): the pair (the neuron carries its state)."""
        return self.neuron.step(self.conv(x))

    def extra_repr(self) -> str:
        return f"backward={self.backward_strategy.name}" + ("" if self.cutoff is None else f", cutoff={self.cutoff}")
