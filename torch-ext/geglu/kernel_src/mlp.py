"""The fused GeGLU MLP kernels for decode-sized inputs (a row tile of 16, 32 or 64 tokens, the
smallest that holds T; the gate/up kernel also runs several row tiles, for middle T).

- `_gate_up_geglu_kernel`: h = gelu(x Wg^T + bg) * (x Wu^T + bu). Program (r, p) owns BLOCK_I
  columns of h for the r-th tile of rows; it reads those rows of Wg and Wu once (two fp32
  accumulators sharing each x tile) and applies the GeGLU in its epilogue: nothing but h [T, I] is
  written.
- `_down_split_k_kernel`: y = h Wd^T + bd. With N = H outputs there are too few output blocks to
  fill the GPU, so the I dimension is split SPLIT_K ways; each program adds its fp32 partial sum
  into a zeroed workspace with atomics, and the last slice to arrive at a block of outputs (a
  counter per block) adds the bias and writes that block of y. The atomics sum in arrival order,
  so results are not bit-for-bit repeatable; where `torch.use_deterministic_algorithms` is on (or
  the down projection is not an untouched `nn.Linear`) the layer runs its down module instead.

The weights are the modules' own `nn.Linear` weights, row-major [out, in] (no copy). Rounding
follows eager: each projection's result is rounded to the storage dtype before the activation,
gelu(g) before the multiply, h before the down projection; the sums themselves are fp32 in another
order than cuBLAS's, so results agree with eager to the dtype's tolerance, not bit for bit.

Launch tables: per measured GPU (`MLP_LAUNCH_TABLES`; `benchmarks/probes/probe_mlp_decode.py`
sweeps them); where none is measured the layer does not take these kernels unless
`GEGLU_FUSED_MLP=1` asks for them.
"""

from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .gelu_math import gelu
from . import pointwise
from .launch import (USE_LIBDEVICE, LaunchPlan, WarmUp, dummy_pointer, handle_key, launch, launch_options,
                     traced_options, warm_up_all, with_warm_handle)

MAX_ROWS = 64  # the split-K down kernel takes one tile of rows (BLOCK_T 16, 32 or 64): at most this many

_INF = 1 << 62
# Per GPU, per kernel: (min hidden, max intermediate, max tokens, config) rules; the first that fits
# a call wins. gate_up configs are (BLOCK_T, BLOCK_I, BLOCK_K, num_warps, num_stages): BLOCK_T rows
# per program, as many row blocks as the tokens need. down configs are (BLOCK_N, BLOCK_K, SPLIT_K,
# num_warps, num_stages), its BLOCK_T the smallest row tile that holds the tokens (`row_tile`). The
# H200 rules come from `benchmarks/probes/probe_mlp_decode.py` (T <= 16) and `probe_mlp_middle.py`
# (T 32-512): graph replay at (768, 3072), (2048, 16384), (2560, 10240), (3584, 14336); each rule's
# config is within 3% of the best swept config at every point it covers. "default" is what a GPU
# without a measured table gets (only with GEGLU_FUSED_MLP=1). "max_rows": up to how many tokens the
# layers send to both kernels (measured to win up to there; at most MAX_ROWS); "gate_up_max_rows":
# up to how many the gate/up kernel alone, the down projection then a module.
MLP_LAUNCH_TABLES = {
    "H200": {
        "max_rows": 64,
        "gate_up_max_rows": 128,
        "gate_up": ((3072, _INF, 16, (16, 128, 128, 8, 3)), (0, 4096, 16, (16, 32, 128, 4, 5)),
                    (0, _INF, 16, (16, 32, 128, 4, 3)),
                    (0, _INF, 32, (32, 64, 128, 4, 3)),
                    (0, 4096, 64, (64, 32, 128, 4, 4)), (0, 10240, 64, (64, 32, 64, 4, 4)),
                    (0, _INF, 64, (64, 64, 64, 4, 4)),
                    (0, 4096, 128, (64, 32, 64, 4, 4)), (0, 10240, 128, (64, 64, 64, 4, 3)),
                    (0, _INF, 128, (128, 128, 64, 8, 4)),
                    (0, 4096, _INF, (64, 64, 64, 4, 3)), (0, _INF, _INF, (128, 128, 64, 8, 4))),
        "down": ((3072, _INF, 16, (64, 128, 4, 4, 4)), (0, 4096, 16, (32, 128, 16, 4, 4)),
                 (0, _INF, 16, (64, 128, 8, 4, 3)),
                 (3072, _INF, _INF, (64, 128, 8, 4, 3)), (0, 4096, _INF, (64, 128, 8, 4, 3)),
                 (0, 10240, _INF, (64, 64, 8, 4, 4)), (0, _INF, _INF, (64, 128, 8, 4, 3))),
    },
    "default": {
        "max_rows": 16,
        "gate_up_max_rows": 16,
        "gate_up": ((0, _INF, 16, (16, 32, 128, 4, 3)), (0, _INF, _INF, (64, 64, 64, 4, 3))),
        "down": ((0, _INF, _INF, (64, 128, 8, 4, 3)),),
    },
}
MEASURED_DEVICES = {name: table for name, table in MLP_LAUNCH_TABLES.items() if name != "default"}

_GATE_UP_CONSTEXPRS = ("HAS_BIAS", "APPROX_TANH", "USE_LIBDEVICE", "BLOCK_T", "BLOCK_I", "BLOCK_K")
_DOWN_CONSTEXPRS = ("HAS_DOWN_BIAS", "USE_LIBDEVICE", "BLOCK_T", "BLOCK_N", "BLOCK_K", "SPLIT_K")


@triton.jit(do_not_specialize=["n_rows", "ws_numel"])
def _gate_up_geglu_kernel(
    x_ptr, wg_ptr, wu_ptr, bg_ptr, bu_ptr, h_ptr, ws_ptr,
    n_rows, stride_x, stride_h, ws_numel, H, I,
    HAS_BIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Grid: (row blocks, column blocks). Row blocks run fastest, so the programs that share a block
    # of weight rows run together and all but the first read it from L2 (one row block at decode).
    # The fp32 workspace of the split-K down kernel that runs next (ws_numel elements; 0: none) is
    # zeroed here, spread over the first row block's programs, instead of by a memset launch.
    if tl.program_id(0) == 0:
        for z0 in range(tl.program_id(1) * 1024, ws_numel, tl.num_programs(1) * 1024):
            zs = z0 + tl.arange(0, 1024)
            tl.store(ws_ptr + zs, tl.zeros([1024], dtype=tl.float32), mask=zs < ws_numel)
    dtype = h_ptr.dtype.element_ty
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < n_rows
    col_ok = cols < I
    IS_FP32: tl.constexpr = dtype == tl.float32
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


@triton.jit(do_not_specialize=["n_rows"])
def _down_split_k_kernel(
    h_ptr, wd_ptr, bd_ptr, ws_ptr, y_ptr,
    n_rows, stride_h, stride_y, H, I,
    HAS_DOWN_BIAS: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    """y [T, H] = h [T, I] Wd^T + bd, Wd [H, I]: program (n, s) sums the s-th of SPLIT_K slices of I
    for BLOCK_N outputs and adds it into the fp32 workspace; the last slice to arrive at a block
    (a counter per block) writes that block of y. The workspace (zeroed) holds the partial sums
    [T, H], then one fp32 arrival counter per block of outputs (exact: counts stay below 2^24)."""
    dtype = y_ptr.dtype.element_ty
    IS_FP32: tl.constexpr = dtype == tl.float32
    acc_ptr = ws_ptr
    count_ptr = ws_ptr + n_rows * H
    k_per_split = tl.cdiv(tl.cdiv(I, SPLIT_K), BLOCK_K) * BLOCK_K
    pid_n = tl.program_id(0)
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_T)
    row_ok = rows < n_rows
    n_ok = ns < H
    acc = tl.zeros([BLOCK_T, BLOCK_N], dtype=tl.float32)
    k_start = tl.program_id(1) * k_per_split
    for k0 in range(0, k_per_split, BLOCK_K):
        ks = k_start + k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < I
        h = tl.load(h_ptr + rows[:, None].to(tl.int64) * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        wd = tl.load(wd_ptr + ns[:, None].to(tl.int64) * I + ks[None, :], mask=n_ok[:, None] & k_ok[None, :],
                     other=0.0)
        if not USE_LIBDEVICE:  # the interpreter's dot mishandles bf16: fp32 there
            h, wd = h.to(tl.float32), wd.to(tl.float32)
        acc = tl.dot(h, tl.trans(wd), acc, input_precision="ieee" if IS_FP32 else "tf32")
    mask = row_ok[:, None] & n_ok[None, :]
    offs = rows[:, None] * H + ns[None, :]
    tl.atomic_add(acc_ptr + offs, acc, mask=mask, sem="relaxed")
    # Every thread's atomics are issued before the counter moves; the acq_rel counter orders them
    # before the last arrival's reads.
    tl.debug_barrier()
    if tl.atomic_add(count_ptr + pid_n, 1.0, sem="acq_rel") == SPLIT_K - 1:
        tl.debug_barrier()
        y = tl.load(acc_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
        if HAS_DOWN_BIAS:
            y += tl.load(bd_ptr + ns, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rows[:, None].to(tl.int64) * stride_y + ns[None, :], y.to(dtype), mask=mask)


@lru_cache(maxsize=None)
def measured_table(device_index: int) -> str | None:
    """The measured launch table of this CUDA device, or None (CPU, or a GPU not measured)."""
    if device_index < 0 or not MEASURED_DEVICES:
        return None
    name = torch.cuda.get_device_name(device_index)
    return next((t for t in MEASURED_DEVICES if t in name), None)


def table_rows(name: str | None) -> tuple[int, int]:
    """Up to how many tokens the layers send to both fused kernels, and to the gate/up kernel alone,
    under the launch table `name` (None: "default")."""
    table = MLP_LAUNCH_TABLES[name or "default"]
    return min(table["max_rows"], MAX_ROWS), table["gate_up_max_rows"]


def max_rows(device_index: int) -> tuple[int, int]:
    """`table_rows` of this device's launch table."""
    return table_rows(measured_table(device_index))


def row_tile(n_rows) -> int:
    """The down kernel's BLOCK_T for n_rows tokens: 16, 32 or 64 (MAX_ROWS, also for a symbolic
    row count)."""
    if not isinstance(n_rows, int):
        return MAX_ROWS
    return 16 if n_rows <= 16 else 32 if n_rows <= 32 else MAX_ROWS


def _rows_bucket(n_rows) -> int:
    # Rules are looked up (and cached) per power of two of the token count (at least 16); symbolic:
    # MAX_ROWS.
    return 1 << max(4, (n_rows - 1).bit_length()) if isinstance(n_rows, int) else MAX_ROWS


def _rule(device_index: int, kernel: str, hidden, inter, bucket: int) -> tuple:
    rules = MLP_LAUNCH_TABLES[measured_table(device_index) or "default"][kernel]
    return next(cfg for min_hidden, max_inter, rows, cfg in rules
                if hidden >= min_hidden and inter <= max_inter and bucket <= rows)


_cached_rule = lru_cache(maxsize=None)(_rule)


def launch_config(device_index: int, kernel: str, hidden, inter, n_rows) -> tuple:
    """The config of `kernel` ("gate_up" or "down") for this device, shape and token count. Traced
    shapes (symbolic sizes, which cannot be hashed) take the uncached lookup."""
    if isinstance(hidden, int) and isinstance(inter, int):
        return _cached_rule(device_index, kernel, hidden, inter, _rows_bucket(n_rows))
    return _rule(device_index, kernel, hidden, inter, _rows_bucket(n_rows))


def gate_up_launch(n_rows, hidden: int, inter: int, stride_x, stride_h, ws_numel, has_bias: bool, approx_tanh: bool,
                   config: tuple, dtype: torch.dtype) -> LaunchPlan:
    """The launch of the gate/up kernel for one shape, dtype and config (BLOCK_T, BLOCK_I, BLOCK_K,
    warps, stages). The dtype is part of the key because the plan keeps the kernel compiled for it."""
    block_t, block_i, block_k, warps, stages = config
    tail = (n_rows, stride_x, stride_h, ws_numel, hidden, inter, has_bias, approx_tanh, USE_LIBDEVICE, block_t, block_i,
            block_k)
    return LaunchPlan(_gate_up_geglu_kernel, (triton.cdiv(n_rows, block_t), triton.cdiv(inter, block_i), 1), tail,
                      launch_options(warps, stages))


def down_launch(n_rows, hidden: int, inter: int, stride_h, stride_y, has_down_bias: bool, config: tuple,
                dtype: torch.dtype) -> LaunchPlan:
    """The launch of the split-K down kernel for one shape, dtype and config
    (BLOCK_N, BLOCK_K, SPLIT_K, warps, stages)."""
    block_n, block_k, split_k, warps, stages = config
    tail = (n_rows, stride_h, stride_y, hidden, inter, has_down_bias, USE_LIBDEVICE, row_tile(n_rows), block_n, block_k,
            split_k)
    return LaunchPlan(_down_split_k_kernel, (triton.cdiv(hidden, block_n), split_k, 1), tail,
                      launch_options(warps, stages))


# Eager launches keep their plans (and compiled handles); traced ones (symbolic sizes) build them anew.
# These two take explicit configs (the probes' sweeps); the layers' calls take `table_gate_up_plan`
# and `decode_plans`.
gate_up_plan = lru_cache(maxsize=1024)(gate_up_launch)
down_plan = lru_cache(maxsize=1024)(down_launch)


def specialisation(plan_: LaunchPlan, dtype: torch.dtype = torch.bfloat16, device_index: int = 0) -> tuple:
    """What Triton compiles a plan's kernel for (besides pointer alignment): its arguments but the
    row count and workspace size (not specialised), its launch options, the dtype and the GPU."""
    dynamic = (0, 3) if plan_.kernel is _gate_up_geglu_kernel else (0,)
    return handle_key(plan_.kernel, plan_.tail, plan_.options, dynamic, dtype, device_index)


def shape_plans(hidden: int, inter: int, stride_x: int, has_bias: bool, has_down_bias: bool, approx_tanh: bool,
                dtype: torch.dtype, device_index: int) -> list[LaunchPlan]:
    """One plan per distinct specialisation of both kernels over every token bucket of the table
    that the layers may send this shape to (h and y contiguous, as the layers' calls)."""
    both_rows, gate_up_rows = max_rows(device_index)
    plans, bucket = {}, 16
    while bucket <= max(both_rows, gate_up_rows):
        found = [gate_up_launch(bucket, hidden, inter, stride_x, inter, 0, has_bias, approx_tanh,
                                launch_config(device_index, "gate_up", hidden, inter, bucket), dtype)]
        if bucket <= both_rows:
            found.append(down_launch(bucket, hidden, inter, inter, hidden, has_down_bias,
                                     launch_config(device_index, "down", hidden, inter, bucket), dtype))
        for plan_ in found:
            plans.setdefault(specialisation(plan_), plan_)
        bucket *= 2
    return list(plans.values())


@lru_cache(maxsize=None)
def warm_up_shape(hidden: int, inter: int, stride_x: int, has_bias: bool, has_down_bias: bool, approx_tanh: bool,
                  dtype: torch.dtype, device_index: int) -> None:
    """Compile (and load) both kernels for every token bucket of this shape at its first call: a
    later call at a new token count (17, 33, 65 tokens...) then launches a compiled kernel instead
    of compiling one, and its plan starts with the compiled handle. The pointwise kernel of the
    unfused path (beyond the table's token limits) is warmed for this width too, in the same batch
    (all of them compile side by side). H and I are runtime arguments: a bucket whose launch rule
    an earlier shape compiled compiles nothing."""
    if not USE_LIBDEVICE or device_index < 0 or dtype == torch.float32:
        # fp32: the layers never fuse it (the ops still take it); its kernels compile at first use.
        return
    warm_up_all(shape_warm_ups(hidden, inter, stride_x, has_bias, has_down_bias, approx_tanh, dtype, device_index)
                + pointwise.family_warm_ups(False, inter, (inter,) * 3, dtype, approx_tanh, device_index))


def shape_warm_ups(hidden: int, inter: int, stride_x: int, has_bias: bool, has_down_bias: bool, approx_tanh: bool,
                   dtype: torch.dtype, device_index: int) -> list[WarmUp]:
    """What `warm_up_shape` compiles of the two fused kernels, as jobs for `warm_up_all`: one per
    plan of `shape_plans`, pointers specialised as 16-byte aligned tensors (the layers' case)."""
    dummy, workspace = dummy_pointer(dtype, device_index), dummy_pointer(torch.float32, device_index)
    jobs = []
    for plan_ in shape_plans(hidden, inter, stride_x, has_bias, has_down_bias, approx_tanh, dtype, device_index):
        if plan_.kernel is _gate_up_geglu_kernel:  # x, wg, wu, bg, bu, h, workspace
            pointers = (dummy,) * 6 + (workspace,)
        else:  # h, wd, bd, workspace, y
            pointers = (dummy,) * 3 + (workspace, dummy)
        key = specialisation(plan_, dtype, device_index)
        jobs.append(WarmUp(plan_.kernel, pointers, plan_.tail, plan_.options, key))
    return jobs


def _warm_handle(plan_: LaunchPlan, dtype: torch.dtype, device_index: int) -> LaunchPlan:
    # The dtype is part of the key: a plan's tail holds no pointer, so fp16 and bf16 plans look alike.
    return with_warm_handle(plan_, specialisation(plan_, dtype, device_index))


@lru_cache(maxsize=None)
def _empty_workspace(device_index: int) -> torch.Tensor:
    # The fp32 workspace argument of a gate/up launch that has none to zero (never written): one
    # tensor per device (-1: the CPU, interpreted), so that every gate/up launch specialises alike.
    device = torch.device("cuda", device_index) if device_index >= 0 else torch.device("cpu")
    return torch.empty(1, dtype=torch.float32, device=device)


@lru_cache(maxsize=1024)
def table_gate_up_plan(n_rows: int, hidden: int, inter: int, stride_x: int, stride_h: int, has_bias: bool,
                       approx_tanh: bool, dtype: torch.dtype, device_index: int) -> LaunchPlan:
    """The gate/up launch of a layer's eager call (the table's config, no workspace to zero),
    resolved once; the first plan of a shape compiles every token bucket (`warm_up_shape`)."""
    warm_up_shape(hidden, inter, stride_x, has_bias, False, approx_tanh, dtype, device_index)
    return _warm_handle(gate_up_launch(n_rows, hidden, inter, stride_x, stride_h, 0, has_bias, approx_tanh,
                                       launch_config(device_index, "gate_up", hidden, inter, n_rows), dtype),
                        dtype, device_index)


def _traced_launch(kernel, names, plan_: LaunchPlan, pointers) -> None:
    # Under torch.compile / opcheck: the same launch through wrap_triton, constexprs by name.
    n_scalars = len(plan_.tail) - len(names)
    constexprs = dict(zip(names, plan_.tail[n_scalars:]))
    wrap_triton(kernel)[plan_.grid](*pointers, *plan_.tail[:n_scalars], **constexprs,
                                    **traced_options(plan_.options))


def launch_gate_up_geglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate, b_up,
                         out: torch.Tensor, approx_tanh: bool, traceable: bool = False, config=None,
                         workspace: torch.Tensor | None = None) -> None:
    """out [T, I] = gelu(x w_gate^T + b_gate) * (x w_up^T + b_up) for x [T, H] (unit column stride),
    contiguous weights [I, H], biases [I] or None; `workspace` (fp32), if given, is zeroed on the way."""
    n_rows, hidden = x.shape
    inter = w_gate.shape[0]
    has_bias = b_gate is not None
    bg, bu = (b_gate, b_up) if has_bias else (x, x)  # unread when HAS_BIAS is False
    if traceable:
        # An unwritten workspace must still be its own tensor: functionalization copies each
        # argument a kernel writes back, and a second copy of `out` would overwrite h.
        ws = workspace if workspace is not None else out.new_empty(0, dtype=torch.float32)
        plan_ = gate_up_launch(n_rows, hidden, inter, x.stride(0), out.stride(0), ws.numel(), has_bias, approx_tanh,
                               config or launch_config(-1, "gate_up", hidden, inter, n_rows), x.dtype)
        _traced_launch(_gate_up_geglu_kernel, _GATE_UP_CONSTEXPRS, plan_, (x, w_gate, w_up, bg, bu, out, ws))
        return
    device_index = x.get_device()
    if config is None and workspace is None:  # a layer's call: one cached lookup
        ws = _empty_workspace(device_index)
        plan_ = table_gate_up_plan(n_rows, hidden, inter, x.stride(0), out.stride(0), has_bias, approx_tanh, x.dtype,
                                   device_index)
    else:
        ws = workspace if workspace is not None else _empty_workspace(device_index)
        config = config or launch_config(device_index, "gate_up", hidden, inter, n_rows)
        plan_ = gate_up_plan(n_rows, hidden, inter, x.stride(0), out.stride(0), 0 if workspace is None else ws.numel(),
                             has_bias, approx_tanh, config, x.dtype)
    launch(plan_, x, w_gate, w_up, bg, bu, out, ws)


def workspace_numel(n_rows, hidden: int, inter: int, device_index: int) -> int:
    """fp32 elements of the split-K down kernel's workspace: the partial sums, then the counters."""
    return n_rows * hidden + triton.cdiv(hidden, launch_config(device_index, "down", hidden, inter, n_rows)[0])


@lru_cache(maxsize=1024)
def decode_plans(n_rows: int, hidden: int, inter: int, stride_x: int, has_bias: bool, has_down_bias: bool,
                 approx_tanh: bool, dtype: torch.dtype, device_index: int) -> tuple[LaunchPlan, LaunchPlan, int]:
    """The fused decode MLP's two launches for one shape (h and y contiguous), resolved once: the
    gate/up plan (which zeroes the workspace), the down plan, the workspace's size."""
    warm_up_shape(hidden, inter, stride_x, has_bias, has_down_bias, approx_tanh, dtype, device_index)
    ws_numel = workspace_numel(n_rows, hidden, inter, device_index)
    gate_up = gate_up_launch(n_rows, hidden, inter, stride_x, inter, ws_numel, has_bias, approx_tanh,
                             launch_config(device_index, "gate_up", hidden, inter, n_rows), dtype)
    down = down_launch(n_rows, hidden, inter, inter, hidden, has_down_bias,
                       launch_config(device_index, "down", hidden, inter, n_rows), dtype)
    return _warm_handle(gate_up, dtype, device_index), _warm_handle(down, dtype, device_index), ws_numel


def run_mlp_decode(x: torch.Tensor, stride_x: int, w_gate, w_up, w_down, b_gate, b_up, b_down, approx_tanh: bool,
                   device_index: int) -> torch.Tensor:
    """The fused decode MLP on an eager (untraced) CUDA input whose n_rows rows of `hidden`
    elements are `stride_x` apart (unit column stride): y, shaped like x, contiguous. The
    shortest host path: one plan lookup, three allocations, two launches."""
    hidden, inter = x.shape[-1], w_gate.shape[0]
    n_rows = x.numel() // hidden
    has_bias, has_down_bias = b_gate is not None, b_down is not None
    gate_up, down, ws_numel = decode_plans(n_rows, hidden, inter, stride_x, has_bias, has_down_bias, approx_tanh,
                                           x.dtype, device_index)
    # new_empty / empty_like take about half the host time of torch.empty(shape, dtype=, device=);
    # y is allocated while the gate/up kernel runs, not before it starts.
    h = x.new_empty(n_rows, inter)
    workspace = x.new_empty(ws_numel, dtype=torch.float32)
    launch(gate_up, x, w_gate, w_up, b_gate if has_bias else x, b_up if has_bias else x, h, workspace)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    launch(down, h, w_down, b_down if has_down_bias else h, workspace, y)
    return y


def launch_down_split_k(h: torch.Tensor, w_down: torch.Tensor, b_down, out: torch.Tensor, workspace: torch.Tensor,
                        traceable: bool = False, config=None) -> None:
    """out [T, H] = h w_down^T + b_down for h [T, I] (unit column stride, T <= MAX_ROWS), a contiguous
    weight [H, I], a bias [H] or None; `workspace`: at least `workspace_numel` zeroed fp32 elements."""
    n_rows, inter = h.shape
    hidden = w_down.shape[0]
    has_down_bias = b_down is not None
    config = config or launch_config(-1 if traceable else h.get_device(), "down", hidden, inter, n_rows)
    plan_ = (down_launch if traceable else down_plan)(n_rows, hidden, inter, h.stride(0), out.stride(0), has_down_bias,
                                                       config, h.dtype)
    pointers = (h, w_down, b_down if has_down_bias else h, workspace, out)
    if traceable:
        _traced_launch(_down_split_k_kernel, _DOWN_CONSTEXPRS, plan_, pointers)
    else:
        launch(plan_, *pointers)
