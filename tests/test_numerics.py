"""Forward and backward against a float64 reference, fresh random inputs every run."""

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import HAS_CUDA, assert_close_to_reference
from reference import geglu64, geglu64_grads, gelu64

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
APPROXIMATIONS = ["tanh", "none"]
# Odd sizes, 1-D and 3-D, a width that is not a multiple of the tile, zero tokens.
SHAPES = [(7,), (1, 1), (3, 129), (2, 5, 300), (33, 1000), (0, 64), (4, 0)]
if HAS_CUDA:
    SHAPES += [(1, 9216), (17, 21504), (5, 36864), (4099, 3072)]


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    print(f"seed={seed}")  # shown by pytest when a test fails


def _inputs(shape, dtype, device, requires_grad=False):
    gate = (2 * torch.randn(shape, device=device)).to(dtype).requires_grad_(requires_grad)
    up = torch.randn(shape, device=device).to(dtype).requires_grad_(requires_grad)
    return gate, up


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_separate(kernel, device, shape, dtype, approximate):
    gate, up = _inputs(shape, dtype, device, requires_grad=True)
    h = kernel.geglu(gate, up, approximate=approximate)
    assert h.shape == gate.shape and h.dtype == dtype
    assert_close_to_reference(h, geglu64(gate, up, approximate), "forward")

    grad = torch.randn(shape, device=device).to(dtype)
    h.backward(grad)
    ref_gate, ref_up = geglu64_grads(grad, gate, up, approximate)
    assert_close_to_reference(up.grad, ref_up, "d up")
    assert_close_to_reference(gate.grad, ref_gate, "d gate", scale=grad * up.detach())


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6,), (3, 5, 258), (41, 2000), (0, 32)], ids=str)
def test_forward_backward_packed(kernel, device, shape, dtype, approximate):
    x = torch.randn(shape, device=device).to(dtype).requires_grad_()
    d = shape[-1] // 2
    layer = kernel.layers.GeluTanhAndMul() if approximate == "tanh" else kernel.layers.GeluAndMul()
    h = layer(x)
    assert h.shape == (*shape[:-1], d)
    assert_close_to_reference(h, geglu64(x[..., :d], x[..., d:], approximate), "packed forward")

    out = torch.full_like(h, float("nan"))
    fn = kernel.gelu_tanh_and_mul if approximate == "tanh" else kernel.gelu_and_mul
    assert fn(out, x.detach()) is out  # out= functions refuse inputs that require grad
    torch.testing.assert_close(out, h.detach(), rtol=0, atol=0)

    grad = torch.randn(h.shape, device=device).to(dtype)
    h.backward(grad)
    ref_gate, ref_up = geglu64_grads(grad, x[..., :d], x[..., d:], approximate)
    assert_close_to_reference(x.grad[..., d:], ref_up, "packed d up")
    assert_close_to_reference(x.grad[..., :d], ref_gate, "packed d gate", scale=grad * x.detach()[..., d:])


@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_variant_is_the_one_asked_for(kernel, device, approximate):
    """In fp32 the tanh and erf forms differ by up to 4.7e-4 near |x| = 2.7, far above the
    fp32 tolerance: this test fails if the two variants were swapped."""
    other = {"tanh": "none", "none": "tanh"}[approximate]
    gate = torch.linspace(-4, 4, 4097, device=device)
    up = torch.ones_like(gate)
    h = kernel.geglu(gate, up, approximate=approximate)
    assert_close_to_reference(h, gelu64(gate, approximate), "variant")
    assert (h.double() - gelu64(gate, other).to(device)).abs().max() > 1e-4
    x = torch.cat([gate, up]).reshape(1, -1)
    out = torch.empty_like(gate).reshape(1, -1)
    (kernel.gelu_tanh_and_mul if approximate == "tanh" else kernel.gelu_and_mul)(out, x)
    assert_close_to_reference(out.reshape(-1), gelu64(gate, approximate), "packed variant")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("approximate", APPROXIMATIONS)
def test_matches_eager_rounding(kernel, device, dtype, approximate):
    """Eager's rounding points. The PyTorch path equals eager exactly. On the GPU within one
    ulp of eager; the tanh variant equal in all but rare elements, the exact one in all but
    under 1.5% (libdevice's erff and PyTorch's differ in the last fp32 bit where 1 + erf
    cancels), plus eps/16 absolute for that cancellation. Interpreter (truncating stores):
    within two ulps."""
    gate, up = _inputs((64, 515), dtype, device, requires_grad=True)
    grad = torch.randn(gate.shape, device=device).to(dtype)
    h = kernel.geglu(gate, up, approximate=approximate)
    h.backward(grad)
    g2 = gate.detach().clone().requires_grad_()
    u2 = up.detach().clone().requires_grad_()
    eager = F.gelu(g2, approximate=approximate) * u2
    eager.backward(grad)
    interpreted = device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    for ours, theirs, what in [(h, eager, "forward"), (gate.grad, g2.grad, "d gate"), (up.grad, u2.grad, "d up")]:
        ours, theirs = ours.detach(), theirs.detach()
        if device == "cpu" and not interpreted:
            assert torch.equal(ours, theirs), f"{what}: PyTorch path differs from eager"
            continue
        eps = torch.finfo(dtype).eps
        ulps = 2 if interpreted else 1
        # eps/16 absolute: where 1 + erf (or 1 + tanh) cancels, fp32 last-bit differences between
        # libdevice and PyTorch are large relative to the tiny result.
        allowed = ulps * eps * theirs.double().abs() + eps / 16
        assert ((ours.double() - theirs.double()).abs() <= allowed).all(), f"{what}: over {ulps} ulp from eager"
        if HAS_CUDA:
            frac = (ours != theirs).float().mean().item()
            assert frac < (1e-3 if approximate == "tanh" else 1.5e-2), f"{what}: {frac:.2e} of elements differ"


def test_strided_views_are_read_in_place(kernel, device):
    """gate/up as column chunks of a fused projection (row stride 3I), and a transposed input."""
    rows, inter = 37, 300
    fused = torch.randn(rows, 3 * inter, device=device, requires_grad=True)
    gate, up = fused[:, inter:2 * inter], fused[:, 2 * inter:]
    assert not gate.is_contiguous()
    h = kernel.geglu(gate, up)
    assert_close_to_reference(h, geglu64(gate, up, "tanh"), "strided forward")
    grad = torch.randn_like(h)
    h.backward(grad)
    ref_gate, ref_up = geglu64_grads(grad, gate, up, "tanh")
    assert_close_to_reference(fused.grad[:, inter:2 * inter], ref_gate, "strided d gate", scale=grad * up.detach())
    assert_close_to_reference(fused.grad[:, 2 * inter:], ref_up, "strided d up")
    assert (fused.grad[:, :inter] == 0).all()

    gate_t = torch.randn(inter, rows, device=device).t()  # last-dim stride != 1
    up_t = torch.randn(rows, inter, device=device)
    assert_close_to_reference(kernel.geglu(gate_t, up_t), geglu64(gate_t, up_t, "tanh"), "transposed")


def test_out_may_be_a_strided_view(kernel, device):
    x = torch.randn(9, 2, 64, device=device)
    storage = torch.full((9, 2, 100), float("nan"), device=device)
    out = storage[..., 10:42]
    kernel.gelu_and_mul(out, x)
    assert_close_to_reference(out, geglu64(x[..., :32], x[..., 32:], "none"), "strided out")
    assert storage[..., :10].isnan().all() and storage[..., 42:].isnan().all(), "wrote outside out"


def test_inputs_are_not_modified(kernel, device):
    gate, up = _inputs((5, 77), torch.bfloat16, device, requires_grad=True)
    before = gate.detach().clone(), up.detach().clone()
    kernel.geglu(gate, up).sum().backward()
    assert torch.equal(gate.detach(), before[0]) and torch.equal(up.detach(), before[1])


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU: 2^31 elements")
def test_offsets_past_int32(kernel):
    """A [T, I] tensor with more than 2^31 elements: the last rows must be right."""
    inter = 8192
    rows = 2**31 // inter + 3
    gate = torch.randn(rows, inter, device="cuda", dtype=torch.bfloat16)
    up = torch.randn(rows, inter, device="cuda", dtype=torch.bfloat16)
    h = kernel.geglu(gate, up)
    tail = slice(rows - 5, rows)
    assert_close_to_reference(h[tail], geglu64(gate[tail], up[tail], "tanh"), "tail rows")
    del h
    grad = torch.randn(rows, inter, device="cuda", dtype=torch.bfloat16)
    dgate, dup = kernel.pointwise_ops.geglu_backward(grad, gate, up, "tanh")
    ref_gate, ref_up = geglu64_grads(grad[tail], gate[tail], up[tail], "tanh")
    assert_close_to_reference(dup[tail], ref_up, "tail d up")
    assert_close_to_reference(dgate[tail], ref_gate, "tail d gate", scale=grad[tail] * up[tail])


def _launch_configs(pointwise, n_cols):
    """Every tile shape the launch tables (of every measured GPU) can pick for this width, each
    also in every indexing form that applies to both layouts."""
    configs = {pointwise.tiles_config(n_cols)}
    for contiguous, backward, itemsize, table in itertools.product([False, True], [False, True], [2, 4],
                                                                   pointwise.LAUNCH_TABLES):
        configs.update(pointwise.regime_configs(n_cols, contiguous, backward, itemsize, table))
    for cfg in list(configs):
        configs.add(pointwise.PointwiseConfig(1, cfg.block_rows * cfg.block_cols, cfg.num_warps, pointwise.TILES))
        for indexing in (pointwise.FLAT, pointwise.FLAT_ROW_DIV, pointwise.ROW_GRID):  # one row per block
            configs.add(pointwise.PointwiseConfig(1, cfg.block_rows * cfg.block_cols, cfg.num_warps, indexing))
    return sorted(configs, key=str)


@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# Ragged widths take the column mask; 64 and 512 are whole multiples of the row segments, so
# those launches compile without one (the row mask stays for 2-D tiles of several rows).
# A width of 1 (no row divisor) and 17 (row groups of one element) check the row-division form's
# edges.
@pytest.mark.parametrize("shape", [(9, 100), (5, 300), (3, 1100), (11, 64), (7, 512), (13, 1), (6, 17)], ids=str)
def test_every_launch_form(pointwise, shape, dtype, packed):
    """Each tile shape and indexing form (2-D tiles, flat, flat with a row division) forced on
    contiguous and strided rows, forward and backward; the heuristic only reaches some of them
    at a given size. Flat form 1 needs contiguous operands, so strided rows skip it."""
    device = "cuda" if HAS_CUDA else "cpu"
    n_rows, n_cols = shape
    x = (2 * torch.randn(n_rows, 2 * n_cols, device=device)).to(dtype)
    gate, up = (x[:, :n_cols], x[:, n_cols:]) if packed else (x[:, :n_cols].contiguous(), x[:, n_cols:].contiguous())
    grad = torch.randn(n_rows, n_cols, device=device).to(dtype)
    ref = geglu64(gate, up, "tanh")
    ref_gate, ref_up = geglu64_grads(grad, gate, up, "tanh")
    for cfg in _launch_configs(pointwise, n_cols):
        if packed and cfg.indexing == pointwise.FLAT:
            continue
        out = torch.full_like(grad, float("nan"))
        pointwise.launch_geglu_forward(gate, up, out, True, cfg, traceable=False)
        assert_close_to_reference(out, ref, f"forward {cfg}")
        d_gate, d_up = torch.full_like(grad, float("nan")), torch.full_like(grad, float("nan"))
        pointwise.launch_geglu_backward(grad, gate, up, d_gate, d_up, True, cfg, traceable=False)
        assert_close_to_reference(d_gate, ref_gate, f"d gate {cfg}", scale=grad * up)
        assert_close_to_reference(d_up, ref_up, f"d up {cfg}")


def test_launch_config_choice(pointwise):
    """The regime rules: size picks the shape, layout the indexing form, 32-bit forms only
    below 2^31."""
    pw = pointwise
    tiny = pw.choose_config(1, 3072, contiguous=True)
    large = pw.choose_config(8192, 16384, contiguous=True)
    assert tiny.indexing == large.indexing == pw.FLAT and tiny.block_cols < large.block_cols * large.num_warps
    # fp32 keeps the 16-bit access width in the bandwidth-bound regime: half the elements.
    assert pw.choose_config(8192, 16384, contiguous=True, itemsize=4).block_cols == large.block_cols // 2
    # The backward moves 5/3 the bytes, so it reaches a larger regime at fewer tokens.
    rows = next(t for t in range(1, 4096) if pw.regime(5 * t * 3072) > pw.regime(3 * t * 3072))
    assert pw.choose_config(rows, 3072, backward=True, contiguous=True) != \
        pw.choose_config(rows, 3072, contiguous=True)
    assert pw.choose_config(16, 3072).indexing == pw.ROW_GRID  # strided rows
    assert pw.choose_config(16, 300).indexing == pw.FLAT_ROW_DIV  # narrow: row segments waste lanes
    assert pw.choose_config(8192, 16384).indexing == pw.FLAT_ROW_DIV
    huge = pw.choose_config(2**17, 2**14, contiguous=True)  # 2^31 elements
    assert huge == pw.tiles_config(2**14) and huge.indexing == pw.TILES
    assert pw.choose_config(8192, 16384, max_offset=2**31).indexing == pw.TILES
    assert pw.tiles_config(100).block_rows > 1  # narrow rows share a program
