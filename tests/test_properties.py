"""Property-based tests (hypothesis): every public op and the packed layers, on random shapes
(0, 1, odd sizes, 1-D to 4-D), views (transposed, step-2, expanded, storage offsets), dtypes,
both GELU variants, against the float64 reference, forward and backward. On the CPU through the
interpreter (and the PyTorch path) at small sizes; with GEGLU_PROPERTY_EXAMPLES set higher on
the GPU (scripts/gpu_session.sh runs a larger seeded sweep). The number of cases is printed."""

import math
import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import HAS_CUDA, assert_close_to_reference
from reference import geglu64, gelu64

DEVICE = "cuda" if HAS_CUDA else "cpu"
EXAMPLES = int(os.environ.get("GEGLU_PROPERTY_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("GEGLU_PROPERTY_SEED")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
VIEWS = ["contiguous", "transposed", "step2", "offset", "expanded"]
CASES = {"count": 0}


@st.composite
def problems(draw, packed=False):
    ndim = draw(st.integers(1, 4))
    lead = draw(st.lists(st.integers(0, 5), min_size=ndim - 1, max_size=ndim - 1))
    width = draw(st.integers(1, 67))
    shape = (*lead, 2 * width if packed else width)
    return dict(shape=shape, view=draw(st.sampled_from(VIEWS)), dtype=draw(st.sampled_from(DTYPES)),
                approximate=draw(st.sampled_from(["tanh", "none"])), seed=draw(st.integers(0, 2**31 - 1)))


def _view(shape, view):
    """(leaf shape, leaf -> a view of it with `shape` in the requested layout)."""
    if view == "transposed" and len(shape) >= 2:
        return (*shape[:-2], shape[-1], shape[-2]), lambda t: t.transpose(-1, -2)
    if view == "step2":
        return (*shape[:-1], 2 * shape[-1]), lambda t: t[..., ::2]
    if view == "offset":
        return (math.prod(shape) + 7,), lambda t: t[7:].view(shape)
    if view == "expanded" and len(shape) >= 2:
        return (*shape[:-2], 1, shape[-1]), lambda t: t.expand(shape)
    return tuple(shape), lambda t: t


def _make(shape, view, dtype, generator):
    """(leaf the gradient lands on, its view with `shape`, the view as a function of the leaf)."""
    leaf_shape, as_view = _view(shape, view)
    leaf = (1.5 * torch.randn(*leaf_shape, generator=generator)).to(DEVICE).to(dtype).requires_grad_()
    return leaf, as_view(leaf), as_view


def _check_grads(leaves, ours_out, ref_fn, magnitude_fn, dtype, generator):
    """Gradients of the leaves against float64. A leaf element's gradient sums one term per view
    position it feeds (several for expanded views), dh * u * gelu'(g) for the gate and dh * gelu(g)
    for the up, and the terms can cancel: the error scales with the sum of the terms' sizes, not
    with the result. `magnitude_fn(*leaves, |dh|)` is linear in the leaves with those sizes as
    coefficients, so its gradient is that sum per leaf element."""
    grad = torch.randn(ours_out.shape, generator=generator).to(DEVICE).to(dtype)
    ours = torch.autograd.grad(ours_out, leaves, grad, allow_unused=True)
    leaves64 = [l.detach().double().requires_grad_() for l in leaves]
    ref_out = ref_fn(*leaves64)
    # The kernels round dh * u to the storage dtype before it meets gelu'(g), as eager does.
    refs = torch.autograd.grad(ref_out, leaves64, grad.double(), allow_unused=True)
    sizes = torch.autograd.grad(magnitude_fn(*leaves64, grad.double().abs()), leaves64, allow_unused=True)
    for i, (got, ref, size) in enumerate(zip(ours, refs, sizes)):
        if ref is None:
            continue
        assert_close_to_reference(got, ref, f"grad of input {i}", scale=8 * (1 + size))


def _term_sizes(g, u, dh_abs):
    # g * |dh u| + u * |dh| (1 + |g|): d/dg gives |dh u| >= |dh u gelu'(g)| / 1.13, d/du gives
    # |dh| (1 + |g|) >= |dh gelu(g)|, each summed over the positions a leaf element feeds.
    return (dh_abs * (g * u.detach().abs() + u * (1 + g.detach().abs()))).sum()


@SETTINGS
@given(p=problems())
def test_geglu_any_layout(kernel, device, p):
    gen = torch.Generator().manual_seed(p["seed"])
    (lg, g, view), (lu, u, _) = _make(p["shape"], p["view"], p["dtype"], gen), _make(p["shape"], p["view"], p["dtype"], gen)
    h = kernel.geglu(g, u, approximate=p["approximate"])
    assert h.shape == tuple(p["shape"]) and h.dtype == p["dtype"]
    assert_close_to_reference(h, geglu64(g.detach(), u.detach(), p["approximate"]), f"forward {p}")
    _check_grads([lg, lu], h, lambda a, b: gelu64(view(a), p["approximate"]) * view(b),
                 lambda a, b, dh_abs: _term_sizes(view(a), view(b), dh_abs), p["dtype"], gen)
    CASES["count"] += 1


@SETTINGS
@given(p=problems(packed=True), use_out=st.booleans())
def test_packed_any_layout(kernel, device, p, use_out):
    gen = torch.Generator().manual_seed(p["seed"])
    leaf, x, view = _make(p["shape"], p["view"], p["dtype"], gen)
    d = p["shape"][-1] // 2
    ref = geglu64(x.detach()[..., :d], x.detach()[..., d:], p["approximate"])
    if use_out:
        out = torch.full((*p["shape"][:-1], d), float("nan"), device=DEVICE, dtype=p["dtype"])
        fn = kernel.gelu_tanh_and_mul if p["approximate"] == "tanh" else kernel.gelu_and_mul
        with torch.no_grad():
            assert fn(out, x) is out
        assert_close_to_reference(out, ref, f"out= {p}")
    else:
        layer = kernel.layers.GeluTanhAndMul() if p["approximate"] == "tanh" else kernel.layers.GeluAndMul()
        h = layer(x)
        assert_close_to_reference(h, ref, f"layer {p}")
        _check_grads([leaf], h, lambda a: gelu64(view(a)[..., :d], p["approximate"]) * view(a)[..., d:],
                     lambda a, dh_abs: _term_sizes(view(a)[..., :d], view(a)[..., d:], dh_abs), p["dtype"], gen)
    CASES["count"] += 1


@settings(max_examples=2000, deadline=None)
@given(n_cols=st.one_of(st.integers(2, 70000), st.integers(2, 2**31 - 1)), data=st.data())
def test_row_divisor_divides_every_32_bit_offset(pointwise, n_cols, data):
    """The flat row-division form finds an element's row as umulhi(x, magic) >> shift: equal to
    x // n_cols for every offset a 32-bit form reaches (x < 2^31), edges first."""
    magic, shift = pointwise.row_divisor(n_cols)
    assert -2**31 <= magic < 0 and shift >= 0  # a signed 32-bit argument of bits in [2^31, 2^32)
    magic %= 2**32
    top = 2**31 - 1
    edges = [0, 1, n_cols - 1, n_cols, n_cols + 1, top, top - top % n_cols, top - top % n_cols - 1]
    for x in edges + data.draw(st.lists(st.integers(0, top), min_size=20, max_size=20)):
        assert ((x * magic) >> 32) >> shift == x // n_cols, (x, n_cols)


def test_zz_report_cases():
    print(f"property cases run in this process: {CASES['count']}")
    if CASES["count"]:
        assert CASES["count"] >= EXAMPLES  # at least one test ran all its examples
