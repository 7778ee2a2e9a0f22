"""SynOps / MACs / neuron updates per layer of a monitored run, as estimated energy per layer."""
from __future__ import annotations

import math
from typing import Mapping

from ..monitor import Monitor
from . import _common as c

__all__ = ["energy_bars", "layer_energy"]

DEFAULT_E_SYNOP, DEFAULT_E_MAC = 0.9e-12, 4.6e-12       # Monitor.energy()'s defaults (Horowitz 2014, 45 nm)
PARTS = (("synops", "SynOps (accumulates)", "tab:blue"), ("macs", "MACs", "tab:orange"),
         ("updates", "neuron updates", "tab:green"))
UNITS = ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ"), (1e-12, "pJ"), (1e-15, "fJ"))


def _figures(preset, e_synop, e_mac) -> tuple[float, float | None, float, str]:
    """Per-operation energies ``(e_synop, e_mac, e_update, name)`` as ``Monitor.energy`` uses them."""
    for name, value in (("e_synop", e_synop), ("e_mac", e_mac)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f"energy_bars: {name} must be a finite number of joules >= 0 (or None), got {value!r}")
    if preset is None:
        return (DEFAULT_E_SYNOP if e_synop is None else e_synop, DEFAULT_E_MAC if e_mac is None else e_mac, 0.0,
                "per-op energies" if e_synop is not None or e_mac is not None else "45 nm fp32 defaults")
    if e_synop is not None or e_mac is not None:
        raise ValueError("energy_bars: give a preset or per-operation energies (e_synop, e_mac), not both")
    from ..quant._energy import energy_preset

    p = energy_preset(preset)
    return p.e_synop, p.e_mac, p.e_update, p.name


def layer_energy(mon: Monitor, *, preset=None, e_synop: float | None = None,
                 e_mac: float | None = None) -> dict[str, dict[str, float]]:
    """``{layer: {"synops": J, "macs": J, "updates": J}}`` over everything ``mon`` counted, in
    the network's module order; the sum over layers equals ``mon.energy(...)`` with the same
    arguments. Weight layers have SynOps/MACs, spiking neuron layers have updates (non-zero
    only for a preset with an energy per neuron update, e.g. ``"loihi"``)."""
    es, em, eu, name = _figures(preset, e_synop, e_mac)
    synops, macs = mon.synops(), mon.macs()
    updates = {layer: mon.neuron_updates(layer) for layer in mon.firing_rates()}
    if em is None and any(macs.values()):
        raise ValueError(f"energy_bars: preset {name!r} has no energy per dense MAC, but MACs were counted in "
                         f"{[k for k, v in macs.items() if v]} (non-spike input): encode the input as spikes")
    order = [n or "net" for n, _ in mon.net.named_modules()]
    out = {}
    for layer in order:
        if layer in synops or layer in macs or layer in updates:
            out[layer] = {"synops": synops.get(layer, 0) * es, "macs": macs.get(layer, 0) * (em or 0.0),
                          "updates": updates.get(layer, 0) * eu}
    return out


def _unit(top: float) -> tuple[float, str]:
    for scale, unit in UNITS:
        if top >= scale:
            return scale, unit
    return UNITS[-1]


def energy_bars(source, *, preset=None, e_synop: float | None = None, e_mac: float | None = None,
                per_sample: bool = True, ax=None, title: str | None = None):
    """Estimated energy per layer as stacked bars (SynOps, MACs, neuron updates).

    ``source``: a ``Monitor`` after running the network (its SynOps, MACs and neuron updates,
    weighted as ``Monitor.energy`` does: ``preset`` a name in
    ``spikeforge.quant.ENERGY_PRESETS`` or an ``EnergyPreset``, or ``e_synop``/``e_mac``
    joules, default 0.9/4.6 pJ), or a dict ``{layer: joules}``. ``per_sample``: divide a
    Monitor's figures by its ``num_samples``. Returns the ``Figure``."""
    if isinstance(source, Monitor):
        parts = layer_energy(source, preset=preset, e_synop=e_synop, e_mac=e_mac)
        if per_sample:
            if source.num_samples == 0:
                raise ValueError("energy_bars: the Monitor has seen no samples yet (run the network first)")
            parts = {k: {p: v / source.num_samples for p, v in d.items()} for k, d in parts.items()}
        label = _figures(preset, e_synop, e_mac)[3]
    elif isinstance(source, Mapping):
        parts = {str(k): {"synops": _joules(k, v)} for k, v in source.items()}
        label = "given energies"
    else:
        raise TypeError(f"energy_bars: source must be a spikeforge.Monitor or a dict {{layer: joules}}, "
                        f"got {type(source).__name__}")
    if not parts:
        raise ValueError("energy_bars: nothing to plot (no layer with SynOps, MACs or neuron updates)")
    totals = {k: sum(d.values()) for k, d in parts.items()}
    scale, unit = _unit(max(max(totals.values()), 1e-300))
    fig, ax = c.axes(ax, (max(4.0, 1.0 + 0.9 * len(parts)), 3.4))
    names, bottom = list(parts), [0.0] * len(parts)
    drawn = [p for p in PARTS if any(d.get(p[0], 0.0) for d in parts.values())] or PARTS[:1]
    for key, legend, color in drawn:
        heights = [parts[n].get(key, 0.0) / scale for n in names]
        ax.bar(names, heights, bottom=bottom, color=color, label=legend if isinstance(source, Monitor) else None)
        bottom = [b + h for b, h in zip(bottom, heights)]
    if isinstance(source, Monitor) and len(drawn) > 0:
        ax.legend(fontsize=7)
    total = sum(totals.values())
    per = " per sample" if isinstance(source, Monitor) and per_sample else ""
    ax.set(xlabel="layer", ylabel=f"energy{per} ({unit})",
           title=title or f"energy{per}: {total / scale:.3g} {unit} in all ({label})")
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 4 else 0)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _joules(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"energy_bars: the energy of layer {name!r} must be a finite number of joules >= 0, "
                         f"got {value!r}")
    return float(value)
