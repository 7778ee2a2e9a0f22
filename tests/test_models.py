"""spikeforge.models: shapes, gradients, parameter counts at the papers' configurations,
neuron/surrogate options and bad input."""
from __future__ import annotations

import io
from contextlib import ExitStack
from unittest import mock

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models as M
from spikeforge.nn.attention import SpikingSelfAttention, spiking_attention

# small versions: (builder, input side)
SMALL = {
    "vgg11": (lambda **kw: M.vgg11(width=1 / 16, hidden=32, pool_size=1, **kw), 32),
    "vgg16": (lambda **kw: M.vgg16(width=1 / 16, hidden=32, pool_size=1, batch_norm=False, **kw), 32),
    "resnet18": (lambda **kw: M.resnet18(width=1 / 16, **kw), 16),
    "resnet34": (lambda **kw: M.resnet34(width=1 / 16, stem=M.Stem.SMALL, **kw), 8),
    "sew_resnet18_add": (lambda **kw: M.sew_resnet18(width=1 / 16, **kw), 16),
    "sew_resnet18_and": (lambda **kw: M.sew_resnet18(width=1 / 16, connect=M.ConnectFunction.AND, **kw), 16),
    "sew_resnet34_iand": (lambda **kw: M.sew_resnet34(width=1 / 16, connect=M.ConnectFunction.IAND, **kw), 16),
    "spikformer": (lambda **kw: M.spikformer(dim=32, depth=2, num_heads=2, patch_size=4, **kw), 16),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions: one thread is faster than two on a shared machine (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_small_model_shape_and_finite_gradient_to_every_parameter(name):
    build, side = SMALL[name]
    torch.manual_seed(0)
    model = build(num_classes=10, in_channels=2, backend="reference")
    x = torch.rand(3, 2, 2, side, side) * 4
    out = model(x)
    assert out.shape == (3, 2, 10) and torch.isfinite(out).all()
    out.mean(0).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    first = [p for n, p in model.named_parameters() if n.startswith(("stem.", "features.0.", "patch_embed.stages.0."))]
    if not name.endswith("_and"):    # (AND blocks silence a narrow random net: their gradient may stop on the way)
        assert first and any(p.grad.abs().sum() > 0 for p in first)      # the gradient reaches the first layer


def test_fused_backend_runs_the_models_neurons_and_matches_the_reference():
    build, side = SMALL["sew_resnet18_add"]
    torch.manual_seed(1)
    ref = build(num_classes=4, in_channels=1, backend="reference")
    fused = build(num_classes=4, in_channels=1)
    fused.load_state_dict(ref.state_dict())
    x = torch.rand(2, 2, 1, side, side) * 4
    torch.testing.assert_close(fused(x), ref(x))
    assert {m.last_backend for m in fused.modules() if isinstance(m, sf.nn.Neuron)} == {"cpu"}


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "sew_resnet34_iand", "spikformer"])
def test_a_stream_of_steps_equals_the_sequence_call_in_eval(name):
    build, side = SMALL[name]
    torch.manual_seed(2)
    model = build(num_classes=5, in_channels=1, v_threshold=0.5)
    for m in model.modules():               # so that spikes reach the logits of the untrained net:
        if isinstance(m, nn.Linear):        # larger weights than the paper's init,
            nn.init.normal_(m.weight, 0.0, 0.5)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None               # running statistics = this batch's,
            nn.init.constant_(m.bias, 1.0)  # and every channel nearer its threshold
    x = torch.rand(3, 2, 1, side, side) * 4
    with torch.no_grad():
        model(x)
    model.eval()
    whole = model(x)
    sf.reset(model)
    steps = torch.stack([sf.step(model, x_t) for x_t in x])
    torch.testing.assert_close(steps, whole)
    assert whole.abs().sum() > 0
    with pytest.raises(ValueError, match=r"step: x must have shape \(B, C=1, H, W\)"):
        model.step(x)
    model.train()
    with pytest.raises(RuntimeError, match="steps only in eval\\(\\) mode"):
        sf.step(model, x[0])


# parameter counts at the papers' configurations; torchvision's figures for VGG/ResNet
# (torchvision.models docs, "num_params"), the Spikformer paper's Tables 1 and 2 (9.32 M, 16.81 M)
PAPER = [
    ("vgg11_bn", lambda: M.vgg11(), 132_868_840),
    ("vgg11", lambda: M.vgg11(batch_norm=False), 132_863_336),
    ("vgg16_bn", lambda: M.vgg16(), 138_365_992),
    ("vgg16", lambda: M.vgg16(batch_norm=False), 138_357_544),
    ("resnet18", lambda: M.resnet18(), 11_689_512),
    ("resnet34", lambda: M.resnet34(), 21_797_672),
    ("sew_resnet18", lambda: M.sew_resnet18(connect=M.ConnectFunction.IAND), 11_689_512),
    ("sew_resnet34", lambda: M.sew_resnet34(connect=M.ConnectFunction.ADD), 21_797_672),
]


@pytest.fixture
def no_init():
    """Skip weight initialisation (counting needs no values; 270 M random numbers do not fit a unit test)."""
    with ExitStack() as stack:
        for fn in ("kaiming_uniform_", "uniform_", "normal_", "kaiming_normal_", "trunc_normal_", "ones_", "zeros_"):
            stack.enter_context(mock.patch(f"torch.nn.init.{fn}", lambda t, *a, **k: t))
        yield


@pytest.mark.parametrize("name,build,expected", PAPER, ids=[p[0] for p in PAPER])
def test_parameter_count_matches_torchvision(name, build, expected, no_init):
    assert _count(build()) == expected


def test_spikformer_parameter_counts_match_the_paper(no_init):
    imagenet = M.spikformer()                                              # Spikformer-8-384, 224x224, 1000 classes
    cifar = M.spikformer(depth=4, dim=384, patch_size=4, num_classes=10)   # Spikformer-4-384, 32x32
    assert round(_count(imagenet) / 1e6, 2) == 16.81 and _count(imagenet) == 16_812_952
    assert round(_count(cifar) / 1e6, 2) == 9.32
    assert _count(M.spikformer(depth=4, patch_size=4, num_classes=10, mlp_bias=False)) == _count(cifar) - 4 * 1920


def test_learnable_neuron_parameters_add_to_the_count():
    kw = dict(num_classes=10, in_channels=1, width=1 / 16)
    lif, plif = M.resnet18(**kw), M.resnet18(neuron="PLIF", **kw)
    layers = sum(isinstance(m, sf.nn.Neuron) for m in plif.modules())
    assert layers == 1 + 8 * 2 and _count(plif) == _count(lif) + layers   # one tau per layer


def test_neuron_factory_and_surrogate_reach_every_neuron():
    sur = sf.surrogate.Sigmoid(alpha=3.0)
    model = M.spikformer(num_classes=3, in_channels=1, dim=16, depth=1, num_heads=2, patch_size=2,
                         neuron=sf.nn.IF, surrogate=sur, v_threshold=0.8)
    neurons = [m for m in model.modules() if isinstance(m, sf.nn.Neuron)]
    assert len(neurons) == 5 + 3 + 2 and all(type(m) is sf.nn.IF and m.surrogate == sur for m in neurons)
    thresholds = sorted(round(float(m.v_threshold), 6) for m in neurons)
    assert thresholds == [0.5] + [0.8] * 9        # the attention neuron fires at 0.5 (the paper's)


def test_connect_functions():
    a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    s = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert M.ConnectFunction.ADD(a, s).tolist() == [0, 1, 1, 2]
    assert M.ConnectFunction.AND(a, s).tolist() == [0, 0, 0, 1]
    assert M.ConnectFunction.IAND(a, s).tolist() == [0, 1, 0, 0]


def test_spiking_attention_is_softmax_free_attention_in_either_order():
    g = torch.Generator().manual_seed(0)
    for d, n in ((4, 9), (8, 3)):                       # more tokens than channels, and fewer
        q, k, v = ((torch.rand(2, 3, d, n, generator=g) > 0.5).float() for _ in range(3))
        expected = ((q.transpose(-2, -1) @ k) @ v.transpose(-2, -1)).transpose(-2, -1) * 0.125
        torch.testing.assert_close(spiking_attention(q, k, v, 0.125), expected)


def test_models_pickle_and_run_after_loading():
    build, side = SMALL["sew_resnet34_iand"]
    model = build(num_classes=4, in_channels=1).eval()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.rand(2, 1, 1, side, side)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "spikformer"])
def test_bad_input_shape_is_an_error(name):
    build, side = SMALL[name]
    model = build(num_classes=4, in_channels=3)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, C, H, W\).*got shape \(2, 3, 16, 16\)"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"in_channels=3 channels.*got shape \(2, 1, 1, 16, 16\)"):
        model(torch.rand(2, 1, 1, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(2, 1, 3, 16, 16, dtype=torch.long))


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="neuron must be a registered neuron name.*'LIFF'"):
        M.resnet18(neuron="LIFF")
    with pytest.raises(TypeError, match="connect must be a ConnectFunction"):
        M.sew_resnet18(connect="ADD")
    with pytest.raises(TypeError, match="stem must be a Stem"):
        M.resnet18(stem="small")
    with pytest.raises(ValueError, match="width must be a positive number"):
        M.vgg11(width=0)
    with pytest.raises(ValueError, match="patch_size must be 1, 2, 4, 8 or 16"):
        M.spikformer(dim=16, depth=1, num_heads=2, patch_size=3)
    with pytest.raises(ValueError, match="dim must be divisible by num_heads"):
        M.spikformer(dim=16, depth=1, num_heads=3)
    with pytest.raises(TypeError, match="surrogate must be a spikeforge.surrogate.Surrogate"):
        M.vgg11(width=1 / 16, hidden=8, pool_size=1, surrogate="atan")
    net = M.spikformer(num_classes=2, in_channels=1, dim=16, depth=1, num_heads=2, patch_size=4)
    with pytest.raises(ValueError, match=r"multiples of patch_size=4"):
        net(torch.rand(1, 1, 1, 10, 12))
    with pytest.raises(ValueError, match=r"SpikingSelfAttention: x must have shape \(T, B, dim=16, N\)"):
        SpikingSelfAttention(16, 2, sf.nn.LIF)(torch.rand(2, 2, 8, 4))


def test_docs_examples_run():
    """The examples of docs/models.md run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 4
    for block in blocks:
        exec(block, {})


def test_vgg_refuses_images_smaller_than_its_pools():
    model = sf.models.vgg11(num_classes=4, in_channels=1, width=0.125, hidden=16, pool_size=1)
    with pytest.raises(ValueError, match=r"VGG11: x must be at least 32x32 pixels.*got shape \(1, 1, 1, 16, 16\)"):
        model(torch.rand(1, 1, 1, 16, 16))
    assert model(torch.rand(1, 1, 1, 32, 32)).shape == (1, 1, 4)
