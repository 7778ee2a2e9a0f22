"""Exact gradients by EventProp: an event-based forward pass with exact spike times, and the
adjoint of the same continuous-time dynamics, jumping at the recorded spikes, backwards.

The model is an ordinary spikeforge ``nn.Sequential`` of ``nn.Linear`` synapses and neuron
layers (``sf.nn.Recurrent`` for recurrent ones; a non-spiking readout such as ``LI`` or
``CubaLI`` last), with optional dropout of the spikes that enter a ``Linear``: ``nn.Dropout``
deletes each spike event, ``sf.nn.TimeDropout`` all spikes of a channel in a sample, with
probability ``p`` in training mode, and the ``Linear`` weights are scaled by ``1 / (1 - p)``
(exactly what they do to a time-stepped spike tensor). Nothing here is written per neuron:
each layer's dynamics is read from its spec's continuous-time face (``derivative``,
``threshold``, ``jump``; see ``_modal``).

Forward: between events every state follows the exact solution of its linear ODE; a spike
time is the root of ``threshold`` within the interval (bracketed by sampling, then bisection
and Newton). Input spikes are pulses of area ``dt`` (a spike of value 1 for one Euler step),
so a spike of weight ``w`` makes the state jump by ``dt * ds/dt-per-input * w``.

Backward: each spike time is attached to the graph by the implicit-function relation
``t* = t~ - g(t~) / g'(t~)`` (``t~`` the found root, ``g`` the threshold function with its
gradient, ``g'`` its rate), and every free-evolution interval is the exact flow
``y(t + d) = exp(lam d) y(t) + phi1 c``. Reverse mode through this is the EventProp adjoint:
between events the adjoint is carried back by the transposed flow (the exact solution of
the adjoint ODE), and at each spike it jumps by the reset's Jacobian plus the term
``(dg/ds)^T / g'`` times the jump in the state's rate (Wunderlich & Pehle 2021, eqs. 5-7).
The forward keeps one state per event (input spike or output spike), never one per time
step, so memory grows with the number of spikes, not with the simulated time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..neurons._spec import Reset
from ..nn.layers import Recurrent, TimeDropout
from ..nn.neuron import Neuron
from ._modal import Modes, NotLinear, attach, bracket, crossing, driven, find_root, modes_of

__all__ = ["Events", "EventRun", "run", "silent_penalty", "NotLinear"]

INF = float("inf")


@dataclass(frozen=True)
class Events:
    """Spikes of a batch: ``times`` ``(B, K)`` in ascending order per sample (``inf`` pads),
    ``index`` ``(B, K)`` the neuron (input channel) of each spike."""

    times: Tensor
    index: Tensor

    @staticmethod
    def from_times(times: Tensor) -> "Events":
        """At most one spike per channel: ``times`` ``(B, C)``, ``inf`` for no spike (the
        output of ``sf.encoding.latency_times``)."""
        if not isinstance(times, Tensor) or times.dim() != 2 or not times.is_floating_point():
            raise ValueError(f"times must be a floating tensor of shape (B, channels), got "
                             f"{getattr(times, 'shape', type(times).__name__)}")
        if torch.isnan(times).any():
            raise ValueError("times holds NaN spike times; use inf for a channel that does not spike")
        index = torch.arange(times.shape[1], device=times.device).expand_as(times)
        return _sorted(times, index)

    @property
    def counts(self) -> Tensor:
        return torch.isfinite(self.times).sum(1)


@dataclass(frozen=True)
class EventRun:
    """``spikes``: the events of each spiking layer; ``readout``: a non-spiking last layer's
    membrane at the ``record`` times ``(E, B, C)`` (time first, as spikeforge's outputs), or
    ``None``; ``first``: the first spike time of each neuron of a spiking last layer ``(B, C)``
    (``t_end`` where silent, with no gradient); ``received``: the events that entered each
    layer's ``Linear`` (the input first), after dropout."""

    spikes: list
    readout: Tensor | None
    first: Tensor | None
    received: list


def _sorted(times: Tensor, index: Tensor) -> Events:
    order = torch.sort(times.detach(), dim=1, stable=True).indices
    times, index = times.gather(1, order), index.gather(1, order)
    keep = int(torch.isfinite(times.detach()).sum(1).max()) if times.numel() else 0
    return Events(times[:, :keep], index[:, :keep])


@dataclass(frozen=True)
class _Layer:
    neuron: Neuron
    weight: Tensor
    bias: Tensor | None
    recurrent: Tensor | None
    dropout: nn.Module | None      # nn.Dropout / TimeDropout of the input events, or None

    def modes(self, dtype) -> Modes:
        return modes_of(self.neuron.spec, self.neuron.params(), self.weight.shape[0], self.bias, dtype)


def _layers(model: nn.Module) -> list[_Layer]:
    """``[Dropout, Linear, neuron-or-Recurrent]*`` (dropout optional) read from an
    ``nn.Sequential``; anything else is a clear error naming the module."""
    mods = list(model) if isinstance(model, nn.Sequential) else [model]
    out, pending, drop = [], None, None
    for i, m in enumerate(mods):
        where = f"model[{i}] ({type(m).__name__})"
        if isinstance(m, (nn.Dropout, TimeDropout)):
            if pending is not None or drop is not None or (out and not out[-1].neuron.spec.spiking):
                raise TypeError(f"eventprop: {where} must come before an nn.Linear, after the input or a spiking "
                                f"layer (it drops spike events)")
            drop = m
            continue
        if isinstance(m, nn.Linear) and pending is None:
            pending = m
            continue
        neuron, rec = (m.neuron, m.recurrent) if isinstance(m, Recurrent) else (m, None)
        if pending is None or not isinstance(neuron, Neuron):
            raise TypeError(f"eventprop: {where} is not supported; the model must alternate nn.Linear and "
                            f"spikeforge neuron layers (or sf.nn.Recurrent), e.g. Sequential(Linear, LIF, Linear, LI)")
        if rec is not None and (not isinstance(rec, nn.Linear) or rec.bias is not None):
            raise TypeError(f"eventprop: {where}: the recurrent weights must be an nn.Linear without bias")
        spec = neuron.spec
        if spec.spiking and getattr(spec, "reset", None) is Reset.NONE:
            raise TypeError(f"eventprop: {where}: reset=Reset.NONE never brings the neuron below threshold; "
                            f"use a hard or soft reset")
        active = drop is not None and drop.training and drop.p > 0
        weight = pending.weight / (1.0 - drop.p) if active and drop.p < 1 else pending.weight
        out.append(_Layer(neuron, weight, pending.bias, None if rec is None else rec.weight,
                          drop if active else None))
        pending, drop = None, None
    if pending is not None or drop is not None or not out:
        raise TypeError("eventprop: the model must end with a neuron layer after its last nn.Linear")
    for k, layer in enumerate(out[:-1]):
        if not layer.neuron.spec.spiking:
            raise TypeError(f"eventprop: layer {k} ({type(layer.neuron).__name__}) does not spike; only the last "
                            f"layer may be a non-spiking readout")
    return out


def _dropped(layer: _Layer, events: Events) -> Events:
    """``events`` without those that ``layer.dropout`` deletes: each event (``nn.Dropout``) or
    each channel of a sample (``TimeDropout``) with probability ``p``."""
    if layer.dropout is None:
        return events
    B, K = events.times.shape
    if isinstance(layer.dropout, TimeDropout):
        u = torch.rand(B, layer.weight.shape[1], device=events.times.device).gather(1, events.index)
    else:
        u = torch.rand(B, K, device=events.times.device)
    return _sorted(torch.where(u < layer.dropout.p, INF, events.times), events.index)


def run(model: nn.Module, events: Events, t_end: float, *, record: Tensor | None = None,
        samples: int = 8, max_spikes: int | None = None) -> EventRun:
    """Simulate ``model`` event by event on input ``events`` over ``[0, t_end]``.

    ``record`` ``(E,)``: times at which a non-spiking last layer's membrane is returned
    (``readout``). ``samples``: points per interval at which a threshold crossing is looked
    for in layers with more than one state variable (a crossing that rises and falls back
    between two of them is missed; one or two state variables are handled exactly).
    ``max_spikes``: simulate at most this many spikes per neuron of a spiking last layer (1
    for a first-spike loss, which reads nothing later; a feed-forward last layer then stops
    early). ``None``: all.
    """
    if max_spikes is not None and (isinstance(max_spikes, bool) or not isinstance(max_spikes, int) or max_spikes < 1):
        raise ValueError(f"max_spikes must be None or an int >= 1, got {max_spikes!r}")
    if not isinstance(t_end, (int, float)) or isinstance(t_end, bool) or not (0 < t_end < INF):
        raise ValueError(f"t_end must be a finite time > 0, got {t_end!r}")
    if not isinstance(events, Events):
        raise TypeError(f"events must be eventprop.Events (e.g. Events.from_times(times)), got {type(events).__name__}")
    if torch.isnan(events.times).any():
        raise ValueError("events.times holds NaN spike times; they cannot be ordered")
    layers = _layers(model)
    if events.index.numel() and int(events.index.max()) >= layers[0].weight.shape[1]:
        raise ValueError(f"events.index holds channel {int(events.index.max())} but the first nn.Linear takes "
                         f"{layers[0].weight.shape[1]} inputs")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    last = layers[-1]
    if not last.neuron.spec.spiking and record is None:
        raise ValueError("record (the times at which to read the readout membrane) is required when the last "
                         "layer does not spike")
    spikes, received = [], []
    for layer in layers:
        events = _dropped(layer, events)
        received.append(events)
        if layer is last and not last.neuron.spec.spiking:
            return EventRun(spikes, _readout(last, events, record), None, received)
        events = _spiking(layer, events, t_end, samples, max_spikes if layer is last else None)
        spikes.append(events)
    return EventRun(spikes, None, _first(events, last.weight.shape[0], t_end), received)


def _first(ev: Events, n: int, t_end: float) -> Tensor:
    """Each neuron's earliest spike ``(B, n)``; ``t_end`` (no gradient) where it is silent."""
    mine = ev.index.unsqueeze(-1) == torch.arange(n, device=ev.index.device)
    first = torch.where(mine, ev.times.unsqueeze(-1), INF).amin(1) if ev.times.shape[1] else \
        torch.full((ev.times.shape[0], n), INF, dtype=ev.times.dtype, device=ev.times.device)
    return torch.where(torch.isfinite(first), first, torch.full_like(first, float(t_end)))


def _rest(layer: _Layer, modes: Modes, B: int) -> Tensor:
    spec, n = layer.neuron.spec, layer.weight.shape[0]
    zero = torch.zeros(n, dtype=layer.weight.dtype, device=layer.weight.device)
    rest = torch.stack([torch.as_tensor(r, dtype=zero.dtype) + zero for r in spec.rest(layer.neuron.params())], -1)
    return modes.from_state(rest).expand(B, n, -1)


def _spiking(layer: _Layer, events: Events, t_end: float, samples: int, max_spikes: int | None = None) -> Events:
    """One spiking layer driven by ``events``: its own spikes, exactly timed (at most
    ``max_spikes`` per neuron)."""
    W = layer.weight
    modes = layer.modes(W.dtype)
    if _SUPERPOSITION and layer.recurrent is None and modes.y_inf is not None and modes.lam.shape[-1] <= 2:
        return _feed_forward(layer, modes, events, t_end, max_spikes or _MAX_ROUNDS)
    B, K = events.times.shape
    n = W.shape[0]
    y = _rest(layer, modes, B)
    t = torch.zeros(B, n, dtype=W.dtype, device=W.device)
    sim = _Sim(layer, modes, 1 if y.shape[-1] == 1 else samples, [])
    for k in range(K + 1):
        if k < K:
            tk = events.times[:, k]
            valid = torch.isfinite(tk) & (tk <= t_end)
            target = torch.where(valid, tk, torch.full_like(tk, float(t_end)))
        else:
            target = torch.full((B,), float(t_end), dtype=W.dtype, device=W.device)
        y, t = sim.advance(y, t, target.unsqueeze(1).expand(B, n))
        if k < K and bool(valid.any()):
            w = torch.where(valid.unsqueeze(1), W.t()[events.index[:, k]], 0.0)
            # spikes arriving at one instant add up before the threshold is looked at (as in one step)
            last = events.times[:, k + 1] != tk if k + 1 < K else torch.ones_like(valid)
            y = sim.fire_now(y + modes.b_hat * w.unsqueeze(-1), t, allowed=last.unsqueeze(1))
    if not sim.out:
        return Events(torch.empty(B, 0, dtype=W.dtype, device=W.device),
                      torch.empty(B, 0, dtype=torch.long, device=W.device))
    times = torch.cat(sim.out, 1)
    index = torch.arange(n, device=W.device).repeat(len(sim.out)).expand(B, -1)
    if max_spikes is not None:      # keep each neuron's first max_spikes (the rounds come in time order)
        seen = torch.cumsum(torch.isfinite(times.detach()).view(B, -1, n).to(torch.long), 1).view(B, -1)
        times = torch.where(seen <= max_spikes, times, INF)
    return _sorted(times, index)


def _feed_forward(layer: _Layer, modes: Modes, events: Events, t_end: float, rounds: int) -> Events:
    """A feed-forward layer by superposition, one round per spike of the busiest neuron
    (not one per input event). The dynamics are linear, so the state is the inputs' response
    plus, for each own spike at ``t_s``, the free decay of the jump ``jump(s) - s`` made
    there. Each round finds every neuron's next crossing over all inter-input intervals at
    once (``bracket`` on each), then adds that spike's jump; ``R`` is the sum of the jumps'
    decays so far, referred to the neuron's last spike ``t_last``."""
    W, spec, p = layer.weight, layer.neuron.spec, layer.neuron.params()
    B, K = events.times.shape
    n = W.shape[0]
    valid = torch.isfinite(events.times) & (events.times <= t_end)
    t_in = torch.where(valid, events.times, torch.full_like(events.times, float(t_end)))
    zero = torch.zeros(B, 1, dtype=W.dtype, device=W.device)
    starts = torch.cat([zero, t_in], 1)                                  # interval i: [starts_i, ends_i]
    ends = torch.cat([t_in, zero + float(t_end)], 1)                     # (B, I), I = K + 1
    order = torch.arange(K, device=W.device)
    on = valid.unsqueeze(1) & (order.view(1, -1, 1) >= order.view(1, 1, -1))   # (B, K, K): spikes <= k
    order_i = torch.arange(K + 1, device=W.device).view(1, -1)
    y0 = _rest(layer, modes, 1)[0]
    free = modes.y_inf + torch.exp(modes.lam * starts[..., None, None]) * (y0 - modes.y_inf)   # (B, I, n, d)
    S = free + torch.cat([torch.zeros_like(free[:, :1]), driven(modes, events, W, t_in, on)], 1)
    R = torch.zeros(B, n, y0.shape[-1], dtype=W.dtype, device=W.device)
    t_last = torch.zeros(B, n, dtype=W.dtype, device=W.device)
    out = []
    for _ in range(rounds):
        a = torch.maximum(starts.unsqueeze(-1), t_last.unsqueeze(1))    # (B, I, n) start of what is left
        ahead = (starts.unsqueeze(-1) >= t_last.unsqueeze(1)) | (ends.unsqueeze(-1) > t_last.unsqueeze(1))
        X = modes.advance(S, a - starts.unsqueeze(-1)) + \
            torch.exp(modes.lam * (a - t_last.unsqueeze(1)).unsqueeze(-1)) * R.unsqueeze(1)
        with torch.no_grad():
            span = torch.where(ahead, ends.unsqueeze(-1) - a, 0.0)
            # a jump took it over threshold; spikes at one instant add up first (zero-length intervals wait)
            now = ahead & (modes.g(X) >= 0) & ((ends > starts) | (order_i == K)).unsqueeze(-1)
            found, lo, hi = bracket(modes, X, span, 1)
            hit = now | (found & ahead)
            first = torch.where(hit, torch.arange(K + 1, device=W.device).view(1, -1, 1), K + 1).amin(1)   # (B, n)
            fires = first <= K
        if not bool(fires.any()):
            break
        pick = first.clamp(max=K).unsqueeze(1)
        take = lambda x: x.gather(1, pick.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]) if x.dim() == 4 else pick)[:, 0]
        Xi, ai = take(X), take(a)
        instant = take(now.to(torch.uint8)).bool()
        root = find_root(modes, Xi, take(lo), take(hi))
        tc = torch.where(instant, ai.detach(), ai.detach() + root)
        ts = torch.where(instant, ai, attach(modes, Xi, ai, tc, fires & ~instant))
        before = modes.advance(Xi, ts - ai)
        s = modes.to_state(before)
        jumped = modes.from_state(torch.stack(spec.jump(tuple(s.unbind(-1)), p), -1))
        R_new = torch.exp(modes.lam * (ts - t_last).unsqueeze(-1)) * R + (jumped - before)
        R = torch.where(fires.unsqueeze(-1), R_new, R)
        t_last = torch.where(fires, ts, t_last)
        out.append(torch.where(fires, ts, INF))
    else:
        if rounds == _MAX_ROUNDS:
            raise RuntimeError(f"eventprop: more than {_MAX_ROUNDS} spikes of one neuron; the layer fires without bound")
    if not out:
        return Events(torch.empty(B, 0, dtype=W.dtype, device=W.device),
                      torch.empty(B, 0, dtype=torch.long, device=W.device))
    index = torch.arange(n, device=W.device).repeat(len(out)).expand(B, -1)
    return _sorted(torch.cat(out, 1), index)


@dataclass
class _Sim:
    """The event loop's pieces for one layer; ``out`` collects ``(B, n)`` spike times
    (``inf`` where a neuron did not spike) round by round."""

    layer: _Layer
    modes: Modes
    samples: int
    out: list

    def advance(self, y: Tensor, t: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Free evolution of every neuron from ``t`` to ``target`` ``(B, n)``, spiking and
        resetting on the way (a recurrent layer: in time order, one spike at a time)."""
        rec = self.layer.recurrent is not None
        for _ in range(_MAX_ROUNDS):
            hit, tc = crossing(self.modes, y, t, target, self.samples)
            if not bool(hit.any()):
                return self.modes.advance(y, target - t), target
            if rec:
                first, arg = torch.where(hit, tc, INF).min(1, keepdim=True)
                some = hit.any(1, keepdim=True)
                hit = torch.zeros_like(hit).scatter(1, arg, some)
            tg = attach(self.modes, y, t, tc, hit)
            if rec:
                new_t = torch.where(some, tg.gather(1, arg), target)
            else:
                new_t = torch.where(hit, tg, target)
            y = self.modes.advance(y, new_t - t)
            t = new_t
            y = self.fire_now(y, t, hit)
        raise RuntimeError(f"eventprop: more than {_MAX_ROUNDS} spike rounds between two events; the layer "
                           f"fires without bound (check its reset and weights)")

    def fire_now(self, y: Tensor, t: Tensor, hit: Tensor | None = None, allowed: Tensor | None = None) -> Tensor:
        """Spike the neurons in ``hit`` at ``t``, then any that a jump leaves at or above
        threshold (where ``allowed``), until none is."""
        modes, spec, p = self.modes, self.layer.neuron.spec, self.layer.neuron.params()
        for _ in range(_MAX_ROUNDS):
            if hit is None:
                hit = modes.g(y).detach() >= 0
                if allowed is not None:
                    hit = hit & allowed
                if not bool(hit.any()):
                    return y
            self.out.append(torch.where(hit, t, INF))
            s = modes.to_state(y)
            jumped = torch.stack(spec.jump(tuple(s.unbind(-1)), p), -1)
            y = modes.from_state(torch.where(hit.unsqueeze(-1), jumped, s))
            if self.layer.recurrent is not None:
                y = y + modes.b_hat * (hit.to(y.dtype) @ self.layer.recurrent.t()).unsqueeze(-1)
            hit = None
        raise RuntimeError(f"eventprop: a neuron stays above threshold after {_MAX_ROUNDS} resets at one instant; "
                           f"its reset does not bring it below threshold")


_MAX_ROUNDS = 100_000
#: feed-forward layers by superposition (``_feed_forward``); False: the event loop for all
_SUPERPOSITION = True


def _readout(layer: _Layer, events: Events, record: Tensor) -> Tensor:
    """A non-spiking layer's membrane at the ``record`` times ``(E,)`` -> ``(E, B, n)``, in
    closed form: its rest response plus each input spike's exponential modes."""
    spec, W = layer.neuron.spec, layer.weight
    if "v" not in spec.state:
        raise TypeError(f"eventprop: the readout {type(spec).__name__} has no membrane state 'v' to read")
    record = torch.as_tensor(record, dtype=W.dtype, device=W.device)
    if record.dim() != 1 or not torch.isfinite(record).all() or (record < 0).any():
        raise ValueError(f"record must be a 1-D tensor of finite times >= 0, got {tuple(record.shape)}")
    modes = layer.modes(W.dtype)
    v = modes.to_state(_response(layer, modes, events, record))[..., spec.state.index("v")]
    return v.transpose(0, 1)


def _response(layer: _Layer, modes: Modes, events: Events, times: Tensor) -> Tensor:
    """The modal state without any own spike (rest response plus the input spikes' modes)
    at ``times`` ``(E,)`` -> ``(B, E, n, d)``."""
    y0 = _rest(layer, modes, 1)[0]                                       # (n, d)
    free = modes.advance(y0.expand(times.numel(), -1, -1), times.unsqueeze(1).expand(-1, y0.shape[0]))
    dt = times.view(1, -1, 1) - events.times.unsqueeze(1)                # (B, E, K)
    on = (dt >= 0) & torch.isfinite(dt)
    return free.unsqueeze(0) + driven(modes, events, layer.weight, times.unsqueeze(0), on)


def silent_penalty(model: nn.Module, out: EventRun, t_end: float, points: int = 32) -> Tensor:
    """A regulariser for neurons that EventProp cannot teach: those of a spiking layer that
    fired on no sample of the batch get no exact gradient at all (their spike times do not
    exist). For each of them, ``relu(-max_t g)``, how far its threshold function ``g`` (its
    membrane minus threshold: in a recurrent layer with the others' spikes) stays below 0 over ``points`` times in
    ``[0, t_end]``, averaged over the batch and those neurons, summed over the layers; 0 when
    every neuron fired somewhere. Adding it to the loss pulls silent neurons back to threshold."""
    layers = _layers(model)
    times = torch.linspace(0.0, float(t_end), points, dtype=layers[0].weight.dtype, device=layers[0].weight.device)
    total = layers[0].weight.new_zeros(())
    for layer, inputs, spikes in zip(layers, out.received, out.spikes):
        if not layer.neuron.spec.spiking:
            break
        n = layer.weight.shape[0]
        fired = torch.zeros(n, dtype=torch.bool, device=layer.weight.device)
        fired[spikes.index[torch.isfinite(spikes.times)]] = True
        if not bool(fired.all()):     # a silent neuron's state: input and the others' recurrent spikes
            modes = layer.modes(layer.weight.dtype)
            y = _response(layer, modes, inputs, times)
            if layer.recurrent is not None:
                on = (times.view(1, -1, 1) >= spikes.times.unsqueeze(1)) & torch.isfinite(spikes.times).unsqueeze(1)
                y = y + driven(modes, spikes, layer.recurrent, times.unsqueeze(0), on)
            g = modes.g(y)                                                   # (B, E, n)
            total = total + torch.relu(-g.amax(1)[:, ~fired]).mean()
    return total
