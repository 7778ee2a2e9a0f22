"""Named per-operation energies for ``Monitor.energy(preset=...)``; each figure is cited in
docs/hardware.md ("Energy presets")."""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EnergyPreset", "ENERGY_PRESETS", "energy_preset"]


@dataclass(frozen=True)
class EnergyPreset:
    """Energies in joules: ``e_synop`` per synaptic operation (a spike driving one synapse: an
    accumulate), ``e_mac`` per dense multiply-accumulate (None: the hardware has none, and
    counted MACs are an error), ``e_update`` per neuron and time step (0 where the source gives
    none). ``source`` says where the numbers come from."""

    name: str
    e_synop: float
    e_mac: float | None
    e_update: float
    source: str

    def __post_init__(self):
        for field in ("e_synop", "e_mac", "e_update"):
            v = getattr(self, field)
            if v is None and field == "e_mac":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"EnergyPreset {self.name!r}: {field} must be a finite number of joules >= 0, "
                                 f"got {v!r}")

    def energy(self, synops: int, macs: int, updates: int) -> float:
        """``synops * e_synop + macs * e_mac + updates * e_update`` joules."""
        if macs and self.e_mac is None:
            raise ValueError(f"preset {self.name!r} has no energy per dense MAC, but {macs} MACs were counted "
                             f"(a weight layer received non-spike input): encode the input as spikes, or use "
                             f"a preset with e_mac")
        return synops * self.e_synop + macs * (self.e_mac or 0.0) + updates * self.e_update


_PJ = 1e-12
_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm, 0.9 V)"

#: name -> preset (see docs/hardware.md for each constant's source)
ENERGY_PRESETS: dict[str, EnergyPreset] = {p.name: p for p in (
    EnergyPreset("cmos45_fp32", 0.9 * _PJ, (3.7 + 0.9) * _PJ, 0.0,
                 f"{_HOROWITZ}: 32-bit float add 0.9 pJ, multiply 3.7 pJ"),
    EnergyPreset("cmos45_int32", 0.1 * _PJ, (3.1 + 0.1) * _PJ, 0.0,
                 f"{_HOROWITZ}: 32-bit integer add 0.1 pJ, multiply 3.1 pJ"),
    EnergyPreset("cmos45_int8", 0.03 * _PJ, (0.2 + 0.03) * _PJ, 0.0,
                 f"{_HOROWITZ}: 8-bit integer add 0.03 pJ, multiply 0.2 pJ"),
    EnergyPreset("loihi", 23.6 * _PJ, None, 52.0 * _PJ,
                 "Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro "
                 "38(1), 2018, Table 1: 23.6 pJ per synaptic spike operation (minimum), 52 pJ per (inactive) "
                 "neuron update (81 pJ active); Loihi has no dense MACs"),
)}


def energy_preset(preset: EnergyPreset | str) -> EnergyPreset:
    """``preset`` itself, or the named entry of ``ENERGY_PRESETS`` (``ValueError`` listing them)."""
    if isinstance(preset, EnergyPreset):
        return preset
    if preset not in ENERGY_PRESETS:
        raise ValueError(f"preset: unknown energy preset {preset!r}; known: {sorted(ENERGY_PRESETS)} "
                         f"(or an EnergyPreset)")
    return ENERGY_PRESETS[preset]
