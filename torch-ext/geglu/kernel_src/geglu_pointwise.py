"""Pointwise GeGLU kernels: h = gelu(g) * u and its backward.

Both kernels work on 2-D row-major views: rows may be strided (a chunk of a fused
[T, 2I] projection is passed as two views without a copy), columns are unit-stride.

Rounding matches PyTorch eager for 16-bit dtypes: gelu(g) is rounded to the storage
dtype before the multiply, and in backward dh * u is rounded before it meets gelu'(g).
For fp32 those roundings are exact no-ops.

Launch parameters come from `pointwise_launch_config`: three tile shapes per column count
(small, medium, large problems; the first two also in a flat form for contiguous operands),
all compiled at the first launch of a width, so a new token count never triggers tuning or
a recompile (the row count is also excluded from Triton's integer specialization).
"""

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .gelu_math import gelu, gelu_and_grad


# libdevice (tanh) only exists on a real device; the interpreter gets an equivalent formula.
_USE_LIBDEVICE = os.environ.get("TRITON_INTERPRET") != "1"


@dataclass(frozen=True)
class PointwiseConfig:
    block_rows: int
    block_cols: int
    num_warps: int
    # 0: 2-D tiles over strided rows. 1: operands all contiguous, one flat 32-bit index over
    # the T * I elements (block_cols per program). 2: the same flat index over strided rows,
    # each element's row found by a division (every address below 2^31).
    flat: int = 0


# Problem sizes (elements) up to which the latency-bound tile shapes win (H100 sweep,
# benchmarks/NOTES.md): tiny tiles and many warps spread a few tokens over many SMs.
SMALL_PROBLEM = 1 << 16
MEDIUM_PROBLEM = 1 << 19


def _packed(block_elems: int, n_cols: int, num_warps: int) -> PointwiseConfig:
    block_cols = min(block_elems, triton.next_power_of_2(n_cols))
    return PointwiseConfig(block_rows=block_elems // block_cols, block_cols=block_cols, num_warps=num_warps)


@lru_cache(maxsize=None)
def pointwise_launch_configs(n_cols: int) -> tuple[PointwiseConfig, PointwiseConfig, PointwiseConfig]:
    """The (small, medium, large) tile shapes for rows of n_cols, from the column count alone.

    large: one row segment of 2048, 1024 or 512 columns per program (the widest that wastes at
    most 1/16 of its lanes on the ragged end, else the one that wastes least), 8 elements per
    thread: 16-byte accesses in 16-bit dtypes; narrow rows are packed several to a program.
    medium / small: 1024 / 256 elements per program over 8 warps (4 / 1 per thread), for
    problems whose time is latency, not bandwidth.
    """
    n_cols = max(n_cols, 1)
    small, medium = _packed(256, n_cols, 8), _packed(1024, n_cols, 8)
    if n_cols < 512:
        return small, medium, _packed(512, n_cols, 2)

    def waste(block: int) -> float:
        return 1.0 - n_cols / (triton.cdiv(n_cols, block) * block)

    candidates = (2048, 1024, 512)
    block_cols = next((b for b in candidates if waste(b) <= 1 / 16), min(candidates, key=waste))
    return small, medium, PointwiseConfig(block_rows=1, block_cols=block_cols, num_warps=block_cols // 256)


def pointwise_launch_config(
    n_rows: int, n_cols: int, traceable: bool = False, contiguous: bool = False
) -> PointwiseConfig:
    """The tile shape for a launch. A traced launch (torch.compile) always takes the large
    shape, so the compiled graph holds no guard on the token count. Small and medium problems
    whose operands are all contiguous take the flat form of their shape."""
    small, medium, large = pointwise_launch_configs(n_cols)
    if traceable:
        return large
    n = n_rows * n_cols
    cfg = small if n <= SMALL_PROBLEM else medium if n <= MEDIUM_PROBLEM else large
    return _as_flat(cfg) if contiguous and cfg is not large else cfg


def _as_flat(cfg: PointwiseConfig) -> PointwiseConfig:
    return PointwiseConfig(1, cfg.block_rows * cfg.block_cols, cfg.num_warps, flat=1)


_warmed: set = set()


def _prewarm(kernel, key, args, kwargs, n_cols: int) -> None:
    """Compile every tile shape of this width at its first launch, so that a later token count
    in another size regime launches without compiling."""
    if key in _warmed or not _USE_LIBDEVICE:  # the interpreter compiles nothing
        return
    _warmed.add(key)
    small, medium, large = pointwise_launch_configs(n_cols)
    for cfg in (small, medium, large, _as_flat(small), _as_flat(medium)):
        compiled = kernel.warmup(*args, **kwargs, FLAT=cfg.flat, BLOCK_ROWS=cfg.block_rows,
                                 BLOCK_COLS=cfg.block_cols, num_warps=cfg.num_warps, grid=(1,))
        # Load the module onto the device now too (Triton does it lazily at the first launch).
        init = getattr(compiled, "_init_handles", None)
        if init is not None:
            init()


@triton.jit
def _tile(n_rows, n_cols, stride, FLAT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """This program's element offsets (for a tensor of row stride `stride`) and mask.
    FLAT == 0: a [BLOCK_ROWS, BLOCK_COLS] tile, int64 rows (a [T, I] tensor may exceed 2^31
    elements). FLAT == 1 (all operands contiguous): BLOCK_COLS consecutive elements, 32-bit.
    FLAT == 2 (strided rows, addresses below 2^31): BLOCK_COLS consecutive elements of the
    logical [T, I] array, their row found by a division. FLAT == 3: one row segment per
    program, rows on the grid's first axis, column blocks on its second."""
    pid = tl.program_id(0)
    if FLAT == 1:
        offs = pid * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        return offs, offs < n_rows * n_cols
    elif FLAT == 3:
        # One row segment per program on a 2-D grid: the row offset is a per-program scalar.
        cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        return tl.program_id(0).to(tl.int64) * stride + cols, cols < n_cols
    elif FLAT == 2:
        idx = pid * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        rows = idx // n_cols
        return rows * stride + (idx - rows * n_cols), idx < n_rows * n_cols
    else:
        col_blocks = tl.cdiv(n_cols, BLOCK_COLS)
        rows = (pid // col_blocks) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = (pid % col_blocks) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        return rows.to(tl.int64)[:, None] * stride + cols[None, :], mask


@triton.jit(do_not_specialize=["n_rows"])
def _geglu_forward_kernel(
    gate_ptr, up_ptr, out_ptr,
    n_rows, n_cols,
    stride_gate, stride_up, stride_out,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    g_offs, mask = _tile(n_rows, n_cols, stride_gate, FLAT, BLOCK_ROWS, BLOCK_COLS)
    u_offs, _ = _tile(n_rows, n_cols, stride_up, FLAT, BLOCK_ROWS, BLOCK_COLS)
    h_offs, _ = _tile(n_rows, n_cols, stride_out, FLAT, BLOCK_ROWS, BLOCK_COLS)
    g = tl.load(gate_ptr + g_offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + u_offs, mask=mask, other=0.0).to(tl.float32)
    out_dtype = out_ptr.dtype.element_ty
    act = gelu(g, APPROX_TANH, USE_LIBDEVICE).to(out_dtype).to(tl.float32)
    tl.store(out_ptr + h_offs, (act * u).to(out_dtype), mask=mask)


@triton.jit(do_not_specialize=["n_rows"])
def _geglu_backward_kernel(
    grad_ptr, gate_ptr, up_ptr, grad_gate_ptr, grad_up_ptr,
    n_rows, n_cols,
    stride_grad, stride_gate, stride_up, stride_grad_gate, stride_grad_up,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    dh_offs, mask = _tile(n_rows, n_cols, stride_grad, FLAT, BLOCK_ROWS, BLOCK_COLS)
    g_offs, _ = _tile(n_rows, n_cols, stride_gate, FLAT, BLOCK_ROWS, BLOCK_COLS)
    u_offs, _ = _tile(n_rows, n_cols, stride_up, FLAT, BLOCK_ROWS, BLOCK_COLS)
    dh = tl.load(grad_ptr + dh_offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + g_offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + u_offs, mask=mask, other=0.0).to(tl.float32)
    dtype = grad_gate_ptr.dtype.element_ty
    act, act_grad = gelu_and_grad(g, APPROX_TANH, USE_LIBDEVICE)
    act = act.to(dtype).to(tl.float32)
    dh_u = (dh * u).to(dtype).to(tl.float32)
    du_offs, _ = _tile(n_rows, n_cols, stride_grad_up, FLAT, BLOCK_ROWS, BLOCK_COLS)
    dg_offs, _ = _tile(n_rows, n_cols, stride_grad_gate, FLAT, BLOCK_ROWS, BLOCK_COLS)
    tl.store(grad_up_ptr + du_offs, (dh * act).to(dtype), mask=mask)
    tl.store(grad_gate_ptr + dg_offs, (dh_u * act_grad).to(dtype), mask=mask)


def _grid(n_rows: int, n_cols: int, cfg: PointwiseConfig) -> tuple[int]:
    if cfg.flat == 3:
        return (n_rows, triton.cdiv(n_cols, cfg.block_cols))
    if cfg.flat != 0:
        return (triton.cdiv(n_rows * n_cols, cfg.block_cols),)
    return (triton.cdiv(n_rows, cfg.block_rows) * triton.cdiv(n_cols, cfg.block_cols),)


def _contiguous(n_rows: int, n_cols: int, *tensors: torch.Tensor) -> bool:
    return n_rows == 1 or all(t.stride(0) == n_cols for t in tensors)


def _kernel(kernel, traceable: bool):
    # wrap_triton lets torch.compile / make_fx see the launch; a call known not to be traced
    # (the eager fast path) launches directly and skips the higher-order-op dispatch.
    return wrap_triton(kernel) if traceable else kernel


def launch_geglu_forward(
    gate: torch.Tensor, up: torch.Tensor, out: torch.Tensor, approx_tanh: bool,
    config: PointwiseConfig | None = None, traceable: bool = True,
) -> None:
    """out = gelu(gate) * up on 2-D views with unit column stride."""
    n_rows, n_cols = gate.shape
    if n_rows == 0 or n_cols == 0:
        return
    args = (gate, up, out, n_rows, n_cols, gate.stride(0), up.stride(0), out.stride(0))
    kwargs = dict(APPROX_TANH=approx_tanh, USE_LIBDEVICE=_USE_LIBDEVICE)
    if not traceable:
        _prewarm(_geglu_forward_kernel, ("fwd", n_cols, gate.dtype, approx_tanh), args, kwargs, n_cols)
    # int(): a traced width specialises the graph (the width is fixed per model).
    cfg = config or pointwise_launch_config(n_rows, int(n_cols), traceable,
                                            not traceable and _contiguous(n_rows, n_cols, gate, up, out))
    _kernel(_geglu_forward_kernel, traceable)[_grid(n_rows, n_cols, cfg)](
        *args, **kwargs, FLAT=cfg.flat, BLOCK_ROWS=cfg.block_rows, BLOCK_COLS=cfg.block_cols,
        num_warps=cfg.num_warps,
    )


def launch_geglu_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor,
    grad_gate: torch.Tensor, grad_up: torch.Tensor, approx_tanh: bool,
    config: PointwiseConfig | None = None, traceable: bool = True,
) -> None:
    """grad_gate, grad_up of h = gelu(gate) * up, given grad = dL/dh (2-D views). grad_gate and
    grad_up may be gate and up themselves: each element is read before it is written."""
    n_rows, n_cols = gate.shape
    if n_rows == 0 or n_cols == 0:
        return
    args = (grad, gate, up, grad_gate, grad_up, n_rows, n_cols,
            grad.stride(0), gate.stride(0), up.stride(0), grad_gate.stride(0), grad_up.stride(0))
    kwargs = dict(APPROX_TANH=approx_tanh, USE_LIBDEVICE=_USE_LIBDEVICE)
    if not traceable:
        _prewarm(_geglu_backward_kernel, ("bwd", n_cols, gate.dtype, approx_tanh), args, kwargs, n_cols)
    contiguous = not traceable and _contiguous(n_rows, n_cols, grad, gate, up, grad_gate, grad_up)
    cfg = config or pointwise_launch_config(n_rows, int(n_cols), traceable, contiguous)
    _kernel(_geglu_backward_kernel, traceable)[_grid(n_rows, n_cols, cfg)](
        *args, **kwargs, FLAT=cfg.flat, BLOCK_ROWS=cfg.block_rows, BLOCK_COLS=cfg.block_cols,
        num_warps=cfg.num_warps,
    )
