"""What Xylo can hold: its limits (read from ``xylosim`` 0.1.3 and Rockpool 3.1's Xylo mapper)
and the checks that name the layer and the limit when a value does not fit."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["XyloLimits", "XYLO", "XyloError", "check_integers"]


class XyloError(ValueError):
    """A model, layer or value that Xylo cannot run; the message names the layer and the limit."""


@dataclass(frozen=True)
class XyloLimits:
    """Xylo's fixed sizes and ranges.

    ``inputs``/``hidden``/``outputs``: Rockpool's Xylo mapper (16 input channels, 1000 hidden and
    8 output neurons); ``input_events``, ``hidden_spikes``, ``output_spikes``: xylosim's
    ``MAX_NUM_INP_SPIKES`` (15 input events per channel and step), ``MAX_NUM_SPIKES`` (31) and
    ``MAX_NUM_OUT_SPIKES`` (1); weights are int8, states and thresholds int16, dashes 4 bits.
    The weight shift is xylosim's ``weight << shift`` passed on as an int16, so every shifted
    weight must fit 16 bits."""

    inputs: int = 16
    hidden: int = 1000
    outputs: int = 8
    input_events: int = 15
    hidden_spikes: int = 31
    output_spikes: int = 1
    weight_min: int = -128
    weight_max: int = 127
    state_min: int = -32768
    state_max: int = 32767
    dash_max: int = 15
    shift_max: int = 15


XYLO = XyloLimits()


def check_integers(where: str, name: str, t: Tensor, lo: int, hi: int) -> Tensor:
    """``t`` as float64 after checking that it holds integers in ``lo..hi`` (else ``XyloError``
    naming ``where``, ``name``, the range and the first bad value)."""
    t = torch.as_tensor(t).detach()
    d = t.to(torch.float64)
    bad = ~torch.isfinite(d) | (d != torch.round(d)) | (d < lo) | (d > hi)
    if bool(bad.any()):
        idx = tuple(int(k) for k in bad.nonzero()[0])
        at = f" at index {idx if len(idx) > 1 else idx[0]}" if d.dim() else ""
        raise XyloError(f"{where}: {name} must be integers in {lo}..{hi} (Xylo's range), got {d[idx].item():g}{at}")
    return d
