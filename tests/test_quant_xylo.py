"""The integer Xylo neuron and network against an event-by-event oracle of xylosim's C++
(tests/xylo_oracle.py), and the errors for what Xylo cannot hold. The comparison with xylosim
itself is in tests/interop/test_xylo.py."""
from __future__ import annotations

import pytest
import torch
import xylo_oracle as oracle
from conftest import FUSED

from spikeforge import functional as F
from spikeforge.neurons import XyloLIF
from spikeforge.neurons.xylo import XyloCore, XyloPopulation
from spikeforge.quant import XyloLayer, XyloNet

BACKENDS = ["reference", *(n for d, n in FUSED if d == "cpu")]
CORES = [XyloCore.V2, XyloCore.V1]


def _rint(g, lo, hi, shape=()):
    return torch.randint(lo, hi + 1, shape, generator=g).to(torch.float64)


# -- the neuron --------------------------------------------------------------------------
def _neuron_cases(seed: int, n: int = 64):
    """Per-neuron parameters and inputs reaching every corner: saturation both ways, dash 0
    and 15, threshold 1, -32768 with dash_mem 0 (v2's 16-bit negation), multi-spike caps."""
    g = torch.Generator().manual_seed(seed)
    p = {"dash_syn": _rint(g, 0, 15, (n,)), "dash_mem": _rint(g, 0, 15, (n,)),
         "threshold": torch.floor(2.0 ** (15 * torch.rand(n, generator=g, dtype=torch.float64))).clamp(1, 32767),
         "bias": _rint(g, -400, 400, (n,))}
    p["dash_mem"][:4] = 0.0
    p["threshold"][4:8] = 1.0
    x = _rint(g, -70000, 70000, (40, 2, n)) * (torch.rand(40, 2, n, generator=g) < 0.4)
    x[:6, :, :4] = -70000.0   # drive v to -32768 under dash_mem 0
    return p, x


def _oracle_neuron(p, x, core: str, cap: int):
    T, B, N = x.shape
    z, i_s, v_s = (torch.zeros_like(x) for _ in range(3))
    for b in range(B):
        for k in range(N):
            i = v = 0
            pk = [int(p[n][k]) for n in ("dash_syn", "dash_mem", "threshold", "bias")]
            for t in range(T):
                i = oracle.safe_add(i, int(x[t, b, k]))   # one addition (|x| may pass 16 bits)
                n, i, v = oracle.evolve(i, v, *pk, cap, core)
                z[t, b, k], i_s[t, b, k], v_s[t, b, k] = n, i, v
    return z, i_s, v_s


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("population", list(XyloPopulation), ids=lambda p: p.value)
@pytest.mark.parametrize("core", CORES, ids=lambda c: c.value)
def test_neuron_equals_xylosim_arithmetic(core, population, backend, dtype):
    """Exact in float32 too: every value is an integer below 2^24."""
    p, x = _neuron_cases(3)
    if core is XyloCore.V1:
        p["bias"] = torch.zeros_like(p["bias"])
    spec = XyloLIF(core=core, population=population)
    z, _, trace, used = F.run(spec, x.to(dtype), params={k: v.to(dtype) for k, v in p.items()}, backend=backend,
                              record=True)
    assert used == backend
    want = _oracle_neuron(p, x, core.value, int(population.cap))
    for got, w in zip((z, *trace), want):
        assert torch.equal(got.double(), w)
    # the cases reached the caps and both saturations (a current held at +-32768 decays by >= 1)
    assert z.max() == population.cap and (trace.v_mem == oracle.MIN).any()
    assert (trace.i_syn.abs() >= 32700).any() and (trace.i_syn <= -32700).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spike_count_is_exact_for_every_16_bit_state_even_from_an_inexact_reciprocal(dtype):
    """The count is floor(v / threshold) for every 16-bit v and thresholds over the whole range,
    from 1 / threshold rounded correctly or up to 4 ulps off (as an approximate GPU division
    makes it), with and without the straight-through gradient (same values)."""
    from spikeforge.neurons.xylo import floor_quotient

    v = torch.arange(-32768, 32768, dtype=torch.float64)
    for th in (1, 2, 3, 7, 10, 99, 127, 128, 255, 1000, 4095, 4097, 32767):
        exact = torch.div(v, th, rounding_mode="floor").to(dtype)
        r = torch.tensor(1.0 / th, dtype=dtype)
        for ulps in range(-4, 5):
            rth = r
            for _ in range(abs(ulps)):
                rth = torch.nextafter(rth, torch.tensor(ulps * float("inf"), dtype=dtype))
            for st in (False, True):
                got = floor_quotient(v.to(dtype), rth, st)
                assert torch.equal(got, exact), (th, ulps, st)
    # the straight-through gradient is the quotient's
    v = torch.tensor([70.0, -3.0, 500.0], requires_grad=True)
    th = torch.tensor(64.0, requires_grad=True)
    floor_quotient(v, 1.0 / th, True).sum().backward()
    assert torch.allclose(v.grad, torch.full((3,), 1 / 64)) and torch.allclose(th.grad, -v.detach().sum() / 64 ** 2)


def test_straight_through_changes_gradients_not_values():
    p, x = _neuron_cases(4)
    plain = F.run(XyloLIF(), x, params=p)[0]
    x = x.clone().requires_grad_()
    ste = F.run(XyloLIF(straight_through=True), x, params=p)[0]
    assert torch.equal(plain, ste)
    ste.sum().backward()
    assert x.grad.abs().sum() > 0


# -- the network ---------------------------------------------------------------------------
def random_layers(seed: int, core: XyloCore, n_in: int = 5, sizes=(6, 4, 3)) -> tuple[XyloNet, list[dict]]:
    """A random XyloNet (int8 weights, shifts, dashes, thresholds over the whole range) and
    the same layers for the oracle."""
    g = torch.Generator().manual_seed(seed)
    rec_shift, layers, spec, prev = int(_rint(g, 0, 8)), [], [], n_in
    for k, n in enumerate(sizes):
        last = k == len(sizes) - 1
        shift = rec_shift if 0 < k < len(sizes) - 1 else int(_rint(g, 0, 8))
        w = _rint(g, -128, 127, (n, prev)) * (torch.rand(n, prev, generator=g) < 0.7)
        p = {"dash_syn": _rint(g, 0, 15, (n,)), "dash_mem": _rint(g, 0, 15, (n,)),
             "threshold": torch.floor(2.0 ** (15 * torch.rand(n, generator=g, dtype=torch.float64))).clamp(1, 32767),
             "bias": _rint(g, -300, 300, (n,)) * (core is XyloCore.V2)}
        layers.append(XyloLayer(w, shift, **p, core=core, delay=min(k, 1), name=f"layer {k}",
                                population=XyloPopulation.OUTPUT if last else XyloPopulation.HIDDEN))
        spec.append({"w": w.long().tolist(), "shift": shift, "cap": 1 if last else 31,
                     **{k2: v.long().tolist() for k2, v in zip(("ds", "dm", "th", "bias"), p.values())}})
        prev = n
    return XyloNet(*layers), spec


def _events(seed: int, T: int, B: int, n_in: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + seed)
    return _rint(g, 0, 15, (T, B, n_in)) * (torch.rand(T, B, n_in, generator=g) < 0.5)


@pytest.mark.parametrize("core", CORES, ids=lambda c: c.value)
def test_network_equals_xylosim_arithmetic(core):
    """Every layer's spikes, currents and membranes, step by step, on random networks whose
    shifted weights saturate the currents mid-delivery (the per-event path) or not."""
    deliveries = set()
    for seed in range(6):
        net, spec = random_layers(seed, core)
        x = _events(seed, 25, 2, 5)
        got, s = [], x
        for layer in net:
            s = layer(s)
            got.append((s, *layer.trace))
            deliveries.add(layer.last_delivery)
        for b in range(x.shape[1]):
            want = oracle.run(spec, x[:, b].long().tolist(), core.value)
            for layer, mine, w in zip(net, got, want):
                for name, a, ref in zip(("spikes", "i_syn", "v_mem"), mine, (w["z"], w["i"], w["v"])):
                    assert torch.equal(a[:, b], torch.tensor(ref, dtype=torch.float64)), (seed, layer.name, name)
    assert deliveries == {"summed", "per-event"}


@pytest.mark.parametrize("straight_through", [False, True])
def test_decay_is_the_shift_or_the_sign_with_the_same_gradient(straight_through):
    """``_decay`` writes xylosim's "u >> dash, or sign(u) where that is 0" as ``u > 0`` where the
    shift is 0 (it is 0 only for u >= 0): values and gradients equal the sign form's, at 0, at
    -0.0, at both ends of the 16-bit range and around every shift's 0/1 boundary."""
    from spikeforge.neurons.xylo import _decay, _floor, _shift_factor

    u0 = torch.cat([torch.arange(-40.0, 41.0), torch.tensor([-0.0, -32768.0, 32767.0, 1023.0, 1024.0])])
    for dash in range(0, 16):
        d = torch.tensor(float(dash))
        u1, u2 = u0.clone().requires_grad_(), u0.clone().requires_grad_()
        new = _decay(u1, d, straight_through)
        q = _floor(u2 * _shift_factor(d), straight_through)
        old = torch.where(q == 0, torch.sign(u2), q)
        assert torch.equal(new, old), dash
        w = torch.linspace(-1, 1, u0.numel())
        (g1,), (g2,) = torch.autograd.grad((new * w).sum(), u1), torch.autograd.grad((old * w).sum(), u2)
        assert torch.equal(g1, g2), dash


@pytest.mark.parametrize("kw", [dict(dash_mem=20.0), dict(dash_syn=-3.0), dict(threshold=0.5), dict(bias=40000.0)])
def test_register_ranges_refused_by_name(kw):
    # Xylo's registers: dash 0..15, threshold 1..32767, bias 16-bit; out of range was clamped silently
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"XyloLIF parameter {name} must be in"):
        F.run(XyloLIF(), torch.rand(3, 2, 4) * 8, params=kw)
