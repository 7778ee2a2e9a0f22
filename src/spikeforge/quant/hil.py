"""Hardware in the loop: the forward pass runs on a substrate, the gradient flows through the
software model of the same network.

A *substrate* runs a network (an ``nn.Sequential`` of ``Linear`` and neuron layers, or a model
with ``.network()``) on input ``x`` (T, B, inputs) and returns what it lets one observe: for
every spiking neuron layer and for the last layer, its output (spikes; the last layer's
membrane if it is a non-spiking readout) and, where the substrate exposes them, its state
traces. ``in_the_loop(network, x, substrate)`` (or the module ``InTheLoop``) then runs the
software layers one by one and replaces each observed layer's output by the observation,
straight-through::

    out = observed + (soft - soft.detach())

so the forward value (exactly: ``soft - soft.detach()`` is 0) is the substrate's and the backward pass is the software model's
(with its surrogate gradients). Because each software layer receives the *observed* output
of the layer before it, the gradient is the software model's gradient evaluated at the
substrate's operating point: with ``y_k`` the observation of observed layer ``k`` and
``f_k`` the software layers between observation ``k - 1`` and ``k``, the parameters of
``f_k`` receive ``(d f_k(y_{k-1}) / d theta)^T g_k``, where ``g_L = dL/dy_L`` at the observed
output and ``g_{k-1} = (d f_k(y_{k-1}) / d y_{k-1})^T g_k``. This is hxtorch.snn's scheme
(Spilger et al. 2023); ``substrate=Software()`` (the default) gives the software model's own
forward pass and gradient exactly.

Substrates: ``Software()``; ``AnalogMismatch(seed, mismatch=..., noise=...)``, an analog model
of the same network with fixed-pattern mismatch (drawn once per seed) and trial-to-trial
noise (fresh at every run); ``XyloInteger()``, the integer Xylo network
``quantize(network)`` makes from the current weights (bit-exact with xylosim); and
``XyloSimSubstrate()``, xylosim itself through Rockpool (where both are installed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from .. import functional as F
from ..nn.layers import TimeDropout
from ..nn.neuron import Neuron
from ..neurons._equations._units import parse_unit
from ..neurons.xylo import XyloCore

__all__ = ["Observation", "Substrate", "Software", "AnalogMismatch", "XyloInteger", "XyloSimSubstrate",
           "InTheLoop", "in_the_loop", "straight_through", "observed_layers"]


@dataclass(frozen=True)
class Observation:
    """What a substrate shows of one layer: ``output`` (T, B, n) as it passes it on (spikes,
    or the membrane of a non-spiking readout) and ``trace``, the layer's state traces (the
    neuron spec's ``State`` of (T, B, n) tensors) where the substrate exposes them."""

    output: Tensor
    trace: tuple | None = None


def network_of(model: nn.Module) -> nn.Sequential:
    """``model`` itself if it is an ``nn.Sequential``, else ``model.network()``."""
    if not isinstance(model, nn.Sequential) and callable(getattr(model, "network", None)):
        model = model.network()
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"network must be an nn.Sequential of Linear and neuron layers (or a model with "
                        f".network()), got {type(model).__name__}")
    for k, m in enumerate(model):   # substrates run time-first from rest: the software layers must too
        if isinstance(m, Neuron) and (m.batch_first or m.carry_state):
            raise ValueError(f"network layer {k} ({type(m).__name__}): in the loop, neuron layers must be "
                             f"time-first from rest (batch_first=False, carry_state=False), as the substrate "
                             f"runs them")
    return model


def observed_layers(network: nn.Sequential) -> list[int]:
    """Indices of the layers a substrate observes: every spiking neuron layer and the last layer."""
    idx = [k for k, m in enumerate(network) if isinstance(m, Neuron) and m.spec.spiking]
    last = len(network) - 1
    return idx if idx and idx[-1] == last else idx + [last]


def _check_input(x) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be an input sequence of shape (T, B, inputs), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


class Substrate:
    """Runs a network's forward pass: ``run(network, x)`` returns ``{layer index: Observation}``
    for ``observed_layers(network)`` (no gradient). Subclasses implement ``run``."""

    def run(self, network: nn.Sequential, x: Tensor) -> dict[int, Observation]:
        raise NotImplementedError


class Software(Substrate):
    """The software model itself (its forward pass, with every neuron's trace recorded)."""

    def run(self, network, x):
        return _walk(network, x, _Device())

    def __repr__(self) -> str:
        return "Software()"


class _Device:
    """How a layer deviates from the software model (none: the software model)."""

    def weight(self, k: int, w: Tensor) -> Tensor:
        return w

    def params(self, k: int, m: Neuron, n: int) -> tuple:
        return m.params()

    def current(self, k: int, x: Tensor) -> Tensor:
        return x


@torch.no_grad()
def _walk(network: nn.Sequential, x: Tensor, device: _Device) -> dict[int, Observation]:
    """The network run layer by layer as ``device`` alters it (dropout as the identity, as at
    inference); the observed layers' outputs. ``device`` numbers the layers it alters (``Linear``
    and neuron layers) among themselves, so inserting a dropout changes no draw."""
    _check_input(x)
    want, out, h, d = set(observed_layers(network)), {}, x, 0
    for k, m in enumerate(network):
        trace = None
        if isinstance(m, nn.Linear):
            h, d = TF.linear(h, device.weight(d, m.weight), m.bias), d + 1
        elif isinstance(m, Neuron):
            h, _, trace, _ = F.run(m.spec, device.current(d, h), None, device.params(d, m, h.shape[-1]),
                                   surrogate=m.surrogate, backend=m.backend, record=True)
            d += 1
        elif not _inference_identity(m):
            h = m(h)
        if k in want:
            out[k] = Observation(h, trace)
    return out


def _inference_identity(m: nn.Module) -> bool:
    """Layers that only act in training (dropout): a substrate runs them as the identity."""
    return isinstance(m, (nn.Identity, nn.Dropout, TimeDropout))


_SCALED = {(1, 0, 0), (0, 1, -1)}   # time, resistance (exponents of time, potential, current): scaled
_POTENTIAL = (0, 1, 0)              # shifted


def _dims(unit: str) -> tuple[int, int, int] | None:
    """The dimension of a parameter's unit, from a word (``"time"``) or a unit (``"ms"``, as
    ``from_equations`` neurons declare them); ``None`` when not given or not readable."""
    try:
        u = parse_unit(unit, "a neuron parameter")
    except (TypeError, ValueError):
        return None
    return None if u is None else u.dims


class AnalogMismatch(Substrate, _Device):
    """An analog model of the network: the software model's equations with

    * fixed-pattern mismatch, drawn once per ``seed`` (per layer, from a generator seeded by
      ``seed`` and the layer's place among the network's ``Linear`` and neuron layers, the
      first time the layer runs): every synapse's weight
      times ``exp(mismatch * n)``; every neuron's time constants and resistances (parameters
      in units of time or resistance) times ``exp(mismatch * n)``, and its potentials
      (threshold, reset, leak) plus ``mismatch * s * n``, with ``s`` the largest ``|value|``
      among the layer's potentials (the threshold-to-reset scale); ``n ~ N(0, 1)``;
    * trial-to-trial noise, fresh at every run: each neuron layer's input current plus
      ``noise * rms * n`` at every step, ``rms`` the root mean square of that current in the
      run; drawn from a generator seeded by ``seed`` when the substrate is made, so a fresh
      substrate with the same seed repeats the same runs (``restart()`` rewinds it).

    Spikes and every neuron's state traces are observable."""

    def __init__(self, seed: int = 0, *, mismatch: float = 0.1, noise: float = 0.0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"AnalogMismatch: seed must be an integer >= 0, got {seed!r}")
        for name, v in (("mismatch", mismatch), ("noise", noise)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"AnalogMismatch: {name} must be a finite number >= 0, got {v!r}")
        self.seed, self.mismatch, self.noise = seed, float(mismatch), float(noise)
        self._fixed: dict[int, dict[str, Tensor]] = {}
        self.restart()

    def restart(self) -> None:
        """Rewind the trial-to-trial noise to its first run (the fixed pattern stays)."""
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 999_983)

    def run(self, network, x):
        return _walk(network, x, self)

    def _draw(self, k: int, key: str, shape: torch.Size, where: str) -> Tensor:
        """The fixed standard-normal draws of layer ``k`` (made once; the shape must not change)."""
        mine = self._fixed.setdefault(k, {})
        if key not in mine:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * k + len(mine))
            mine[key] = torch.randn(shape, generator=g, dtype=torch.float64)
        if mine[key].shape != shape:
            raise ValueError(f"AnalogMismatch: device layer {k} ({where}) has {key} of shape {tuple(shape)}, but its "
                             f"mismatch was drawn for {tuple(mine[key].shape)}; use a fresh substrate for a new "
                             f"network")
        return mine[key]

    def weight(self, k, w):
        n = self._draw(k, "weight", w.shape, "Linear").to(w.device, w.dtype)
        return w * torch.exp(self.mismatch * n)

    def params(self, k, m, n):
        spec, out = m.spec_type, []
        dims = {name: _dims(q.unit) for name, q in spec.params.items()}
        potentials = [p for name, p in zip(spec.params, m.params()) if dims[name] == _POTENTIAL]
        scale = max((float(p.detach().abs().max()) for p in potentials), default=0.0)
        for name, p in zip(spec.params, m.params()):
            d = self._draw(k, name, torch.Size([n]), type(m).__name__).to(p.device, p.dtype)
            if dims[name] in _SCALED:
                p = p * torch.exp(self.mismatch * d)
            elif dims[name] == _POTENTIAL:
                p = p + self.mismatch * scale * d
            out.append(p)
        return spec.Params(*out)

    def current(self, k, x):
        if self.noise == 0:
            return x
        rms = x.detach().pow(2).mean().sqrt()
        n = torch.randn(x.shape, generator=self.generator, dtype=torch.float64).to(x.device, x.dtype)
        return x + self.noise * rms * n

    def __repr__(self) -> str:
        return f"AnalogMismatch(seed={self.seed}, mismatch={self.mismatch:g}, noise={self.noise:g})"


class XyloInteger(Substrate):
    """The integer Xylo network of the current weights: ``quantize(network, target="xylo",
    calibration=..., ...)`` at every run, then that ``XyloNet`` (bit-exact with xylosim) on the
    input events (integer counts 0..15). Observed: each hidden layer's spike counts with its
    (i_syn, v_mem) traces, and the readout in the float model's units (``net.scores``). On Xylo
    each layer after the first answers one step later than the software layer; the
    observations are returned as Xylo produces them (not shifted back). ``last_net`` is the
    ``XyloNet`` of the last run."""

    def __init__(self, *, calibration: Tensor | None = None, core: str | XyloCore = XyloCore.V2,
                 threshold_max: int = 4096) -> None:
        from ._quantize import _core

        if calibration is not None and not isinstance(calibration, Tensor):
            raise TypeError(f"{type(self).__name__}: calibration must be None or an input tensor (T, B, inputs), "
                            f"got {type(calibration).__name__}")
        if isinstance(threshold_max, bool) or not isinstance(threshold_max, int) or not 1 <= threshold_max <= 2 ** 14:
            raise ValueError(f"{type(self).__name__}: threshold_max must be an integer in 1..16384, "
                             f"got {threshold_max!r}")
        self.calibration, self.core, self.threshold_max = calibration, _core(core), threshold_max
        self.last_net = None

    def quantized(self, network: nn.Sequential):
        from ._quantize import quantize

        return quantize(network, target="xylo", core=self.core, threshold_max=self.threshold_max,
                        calibration=self.calibration)

    @torch.no_grad()
    def run(self, network, x):
        _check_input(x)
        net = self.last_net = self.quantized(network)
        readout = net.scores(x)
        return self._observations(network, net, [m.spikes for m in net[:-1]], readout, x.dtype,
                                  [m.trace for m in net])

    @staticmethod
    def _observations(network, net, hidden: list, readout: Tensor, dtype, traces) -> dict[int, Observation]:
        where = observed_layers(network)
        if len(where) != len(net):
            raise ValueError(f"the Xylo network has {len(net)} layers but the software network observes "
                             f"{len(where)} ({where})")
        outs = [*hidden, readout]
        return {k: Observation(o.to(dtype), t) for k, o, t in zip(where, outs, traces)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(core={self.core.value!r}, threshold_max={self.threshold_max})"


class XyloSimSubstrate(XyloInteger):
    """As ``XyloInteger``, but the network runs in Rockpool's ``XyloSim`` (xylosim; needs
    rockpool and xylosim: ``.venv-interop``), sample by sample. Observed: the hidden spikes
    (one hidden layer: xylosim numbers hidden neurons in one population) and the readout
    (its membrane times ``out_scale``, or its spikes). No traces."""

    @torch.no_grad()
    def run(self, network, x):
        from ._deploy import run_xylosim
        from ._layers import Readout

        _check_input(x)
        net = self.last_net = self.quantized(network)
        if len(net) != 2:
            raise ValueError(f"XyloSimSubstrate observes one hidden layer; this network has {len(net) - 1}")
        rec = run_xylosim(net, x)
        out = net[-1]
        readout = rec["vmem_out"] * out.out_scale if out.readout is Readout.VMEM else rec["spikes"]
        return self._observations(network, net, [rec["hidden_spikes"]], readout, x.dtype, [None, None])


def straight_through(soft: Tensor, observed: Tensor) -> Tensor:
    """``observed`` in the forward pass, ``soft``'s gradient in the backward pass."""
    if observed.shape != soft.shape:
        raise ValueError(f"the substrate's observation has shape {tuple(observed.shape)}, the software layer's "
                         f"output {tuple(soft.shape)}")
    return observed.detach().to(soft.dtype) + (soft - soft.detach())


def in_the_loop(network: nn.Module, x: Tensor, substrate: Substrate | None = None
                ) -> tuple[Tensor, dict[int, Observation]]:
    """The network's output with the forward pass on ``substrate`` (default ``Software()``) and
    the gradient through the software layers (see the module docstring); and the observations."""
    network = network_of(network)
    substrate = Software() if substrate is None else substrate
    if not isinstance(substrate, Substrate):
        raise TypeError(f"substrate must be a spikeforge.quant.hil.Substrate (Software(), AnalogMismatch(...), "
                        f"XyloInteger(), ...), got {type(substrate).__name__}")
    obs = substrate.run(network, x)
    missing = [k for k in observed_layers(network) if k not in obs]
    if missing:
        raise ValueError(f"{substrate!r} returned no observation of layer(s) {missing}")
    h = x
    for k, m in enumerate(network):
        h = m(h)
        if k in obs:
            h = straight_through(h, obs[k].output)
    return h, obs


class InTheLoop(nn.Module):
    """``network`` trained in the loop: ``forward(x)`` is ``in_the_loop(network, x, substrate)``;
    switching between simulation and substrate is the one argument ``substrate`` (``None`` or
    ``Software()``: the software model). ``observations`` holds the last run's."""

    def __init__(self, network: nn.Module, substrate: Substrate | None = None) -> None:
        super().__init__()
        self.network = network_of(network)
        self.substrate = Software() if substrate is None else substrate
        if not isinstance(self.substrate, Substrate):
            raise TypeError(f"substrate must be a spikeforge.quant.hil.Substrate, got {type(substrate).__name__}")
        self.observations: dict[int, Observation] = {}

    def forward(self, x: Tensor) -> Tensor:
        out, self.observations = in_the_loop(self.network, x, self.substrate)
        return out

    def extra_repr(self) -> str:
        return f"substrate={self.substrate!r}"
