"""Shared pieces of the spikeforge <-> peer NIR tests (test_nir_*.py): the small spikeforge
nets, seeded inputs, a layer-by-layer spikeforge run, and runners that drive each peer's
*own* imported module step by step and record what its neuron modules emit (forward hooks).

Nothing here re-implements a peer: each runner imports the real package and only feeds it
inputs and collects outputs. The peer packages live in .venv-interop (``make interop``); this
module imports none of them at import time, so the test files still collect where they are
absent (they skip through ``pytest.importorskip``).
"""
from __future__ import annotations

import torch
from torch import nn

import spikeforge as sf

T, B = 40, 4


def seeded(*shape, seed: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """Uniform random floats in [offset, offset + scale) from a private generator."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * scale + offset


def mlp(seed: int = 0, reset: str = "hard") -> nn.Sequential:
    """``Linear(4,16) -> LIF -> Linear(16,3) -> LIF`` (tau 2, threshold 1, v_reset 0, r 1), weights
    scaled so that both layers fire on 5-40 % of the steps for ``mlp_input()``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), sf.nn.LIF(reset=reset), nn.Linear(16, 3), sf.nn.LIF(reset=reset))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(3.0)
        net[2].bias.add_(1.0)
    return net


def mlp_input(seed: int = 1) -> torch.Tensor:
    return seeded(T, B, 4, seed=seed, scale=2.0)


def conv_net(pool: str, seed: int = 0) -> nn.Sequential:
    """``TimeDistributed(Conv2d(2,4,3,padding=1)) -> LIF -> SumPool2d(2) or AvgPool2d(2) -> Flatten
    -> Linear(64,3) -> LIF`` on (T, B, 2, 8, 8)."""
    torch.manual_seed(seed)
    pooling = sf.nn.SumPool2d(2) if pool == "sum" else sf.nn.AvgPool2d(2)
    net = nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)), sf.nn.LIF(reset="hard"), pooling,
                        sf.nn.Flatten(), nn.Linear(64, 3), sf.nn.LIF(reset="hard"))
    with torch.no_grad():
        net[0].module.weight.mul_(3.0)
        net[4].weight.mul_(3.0 if pool == "sum" else 8.0)
        net[4].bias.add_(0.5)
    return net


CONV_INPUT_SHAPE = (2, 8, 8)


def conv_input(seed: int = 2) -> torch.Tensor:
    return seeded(T, B, *CONV_INPUT_SHAPE, seed=seed, scale=2.0)


@torch.no_grad()
def sf_layers(net: nn.Sequential, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """spikeforge's own run of ``net`` on the time-first ``x``: the output (T, B, ...) of every
    neuron layer, in order, and the network's output."""
    sf.reset(net)
    outs = []
    for layer in net:
        x = layer(x)
        if isinstance(layer, (sf.nn.Neuron, sf.nn.Recurrent)):
            outs.append(x)
    return outs, x


def fraction(z: torch.Tensor) -> float:
    return float(z.float().mean())


def _record(module: nn.Module, types) -> dict[str, list]:
    rec: dict[str, list] = {}

    def hook(name):
        def f(mod, args, out):
            rec.setdefault(name, []).append((out[0] if isinstance(out, tuple) else out).detach())
        return f

    for name, mod in module.named_modules():
        if isinstance(mod, types):
            mod.register_forward_hook(hook(name))
    return rec


def _ordered(rec: dict[str, list], graph_order: list[str] | None = None) -> list[torch.Tensor]:
    keys = sorted(rec, key=lambda k: (graph_order.index(k) if graph_order and k in graph_order else 0, k))
    return [torch.stack(rec[k]) if len(rec[k]) > 1 else rec[k][0] for k in keys]


@torch.no_grad()
def run_snntorch(m: nn.Module, x: torch.Tensor):
    """snnTorch's imported GraphModule, one step per call after ``snntorch.utils.reset``:
    (outputs of its Leaky modules, each (T, B, ...), in graph order; network output (T, B, ...))."""
    import snntorch
    from snntorch import utils
    rec = _record(m, (snntorch.Leaky, snntorch.RLeaky, snntorch.Synaptic, snntorch.RSynaptic))
    utils.reset(m)
    out = []
    for t in range(x.shape[0]):
        o = m(x[t])
        out.append(o[0] if isinstance(o, tuple) else o)
    return _ordered(rec, [n for n, _ in m.named_modules()]), torch.stack(out)


@torch.no_grad()
def run_spikingjelly(m: nn.Module, x: torch.Tensor, mode: str):
    """SpikingJelly's imported module: step_mode 'm' takes the whole time-first sequence,
    'single' steps pass the returned state back. Its neurons are wrapped in _NIRStatefulModule
    (which calls ``functional_forward``, so the hook sits on the wrapper)."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.nir_exchange.from_nir import _NIRStatefulModule
    rec = _record(m, _NIRStatefulModule)
    functional.reset_net(m)
    if mode == "m":
        out, _ = m(x)
    else:
        outs, state = [], None
        for t in range(x.shape[0]):
            o, state = m(x[t], state)
            outs.append(o)
        out = torch.stack(outs)
    return _ordered(rec, [n for n, _ in m.named_modules()]), out


@torch.no_grad()
def run_norse(m: nn.Module, x: torch.Tensor):
    """Norse's imported GraphExecutor, one step per call with the state passed back (None: rest)."""
    import norse.torch as norse
    rec = _record(m, (norse.LIFBoxCell, norse.LIFCell, norse.LIBoxCell, norse.IAFCell))
    outs, state = [], None
    for t in range(x.shape[0]):
        o, state = m(x[t], state)
        outs.append(o)
    return _ordered(rec, [n for n, _ in m.named_modules()]), torch.stack(outs)


def assert_identical(peer: torch.Tensor, ours: torch.Tensor, what: str) -> None:
    """Exact equality of spike trains (dtype aside: some peers compute in float64)."""
    assert peer.shape == ours.shape, f"{what}: shape {tuple(peer.shape)} != {tuple(ours.shape)}"
    peer = peer.to(ours.dtype)
    diff = int((peer != ours).sum())
    assert diff == 0, (f"{what}: {diff} of {ours.numel()} entries differ (peer {int(peer.sum())} spikes, "
                       f"spikeforge {int(ours.sum())})")
