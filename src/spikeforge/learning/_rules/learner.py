"""``attach(net, rule)``: a local rule on every ``nn.Linear``/``nn.Conv2d`` synapse of a net, by hooks.

Each learned ``nn.Linear`` or ``nn.Conv2d`` (bare, or inside ``TimeDistributed``) is paired
with the spiking neuron layer that follows it (the next ``spikeforge.nn.Neuron`` in
``net.modules()`` order, with no other weight layer in between). A forward pre-hook on the
synapse keeps its input (the presynaptic activity);
a hook on the neuron (``register_forward_hook`` for sequence calls, ``_step_hooks`` for
``step`` calls, as ``Monitor`` does) hands the rule the pre activity, the post spikes and,
for rules that ask (``VDSP``), the membrane before each step. Updates accumulate in
``pending`` until ``apply(lr)`` adds them to the weights under ``torch.no_grad()``.

Traces start from zero with every new sequence call (or stream of steps), and carry over
between sequence calls only when the neuron layer has ``carry_state=True``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ... import functional as F
from ...nn.layers import Recurrent
from ...nn.neuron import Neuron
from .bounds import Bound, Bounds, Normalise
from .homeostasis import AdaptiveThreshold
from .presynaptic import WEIGHTS as _WEIGHTS
from .presynaptic import Paused, pre_membrane, pre_neuron, reads_pre

__all__ = ["Learner", "attach"]


class _Synapse:
    """One learned Linear or Conv2d and the neuron layer after it, with the rule's state.
    A Conv2d is learned as a Linear on patches: each output position is one more row of
    the batch, its pre activity the unfolded receptive field ``(C * kh * kw)`` (a trace is
    linear in the spikes, so tracing patches equals unfolding traced inputs)."""

    def __init__(self, name: str, linear: nn.Module, layer: nn.Module, neuron_name: str) -> None:
        self.name, self.linear, self.layer, self.neuron_name = name, linear, layer, neuron_name
        self.neuron: Neuron = _driven_neuron(layer)   # the layer itself, or the neuron a wrapper drives
        self.conv = isinstance(linear, nn.Conv2d)
        self.feature_dims = 3 if self.conv else 1
        self.n_in = linear.in_channels if self.conv else linear.in_features
        self.n_out = linear.out_channels if self.conv else linear.out_features
        self.pre: Tensor | None = None           # last input of the Linear, not yet consumed
        self.state = None                         # the rule's trace state
        self.rows = 0                             # rows (batch x positions) the state was made for
        self.v_before: Tensor | None = None       # post membrane before the next step
        self.pre_neuron: Neuron | None = None     # the neuron layer before the Linear (rules that read it)
        self.dw = torch.zeros_like(linear.weight, requires_grad=False).detach()
        self.counts = torch.zeros(self.n_out, dtype=self.dw.dtype, device=self.dw.device)   # post spikes
        self.steps = 0                            # time steps seen since the last apply
        self.theta: Tensor | None = None          # homeostatic threshold offset (AdaptiveThreshold)
        self.base: Tensor | None = None           # the neuron's threshold when attached


class Learner:
    """What ``attach`` returns. ``pending``: the accumulated update of each learned layer
    (by name); ``reward(r)`` for rules with a third factor; ``apply(lr)``; ``reset()``;
    ``remove()`` (or use it as a context manager)."""

    def __init__(self, net: nn.Module, rule, bounds: Bounds, normalise: Normalise | None,
                 layers, homeostasis: AdaptiveThreshold | None = None) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not all(callable(getattr(rule, a, None)) for a in ("init", "step")):
            raise TypeError(f"rule must be a plasticity rule with init() and step() (e.g. PairSTDP()), got {rule!r}")
        if not isinstance(bounds, Bounds):
            raise TypeError(f"bounds must be a Bounds, got {bounds!r}")
        if normalise is not None and not isinstance(normalise, Normalise):
            raise TypeError(f"normalise must be a Normalise or None, got {normalise!r}")
        if homeostasis is not None and not isinstance(homeostasis, AdaptiveThreshold):
            raise TypeError(f"homeostasis must be an AdaptiveThreshold or None, got {homeostasis!r}")
        self.net, self.rule, self.bounds, self.normalise = net, rule, bounds, normalise
        self.homeostasis = homeostasis
        self.synapses = _pair(net, layers)
        if homeostasis is not None:
            for syn in self.synapses.values():
                homeostasis.check(syn.neuron, syn.neuron_name)
                syn.base = getattr(syn.neuron, homeostasis.param).detach().clone()
                syn.theta = torch.zeros_like(syn.counts)
        self._handles, self._flags, self.paused = [], {}, False
        for syn in self.synapses.values():
            self._hook(syn)

    # -- hooks ---------------------------------------------------------------------------
    def _hook(self, syn: _Synapse) -> None:
        n = syn.neuron
        if self.rule.needs_v:
            var = self.rule.state
            if reads_pre(self.rule):      # the presynaptic neurons' membrane (VDSP, Trigger.POST)
                n = syn.pre_neuron = pre_neuron(self.net, syn)
            if var not in n.spec_type.state:
                raise ValueError(f"rule: {type(self.rule).__name__} reads the neuron state {var!r}, but layer "
                                 f"{syn.neuron_name!r} ({type(n).__name__}) has {n.spec_type.state}")
            self._flags.setdefault(n, n.record)
            n.record = True
        live = self._live      # while ``paused`` the hooks do nothing (``pause()``)
        self._handles.append(syn.linear.register_forward_pre_hook(live(lambda m, args: self._keep_pre(syn, args))))
        lay = syn.layer
        self._handles.append(lay.register_forward_pre_hook(live(lambda m, args: self._before_call(syn))))
        self._handles.append(lay.register_forward_hook(live(lambda m, args, out: self._after_call(syn, out))))
        lay._step_hooks[id(self)] = live(lambda m, x, z, new: self._after_step(syn, z, new))

    def _live(self, hook):
        return lambda *args: None if self.paused else hook(*args)

    @staticmethod
    def _keep_pre(syn: _Synapse, args) -> None:
        syn.pre = args[0].detach() if args and isinstance(args[0], Tensor) else None

    def _before_call(self, syn: _Synapse) -> None:
        n, carry = syn.neuron, syn.layer.carry_state
        carried = self.rule.needs_v and syn.pre_neuron is None and carry and n.state is not None
        syn.v_before = getattr(n.state, self.rule.state).detach() if carried else None
        if not carry or n.state is None:   # the neuron starts from rest: so do the traces
            syn.state = None

    def _take_pre(self, syn: _Synapse, z: Tensor) -> Tensor:
        pre, syn.pre = syn.pre, None
        if pre is None:
            raise RuntimeError(f"layer {syn.neuron_name!r} ran without its synapse {syn.name!r} running first in this "
                               f"call; the learner pairs each Linear with the neuron layer that follows it")
        fd = syn.feature_dims
        lead = z.shape[:-fd]
        if pre.shape[:-fd] != lead and pre.dim() == fd + 1 and pre.shape[0] == math.prod(lead):
            pre = pre.reshape(lead + pre.shape[-fd:])   # a TimeDistributed layer folds (T, B) into T*B
        if pre.shape[:-fd] != lead or pre.shape[-fd] != syn.n_in or z.shape[-fd] != syn.n_out:
            want = ("(..., {}, H, W) and (..., {}, H', W')" if syn.conv else "(..., {}) and (..., {})")
            raise ValueError(f"synapse {syn.name!r}: pre activity {tuple(pre.shape)} and post spikes {tuple(z.shape)} "
                             f"must be {want.format(syn.n_in, syn.n_out)} with the same leading (time, batch) dims")
        return pre

    def _after_call(self, syn: _Synapse, out) -> None:
        n = syn.neuron
        z = out.detach()
        pre = self._take_pre(syn, z)
        if syn.layer.batch_first:
            z, pre = z.transpose(0, 1), pre.transpose(0, 1)
        if z.dim() < 2:
            raise ValueError(f"synapse {syn.name!r}: a sequence call needs (T, B, ...) input, got {tuple(z.shape)}")
        vs = None
        if syn.pre_neuron is not None:      # the pre neurons' membrane at each step (after their reset)
            vs = pre_membrane(syn, getattr(syn.pre_neuron.trace, self.rule.state).detach(), pre)
        elif self.rule.needs_v:
            v = getattr(n.trace, self.rule.state).detach()
            v0 = syn.v_before if syn.v_before is not None else self._rest_v(n, z[0])
            vs = torch.cat([v0.unsqueeze(0), v[:-1]])
        with torch.no_grad():
            self._rule_run(syn, pre, z, vs)

    def _after_step(self, syn: _Synapse, z: Tensor, new_stream: bool) -> None:
        z = z.detach()
        pre = self._take_pre(syn, z)
        v = None
        if syn.pre_neuron is not None:
            v = pre_membrane(syn, getattr(syn.pre_neuron.state, self.rule.state).detach(), pre, sequence=False)
        elif self.rule.needs_v:
            v = self._rest_v(syn.neuron, z) if new_stream or syn.v_before is None else syn.v_before
            syn.v_before = getattr(syn.neuron.state, self.rule.state).detach()
        if new_stream:
            syn.state = None
        with torch.no_grad():
            self._rule_run(syn, pre.unsqueeze(0), z.unsqueeze(0), None if v is None else v.unsqueeze(0))

    def _rest_v(self, n: Neuron, like: Tensor) -> Tensor:
        i = n.spec_type.state.index(self.rule.state)
        return F.rest_state(n.spec, n.params(), like)[i].detach()

    def _rule_run(self, syn: _Synapse, pre: Tensor, post: Tensor, v: Tensor | None) -> None:
        """The rule on ``T`` steps (time first): its ``run`` if it has one, else ``step`` per step."""
        T = post.shape[0]
        pre, post = _pre_rows(syn, pre), _post_rows(syn, post)
        pre, post = pre.view(T, -1, pre.shape[-1]), post.view(T, -1, post.shape[-1])
        if v is not None:
            v = _pre_rows(syn, v).view(pre.shape) if syn.pre_neuron is not None else _post_rows(syn, v).view(post.shape)
        if syn.state is not None and syn.rows != pre.shape[1]:
            raise ValueError(f"synapse {syn.name!r}: the batch size changed from {syn.rows} to {pre.shape[1]} rows "
                             f"while traces are carried (carry_state=True); call learner.reset() first")
        if syn.state is None:
            syn.state, syn.rows = self.rule.init(pre[0], post[0]), pre.shape[1]
        run = getattr(self.rule, "run", None)
        if callable(run):
            syn.state, dw = run(syn.state, pre, post, v)
        else:
            dw = None
            for t in range(T):
                syn.state, d = self.rule.step(syn.state, pre[t], post[t], None if v is None else v[t])
                dw = d if dw is None else (dw if d is None else dw + d)
        if dw is not None:
            syn.dw += dw.to(syn.dw.dtype).view(syn.dw.shape)
        if self.homeostasis is not None:
            syn.counts += post.sum((0, 1)).to(syn.counts.dtype)
            syn.steps += T

    # -- user calls ----------------------------------------------------------------------
    @property
    def pending(self) -> dict[str, Tensor]:
        """The update accumulated since the last ``apply`` per learned layer (copies)."""
        return {name: syn.dw.clone() for name, syn in self.synapses.items()}

    def reward(self, r) -> None:
        """Third factor: add ``r * e`` (each layer's eligibility now) to the pending update."""
        if not callable(getattr(self.rule, "reward", None)):
            raise TypeError(f"rule {type(self.rule).__name__} takes no reward; use e.g. RewardSTDP(PairSTDP())")
        if isinstance(r, Tensor):
            if r.numel() != 1:
                raise ValueError(f"r must be a scalar (one reward for the batch), got shape {tuple(r.shape)}")
            r = r.item()
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r):
            raise ValueError(f"r must be a finite number, got {r!r}")
        for syn in self.synapses.values():
            if syn.state is None:
                raise RuntimeError(f"reward: synapse {syn.name!r} has not seen any activity yet")
            syn.dw += self.rule.reward(syn.state, r).to(syn.dw.dtype).view(syn.dw.shape)

    def teach(self, labels: Tensor) -> None:
        """Supervised third factor (``DesireBackprop``): from the last forward pass (or the
        steps since the stream began) and ``labels`` ``(B,)``, add the rule's update of every
        learned layer to ``pending``. The learned layers must be ``nn.Linear`` chained in
        forward order (each one's inputs are the previous one's neurons)."""
        if not callable(getattr(self.rule, "teach", None)):
            raise TypeError(f"rule {type(self.rule).__name__} takes no labels; use e.g. DesireBackprop()")
        syns = list(self.synapses.values())
        for prev, syn in zip(syns, syns[1:]):
            if syn.conv or prev.conv or syn.n_in != prev.n_out:
                raise ValueError(f"teach: layer {syn.name!r} ({syn.n_in} inputs) must take the {prev.n_out} neurons of "
                                 f"layer {prev.name!r} as its inputs (nn.Linear layers chained in forward order)")
        if syns[-1].conv:
            raise ValueError(f"teach: the output layer {syns[-1].name!r} must be an nn.Linear")
        if any(syn.state is None for syn in syns):
            raise RuntimeError("teach: run the network on a batch first (no activity recorded since the last apply)")
        dws = self.rule.teach([syn.linear.weight.detach() for syn in syns], [syn.state for syn in syns], labels)
        for syn, dw in zip(syns, dws):
            syn.dw += dw.to(syn.dw.dtype)
            syn.state = None

    def apply(self, lr: float = 1.0) -> int:
        """Add ``lr * pending`` to each learned weight (bounded, then normalised) under
        ``torch.no_grad()`` and clear ``pending``. Returns the number of rows that
        ``Normalise`` could not scale (sum 0); 0 without normalisation."""
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a non-negative finite number, got {lr!r}")
        unscaled = 0
        with torch.no_grad():
            for syn in self.synapses.values():
                w = syn.linear.weight
                self.bounds.update(w, lr * syn.dw.to(w.dtype))
                if self.normalise is not None:
                    unscaled += self.normalise(w)
                if self.homeostasis is not None:
                    syn.theta = self.homeostasis.update(syn.theta, syn.counts, syn.steps)
                    self.homeostasis.set_threshold(syn.neuron, syn.base, syn.theta, syn.feature_dims)
                syn.dw.zero_()
                syn.counts.zero_()
                syn.steps = 0
        return unscaled

    def reset(self) -> None:
        """Forget traces, eligibilities, the pending update and the spike counts not yet
        applied (the learned thresholds of ``AdaptiveThreshold`` stay)."""
        for syn in self.synapses.values():
            syn.state, syn.pre, syn.v_before = None, None, None
            syn.dw.zero_()
            syn.counts.zero_()
            syn.steps = 0

    @property
    def thresholds(self) -> dict[str, Tensor]:
        """Each learned layer's homeostatic offset ``theta`` (``AdaptiveThreshold``), copies."""
        if self.homeostasis is None:
            raise RuntimeError("thresholds: this learner has no homeostasis (attach(..., homeostasis=AdaptiveThreshold()))")
        return {name: syn.theta.clone() for name, syn in self.synapses.items()}

    def set_thresholds(self, theta: dict[str, Tensor]) -> None:
        """Set learned layers' homeostatic offsets (e.g. from a checkpoint: the inverse of
        ``thresholds``) and write ``base + theta`` into their neurons."""
        for name, t in theta.items():
            syn = self.synapses.get(name)
            if self.homeostasis is None or syn is None or tuple(t.shape) != (syn.n_out,):
                raise ValueError(f"set_thresholds: {name!r} must name a learned layer of a learner with homeostasis "
                                 f"({sorted(self.synapses)}), its theta one value per neuron, got shape "
                                 f"{tuple(t.shape)}")
            syn.theta = t.detach().to(syn.theta).clone()
            self.homeostasis.set_threshold(syn.neuron, syn.base, syn.theta, syn.feature_dims)

    def pause(self) -> Paused:
        """``with learner.pause(): net(x)``: run the net without the rule seeing it (no traces,
        updates or spike counts), e.g. to evaluate between training batches."""
        return Paused(self)

    def remove(self) -> None:
        """Remove the hooks and restore the neurons' ``record`` flags."""
        for h in self._handles:
            h.remove()
        for syn in self.synapses.values():
            syn.layer._step_hooks.pop(id(self), None)
        for n, flag in self._flags.items():
            n.record = flag
        self._handles, self._flags = [], {}

    def __enter__(self) -> "Learner":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _pre_rows(syn: _Synapse, pre: Tensor) -> Tensor:
    """``(rows, in)``: a Linear's input as it is; a Conv2d's unfolded receptive fields."""
    if not syn.conv:
        return pre.reshape(-1, pre.shape[-1])
    m = syn.linear
    cols = torch.nn.functional.unfold(pre.reshape(-1, *pre.shape[-3:]), m.kernel_size, m.dilation, m.padding,
                                      m.stride)                     # (N, C*kh*kw, positions)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _post_rows(syn: _Synapse, post: Tensor) -> Tensor:
    """``(rows, out)``, rows matching ``_pre_rows`` (for a Conv2d: sample-major, then position)."""
    if not syn.conv:
        return post.reshape(-1, post.shape[-1])
    post = post.reshape(-1, *post.shape[-3:]).flatten(2)           # (N, O, positions)
    return post.transpose(1, 2).reshape(-1, post.shape[1])


def _check_conv(name: str, m: nn.Conv2d) -> None:
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ValueError(f"layers: Conv2d {name!r} has groups={m.groups}, padding={m.padding!r}, "
                         f"padding_mode={m.padding_mode!r}; learning supports groups=1 with integer zero padding")


def _pair(net: nn.Module, layers) -> dict[str, _Synapse]:
    """Each Linear/Conv2d with the spiking neuron layer after it (no weight layer in between)."""
    mods = [(n or "net", m) for n, m in net.named_modules()]
    inside = {id(m) for _, r in mods if isinstance(r, Recurrent) for m in r.modules() if m is not r}
    mods = [(n, m) for n, m in mods if id(m) not in inside]
    found = {}
    for i, (name, m) in enumerate(mods):
        if type(m) not in (nn.Linear, nn.Conv2d):
            continue
        post = next(((k, p) for k, p in mods[i + 1:] if isinstance(p, (Neuron,) + _WEIGHTS) or _drives(p)), None)
        if post is not None and not isinstance(post[1], _WEIGHTS) and _driven_neuron(post[1]).spec_type.spiking:
            found[name] = (m, post)
    if layers is None:
        if not found:
            raise ValueError(f"net has no nn.Linear or nn.Conv2d synapse followed by a spiking neuron layer to learn "
                             f"(a spikeforge.nn.Neuron such as LIF); modules: {[n for n, _ in mods][:12]}")
        chosen = list(found)
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        for name in chosen:
            if name not in found:
                raise ValueError(f"layers: {name!r} is not an nn.Linear/nn.Conv2d of net followed by a spiking neuron "
                                 f"layer "
                                 f"(directly, no weight layer in between); learnable: {sorted(found)}")
    for name in chosen:
        if isinstance(found[name][0], nn.Conv2d):
            _check_conv(name, found[name][0])
    return {n: _Synapse(n, found[n][0], found[n][1][1], found[n][1][0]) for n in chosen}


def _drives(m: nn.Module) -> bool:
    """A layer that wraps and steps a neuron layer (``neuron``) and calls ``_step_hooks``
    like a ``Neuron`` does (e.g. ``spikeforge.nn.LateralInhibition``)."""
    return not isinstance(m, Neuron) and isinstance(getattr(m, "neuron", None), Neuron) and \
        isinstance(getattr(m, "_step_hooks", None), dict) and isinstance(getattr(m, "carry_state", None), bool)


def _driven_neuron(m: nn.Module) -> Neuron:
    return m if isinstance(m, Neuron) else m.neuron


def attach(net: nn.Module, rule, *, bounds: Bounds = Bounds(), normalise: Normalise | None = None,
           layers=None, homeostasis: AdaptiveThreshold | None = None) -> Learner:
    """Attach ``rule`` (``PairSTDP``, ``TripletSTDP``, ``RewardSTDP``, ``VDSP``, ``DesireBackprop``) to every
    ``nn.Linear`` or ``nn.Conv2d`` of ``net`` that feeds a spiking neuron layer (or the names in
    ``layers``). Returns the ``Learner``; run ``net`` (sequence calls or ``spikeforge.step``)
    then ``learner.apply(lr)``. ``homeostasis=AdaptiveThreshold(...)`` also adapts each learned
    layer's thresholds at every ``apply``. The neuron layer may be wrapped by a layer that
    steps it (``spikeforge.nn.LateralInhibition``)."""
    return Learner(net, rule, bounds, normalise, layers, homeostasis)
