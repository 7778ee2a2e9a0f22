"""The fused GPU backend: Triton printed from the traced step, written to a file, imported.

``tritonsource`` prints one module per spec, surrogate, input dtype and parameter layout;
it is written to the cache directory (``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge``)
under a hash of its source — ``triton.jit`` reads a kernel's source from its file — and
imported once. Triton compiles and caches the binaries itself.

With ``TRITON_INTERPRET=1`` Triton runs the same kernels in its CPU interpreter, and this
backend then accepts CPU tensors: that is how the tests check it without a GPU.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from contextlib import nullcontext
from functools import lru_cache

import torch

from . import tritonsource
from .tritonsource import interpreting
from ._fused import FusedBackend, cache_dir, dims
from .trace import UnsupportedGraph, trace

BLOCK = 256  # lanes per program at most; a power of two
_LOCK = threading.Lock()


def _triton():
    """The triton module, or the reason it cannot be imported."""
    try:
        import triton
    except Exception as e:  # any import failure is the reason the backend is unavailable
        return f"triton cannot be imported ({type(e).__name__}: {e}); install it with pip install triton"
    return triton


def load(src: str, interpret: bool):
    """Write ``src`` to the cache (once) and import it; one module per source and mode."""
    triton = _triton()
    if isinstance(triton, str):
        raise RuntimeError(triton)
    h = hashlib.sha256(src.encode()).hexdigest()[:20]
    name = f"spikeforge_triton_{h}" + ("_interpreted" if interpret else "")
    with _LOCK:
        if name in sys.modules:
            return sys.modules[name]
        path = cache_dir() / f"sft_{h}_{triton.__version__}.py"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(src)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
        return mod


class Kernel:
    """The Triton forward/backward pair for one spec, surrogate, input dtype and parameter
    layout (which parameters are per-neuron vectors rather than scalars), and the
    gradients backward computes (``want``: x, then each parameter; default all)."""

    def __init__(self, spec, surrogate, dtype, layout: tuple[bool, ...], want, interpret: bool):
        self.tr = trace(spec, surrogate, tritonsource.compute_dtype(dtype))
        self.layout, self.want = layout, want or (True,) * (1 + self.tr.n_params)
        reads = self.tr.backward_reads()
        self.reads_x, self.reads_state = reads[0], reads[1: 1 + self.tr.n_state]
        self.mod = load(tritonsource.source(self.tr, dtype, layout), interpret)

    @staticmethod
    def _launch(fn, M, *args, **constexprs):
        block = min(BLOCK, max(16, 1 << (M - 1).bit_length()))
        grid = (-(-M // block),)
        dev = args[0].device
        with torch.cuda.device(dev) if dev.type == "cuda" else nullcontext():
            fn[grid](*args, BLOCK=block, num_warps=max(1, min(8, block // 64)), enable_fp_fusion=False, **constexprs)

    def _saves(self, record: bool, grad: bool) -> tuple[bool, ...]:
        return tuple((r and grad) or record for r in self.reads_state)

    def saved_shapes(self, x_shape, record: bool, grad: bool) -> list[tuple[int, ...]]:
        return [] if record else [tuple(x_shape) for w in self._saves(record, grad) if w]

    def forward(self, x, state, params, record: bool, grad: bool):
        """(z, final_state, trace, saved): backward reads full state traces (the recorded
        trace itself when ``record``, else the ``saved`` ones it needs)."""
        T, B, N = dims(x)
        save = self._saves(record, grad)
        z = torch.empty_like(x)
        final = [s.contiguous().clone() for s in state]
        saved = [torch.empty_like(x) if w else None for w in save]
        if T * B * N:
            dummy = x.new_empty(1)
            self._launch(self.mod.sf_forward, B * N, x, z, *final, *[dummy if s is None else s for s in saved],
                         *params, B * N, N, T, **{f"SAVE{k}": w for k, w in enumerate(save)})
        if record:
            return z, final, saved, []
        return z, final, [], [s for s in saved if s is not None]

    def backward(self, x, state, saved, params, gz, gstate, gtrace):
        """Reverse time; computes the gradients in ``want`` (``None`` for the others)."""
        gz = gz.contiguous()
        T, B, N = dims(gz)
        acc = tritonsource.compute_dtype(gz.dtype)
        if len(saved) != len(state):   # only the states backward reads were saved
            it = iter(saved)
            saved = [next(it) if r else None for r in self.reads_state]
        gx = torch.empty_like(gz) if self.want[0] else None
        gp = [gz.new_empty(B * N, dtype=acc) if w else None for w in self.want[1:]]
        if T * B * N == 0:
            return gx, gstate, [None if g is None else g.zero_() for g in gp]
        dummy = gz.new_empty(1)
        d = lambda t: dummy if t is None else t  # noqa: E731 - pointer for an unused argument
        flags = {f"WANT_P{k}": g is not None for k, g in enumerate(gp)}
        flags.update({f"HAS_GT{k}": g is not None for k, g in enumerate(gtrace)})
        self._launch(self.mod.sf_backward, B * N, d(x), *state, *map(d, saved), *params, gz, *gstate,
                     *map(d, gtrace), d(gx), *map(d, gp), B * N, N, T, WANT_GX=gx is not None, **flags)
        return gx, gstate, gp


@lru_cache(maxsize=None)
def _kernel(spec, surrogate, dtype, layout, want, interpret) -> Kernel:
    return Kernel(spec, surrogate, dtype, layout, want, interpret)


class Triton(FusedBackend):
    name = "triton"
    description = "fused Triton kernels generated from the neuron definition (GPU)"

    def unavailable_reason(self, device, dtype):
        triton = _triton()
        if isinstance(triton, str):
            return triton
        if device.type != "cuda" and not interpreting():
            return f"runs on CUDA tensors only (CPU tensors with TRITON_INTERPRET=1), got device {device}"
        if dtype not in tritonsource.DTYPES:
            return f"supports float16, bfloat16, float32 and float64, got {dtype}"
        return None

    def support_reason(self, spec, surrogate, dtype):
        return _support_reason(spec, surrogate, dtype)

    def kernel(self, spec, surrogate, dtype, layout, want=None) -> Kernel:
        """The cached kernel pair (separate instances for compiled and interpreted mode; one
        loaded module per source, whatever ``want``)."""
        return _kernel(spec, surrogate, dtype, layout, want, interpreting())

    def run(self, spec, surrogate, x, state, params, record):
        state = [s.to(x.dtype) for s in state]
        params = [p.to(x.dtype) for p in params]
        return super().run(spec, surrogate, x, state, params, record)

    def stepper(self, spec, surrogate, params, x):
        return super().stepper(spec, surrogate, [p.to(x.dtype) for p in params], x)


@lru_cache(maxsize=None)
def _support_reason(spec, surrogate, dtype):
    """None if the Triton printer can emit the spec's step and its backward, else why not."""
    try:
        tr = trace(spec, surrogate, tritonsource.compute_dtype(dtype))
        tritonsource.source(tr, dtype, (False,) * tr.n_params)
    except UnsupportedGraph as e:
        return str(e)
    return None


BACKEND = Triton()
