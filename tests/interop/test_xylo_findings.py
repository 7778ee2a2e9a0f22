"""Each place where xylosim 0.1.3 differs from the usual description of Xylo (docs/hardware.md),
shown on a hand-built network run through xylosim itself, and reproduced by spikeforge."""
from __future__ import annotations

import numpy as np
import torch

from spikeforge.quant import XyloLayer, XyloNet, run_xylosim, xylosim

OUT = {"population": "output", "delay": 1}


def net_of(w_in, w_out, shift_in=0, shift_out=0, hidden=None, out=None, core="v2", w_mid=None):
    """input -> hidden (-> hidden) -> output, parameters per population as dicts."""
    hidden = {"dash_syn": 1, "dash_mem": 1, "threshold": 100, **(hidden or {})}
    out = {"dash_syn": 1, "dash_mem": 1, "threshold": 100, **(out or {})}
    layers = [XyloLayer(torch.tensor(w_in, dtype=torch.float64), shift_in, core=core, name="hidden", **hidden)]
    if w_mid is not None:
        layers.append(XyloLayer(torch.tensor(w_mid, dtype=torch.float64), 0, core=core, delay=1, name="mid",
                                **hidden))
    layers.append(XyloLayer(torch.tensor(w_out, dtype=torch.float64), shift_out, core=core, name="output", **out,
                            **OUT))
    return XyloNet(*layers)


def raster(*rows):
    return torch.tensor(rows, dtype=torch.float64)[:, None, :]


def both(net, x):
    ref = run_xylosim(net, x)
    net(x)
    return ref


def test_saturation_is_per_event_in_channel_order():
    """+127 << 8 from channel 0 twice, then -128 << 8 from channel 1 once: per event the current
    saturates at 32767 and ends at 32767 - 32768 = -1 before the decay; summed once it would be
    2 * 32512 - 32768 = 32256."""
    net = net_of([[127, -128]], [[1]], shift_in=8, hidden={"dash_syn": 15, "threshold": 32767})
    ref = both(net, raster([2, 1]))
    assert ref["isyn"][0, 0, 0].item() == 0      # -1, then its decay -1 >> 15 = -1 (summed: 32255)
    assert torch.equal(net[0].trace.i_syn, ref["isyn"]) and net[0].last_delivery == "per-event"


def test_v2_negates_the_decay_in_16_bits():
    """Vmem = -32768 with dash_mem 0: v2 computes -decay(v) = -(-32768) in 16 bits, which wraps to
    -32768, so a current of -766 plus bias -300 keeps the membrane at -32768 (without the wrap:
    -32768 + sat(-766 + 32768) - 300 = -1066)."""
    net = net_of([[-128, 125]], [[1]], shift_in=8, hidden={"dash_syn": 15, "dash_mem": 0, "threshold": 32767,
                                                           "bias": -300})
    ref = both(net, raster([1, 0], [0, 1]))
    assert ref["vmem"][:, 0, 0].tolist() == [-32768.0, -32768.0] and ref["isyn"][1, 0, 0].item() == -766
    assert torch.equal(net[0].trace.v_mem, ref["vmem"]) and torch.equal(net[0].trace.i_syn, ref["isyn"])


def test_input_events_above_15_are_clipped_silently_by_xylosim():
    net = net_of([[10]], [[1]])
    sim = xylosim(net)
    outs = []
    for n in (15, 40):
        sim.reset_state()
        sim.evolve(np.array([[n], [0]], dtype=np.int64), record=True)
        outs.append(np.array(sim._xylo_layer.rec_i_syn).copy())
    assert np.array_equal(outs[0], outs[1])


def test_one_step_per_layer_and_spikes_while_vmem_reaches_threshold():
    """A hidden spike at step 0 reaches the output at step 1, through two hidden layers at step 2;
    Vmem == threshold fires; a hidden neuron fires up to 31 times in a step, an output neuron once."""
    big = {"dash_syn": 15, "dash_mem": 15, "threshold": 1}
    for mid, lag in ((None, 1), ([[127]], 2)):
        net = net_of([[127]], [[127]], shift_in=8, hidden=big, out=big, w_mid=mid)
        ref = both(net, raster([15], [0], [0], [0]))
        first_hidden = ref["hidden_spikes"][:, 0, 0].nonzero()[0].item()
        first_out = ref["spikes"][:, 0, 0].nonzero()[0].item()
        assert (first_hidden, first_out) == (0, lag)
        assert ref["hidden_spikes"].max() == 31 and ref["spikes"].max() == 1
        assert torch.equal(net[-1].spikes, ref["spikes"])
    net = net_of([[100]], [[1]], hidden={"dash_syn": 15, "dash_mem": 15, "threshold": 99})
    ref = both(net, raster([1], [0]))   # i = 100 - (100 >> 15 = 0 -> 1) = 99 = threshold
    assert ref["isyn"][0, 0, 0] == 99 and ref["hidden_spikes"][0, 0, 0] == 1 and net[0].spikes[0, 0, 0] == 1
