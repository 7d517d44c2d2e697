"""The fused gate/up projection for decode-sized inputs: h = gelu(x Wg^T + bg) * (x Wu^T + bu).

One kernel reads both weight matrices once and writes only h [T, I]; the down projection stays
with cuBLAS. Each program owns BLOCK_I output columns for every row (T <= BLOCK_T = 16, rows past T
masked) and walks the hidden dimension in BLOCK_K steps, two fp32 accumulators sharing each x tile.
The weights are the modules' own `nn.Linear` weights, [I, H] row-major (no copy).

Rounding follows eager: each projection's result is rounded to the storage dtype before the
activation, gelu(g) is rounded before the multiply, as the pointwise kernels do; the sums themselves
are fp32 in another order than cuBLAS's, so results agree with eager to the dtype's tolerance, not
bit for bit.

Launch table: one per measured GPU, like the pointwise kernels'. None is measured yet, so the layer
only takes this path where `GEGLU_FUSED_MLP=1` asks for it (`mlp_ops.fused_mlp_enabled`).
"""

from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .gelu_math import gelu
from .launch import USE_LIBDEVICE, LaunchPlan, launch

MAX_ROWS = 16  # BLOCK_T: decode-sized inputs only (tl.dot's smallest row tile)

# (BLOCK_I, BLOCK_K, num_warps) per GPU; "default" until a sweep has measured one.
MLP_LAUNCH_TABLES = {"default": (64, 128, 4)}
MEASURED_DEVICES: dict = {}

_CONSTEXPR_NAMES = ("H", "I", "HAS_BIAS", "APPROX_TANH", "USE_LIBDEVICE", "BLOCK_T", "BLOCK_I", "BLOCK_K")


@triton.jit(do_not_specialize=["n_rows"])
def _gate_up_geglu_kernel(
    x_ptr, wg_ptr, wu_ptr, bg_ptr, bu_ptr, h_ptr,
    n_rows, stride_x, stride_h,
    H: tl.constexpr,
    I: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    dtype = h_ptr.dtype.element_ty
    IS_FP32: tl.constexpr = dtype == tl.float32
    cols = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    rows = tl.arange(0, BLOCK_T)
    row_ok = rows < n_rows
    col_ok = cols < I
    acc_g = tl.zeros([BLOCK_T, BLOCK_I], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_T, BLOCK_I], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_x + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w_offs = cols[:, None].to(tl.int64) * H + ks[None, :]
        w_mask = col_ok[:, None] & k_ok[None, :]
        wg = tl.load(wg_ptr + w_offs, mask=w_mask, other=0.0)
        wu = tl.load(wu_ptr + w_offs, mask=w_mask, other=0.0)
        if not USE_LIBDEVICE:  # the interpreter's dot mishandles bf16 (numpy has none): fp32 there
            x, wg, wu = x.to(tl.float32), wg.to(tl.float32), wu.to(tl.float32)
        # fp32 inputs get exact fp32 products (no TF32), as F.linear's default does.
        acc_g = tl.dot(x, tl.trans(wg), acc_g, input_precision="ieee" if IS_FP32 else "tf32")
        acc_u = tl.dot(x, tl.trans(wu), acc_u, input_precision="ieee" if IS_FP32 else "tf32")
    if HAS_BIAS:
        acc_g += tl.load(bg_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        acc_u += tl.load(bu_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    g = acc_g.to(dtype).to(tl.float32)  # the projections' outputs, as eager stores them
    u = acc_u.to(dtype).to(tl.float32)
    act = gelu(g, APPROX_TANH, USE_LIBDEVICE).to(dtype).to(tl.float32)
    tl.store(h_ptr + rows[:, None].to(tl.int64) * stride_h + cols[None, :], (act * u).to(dtype),
             mask=row_ok[:, None] & col_ok[None, :])


@lru_cache(maxsize=None)
def measured_table(device_index: int) -> str | None:
    """The measured launch table of this CUDA device, or None (CPU, or a GPU not measured)."""
    if device_index < 0 or not MEASURED_DEVICES:
        return None
    name = torch.cuda.get_device_name(device_index)
    return next((t for t in MEASURED_DEVICES if t in name), None)


def _config(device_index: int) -> tuple[int, int, int]:
    return MLP_LAUNCH_TABLES[measured_table(device_index) or "default"]


def _constexprs(hidden, inter, has_bias, approx_tanh, block_i, block_k) -> tuple:
    # The values of _CONSTEXPR_NAMES, the kernel's last parameters in this order.
    return (hidden, inter, has_bias, approx_tanh, USE_LIBDEVICE, MAX_ROWS, block_i, block_k)


@lru_cache(maxsize=1024)
def plan(n_rows: int, hidden: int, inter: int, stride_x: int, stride_h: int, has_bias: bool, approx_tanh: bool,
         device_index: int) -> LaunchPlan:
    """The launch of the fused gate/up kernel for one shape, resolved once (see `launch.py`)."""
    block_i, block_k, warps = _config(device_index)
    tail = (n_rows, stride_x, stride_h, *_constexprs(hidden, inter, has_bias, approx_tanh, block_i, block_k))
    return LaunchPlan(_gate_up_geglu_kernel, (triton.cdiv(inter, block_i), 1, 1), tail, dict(num_warps=warps))


def launch_gate_up_geglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate, b_up,
                         out: torch.Tensor, approx_tanh: bool, traceable: bool = False) -> None:
    """out [T, I] = gelu(x w_gate^T + b_gate) * (x w_up^T + b_up) for x [T, H] (unit column stride,
    T <= MAX_ROWS), contiguous weights [I, H], biases [I] or None."""
    n_rows, hidden = x.shape
    inter = w_gate.shape[0]
    has_bias = b_gate is not None
    bg, bu = (b_gate, b_up) if has_bias else (x, x)  # unread when HAS_BIAS is False
    if traceable:
        block_i, block_k, warps = _config(-1)
        constexprs = dict(zip(_CONSTEXPR_NAMES, _constexprs(hidden, inter, has_bias, approx_tanh, block_i, block_k)))
        wrap_triton(_gate_up_geglu_kernel)[(triton.cdiv(inter, block_i),)](
            x, w_gate, w_up, bg, bu, out, n_rows, x.stride(0), out.stride(0), **constexprs, num_warps=warps)
        return
    launch(plan(n_rows, hidden, inter, x.stride(0), out.stride(0), has_bias, approx_tanh, x.get_device()),
           x, w_gate, w_up, bg, bu, out)
