"""Run a spikeforge network under other frameworks' harnesses.

``neurobench_model(net)`` wraps a network for NeuroBench (``pip install neurobench``)::

    from neurobench.benchmarks import Benchmark
    model = spikeforge.interop.neurobench_model(net)          # net is time-first (T, B, ...)
    Benchmark(model, loader, [], [], [static, workload]).run()  # loader gives (B, T, ...)

NeuroBench feeds ``(B, T, ...)`` batches; a time-first network is wrapped in
``BatchFirst`` (transpose in, transpose out), a network built with ``batch_first=True``
layers is passed as it is (``batch_first=True``). ``spikeforge.nn.Neuron`` and ``Recurrent``
(whose neuron runs by ``step``, which NeuroBench's forward hooks do not see) are registered
as NeuroBench activation modules, so its activation sparsity counts their outputs.
What NeuroBench's metrics count, and where they differ from ``spikeforge.Monitor``, is in
docs/encoding_layers.md ("NeuroBench").
"""
from __future__ import annotations

from torch import Tensor, nn

from .nn.layers import Recurrent
from .nn.neuron import Neuron

__all__ = ["BatchFirst", "neurobench_model"]


class BatchFirst(nn.Module):
    """``net`` (time-first) called on ``(B, T, ...)``: returns its output as ``(B, T, ...)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.transpose(0, 1)).transpose(0, 1)


def neurobench_model(net: nn.Module, *, batch_first: bool = False):
    """A ``neurobench.models.TorchModel`` running ``net`` on NeuroBench's ``(B, T, ...)``
    batches, with ``spikeforge.nn.Neuron`` and ``Recurrent`` registered as its activation modules.
    ``batch_first=True``: ``net`` already takes ``(B, T, ...)`` (no wrapper)."""
    try:
        from neurobench.models import TorchModel
    except ImportError as e:
        raise ImportError(f"neurobench_model needs NeuroBench: pip install neurobench ({e})") from None
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    model = TorchModel(net if batch_first else BatchFirst(net))
    model.add_activation_module(Neuron)
    model.add_activation_module(Recurrent)   # found before its neuron: the layer's output is its spikes
    return model
