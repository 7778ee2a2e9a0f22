"""The generated Triton kernels against the reference scan.

Without a GPU they run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set per test
with monkeypatch: Triton reads it when a kernel module is imported, the backend when it is
asked whether it can run); with a GPU the same tests also run compiled on CUDA tensors.
Shapes are small (the interpreter runs every op in numpy) and ``BLOCK`` is lowered so
that several programs run and the last one is partly masked.
"""
from __future__ import annotations

import pytest
import torch
from conftest import CUSTOM, NEURONS, default_params, separated_input

import spikeforge as sf
from spikeforge import functional as F
from spikeforge.kernels import BackendError
from spikeforge.neurons import REGISTRY
from spikeforge.surrogate import ATan, Custom, Erf, Sigmoid

try:
    import triton
except ImportError as e:  # not installed, or installed but broken: say which
    pytest.skip(f"triton is not importable ({e}); pip install 'spikeforge[triton]'", allow_module_level=True)
from spikeforge.kernels import triton as tk  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow in padding lanes
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SURROGATES = [ATan(), Sigmoid(), Erf(), CUSTOM]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-9)}


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """'cpu' runs the kernels in Triton's interpreter, 'cuda' compiled."""
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(tk, "BLOCK", 16)
    return request.param


def run_both(spec, x, s0, params, surrogate, device, grad=("x", "state", "params"), record=True):
    """(z, final state, trace, grads) from the reference (float64 input on CPU, cast back) and
    from triton; grads are w.r.t. x, the initial state and the parameters, as asked."""
    g = torch.Generator().manual_seed(5)
    gz = torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5
    out = {}
    for b in ("reference", "triton"):
        dev = "cpu" if b == "reference" else device
        xb = x.detach().to(dev).requires_grad_("x" in grad)
        sb = tuple(s.detach().to(dev).requires_grad_("state" in grad) for s in s0)
        pb = {k: v.detach().to(dev).requires_grad_("params" in grad) for k, v in params.items()}
        z, s, tr, used = F.run(spec, xb, sb, pb, surrogate=surrogate, backend=b, record=record)
        assert used == b
        leaves = [t for t in (xb, *sb, *pb.values()) if t.requires_grad]
        loss = (z * gz.to(z)).sum() + sum((v * v).sum() for v in s)
        gr = torch.autograd.grad(loss, leaves, allow_unused=True) if leaves else ()
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        out[b] = (cpu(z), [cpu(v) for v in s], [cpu(v) for v in tr] if record else None, [cpu(v) for v in gr])
    return out["reference"], out["triton"]


def assert_same(ref, got, tol):
    torch.testing.assert_close(got[0], ref[0], **tol)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, **tol)
    if ref[2] is not None:
        for a, b in zip(got[2], ref[2]):
            torch.testing.assert_close(a, b, **tol)
    assert len(got[3]) == len(ref[3])
    for a, b in zip(got[3], ref[3]):
        if b is None:  # not reached by the reference graph: the kernel says zero
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


def leaves(name, shape, dtype):
    x, s0 = separated_input(name, shape, dtype, state_noise=0.05)
    return x, s0, default_params(REGISTRY[name], dtype)._asdict()


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("neuron", NEURONS)
def test_matches_reference(neuron, surrogate, device):
    # N = 7 neurons per row, M = 14 lanes: one program of 16 lanes, two of them masked.
    x, s0, p = leaves(neuron, (5, 2, 7), torch.float32)
    assert_same(*run_both(REGISTRY[neuron](), x, s0, p, surrogate, device), TOL[torch.float32])


@pytest.mark.parametrize("neuron", ["LIF", "ALIF", "CubaLIF"])
def test_per_neuron_params_and_several_programs(neuron, device):
    # features (3, 5): N = 15, M = 45 lanes -> 3 programs of 16, the last one masked.
    x, s0, p = leaves(neuron, (4, 3, 3, 5), torch.float64)
    g = torch.Generator().manual_seed(2)
    for name, spec in REGISTRY[neuron].params.items():  # vary the time constants per neuron
        if spec.positive:
            p[name] = p[name] * (0.75 + 0.5 * torch.rand((3, 5), generator=g, dtype=torch.float64))
    assert_same(*run_both(REGISTRY[neuron](), x, s0, p, ATan(), device), TOL[torch.float64])


@pytest.mark.parametrize("neuron", ["IF", "EIF", "Izhikevich"])
def test_float64(neuron, device):
    x, s0, p = leaves(neuron, (6, 2, 9), torch.float64)
    assert_same(*run_both(REGISTRY[neuron](), x, s0, p, Erf(), device), TOL[torch.float64])


@pytest.mark.parametrize("grad", [(), ("x",), ("params",), ("state",)], ids=lambda g: "+".join(g) or "none")
def test_partial_gradients_and_inference(grad, device):
    """Only what needs a gradient gets one (gx and parameter stores are switched off)."""
    x, s0, p = leaves("ALIF", (5, 2, 7), torch.float64)
    for record in (True, False):
        assert_same(*run_both(REGISTRY["ALIF"](), x, s0, p, Sigmoid(), device, grad, record), TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype, device):
    """Half inputs are upcast, computed in float32 and rounded once per store: the result is the
    float32 reference on the same (rounded) inputs, up to that rounding."""
    x, s0, p = leaves("LIF", (5, 2, 7), torch.float32)
    x, s0 = x.to(dtype), tuple(s.to(dtype) for s in s0)
    z, s, tr, used = F.run(REGISTRY["LIF"](), x.to(device), tuple(v.to(device) for v in s0), p,
                           backend="triton", record=True)
    zr, sr, trr, _ = F.run(REGISTRY["LIF"](), x.float(), tuple(v.float() for v in s0), p, backend="reference",
                           record=True)
    assert z.dtype == s.v.dtype == tr.v.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(z.float().cpu(), zr, atol=0, rtol=0)
    torch.testing.assert_close(tr.v.float().cpu(), trr.v, atol=eps, rtol=eps)


def test_empty_batch(device):
    x = torch.zeros(4, 0, 3, device=device, requires_grad=True)
    z, s, _, used = F.run(REGISTRY["LIF"](), x, backend="triton")
    assert used == "triton" and z.shape == x.shape
    (s.v.sum() + z.sum()).backward()
    assert x.grad.shape == x.shape


def test_unavailable_without_cuda_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "CUDA" in sf.backends("cpu")["triton"]
    with pytest.raises(BackendError, match="CUDA"):
        F.run(REGISTRY["LIF"](), torch.rand(3, 2, 4), backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sf.backends("cpu")["triton"] is None
    assert "float16" in sf.backends("cpu", torch.int32)["triton"]


def test_unsupported_op_is_named():
    sur = Custom(lambda x, a: torch.special.i0(a * x), alpha=1.0)
    reason = tk.BACKEND.support_reason(REGISTRY["LIF"](), sur, torch.float32)
    assert reason is not None and "i0" in reason


def test_source_is_written_to_the_cache_and_imported(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    spec = REGISTRY["QIF"]()
    tr = tk.trace(spec, ATan(), torch.float32)
    src = tk.tritonsource.source(tr, torch.float16, (True,) + (False,) * (tr.n_params - 1))
    mod = tk.load(src, interpret=True)
    files = list(tmp_path.glob("sft_*.py"))
    assert len(files) == 1 and files[0].read_text() == src
    assert mod.__file__ == str(files[0]) and hasattr(mod, "sf_forward") and hasattr(mod, "sf_backward")
    assert tk.load(src, interpret=True) is mod
    assert "QIF" in src and "tl.float16" in src


def _every_op(x, a):
    """A surrogate using every op of the Triton op table (positive bases for pow and log)."""
    y = a * x
    u = torch.abs(y)
    s = torch.sigmoid(y) * torch.tanh(u) + torch.atan(y) * torch.erf(y) + torch.atan(3.0 * y)
    s = s + torch.exp(-u) * torch.log(1.0 + u) + torch.sqrt(1.0 + u) * torch.rsqrt(2.0 + u)
    s = s + torch.reciprocal(1.0 + u) + 0.1 * (1.0 + u) ** 1.5 + 0.01 * torch.sign(y)
    s = s + torch.where(u < 1.0, torch.maximum(y, -u), torch.minimum(y, u)) + torch.clamp(y, -0.5, 0.5)
    return s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_of_the_table(dtype, device):
    x, s0, p = leaves("LIF", (4, 2, 5), dtype)
    sur = Custom(_every_op, alpha=1.3)
    assert tk.BACKEND.support_reason(REGISTRY["LIF"](), sur, dtype) is None
    assert_same(*run_both(REGISTRY["LIF"](), x, s0, p, sur, device), TOL[dtype])


_PTR = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


@pytest.mark.parametrize("neuron, surrogate, dtype, per_neuron", [
    ("ALIF", Custom(_every_op, alpha=1.3), torch.float32, True),
    ("CubaLIF", CUSTOM, torch.bfloat16, False),
    ("Izhikevich", Erf(), torch.float64, False),
], ids=["ALIF-every_op-f32", "CubaLIF-Custom-bf16", "Izhikevich-Erf-f64"])
def test_compiles_for_cuda_without_a_gpu(neuron, surrogate, dtype, per_neuron, monkeypatch):
    """The compiled path (libdevice calls, loop-carried types, constexpr branches) that the
    interpreter does not exercise: Triton compiles to PTX for sm_90 with no device present."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        pytest.skip(f"this triton has no ASTSource/GPUTarget: {e}")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = REGISTRY[neuron]()
    tr = tk.trace(spec, surrogate, tk.tritonsource.compute_dtype(dtype))
    mod = tk.load(tk.tritonsource.source(tr, dtype, (per_neuron,) * tr.n_params), interpret=False)
    acc = _PTR[tk.tritonsource.compute_dtype(dtype)]
    for fn in (mod.sf_forward, mod.sf_backward):
        consts = {a: True for a in fn.arg_names if a.startswith(("SAVE", "WANT_"))} | {"BLOCK": 256}
        sig = {a: "constexpr" if a in consts else "i32" if a in "MNT" else acc if a[0] == "A" else _PTR[dtype]
               for a in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(a),): v for a, v in consts.items()})
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                             options={"num_warps": 4, "enable_fp_fusion": False}).asm["ptx"]
        assert ".entry " + fn.__name__ in ptx
