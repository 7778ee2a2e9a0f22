"""xylosim 0.1.3's arithmetic written out with plain Python integers, event by event, as its
C++ does it (``XyloIAFNeuron.cpp``, ``XyloLayer.cpp``, v1 and v2): an oracle for the main
test suite that shares no code with spikeforge. tests/interop compares with xylosim itself.

A network is a list of layers, each a dict with ``w`` (out x in nested lists of int8),
``shift``, per-neuron lists ``ds``, ``dm``, ``th``, ``bias`` and ``cap`` (31 hidden, 1 output).
Layer 0 receives the input events (at most 15 per channel and step); layer l > 0 receives
the spikes of layer l - 1 from the step before.
"""
from __future__ import annotations

MIN, MAX = -32768, 32767


def decay(v: int, dash: int) -> int:
    dv = v >> dash
    if dv == 0:
        dv = (v > 0) - (v < 0)
    return dv


def safe_add(x: int, y: int) -> int:
    """xylosim's ``safe_add`` for 16 bits."""
    limit = MAX if y >= 0 else MIN
    return x + y if abs(limit - x) > abs(y) else limit


def wrap16(u: int) -> int:
    """A C conversion to ``int16_t``."""
    return (u + 32768) % 65536 - 32768


def evolve(i: int, v: int, ds: int, dm: int, th: int, bias: int, cap: int, core: str) -> tuple[int, int, int]:
    """One neuron's ``evolve`` after delivery: (spikes, i_syn, v_mem)."""
    i = i - decay(i, ds)
    if core == "v1":
        v = v - decay(v, dm)
        v = safe_add(v, i)
    else:
        dv = wrap16(-decay(v, dm))
        dv = safe_add(dv, i)
        if bias:
            dv = safe_add(dv, bias)
        v = safe_add(v, dv)
    n = 0
    while v >= th and n < cap:
        n += 1
        v -= th
    return n, i, v


def run(layers: list[dict], events: list[list[int]], core: str = "v2") -> list[dict]:
    """``events``: T lists of input counts. Returns per layer ``{"z", "i", "v"}``, each T lists."""
    state = [{"i": [0] * len(L["w"]), "v": [0] * len(L["w"]), "z": [0] * len(L["w"])} for L in layers]
    out = [{"z": [], "i": [], "v": []} for _ in layers]
    for counts in events:
        sources = [[min(c, 15) for c in counts]] + [list(s["z"]) for s in state[:-1]]
        for L, s, src in zip(layers, state, sources):   # all deliveries first
            for j, n in enumerate(src):
                for post, row in enumerate(L["w"]):
                    if row[j]:
                        for _ in range(min(n, 31)):
                            s["i"][post] = safe_add(s["i"][post], wrap16(row[j] << L["shift"]))
        for L, s, rec in zip(layers, state, out):       # then every neuron evolves
            for k in range(len(L["w"])):
                s["z"][k], s["i"][k], s["v"][k] = evolve(s["i"][k], s["v"][k], L["ds"][k], L["dm"][k], L["th"][k],
                                                         L["bias"][k], L["cap"], core)
            for key in ("z", "i", "v"):
                rec[key].append(list(s[key]))
    return out
