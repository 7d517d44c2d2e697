"""The gate/up GEMM with the GeGLU in its epilogue for many tokens (prefill, training forward):
h [T, I] = gelu(x Wg^T + bg) * (x Wu^T + bu), written once; g and u never reach memory.

A persistent kernel: one program per SM walks output tiles [BLOCK_M rows, BLOCK_N columns of h]
in groups of GROUP_M row tiles (the programs running together share weight tiles in L2). Operands
come in through tensor descriptors (TMA on Hopper: the copy engine fills the pipeline's shared
memory, zero-filling past the edges), and each tile keeps two fp32 accumulators, gate and up, that
share every x tile. Rounding follows eager, as in the decode kernels (`mlp.py`): each projection's
result rounded to the storage dtype before the activation, gelu(g) before the multiply.

TMA needs 16-byte aligned base pointers and row strides (`tma_compatible`); the caller falls back
to the pointer-based kernel or cuBLAS elsewhere.
"""

from functools import lru_cache

import torch
import triton
import triton.language as tl

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # Triton < 3.4: no host-side tensor descriptors; the GEMM is unavailable
    TensorDescriptor = None

from .gelu_math import gelu
from .launch import USE_LIBDEVICE

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages): what a GPU without a measured rule
# gets; the layers consult `MLP_GEMM_TABLES` for whether (and from how many tokens) to use it.
DEFAULT_CONFIG = (128, 128, 64, 8, 8, 3)


@triton.jit
def _gate_up_geglu_gemm_kernel(
    x_desc, wg_desc, wu_desc, h_desc, bg_ptr, bu_ptr,
    n_rows, H, I,
    HAS_BIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr = True,
    WARP_SPECIALIZE: tl.constexpr = False,
):
    dtype = h_desc.dtype
    IS_FP32: tl.constexpr = dtype == tl.float32
    n_m = tl.cdiv(n_rows, BLOCK_M)
    n_n = tl.cdiv(I, BLOCK_N)
    k_tiles = tl.cdiv(H, BLOCK_K)
    per_group = GROUP_M * n_n
    for tile in tl.range(tl.program_id(0), n_m * n_n, tl.num_programs(0), flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        # Within a group, row tiles run fastest: the programs in flight read each weight tile
        # from HBM once and from L2 for the other row tiles.
        first_m = (tile // per_group) * GROUP_M
        group_m = min(n_m - first_m, GROUP_M)
        pid_m = first_m + (tile % per_group) % group_m
        pid_n = (tile % per_group) // group_m
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for ki in range(k_tiles):
            off_k = ki * BLOCK_K
            x = x_desc.load([off_m, off_k])
            wg = wg_desc.load([off_n, off_k])
            wu = wu_desc.load([off_n, off_k])
            if not USE_LIBDEVICE:  # the interpreter's dot mishandles bf16 (numpy has none): fp32 there
                x, wg, wu = x.to(tl.float32), wg.to(tl.float32), wu.to(tl.float32)
            acc_g = tl.dot(x, wg.T, acc_g, input_precision="ieee" if IS_FP32 else "tf32")
            acc_u = tl.dot(x, wu.T, acc_u, input_precision="ieee" if IS_FP32 else "tf32")
        if HAS_BIAS:
            cols = off_n + tl.arange(0, BLOCK_N)
            acc_g += tl.load(bg_ptr + cols, mask=cols < I, other=0.0).to(tl.float32)[None, :]
            acc_u += tl.load(bu_ptr + cols, mask=cols < I, other=0.0).to(tl.float32)[None, :]
        g = acc_g.to(dtype).to(tl.float32)  # the projections' outputs, as eager stores them
        u = acc_u.to(dtype).to(tl.float32)
        act = gelu(g, APPROX_TANH, USE_LIBDEVICE).to(dtype).to(tl.float32)
        h_desc.store([off_m, off_n], (act * u).to(dtype))


def tma_compatible(*tensors: torch.Tensor) -> bool:
    """Whether tensor descriptors can address these 2-D tensors: unit column stride, 16-byte
    aligned base and row stride."""
    if TensorDescriptor is None:
        return False
    for t in tensors:
        size = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16 or (t.stride(0) * size) % 16:
            return False
    return True


@lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    if device_index < 0:
        return 4  # the interpreter: a few programs, so the persistent loop runs several tiles each
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_gate_up_geglu_gemm(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate, b_up,
                              out: torch.Tensor, approx_tanh: bool, config: tuple = DEFAULT_CONFIG,
                              persistent: bool = True, flatten: bool = True, warp_specialize: bool = False) -> None:
    """out [T, I] = gelu(x w_gate^T + b_gate) * (x w_up^T + b_up) for x [T, H], weights [I, H],
    biases [I] or None, all `tma_compatible`. config: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps,
    stages); persistent False: one program per tile."""
    block_m, block_n, block_k, group_m, warps, stages = config
    n_rows, hidden = x.shape
    inter = w_gate.shape[0]
    has_bias = b_gate is not None
    x_desc = TensorDescriptor(x, [n_rows, hidden], [x.stride(0), 1], [block_m, block_k])
    wg_desc = TensorDescriptor(w_gate, [inter, hidden], [w_gate.stride(0), 1], [block_n, block_k])
    wu_desc = TensorDescriptor(w_up, [inter, hidden], [w_up.stride(0), 1], [block_n, block_k])
    h_desc = TensorDescriptor(out, [n_rows, inter], [out.stride(0), 1], [block_m, block_n])
    tiles = triton.cdiv(n_rows, block_m) * triton.cdiv(inter, block_n)
    grid = (min(tiles, _sm_count(x.get_device() if x.is_cuda else -1)) if persistent else tiles,)
    _gate_up_geglu_gemm_kernel[grid](
        x_desc, wg_desc, wu_desc, h_desc, b_gate if has_bias else x, b_up if has_bias else x,
        n_rows, hidden, inter, has_bias, approx_tanh, USE_LIBDEVICE, block_m, block_n, block_k, group_m,
        flatten, warp_specialize, num_warps=warps, num_stages=stages)
