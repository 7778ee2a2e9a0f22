"""Record what a network does: spikes, internal states, firing rates and synaptic operations.

``Monitor(net)`` hooks every neuron layer of ``net`` (``spikeforge.nn.Neuron``, and
``spikeforge.nn.Recurrent`` in place of the neuron it steps) and every weight layer. Use
it as a context manager so the hooks go away afterwards; what was recorded stays readable::

    with Monitor(net, record=("spikes", "v")) as mon:
        net(x)
    mon.get("1", "v"), mon.firing_rates(), mon.synops()

Sequence calls (``module(x)``) and step calls (``module.step(x_t)``, ``spikeforge.step(net,
x_t)``, and the steps a ``Recurrent`` layer takes) are both seen. A stream of step calls
(from a reset or rest state on) is recorded as one call: its steps are joined along time,
so ``get`` returns ``(T, B, ...)`` for it as for a sequence. Samples: a sequence call on
``net`` counts its batch size B; a stream of steps counts B once, when it starts (its
first step); firing rates count every step of every sample.

**SynOps** (synaptic operations) are counted on the input side of each weight layer: when
a layer's input holds only spikes (every value 0, 1 or -1), each nonzero input counts one
operation per synapse it drives, i.e. ``Linear``: ``nonzero inputs x out_features``;
``ConvNd``: per output element, the nonzero inputs inside its receptive field (exact,
borders and stride included), which equals ``nonzero x out_channels x kernel size /
stride`` away from borders. Inputs that are not spikes (e.g. an analogue first layer)
count as dense multiply-accumulates (MACs) instead. ``energy()`` weights both with
per-operation energies (defaults: 0.9 pJ per accumulate, 4.6 pJ per MAC, the 45 nm
32-bit float figures of Horowitz 2014), or a named preset (``energy(preset="loihi")``, see
``spikeforge.quant.ENERGY_PRESETS``). New weight-layer types join with
``register_synops``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .nn.delay import Delay, DelayPer
from .nn.layers import Recurrent
from .nn.neuron import Neuron

__all__ = ["Monitor", "register_synops", "SYNOPS"]

#: module type -> ``ops(module, active)``: operations caused by the 0/1 tensor ``active``
#: (the layer's input with 1 where an input is nonzero, or all ones for MACs).
SYNOPS: dict[type[nn.Module], Callable[[nn.Module, Tensor], int]] = {}


def register_synops(module_type: type[nn.Module]):
    """Decorator: register ``fn(module, active) -> int`` as the op count of ``module_type``."""
    def add(fn):
        SYNOPS[module_type] = fn
        return fn
    return add


@register_synops(nn.Linear)
def _linear_ops(m: nn.Linear, active: Tensor) -> int:
    return int(active.sum().item()) * m.out_features


def _conv_ops(m: nn.modules.conv._ConvNd, active: Tensor) -> int:
    groups = m.groups
    ones = torch.ones((groups, m.in_channels // groups) + tuple(m.kernel_size), dtype=active.dtype,
                      device=active.device)
    counted = m._conv_forward(active, ones, None)   # per group: active inputs in each receptive field
    return int(counted.sum().item()) * (m.out_channels // groups)


for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_synops(_conv)(_conv_ops)


@register_synops(Delay)
def _delay_ops(m: Delay, active: Tensor) -> int:
    return int(active.sum().item()) * m.weight.shape[0] if m.per is DelayPer.SYNAPSE else 0


def _ops_fn(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in SYNOPS:
            return SYNOPS[cls]
    return None


def _is_spikes(x: Tensor) -> bool:
    return bool(((x == 0) | (x.abs() == 1)).all())


class Monitor:
    """Hooks on ``net``'s neuron layers (all, or ``layers``: names or modules) recording
    the keys in ``record`` per call: ``"spikes"`` (the layer output; the membrane for an
    ``LI`` readout) and any state variable name (e.g. ``"v"``, ``"i"``), read from the
    neuron's ``trace`` (its ``record`` flag is switched on while monitored); a state is
    recorded for the layers that have it (``"i"`` only for ``CubaLIF``...). Firing rates
    and SynOps/MACs are always counted. ``remove()`` (or leaving the ``with`` block)
    removes the hooks and restores the ``record`` flags."""

    def __init__(self, net: nn.Module, record: Iterable[str] = ("spikes",),
                 layers: Iterable[str | nn.Module] | None = None) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if isinstance(record, str):
            record = (record,)
        self.net, self.record = net, tuple(record)
        self.layers = self._targets(net, layers)
        self._check_record()
        self._records = {name: {k: [] for k in self.record} for name in self.layers}
        self._pending: dict[str, dict[str, list]] = {}   # steps of the stream in progress
        self._in_call = False
        self._counts: dict[str, list] = {}
        self._synops: dict[str, int] = {}
        self._macs: dict[str, int] = {}
        self.num_samples = 0
        self._handles, self._flags, self._steppers = [], {}, []
        self._attach()

    # -- set-up --------------------------------------------------------------------------
    @staticmethod
    def _targets(net: nn.Module, layers) -> dict[str, nn.Module]:
        names = {m: (n or "net") for n, m in net.named_modules()}
        owner = {m.neuron: m for m in names if isinstance(m, Recurrent)}
        if layers is None:
            chosen = [m for m in names if isinstance(m, Neuron)]
        else:
            by_name = {n: m for m, n in names.items()}
            chosen = []
            for item in layers:
                m = by_name.get(item) if isinstance(item, str) else item
                if m is None or m not in names:
                    raise ValueError(f"layers: {item!r} is not a module of net; names: {sorted(by_name)}")
                if not isinstance(m, (Neuron, Recurrent)):
                    raise TypeError(f"layers: {item!r} is a {type(m).__name__}, expected a spikeforge.nn.Neuron "
                                    f"or Recurrent layer")
                chosen.append(m)
        out = {}
        for m in chosen:
            m = owner.get(m, m)   # a neuron stepped by a Recurrent is seen through it
            out[names[m]] = m
        return out

    def _check_record(self) -> None:
        known = {"spikes"}
        for m in self.layers.values():
            known.update(_neuron(m).spec_type.state)
        unknown = [k for k in self.record if k not in known]
        if unknown:
            raise ValueError(f"record: unknown key(s) {unknown}; expected 'spikes' or a state of the monitored "
                             f"neurons: {sorted(known - {'spikes'})}")

    def _attach(self) -> None:
        states = [k for k in self.record if k != "spikes"]
        for name, m in self.layers.items():
            neuron = _neuron(m)
            if states and any(k in neuron.spec_type.state for k in states) and m is neuron:
                self._flags.setdefault(neuron, neuron.record)
                neuron.record = True
            if m is neuron:   # a Recurrent layer is seen through its neuron's steps only
                self._handles.append(m.register_forward_hook(self._layer_hook(name, neuron)))
            neuron._step_hooks[id(self)] = self._step_hook(name, first=not self._steppers)
            self._steppers.append(neuron)
        for name, m in self.net.named_modules():
            fn = _ops_fn(m)
            if fn is not None:
                hook = self._ops_hook(name or "net", fn)
                self._handles.append(m.register_forward_pre_hook(hook))
                if isinstance(m, Delay):   # its step does not go through forward
                    m.__dict__.setdefault("_pre_step_hooks", {})[id(self)] = lambda mod, x, h=hook: h(mod, (x,))
                    self._steppers.append(m)
        # a batch-first network's input is (B, T, ...): samples are counted on dim 0
        self._batch_dim = 0 if any(_neuron(m).batch_first for m in self.layers.values()) else 1
        self._handles.append(self.net.register_forward_pre_hook(self._count_samples))
        self._handles.append(self.net.register_forward_hook(self._call_done, always_call=True))

    # -- hooks ---------------------------------------------------------------------------
    def _count_samples(self, module, args) -> None:
        self._in_call = True
        if args and isinstance(args[0], Tensor) and args[0].dim() >= 2:
            self.num_samples += int(args[0].shape[self._batch_dim])

    def _call_done(self, module, args, out) -> None:
        self._in_call = False

    def _count_spikes(self, name: str, neuron, z: Tensor, dims: tuple[int, ...]) -> None:
        if neuron.spec_type.spiking and z.dim() >= len(dims):
            total = z.sum(dim=dims)
            steps = math.prod(z.shape[d] for d in dims)
            old = self._counts.get(name)
            self._counts[name] = [total, steps] if old is None else [old[0] + total, old[1] + steps]

    def _step_hook(self, name: str, first: bool):
        def hook(neuron, x, z, new_stream):
            if new_stream:
                self._flush(name)
                if first and not self._in_call:
                    self.num_samples += int(z.shape[0]) if z.dim() else 1
            z = z.detach()
            self._count_spikes(name, neuron, z, (0,))
            pending = self._pending.setdefault(name, {k: [] for k in self.record})
            for key in self.record:
                v = z if key == "spikes" else getattr(neuron.state, key, None)
                if v is not None:
                    pending[key].append(v.detach().unsqueeze(0))
        return hook

    def _flush(self, name: str | None = None) -> None:
        for n in ([name] if name is not None else list(self._pending)):
            for key, steps in self._pending.pop(n, {}).items():
                if steps:
                    self._records[n][key].append(torch.cat(steps))

    @property
    def records(self) -> dict[str, dict[str, list]]:
        """``records[layer][key]``: the list of recorded tensors, one per call or stream."""
        self._flush()
        return self._records

    def _layer_hook(self, name: str, neuron: Neuron):
        def hook(module, args, out):
            if not isinstance(out, Tensor):
                return
            z = out.detach()
            if neuron.batch_first and z.dim() >= 2:
                z = z.transpose(0, 1)
            self._count_spikes(name, neuron, z, (0, 1))
            for key in self.record:
                if key == "spikes":
                    self._records[name][key].append(z)
                elif neuron.trace is not None and key in neuron.trace._fields:
                    self._records[name][key].append(getattr(neuron.trace, key).detach())
        return hook

    def _ops_hook(self, name: str, fn):
        def hook(module, args):
            if not args or not isinstance(args[0], Tensor):
                return
            with torch.no_grad():
                x = args[0].detach()
                if _is_spikes(x):
                    self._synops[name] = self._synops.get(name, 0) + fn(module, (x != 0).to(x.dtype))
                else:
                    self._macs[name] = self._macs.get(name, 0) + fn(module, torch.ones_like(x))
        return hook

    # -- results -------------------------------------------------------------------------
    def get(self, layer: str, key: str = "spikes") -> Tensor:
        """Everything recorded for ``layer`` under ``key``, calls joined along the batch dim
        (use ``records[layer][key]`` for the per-call list)."""
        if layer not in self.records:
            raise KeyError(f"layer {layer!r} is not monitored; monitored: {list(self.records)}")
        if key not in self.records[layer]:
            raise KeyError(f"key {key!r} was not recorded; recorded: {list(self.record)}")
        items = self.records[layer][key]
        if not items:
            raise ValueError(f"nothing recorded yet for layer {layer!r}, key {key!r}")
        return torch.cat(items, dim=1)

    def neuron_rates(self, layer: str) -> Tensor:
        """Spikes per step of each neuron of ``layer``, averaged over all recorded steps and samples."""
        if layer not in self._counts:
            raise KeyError(f"no spikes counted for layer {layer!r}; counted: {list(self._counts)}")
        total, steps = self._counts[layer]
        return total / steps

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per step of each spiking layer (0..1 for 0/1 spikes)."""
        return {name: self.neuron_rates(name).mean().item() for name in self._counts}

    def synops(self) -> dict[str, int]:
        """Synaptic operations per weight layer, summed over all recorded calls."""
        return dict(self._synops)

    def macs(self) -> dict[str, int]:
        """Dense multiply-accumulates per weight layer whose input was not spikes."""
        return dict(self._macs)

    def neuron_updates(self, layer: str | None = None) -> int:
        """Neuron updates (neurons x time steps x samples) counted so far: of ``layer``, or of all
        spiking layers when ``layer`` is None."""
        if layer is None:
            return sum(self.neuron_updates(name) for name in self._counts)
        if layer not in self._counts:
            raise KeyError(f"no spikes counted for layer {layer!r}; counted: {list(self._counts)}")
        total, steps = self._counts[layer]
        return int(steps) * total.numel()

    def energy(self, e_synop: float | None = None, e_mac: float | None = None, *, preset=None) -> float:
        """Estimated energy in joules: ``SynOps * e_synop + MACs * e_mac`` over all calls
        (divide by ``num_samples`` for a per-sample figure); or, with ``preset`` (a name in
        ``spikeforge.quant.ENERGY_PRESETS`` such as ``"loihi"``, or an ``EnergyPreset``), its
        per-op figures plus ``neuron_updates() * e_update`` (sources: docs/hardware.md)."""
        if preset is None:
            e_synop, e_mac = 0.9e-12 if e_synop is None else e_synop, 4.6e-12 if e_mac is None else e_mac
            return sum(self._synops.values()) * e_synop + sum(self._macs.values()) * e_mac
        if e_synop is not None or e_mac is not None:
            raise ValueError("energy: give a preset or per-operation energies (e_synop, e_mac), not both")
        from .quant._energy import energy_preset
        return energy_preset(preset).energy(sum(self._synops.values()), sum(self._macs.values()),
                                            self.neuron_updates())

    def clear(self) -> None:
        """Forget everything recorded and counted so far (the hooks stay)."""
        self._records = {name: {k: [] for k in self.record} for name in self.layers}
        self._pending, self._counts, self._synops, self._macs, self.num_samples = {}, {}, {}, {}, 0

    def remove(self) -> None:
        """Remove the hooks and restore the neurons' ``record`` flags."""
        self._flush()
        for h in self._handles:
            h.remove()
        for m in self._steppers:
            (m._step_hooks if isinstance(m, Neuron) else m.__dict__.get("_pre_step_hooks", {})).pop(id(self), None)
        self._handles, self._steppers = [], []
        for neuron, flag in self._flags.items():
            neuron.record = flag
        self._flags = {}

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _neuron(m: nn.Module) -> Neuron:
    return m.neuron if isinstance(m, Recurrent) else m
