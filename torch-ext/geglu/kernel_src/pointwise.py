"""Pointwise GeGLU kernels: h = gelu(g) * u and its backward.

Both kernels work on 2-D row-major views: rows may be strided (a chunk of a fused
[T, 2I] projection is passed as two views without a copy), columns are unit-stride.

Rounding matches PyTorch eager for 16-bit dtypes: gelu(g) is rounded to the storage
dtype before the multiply, and in backward dh * u is rounded before it meets gelu'(g).
For fp32 those roundings are exact no-ops.

Launch parameters come from the launch table of the device (`LAUNCH_TABLES`): five
problem-size regimes, each with its tile shape and indexing form, chosen from sweeps on each
measured GPU (benchmarks/NOTES.md); an unmeasured GPU takes the table of the nearest measured one.
The width is a runtime argument: one binary per tile shape serves every width that Triton
specialises alike (divisible by 16 or not), so a model's second width, or a second model, compiles
nothing. Every regime's shape is compiled at the first launch of a width class, so a new token
count never triggers tuning or a recompile below 2^31 elements (the row count is also excluded
from Triton's integer specialization). Launches go through the shared launch layer (`launch.py`):
one plan per shape, its compiled handle kept.

Programmatic dependent launch (PDL, Hopper on) is opt-in (`GEGLU_PDL=1`, or `pdl=True` in the
launch functions): an untraced launch may then be scheduled while the previous kernel in the
stream is still running, and waits for that kernel's writes before its first memory access.
It pays only where the previous kernel lets dependents start early (another PDL-aware kernel:
at T=1 on an H100, 1.45 instead of 1.89 us per call back to back); after a kernel that does
not, such as a cuBLAS matrix product, it costs 0.1-0.3 us (benchmarks/NOTES.md, variant 20).
"""

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .gelu_math import gelu, gelu_and_grad
from .launch import PDL_AVAILABLE, USE_LIBDEVICE, LaunchPlan, gdc_launch_dependents, gdc_wait, handle_key, \
    dummy_pointer, launch, launch_options, pdl_supported, WarmUp, warm_up_all, with_warm_handle

# How a program finds its elements (the kernels' INDEXING constexpr):
TILES = 0  # [block_rows, block_cols] tiles over strided rows, int64 row offsets: any size
FLAT = 1  # operands all contiguous: block_cols consecutive elements, 32-bit offsets
FLAT_ROW_DIV = 2  # flat over strided rows, each element's row found by a division, 32-bit
ROW_GRID = 3  # one row segment per program on a 2-D grid (rows, column blocks)

PDL_BY_DEFAULT = PDL_AVAILABLE and os.environ.get("GEGLU_PDL", "0") not in ("", "0")

_INT32_SAFE = 2**31 - 2**16  # largest offset for the 32-bit forms (the last block overshoots)
_MAX_GRID_Y = 65535


@dataclass(frozen=True)
class PointwiseConfig:
    block_rows: int
    block_cols: int
    num_warps: int
    indexing: int = TILES


# Regime limits in elements moved by one launch (read + written: 3 per output element in
# forward, 5 in backward), so the backward switches to larger tiles at fewer tokens.
REGIME_LIMITS = (3 << 18, 3 << 20, 3 << 22, 3 << 24)

# Launch tables: per measured GPU, (elements per program, warps, indexing) per regime, smallest
# problems first, keyed by (operands contiguous, backward). Tiny problems want many small programs
# (1-2 elements per thread) spread over every SM; larger ones 4 to 8 elements per thread. Strided
# rows (halves of a packed projection) take row-grid programs while launch latency dominates,
# then the flat form with a row division (a multiply-high per group of 16 elements),
# which keeps consecutive programs on consecutive addresses.
_H100 = {
    (True, False): ((256, 8, FLAT), (512, 8, FLAT), (1024, 4, FLAT), (512, 4, FLAT), (512, 4, FLAT)),
    (True, True): ((256, 8, FLAT), (512, 8, FLAT), (1024, 8, FLAT), (1024, 8, FLAT), (512, 4, FLAT)),
    (False, False): ((256, 8, ROW_GRID), (512, 8, ROW_GRID), (512, 4, FLAT_ROW_DIV), (512, 2, FLAT_ROW_DIV),
                     (512, 4, FLAT_ROW_DIV)),
    (False, True): ((256, 8, FLAT_ROW_DIV), (512, 8, FLAT_ROW_DIV), (1024, 8, FLAT_ROW_DIV),
                    (1024, 8, FLAT_ROW_DIV), (2048, 8, FLAT_ROW_DIV)),
}
# H200 (2026-12 sweep, benchmarks/results/h200/sweep_launch_configs_bfloat16_separate_packed.json):
# the same except the forward's two largest regimes, which read faster with 8 elements per thread
# (2 warps a program): 8-13% at 2048-8192 tokens of I=16384, 3-5% in regime 3.
_H200 = {**_H100,
         (True, False): _H100[True, False][:3] + ((512, 2, FLAT), (512, 2, FLAT)),
         (False, False): _H100[False, False][:3] + ((512, 2, FLAT_ROW_DIV), (512, 2, FLAT_ROW_DIV))}
LAUNCH_TABLES = {"H100": _H100, "H200": _H200}
# What each table's GPU is, to find the nearest measured one for another GPU: (compute
# capability, multiprocessors).
MEASURED_DEVICES = {"H100": ((9, 0), 132), "H200": ((9, 0), 132)}
DEFAULT_TABLE = "H100"


def nearest_table(name: str, capability: tuple[int, int], sms: int) -> str:
    """The launch table for a GPU: its own where its name contains a measured one's, else the
    measured GPU of the same compute capability (then architecture generation) with the closest
    multiprocessor count, else the default."""
    for table in LAUNCH_TABLES:
        if table in name:
            return table
    for same in (lambda cap: cap == capability, lambda cap: cap[0] == capability[0]):
        candidates = [t for t, (cap, _) in MEASURED_DEVICES.items() if same(cap)]
        if candidates:
            return min(candidates, key=lambda t: abs(MEASURED_DEVICES[t][1] - sms))
    return DEFAULT_TABLE


@lru_cache(maxsize=None)
def table_for_device(device_index: int) -> str:
    """The launch table of a CUDA device (the default for CPU, under the interpreter)."""
    if device_index < 0 or not USE_LIBDEVICE or not torch.cuda.is_available():
        return DEFAULT_TABLE
    props = torch.cuda.get_device_properties(device_index)
    return nearest_table(props.name, (props.major, props.minor), props.multi_processor_count)


def regime(moved: int) -> int:
    """0 (tiny) to 4 (large): how many regime limits `moved` elements reach."""
    return sum(moved >= limit for limit in REGIME_LIMITS)


def _waste(n_cols: int, block: int) -> float:
    return 1.0 - n_cols / (triton.cdiv(n_cols, block) * block)


@lru_cache(maxsize=None)
def tiles_config(n_cols: int) -> PointwiseConfig:
    """2-D tiles with int64 offsets, for traced launches (no guard on the token count) and
    tensors beyond 32-bit offsets: one row segment of 2048, 1024 or 512 columns (the widest
    that wastes at most 1/16 of its lanes, else the least wasteful), 8 elements per thread;
    rows narrower than 512 are packed several to a program."""
    n_cols = max(n_cols, 1)
    if n_cols < 512:
        block_cols = triton.next_power_of_2(n_cols)
        return PointwiseConfig(512 // block_cols, block_cols, 2)
    candidates = (2048, 1024, 512)
    block_cols = next((b for b in candidates if _waste(n_cols, b) <= 1 / 16),
                      min(candidates, key=lambda b: _waste(n_cols, b)))
    return PointwiseConfig(1, block_cols, block_cols // 256)


@lru_cache(maxsize=None)
def regime_configs(
    n_cols: int, contiguous: bool, backward: bool, itemsize: int = 2, table: str = DEFAULT_TABLE
) -> tuple[PointwiseConfig, ...]:
    """The tile shape of each regime for rows of n_cols (index = `regime(...)`) in a launch
    table. In the bandwidth-bound largest regime 4-byte dtypes take half the elements per
    thread, keeping each access as wide as the 16-bit one (fp32 sweep: 1-1.5% faster at 8192
    tokens)."""
    configs = []
    for i, (block, warps, indexing) in enumerate(LAUNCH_TABLES[table][contiguous, backward]):
        if itemsize > 2 and i == len(REGIME_LIMITS):
            block = max(block * 2 // itemsize, 32 * warps)
        # Row segments that leave many lanes idle (narrow or ragged rows) go flat instead.
        if indexing == ROW_GRID and (_waste(n_cols, block) > 1 / 8 or triton.cdiv(n_cols, block) > _MAX_GRID_Y):
            indexing = FLAT_ROW_DIV
        configs.append(usable_config(PointwiseConfig(1, block, warps, indexing), n_cols))
    return tuple(configs)


def usable_config(cfg: PointwiseConfig, n_cols: int) -> PointwiseConfig:
    """cfg, or 2-D tiles where it cannot serve this width: a width of 1 has no row divisor
    (`row_divisor`), so the row-division form becomes tiles of one column."""
    return tiles_config(n_cols) if cfg.indexing == FLAT_ROW_DIV and n_cols < 2 else cfg


def choose_config(
    n_rows: int, n_cols: int, backward: bool = False, contiguous: bool = False,
    max_offset: int | None = None, itemsize: int = 2, table: str = DEFAULT_TABLE,
) -> PointwiseConfig:
    """The tile shape for an untraced launch over [n_rows, n_cols] views (a traced one always
    takes `tiles_config`, so the compiled graph holds no guard on the token count).
    max_offset: the largest element offset any operand reaches (n_rows * n_cols if None);
    32-bit forms are only used below 2^31."""
    n = n_rows * n_cols
    cfg = regime_configs(n_cols, contiguous, backward, itemsize, table)[regime((5 if backward else 3) * n)]
    if cfg.indexing in (FLAT, FLAT_ROW_DIV) and max(n, max_offset or 0) >= _INT32_SAFE:
        return tiles_config(n_cols)
    return cfg


@triton.jit
def _tile(n_rows, n_cols, row_magic, row_shift, stride, INDEXING: tl.constexpr, BLOCK_ROWS: tl.constexpr,
          BLOCK_COLS: tl.constexpr, ROW_GROUP: tl.constexpr):
    """This program's element offsets in a tensor of row stride `stride`, their mask, and whether
    the block lies wholly inside the tensor (then the kernels access it unmasked). INDEXING (the
    forms named at the top of this file): 1 FLAT, 2 FLAT_ROW_DIV, 3 ROW_GRID, 0 TILES. The width is
    a runtime argument (one binary serves every width; Triton specialises it, like the strides, on
    divisibility by 16, which keeps the accesses vectorised)."""
    if INDEXING == 1:
        idx = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        return idx, idx < n_rows * n_cols, (tl.program_id(0) + 1) * BLOCK_COLS <= n_rows * n_cols
    elif INDEXING == 2:
        # Groups of ROW_GROUP consecutive elements (16 where the width is a multiple of 16, so that
        # no group crosses a row, else 1), one row division per group: idx // n_cols as a
        # multiply-high and a shift (`row_divisor`; the magic number travels as a signed 32-bit
        # value), what a compiler makes of a division by a constant. The [groups, ROW_GROUP] shape
        # keeps each group's addresses provably consecutive, so its loads stay vectorised.
        first = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS // ROW_GROUP) * ROW_GROUP
        magic = row_magic.to(tl.uint32, bitcast=True)
        rows = (tl.umulhi(first.to(tl.uint32), magic) >> row_shift).to(tl.int32)
        lane = tl.arange(0, ROW_GROUP)
        start = rows * stride + (first - rows * n_cols)
        mask = (first[:, None] + lane[None, :]) < n_rows * n_cols
        return start[:, None] + lane[None, :], mask, (tl.program_id(0) + 1) * BLOCK_COLS <= n_rows * n_cols
    elif INDEXING == 3:
        # The row offset is one scalar per program, not a per-lane product.
        cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        whole = (tl.program_id(1) + 1) * BLOCK_COLS <= n_cols
        return tl.program_id(0).to(tl.int64) * stride + cols, cols < n_cols, whole
    else:
        pid = tl.program_id(0)
        col_blocks = tl.cdiv(n_cols, BLOCK_COLS)
        rows = (pid // col_blocks) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = (pid % col_blocks) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        whole = ((pid // col_blocks + 1) * BLOCK_ROWS <= n_rows) & ((pid % col_blocks + 1) * BLOCK_COLS <= n_cols)
        return rows.to(tl.int64)[:, None] * stride + cols[None, :], mask, whole


@triton.jit
def _await_previous_kernel(USE_PDL: tl.constexpr):
    """Under programmatic dependent launch: block until the previous kernel in the stream has
    finished and its writes are visible (before any load or store of ours: an output may reuse
    memory that kernel still reads), then allow the next kernel's launch to begin (it waits in
    turn for this whole grid)."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def _load(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    return tl.load(ptrs).to(tl.float32)


@triton.jit
def _store(ptrs, value, mask, MASKED: tl.constexpr):
    if MASKED:
        tl.store(ptrs, value, mask=mask)
    else:
        tl.store(ptrs, value)


@triton.jit
def _forward_elements(g_ptrs, u_ptrs, h_ptrs, mask, APPROX_TANH: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
                      MASKED: tl.constexpr):
    g = _load(g_ptrs, mask, MASKED)
    u = _load(u_ptrs, mask, MASKED)
    out_dtype = h_ptrs.dtype.element_ty
    act = gelu(g, APPROX_TANH, USE_LIBDEVICE).to(out_dtype).to(tl.float32)
    _store(h_ptrs, (act * u).to(out_dtype), mask, MASKED)


@triton.jit
def _backward_elements(dh_ptrs, g_ptrs, u_ptrs, dg_ptrs, du_ptrs, mask, APPROX_TANH: tl.constexpr,
                       USE_LIBDEVICE: tl.constexpr, MASKED: tl.constexpr):
    dh = _load(dh_ptrs, mask, MASKED)
    g = _load(g_ptrs, mask, MASKED)
    u = _load(u_ptrs, mask, MASKED)
    dtype = dg_ptrs.dtype.element_ty
    act, act_grad = gelu_and_grad(g, APPROX_TANH, USE_LIBDEVICE)
    act = act.to(dtype).to(tl.float32)
    dh_u = (dh * u).to(dtype).to(tl.float32)
    _store(du_ptrs, (dh * act).to(dtype), mask, MASKED)
    _store(dg_ptrs, (dh_u * act_grad).to(dtype), mask, MASKED)


# A program whose block lies inside the tensor (all but the last, where a block size does not
# divide the element count or the width) takes the unmasked branch: at the copy limit (the packed
# backward at 2048-8192 tokens of I=16384) masked accesses ran 3-7% slower (benchmarks/NOTES.md),
# and a branch per program, unlike a constexpr, keeps one binary for every width.
@triton.jit(do_not_specialize=["n_rows", "row_magic", "row_shift"])
def _geglu_forward_kernel(
    gate_ptr, up_ptr, out_ptr,
    n_rows, n_cols, row_magic, row_shift,
    stride_gate, stride_up, stride_out,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    INDEXING: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
    ROW_GROUP: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    _await_previous_kernel(USE_PDL)
    g_offs, mask, whole = _tile(n_rows, n_cols, row_magic, row_shift, stride_gate,
                                INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    u_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_up,
                         INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    h_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_out,
                         INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    ptrs = (gate_ptr + g_offs, up_ptr + u_offs, out_ptr + h_offs)
    if whole:
        _forward_elements(*ptrs, mask, APPROX_TANH, USE_LIBDEVICE, False)
    else:
        _forward_elements(*ptrs, mask, APPROX_TANH, USE_LIBDEVICE, True)


@triton.jit(do_not_specialize=["n_rows", "row_magic", "row_shift"])
def _geglu_backward_kernel(
    grad_ptr, gate_ptr, up_ptr, grad_gate_ptr, grad_up_ptr,
    n_rows, n_cols, row_magic, row_shift,
    stride_grad, stride_gate, stride_up, stride_grad_gate, stride_grad_up,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    INDEXING: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
    ROW_GROUP: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    _await_previous_kernel(USE_PDL)
    dh_offs, mask, whole = _tile(n_rows, n_cols, row_magic, row_shift, stride_grad,
                                 INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    g_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_gate,
                         INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    u_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_up,
                         INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    dg_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_grad_gate,
                          INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    du_offs, _, _ = _tile(n_rows, n_cols, row_magic, row_shift, stride_grad_up,
                          INDEXING, BLOCK_ROWS, BLOCK_COLS, ROW_GROUP)
    ptrs = (grad_ptr + dh_offs, gate_ptr + g_offs, up_ptr + u_offs, grad_gate_ptr + dg_offs, grad_up_ptr + du_offs)
    if whole:
        _backward_elements(*ptrs, mask, APPROX_TANH, USE_LIBDEVICE, False)
    else:
        _backward_elements(*ptrs, mask, APPROX_TANH, USE_LIBDEVICE, True)


def _grid(n_rows: int, n_cols: int, cfg: PointwiseConfig) -> tuple[int, int, int]:
    if cfg.indexing == ROW_GRID:
        return (n_rows, triton.cdiv(n_cols, cfg.block_cols), 1)
    if cfg.indexing in (FLAT, FLAT_ROW_DIV):
        return (triton.cdiv(n_rows * n_cols, cfg.block_cols), 1, 1)
    return (triton.cdiv(n_rows, cfg.block_rows) * triton.cdiv(n_cols, cfg.block_cols), 1, 1)


_CONSTEXPR_NAMES = ("APPROX_TANH", "USE_LIBDEVICE", "INDEXING", "BLOCK_ROWS", "BLOCK_COLS", "ROW_GROUP", "USE_PDL")


def _constexprs(n_cols: int, approx_tanh: bool, cfg: PointwiseConfig, pdl: bool) -> tuple:
    # The values of _CONSTEXPR_NAMES, the kernels' last parameters in this order. ROW_GROUP only
    # matters to the row-division form (16 or 1, as Triton specialises the width anyway).
    row_group = 16 if cfg.indexing == FLAT_ROW_DIV and n_cols % 16 == 0 and cfg.block_cols % 16 == 0 else 1
    return (approx_tanh, USE_LIBDEVICE, cfg.indexing, cfg.block_rows, cfg.block_cols, row_group, pdl)


@lru_cache(maxsize=None)
def row_divisor(n_cols: int) -> tuple[int, int]:
    """(magic, shift) with x // n_cols == umulhi(x, magic mod 2^32) >> shift for every
    0 <= x < 2^31, the row division of the flat forms (Granlund and Montgomery's round-up method
    for 31-bit dividends: l = ceil(log2 n_cols), magic = ceil(2^(31 + l) / n_cols), in
    [2^31, 2^32)). The magic is returned as the signed 32-bit integer of the same bits, the
    kernels' argument: a larger one would be a 64-bit argument, and Inductor fails on such a
    constant in a traced launch. A width of 1 has none (l = 0); its rows are never divided
    (`usable_config`)."""
    if n_cols < 2:
        return 0, 0  # never used (`usable_config`)
    log2 = (n_cols - 1).bit_length()
    return -(-(1 << (31 + log2)) // n_cols) - (1 << 32), log2 - 1


def _sizes(n_rows, n_cols) -> tuple:
    # The kernels' runtime size arguments: rows, width, and the width's row divisor.
    return (n_rows, n_cols, *row_divisor(n_cols))


_warmed: set = set()


@lru_cache(maxsize=8192)
def plan(backward: bool, n_rows: int, n_cols: int, strides: tuple[int, ...], dtype: torch.dtype, approx_tanh: bool,
         device_index: int, pdl: bool | None = None, config: PointwiseConfig | None = None) -> LaunchPlan:
    """The launch of one kernel over [n_rows, n_cols] row views of these row strides (forward:
    gate, up, out; backward: grad, gate, up, grad_gate, grad_up), resolved once: tile shape from
    the device's launch table (or `config`), grid, arguments. The first plan of a width, dtype
    and layout compiles every regime's tile shape (`warm_up_family`), so that no later token
    count compiles. pdl: programmatic dependent launch (None: on where GEGLU_PDL=1 and supported)."""
    kernel = _geglu_backward_kernel if backward else _geglu_forward_kernel
    if pdl is None:
        pdl = PDL_BY_DEFAULT and device_index >= 0 and pdl_supported(device_index)
    itemsize = dtype.itemsize
    contiguous = n_rows == 1 or all(stride == n_cols for stride in strides)
    max_offset = (n_rows - 1) * max(strides) + n_cols
    table = table_for_device(device_index)
    cfg = config or choose_config(n_rows, n_cols, backward, contiguous, max_offset, itemsize, table)
    tail = (*_sizes(n_rows, n_cols), *strides, *_constexprs(n_cols, approx_tanh, cfg, pdl))
    plan_ = LaunchPlan(kernel, _grid(n_rows, n_cols, cfg), tail, launch_options(cfg.num_warps, pdl=pdl))
    warm_up_family(backward, n_cols, strides, dtype, approx_tanh, device_index, pdl, contiguous)
    if n_rows >= 2**31:  # a 64-bit row count compiles apart from the 32-bit one warmed up
        return plan_
    return with_warm_handle(plan_, handle_key(kernel, tail, plan_.options, (0,), dtype, device_index))


def warm_up_family(backward: bool, n_cols: int, strides: tuple[int, ...], dtype: torch.dtype, approx_tanh: bool,
                   device_index: int, pdl: bool | None = None, contiguous: bool | None = None) -> None:
    """Compile every regime's tile shape of one kernel for rows of n_cols with these row strides
    (once per width, dtype, layout and device): a later launch at any token count then finds its
    binary compiled."""
    warm_up_all(family_warm_ups(backward, n_cols, strides, dtype, approx_tanh, device_index, pdl, contiguous))


def family_warm_ups(backward: bool, n_cols: int, strides: tuple[int, ...], dtype: torch.dtype, approx_tanh: bool,
                    device_index: int, pdl: bool | None = None, contiguous: bool | None = None) -> list[WarmUp]:
    """What `warm_up_family` compiles, as jobs for `warm_up_all` (none where this family was
    warmed already, or nothing compiles); the family counts as warmed from here on."""
    if pdl is None:
        pdl = PDL_BY_DEFAULT and device_index >= 0 and pdl_supported(device_index)
    if contiguous is None:
        contiguous = all(stride == n_cols for stride in strides)
    family = (backward, n_cols, dtype, approx_tanh, contiguous, pdl, device_index)
    if family in _warmed or not USE_LIBDEVICE or device_index < 0:
        return []
    _warmed.add(family)
    kernel = _geglu_backward_kernel if backward else _geglu_forward_kernel
    jobs = []
    for shape in dict.fromkeys(regime_configs(n_cols, contiguous, backward, dtype.itemsize,
                                              table_for_device(device_index))):
        # Strides specialise as these (==1, %16), pointers as 16-byte aligned ones.
        tail = (*_sizes(2, n_cols), *strides, *_constexprs(n_cols, approx_tanh, shape, pdl))
        options = launch_options(shape.num_warps, pdl=pdl)
        jobs.append(WarmUp(kernel, _warm_pointers(backward, dtype, device_index), tail, options,
                           handle_key(kernel, tail, options, (0,), dtype, device_index)))
    return jobs


def _warm_pointers(backward: bool, dtype: torch.dtype, device_index: int) -> tuple[torch.Tensor, ...]:
    return (dummy_pointer(dtype, device_index),) * (5 if backward else 3)


def _launch(backward: bool, tensors, n_rows: int, n_cols: int, approx_tanh: bool, config: PointwiseConfig | None,
            traceable: bool, pdl: bool | None) -> None:
    strides = tuple(t.stride(0) for t in tensors)
    n_cols = int(n_cols)  # the tile shape depends on it: traced widths specialise the graph
    if config is not None:
        config = usable_config(config, n_cols)
    if traceable:
        # wrap_triton lets torch.compile / make_fx see the launch (Inductor launches it its way: no PDL).
        kernel = _geglu_backward_kernel if backward else _geglu_forward_kernel
        cfg = config or tiles_config(n_cols)
        constexprs = dict(zip(_CONSTEXPR_NAMES, _constexprs(n_cols, approx_tanh, cfg, False)))
        wrap_triton(kernel)[_grid(n_rows, n_cols, cfg)](*tensors, *_sizes(n_rows, n_cols), *strides,
                                                        **constexprs, num_warps=cfg.num_warps)
        return
    t = tensors[0]
    launch(plan(backward, n_rows, n_cols, strides, t.dtype, approx_tanh, t.get_device(), pdl, config), *tensors)


def launch_geglu_forward(
    gate: torch.Tensor, up: torch.Tensor, out: torch.Tensor, approx_tanh: bool,
    config: PointwiseConfig | None = None, traceable: bool = True, pdl: bool | None = None,
) -> None:
    """out = gelu(gate) * up on 2-D views with unit column stride. config: a tile shape instead
    of the launch table's; traceable: launch through wrap_triton (visible to torch.compile and
    make_fx; always 2-D tiles, no PDL); pdl: programmatic dependent launch on or off for an
    untraced launch (None: on where GEGLU_PDL=1 and `pdl_supported`)."""
    n_rows, n_cols = gate.shape
    if n_rows and n_cols:
        _launch(False, (gate, up, out), n_rows, n_cols, approx_tanh, config, traceable, pdl)


def launch_geglu_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor,
    grad_gate: torch.Tensor, grad_up: torch.Tensor, approx_tanh: bool,
    config: PointwiseConfig | None = None, traceable: bool = True, pdl: bool | None = None,
) -> None:
    """grad_gate, grad_up of h = gelu(gate) * up, given grad = dL/dh (2-D views). grad_gate and
    grad_up may be gate and up themselves: each element is read before it is written. config,
    traceable, pdl: as in `launch_geglu_forward`."""
    n_rows, n_cols = gate.shape
    if n_rows and n_cols:
        _launch(True, (grad, gate, up, grad_gate, grad_up), n_rows, n_cols, approx_tanh, config, traceable, pdl)
