"""Stand-ins for the libdevice functions the Triton op table uses, for Triton's CPU
interpreter only (``TRITON_INTERPRET=1``), which has no libdevice. Bound to the name
``libdevice`` in a generated kernel module by ``tritonsource.libdevice_module()``.

The interpreter evaluates ``tl`` primitives in numpy in the tensor's dtype; ``tanh`` and
``atan``, which have no primitive, are computed in float64 and rounded once, as a good
libm would. ``pow`` is valid for positive bases only.
"""
import math

import triton.language as tl


def exp(x):
    return tl.exp(x)


def log(x):
    return tl.log(x)


def erf(x):
    return tl.erf(x)


def sqrt(x):
    return tl.sqrt(x)


def rsqrt(x):
    return tl.rsqrt(x)


def pow(x, y):
    return tl.exp(y * tl.log(x))


def tanh(x):
    y = x.to(tl.float64)
    e = tl.exp(-2.0 * tl.abs(y))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(y < 0, -t, t).to(x.dtype)


def atan(x):
    """Two half-angle reductions (|y| <= tan(pi/16)), then eleven terms of the Taylor series."""
    a = tl.abs(x.to(tl.float64))
    big = a > 1.0
    y = tl.where(big, 1.0 / tl.maximum(a, 1.0), a)
    for _ in range(2):
        y = y / (1.0 + tl.sqrt(1.0 + y * y))
    y2, term, acc = y * y, y, y
    for k in range(1, 12):
        term = -term * y2
        acc = acc + term / (2 * k + 1)
    r = 4.0 * acc
    r = tl.where(big, 0.5 * math.pi - r, r)
    return tl.where(x < 0, -r, r).to(x.dtype)
