"""GELU and its derivative, written once as Triton device functions.

All arithmetic is fp32. The tanh form is evaluated through the identity
0.5 * (1 + tanh(z)) = sigmoid(2 z), which is accurate in the negative tail and
needs no libdevice call (libdevice does not run under TRITON_INTERPRET=1).
"""

import triton
import triton.language as tl

SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi)
TANH_COEFF = tl.constexpr(0.044715)
INV_SQRT_2 = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)


@triton.jit
def gelu(x, APPROX_TANH: tl.constexpr):
    """gelu(x): tanh approximation when APPROX_TANH, exact erf otherwise."""
    if APPROX_TANH:
        z = SQRT_2_OVER_PI * (x + TANH_COEFF * x * x * x)
        return x * tl.sigmoid(2.0 * z)
    else:
        return 0.5 * x * (1.0 + tl.math.erf(x * INV_SQRT_2))


@triton.jit
def gelu_and_grad(x, APPROX_TANH: tl.constexpr):
    """(gelu(x), gelu'(x)), sharing the transcendental between the two."""
    if APPROX_TANH:
        z = SQRT_2_OVER_PI * (x + TANH_COEFF * x * x * x)
        s = tl.sigmoid(2.0 * z)  # = 0.5 * (1 + tanh z)
        # 0.5 x (1 - tanh^2 z) dz/dx, with 1 - tanh^2 z = 4 s (1 - s)
        dz = SQRT_2_OVER_PI * (1.0 + 3.0 * TANH_COEFF * x * x)
        return x * s, s + 2.0 * x * s * (1.0 - s) * dz
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(x * INV_SQRT_2))
        pdf = INV_SQRT_2PI * tl.exp(-0.5 * x * x)
        return x * cdf, cdf + x * pdf
