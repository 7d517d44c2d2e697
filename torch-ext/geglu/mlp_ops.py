"""The fused GeGLU MLP ops for decode-sized inputs, and the rule for when a layer may use them.

  mlp_decode(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate) -> y   (gate/up kernel, split-K down)
  gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate) -> h                (then the down module)
  mlp_inference(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate) -> y
      (what a layer traced by torch.compile calls: opaque, the path chosen on the real token count)

None has autograd: they serve inference. Training (autograd recording, weights or input requiring
grad) has its own path for the same untouched projections (no backward hooks either): F.linear for
gate and up, then `_GeGLUDown`, one autograd node for the GeGLU and the down projection.

The fused paths read the projections' weights directly, so `fused_mlp` takes them only where that
changes nothing the user can observe: plain `nn.Linear` projections (not a subclass, a PEFT/LoRA
wrapper, a quantized or parametrized linear) holding plain contiguous weights of the input's dtype
and device, no forward hooks or pre-hooks (module or global), no autograd needed, no autocast, no
torch.func transform or forward-mode AD, an eager call (or torch.compile tracing the layer: then
`mlp_inference` for every token count, so nothing guards on T), 1 to the table's `max_rows` tokens
(`gate_up_max_rows` for the gate/up kernel alone), hidden and intermediate sizes that are multiples
of 16 (`FUSED_WIDTH_MULTIPLE`), a 16-bit dtype (fp32 follows cuBLAS's TF32
setting, which these kernels do not), and a GPU whose launch table is measured (or
`GEGLU_FUSED_MLP=1`; `GEGLU_FUSED_MLP=0` turns them off everywhere). The split-K down kernel also
needs an untouched down projection, no active dropout and non-deterministic algorithms allowed (its
atomics sum in arrival order); otherwise gate/up is fused and the down projection runs as a module.
Past the fused token counts, and everywhere else, the layer runs its projections around the
pointwise kernel: in eager inference F.linear on the weights of plain projections (`plain_linears`:
exactly what calling them computes, without the module calls), else as modules.
"""

import os
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.library import triton_op
from torch.nn.modules import module as _nn_module

from ._ops import add_op_namespace_prefix
from .checks import SUPPORTED_DTYPES, check_approximate, check_mlp_decode, row_view
from .dispatch import (DIRECT, OP, c_apply, geglu_backward_in_place_impl, geglu_forward_impl,
                       geglu_forward_over_gate_impl, route, transforms_active, unwrap_if_dead, use_triton)
from .kernel_src.launch import INTERPRET
from .kernel_src.mlp import (MAX_ROWS, MEASURED_DEVICES, MLP_LAUNCH_TABLES, _down_split_k_kernel, _gate_up_geglu_kernel,
                             launch_down_split_k, launch_gate_up_geglu, measured_table, run_mlp_decode, table_rows,
                             workspace_numel)
from .pointwise_ops import _declare_kernels, _OpBody

FUSED_DTYPES = (torch.bfloat16, torch.float16)
# Read once, at import: "1" turns the fused paths on where no table is measured, "0" turns them off.
_SWITCH = os.environ.get("GEGLU_FUSED_MLP", "")
FUSED_OPT_IN = _SWITCH not in ("", "0")
FUSED_OFF = _SWITCH == "0"
# The most tokens any launch table sends to a fused kernel: an eager inference call past it takes
# the unfused path, which a layer may choose without calling `fused_mlp` (one Python call less).
MAX_FUSED_TOKENS = max(max(table_rows(name)) for name in MLP_LAUNCH_TABLES)
# The layers fuse only widths (hidden and intermediate) that are multiples of this: the launch tables
# were measured at such widths, and Triton specialises integer arguments on divisibility by 16. At
# another width the kernels lose their 16-byte asynchronous copies for element-wise loads (and spill
# registers; tests/gpu_compile.py reads both in their PTX), so cuBLAS's projections serve it. The
# ops themselves take any width.
FUSED_WIDTH_MULTIPLE = 16


def _give_up(exc: Exception) -> None:
    """The fused kernels failed here (a Triton or driver that cannot compile or launch them): warn
    once and leave them off for the rest of the process; the caller runs its modules instead. Out
    of memory is no reason to give up on them: that is raised as it is."""
    if isinstance(exc, torch.OutOfMemoryError):
        raise exc
    global FUSED_OFF
    FUSED_OFF = True
    warnings.warn(f"geglu: the fused decode MLP kernels failed ({type(exc).__name__}: {str(exc)[:300]}); the layers "
                  "run their projections as modules from now on", RuntimeWarning, stacklevel=3)


def fused_token_limits(device_index: int) -> tuple[int, int] | None:
    """Where the fused paths may run on this device (a measured launch table, or the opt-in): up to
    how many tokens both kernels take, and the gate/up kernel alone; None where they may not."""
    if FUSED_OFF:
        return None
    name = measured_table(device_index)
    return None if name is None and not FUSED_OPT_IN else table_rows(name)


def fused_mlp_enabled(device_index: int) -> bool:
    """Whether the fused paths may run on this device."""
    return fused_token_limits(device_index) is not None


# --- the PyTorch forms (plain CPU tensors, and traced CPU graphs): eager's rounding points ---

def _torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate):
    return F.gelu(F.linear(x, w_gate, b_gate), approximate=approximate) * F.linear(x, w_up, b_up)


def gate_up_geglu_impl(x, w_gate, w_up, b_gate, b_up, approximate, traceable=False):
    if not use_triton(x):
        return _torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate)
    out = x.new_empty(x.shape[0], w_gate.shape[0])
    launch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, out, approximate == "tanh", traceable=traceable)
    return out


def mlp_decode_impl(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate, traceable=False):
    if not use_triton(x):
        return F.linear(_torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate), w_down, b_down)
    if not traceable:  # the layers' eager entry: one plan lookup for both launches
        return run_mlp_decode(x, x.stride(0), w_gate, w_up, w_down, b_gate, b_up, b_down, approximate == "tanh",
                              x.get_device())
    n_rows, hidden, inter = x.shape[0], x.shape[1], w_gate.shape[0]
    # Traced: the same two launches through wrap_triton; the gate/up kernel zeroes the workspace.
    workspace = torch.empty(workspace_numel(n_rows, hidden, inter, -1), dtype=torch.float32, device=x.device)
    h = torch.empty((n_rows, inter), dtype=x.dtype, device=x.device)
    launch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, h, approximate == "tanh", traceable=True, workspace=workspace)
    out = torch.empty((n_rows, w_down.shape[0]), dtype=x.dtype, device=x.device)
    launch_down_split_k(h, w_down, b_down, out, workspace, traceable=True)
    return out


@triton_op(add_op_namespace_prefix("gate_up_geglu"), mutates_args=())
@_OpBody
def gate_up_geglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate: Optional[torch.Tensor],
                  b_up: Optional[torch.Tensor], approximate: str) -> torch.Tensor:
    check_mlp_decode(x, w_gate, w_up, b_gate, b_up)
    check_approximate(approximate)
    return gate_up_geglu_impl(x, w_gate, w_up, b_gate, b_up, approximate, traceable=route(x) != DIRECT)


@gate_up_geglu.register_fake
def _(x, w_gate, w_up, b_gate, b_up, approximate):
    return x.new_empty((x.shape[0], w_gate.shape[0]))


@triton_op(add_op_namespace_prefix("mlp_decode"), mutates_args=())
@_OpBody
def mlp_decode(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
               b_gate: Optional[torch.Tensor], b_up: Optional[torch.Tensor], b_down: Optional[torch.Tensor],
               approximate: str) -> torch.Tensor:
    check_mlp_decode(x, w_gate, w_up, b_gate, b_up, w_down, b_down, max_rows=MAX_ROWS)
    check_approximate(approximate)
    return mlp_decode_impl(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate, traceable=route(x) != DIRECT)


@mlp_decode.register_fake
def _(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate):
    return x.new_empty((x.shape[0], w_down.shape[0]))


def mlp_inference_impl(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate):
    """The whole MLP on x [T, H] (unit column stride), the path chosen on the real token count:
    both fused kernels up to the table's `max_rows` tokens, the gate/up kernel and cuBLAS's down
    projection up to `gate_up_max_rows`, else cuBLAS projections and the pointwise kernel."""
    if not use_triton(x):
        return F.linear(_torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate), w_down, b_down)
    device_index = x.get_device() if x.is_cuda else -1
    widths_fit = not (x.shape[1] % FUSED_WIDTH_MULTIPLE or w_gate.shape[0] % FUSED_WIDTH_MULTIPLE)
    fusable = x.dtype in FUSED_DTYPES and widths_fit
    limits = fused_token_limits(device_index) if fusable else None
    if limits is not None:
        both_rows, gate_up_rows = limits
        n_rows = x.shape[0]
        try:
            if n_rows <= both_rows and not torch.are_deterministic_algorithms_enabled():
                return run_mlp_decode(x, x.stride(0), w_gate, w_up, w_down, b_gate, b_up, b_down, approximate == "tanh",
                                      device_index)
            if n_rows <= gate_up_rows:
                return F.linear(gate_up_geglu_impl(x, w_gate, w_up, b_gate, b_up, approximate), w_down, b_down)
        except Exception as exc:  # noqa: BLE001 (any failure: the unfused path below still gives the answer)
            _give_up(exc)
    return _unfused_mlp(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate)


def _unfused_mlp(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate):
    """cuBLAS's three projections around the pointwise kernel (h written over the gate projection's
    fresh output)."""
    h = geglu_forward_over_gate_impl(F.linear(x, w_gate, b_gate), F.linear(x, w_up, b_up), approximate)
    return F.linear(h, w_down, b_down)


# Not a triton_op on purpose: torch.compile calls it as an opaque op, so its body picks the path on
# the token count at run time (a traced branch on T would guard and recompile across T).
@torch.library.custom_op(add_op_namespace_prefix("mlp_inference"), mutates_args=())
def mlp_inference(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                  b_gate: Optional[torch.Tensor], b_up: Optional[torch.Tensor], b_down: Optional[torch.Tensor],
                  approximate: str) -> torch.Tensor:
    check_mlp_decode(x, w_gate, w_up, b_gate, b_up, w_down, b_down)
    check_approximate(approximate)
    return mlp_inference_impl(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate)


@mlp_inference.register_fake
def _(x, w_gate, w_up, w_down, b_gate, b_up, b_down, approximate):
    return x.new_empty((x.shape[0], w_down.shape[0]))


_declare_kernels(gate_up_geglu, _gate_up_geglu_kernel)
_declare_kernels(mlp_decode, _gate_up_geglu_kernel, _down_split_k_kernel)


# --- the rule ---

def untouched(m: nn.Module, backward: bool = False) -> bool:
    """Calling m runs exactly its class's forward: no forward hooks or pre-hooks of its own and no
    other forward set on the instance (accelerate's hooks and hand patches do that; the class's own
    forward bound to m, which `kernels.kernelize` sets on every layer it has no kernel for, counts as
    its own); with `backward`, no backward hooks or pre-hooks of its own either. One function on
    purpose: it runs for every projection on every call, where each Python call costs host time."""
    if m._forward_hooks or m._forward_pre_hooks:
        return False
    forward = m.__dict__.get("forward")
    if forward is not None and (getattr(forward, "__func__", None) is not type(m).forward
                                or getattr(forward, "__self__", None) is not m):
        return False
    return not (backward and (m._backward_hooks or m._backward_pre_hooks))


def global_forward_hooks() -> bool:
    """Whether forward hooks or pre-hooks are registered for every module."""
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks)


def global_hooks() -> bool:
    """Whether hooks of any kind (forward, backward, pre-hooks) are registered for every module."""
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)


def plain_linears(modules, backward: bool = False) -> list | None:
    """[(weight, bias), ...] of modules that are each a plain nn.Linear whose call would be exactly
    F.linear(x, weight, bias): not a subclass (PEFT, quantized and parametrized linears are), no
    forward hooks or pre-hooks of its own, no forward set on the instance (accelerate's offload
    hooks and patched forwards; the class's own forward bound to it, as `kernels.kernelize` binds
    it, counts as its own), plain Parameters; with `backward` (training), no backward hooks either.
    None if any is not. Global hooks are the caller's to check. One flat function on purpose: the
    layers' inference calls it instead of three module calls, where each Python call costs host
    time (benchmarks/NOTES.md, session 17); `untouched` is the same check for any module."""
    found = []
    for p in modules:
        if type(p) is not nn.Linear or p._forward_hooks or p._forward_pre_hooks:
            return None
        if backward and (p._backward_hooks or p._backward_pre_hooks):
            return None
        forward = p.__dict__.get("forward")
        if forward is not None and (getattr(forward, "__func__", None) is not nn.Linear.forward
                                    or getattr(forward, "__self__", None) is not p):
            return None
        params = p._parameters
        w, b = params.get("weight"), params.get("bias")
        if type(w) is not nn.Parameter or (b is not None and type(b) is not nn.Parameter):
            return None
        found.append((w, b))
    return found


def _plain_linear(p: nn.Module | None, backward: bool = False) -> tuple | None:
    """`plain_linears` of one module: its (weight, bias), or None."""
    found = plain_linears((p,), backward)
    return None if found is None else found[0]


def _any_requires_grad(*modules: nn.Module | None) -> bool:
    return any(t is not None and t.requires_grad for m in modules if m is not None for t in m._parameters.values())


def _inactive_dropout(d: nn.Module | None) -> bool:
    """No dropout, or one that is the identity now (eval mode or p = 0) and has no hooks."""
    if d is None:
        return True
    if not isinstance(d, nn.Dropout) or not untouched(d):
        return False
    return not d.training or d.p == 0


def _usable(tensors, x, grad: bool) -> bool:
    """Same dtype and device as x, contiguous, and (when autograd records) not requiring grad."""
    for t in tensors:
        if t.dtype != x.dtype or t.device != x.device or not t.is_contiguous() or (grad and t.requires_grad):
            return False
    return True


def _row_layout(x: torch.Tensor, hidden: int) -> tuple | None:
    """(x itself where contiguous, else its 2-D row view; the row stride) for the fused kernels,
    which take rows of unit column stride; None where x has no such layout."""
    if x.is_contiguous():
        return x, hidden
    x2 = row_view(x)
    return None if x2 is None else (x2, x2.stride(0))


def _compile_may_fuse(device_index: int) -> bool:
    # Called by Dynamo while it traces, its answer kept in the graph: the table lookup behind it
    # (the device's name) is nothing Dynamo can trace.
    return fused_mlp_enabled(device_index)


# What torch.compiler.assume_constant_result sets; that function imports torch._dynamo (and with
# it torch._inductor, over a second) at the kernel's load. A test plants an untraceable lookup
# behind it, so a torch that stops reading this marker fails there, not in users' graphs.
_compile_may_fuse._dynamo_marked_constant = True


def _gate_up_weights(gate_up: list, hidden: int) -> tuple | None:
    """(wg, wu, bg, bu, params) of `plain_linears`' answer for the separate gate and up projections,
    or for one packed projection (its halves, read in place), where they fit inputs of `hidden`
    features; None where they do not. `params`: the Parameters themselves, for `_usable`."""
    if len(gate_up) == 1:
        (w, b), = gate_up
        inter = w.shape[0] // 2
        wg, wu = w[:inter], w[inter:]
        bg, bu = (None, None) if b is None else (b[:inter], b[inter:])
        params = (w,) if b is None else (w, b)
    else:
        (wg, bg), (wu, bu) = gate_up
        params = (wg, wu) if bg is None else (wg, wu, bg, bu)
    if (bg is None) != (bu is None) or wg.shape != wu.shape or wg.shape[1] != hidden:
        return None
    return wg, wu, bg, bu, params


def _fused_mlp_compiled(x, approximate, gate_proj, up_proj, down_proj, dropout) -> torch.Tensor | None:
    """The rule while torch.compile traces the layer: the same conditions as in eager (module types,
    hooks, dropout, dtype, autocast, autograd), all of which Dynamo guards on, then the opaque
    `mlp_inference` op for any token count; the token count itself is not looked at."""
    if x.dtype not in FUSED_DTYPES or not (x.is_cuda or (x.device.type == "cpu" and INTERPRET)):
        return None
    if not _compile_may_fuse(x.get_device() if x.is_cuda else -1) or global_forward_hooks():
        return None
    gate_up = plain_linears((gate_proj,) if up_proj is None else (gate_proj, up_proj))
    found = None if gate_up is None else _gate_up_weights(gate_up, x.shape[-1])
    down = _plain_linear(down_proj)
    if found is None or down is None or not _inactive_dropout(dropout) or torch.is_autocast_enabled(x.device.type):
        return None
    wg, wu, bg, bu, params = found
    wd, bd = down
    grad = torch.is_grad_enabled()
    if wd.shape != (x.shape[-1], wg.shape[0]) or (grad and x.requires_grad) or x.stride(-1) != 1:
        return None
    if not _usable(params, x, grad) or not _usable(down if bd is not None else (wd,), x, grad):
        return None
    y = mlp_inference(x.reshape(-1, x.shape[-1]), wg, wu, wd, bg, bu, bd, approximate)
    return y.view(*x.shape[:-1], wd.shape[0])


# --- training: F.linear for gate and up, then one autograd node for the GeGLU and down ---

class _GeGLUDown(torch.autograd.Function):
    """y = down(gelu(g) * u) as one autograd node, for the layers' eager training: g and u come from
    F.linear (autograd's own C++ nodes, as nn.Linear's), the GeGLU from the pointwise kernels, the
    down projection from cuBLAS. One Python node where the modules' path records the GeGLU node and
    three nn.Linear calls: the host time that bounds eager training steps. Saves g and u only: h is
    recomputed in the backward for the down projection's weight gradient (one [T, I] activation
    per layer less than the modules' path). dg and du are written over g and u, which no one else
    holds, and leave the node as its gradients, so autograd frees each once its projection's
    backward has used it."""

    @staticmethod
    def forward(ctx, g, u, w_down, b_down, approximate):
        ctx.save_for_backward(g, u, w_down)
        ctx.approximate = approximate
        return F.linear(geglu_forward_impl(g, u, approximate), w_down, b_down)

    @staticmethod
    def backward(ctx, dy):
        g, u, w_down = ctx.saved_tensors
        need_g, need_u, need_wd, need_bd, _ = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph=True (a gradient penalty, a Hessian-vector product): the kernels have no
            # backward of their own, so the gradients come from eager's ops on the saved inputs,
            # differentiable again.
            inputs = [t for t, need in ((g, need_g), (u, need_u), (w_down, need_wd)) if need]
            grads = iter(())
            if inputs:
                y = F.linear(F.gelu(g, approximate=ctx.approximate) * u, w_down)
                grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
            d_b_down = dy.reshape(-1, dy.shape[-1]).sum(0) if need_bd else None
            return (next(grads) if need_g else None, next(grads) if need_u else None,
                    next(grads) if need_wd else None, d_b_down, None)
        dy2 = dy.reshape(-1, dy.shape[-1])
        d_w_down = d_b_down = None
        if need_wd:
            h = geglu_forward_impl(g, u, ctx.approximate)
            d_w_down = dy2.t().mm(h.view(-1, h.shape[-1]))
            del h  # before the [T, I] gradient below
        if need_bd:
            d_b_down = dy2.sum(0)
        if not (need_g or need_u):
            return None, None, d_w_down, d_b_down, None
        dh = dy2.mm(w_down).view(g.shape)
        geglu_backward_in_place_impl(dh, g, u, ctx.approximate)  # g, u now hold dg, du
        for t in (g, u):  # as the dispatcher does for a mutating op: a second backward raises
            torch.autograd.graph.increment_version(t)
        return g if need_g else None, u if need_u else None, d_w_down, d_b_down, None


_apply_geglu_down = c_apply(_GeGLUDown)


def _mlp_training(x: torch.Tensor, approximate: str, gate_proj: nn.Module, up_proj: nn.Module | None,
                  down_proj: nn.Module, dropout: nn.Module | None) -> torch.Tensor | None:
    """F.linear for gate and up, then the `_GeGLUDown` node, where that computes exactly what the
    modules would: separate plain projections (no hooks of any kind, module or global), no active
    dropout, no autocast, plain eager tensors of one dtype and device the pointwise kernels run on.
    None otherwise."""
    if up_proj is None or route(x) == OP or x.dtype not in SUPPORTED_DTYPES or not use_triton(x):
        return None
    if (global_hooks() or not _inactive_dropout(dropout)
            or torch.is_autocast_enabled(x.device.type)):
        return None
    found = plain_linears((gate_proj, up_proj, down_proj), backward=True)
    if found is None:
        return None
    (wg, bg), (wu, bu), (wd, bd) = found
    hidden = x.shape[-1]
    if (bg is None) != (bu is None) or wg.shape != wu.shape or wg.shape[1] != hidden:
        return None
    if wd.shape != (hidden, wg.shape[0]):
        return None
    for t in (wg, wu, wd, bg, bu, bd):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            return None
    if not x.numel():
        return None
    if bd is not None:
        bd = unwrap_if_dead(bd)
    return _apply_geglu_down(F.linear(x, wg, bg), F.linear(x, wu, bu), unwrap_if_dead(wd), bd, approximate)


def fused_inference(x: torch.Tensor, approximate: str, gate_proj: nn.Module, up_proj: nn.Module | None,
                    down_proj: nn.Module, dropout: nn.Module | None = None) -> torch.Tensor | None:
    """`fused_mlp`'s eager inference, as one flat function: a model decoding in plain calls is bound
    by its host time, of which every check and Python call here is part (benchmarks/NOTES.md,
    sessions 15-18). The caller has checked global hooks and that autograd records nothing. Both
    fused kernels where the down projection is plain and nothing stands between (dropout,
    deterministic algorithms); else the gate/up kernel, then the dropout module and the down
    projection (F.linear on a plain one's weights: what calling it computes). None where the fused
    kernels do not apply (a touched gate or up projection, another dtype, device or layout, a mode,
    autocast, past the launch table's token counts)."""
    if FUSED_OFF or x.dtype not in FUSED_DTYPES or type(x) is not torch.Tensor:
        return None
    if x.is_cuda:
        device_index = x.get_device()
        autocast = torch.is_autocast_enabled("cuda")
    elif use_triton(x):
        device_index, autocast = -1, torch.is_autocast_enabled(x.device.type)
    else:
        return None
    name = measured_table(device_index)
    if autocast or (name is None and not FUSED_OPT_IN) or transforms_active() or torch._C._len_torch_dispatch_stack():
        return None
    hidden = x.shape[-1]
    n_rows = x.numel() // hidden if hidden else 0
    both_rows, gate_up_rows = table_rows(name)
    if not 0 < n_rows <= max(both_rows, gate_up_rows):
        return None
    projections = (gate_proj, down_proj) if up_proj is None else (gate_proj, up_proj, down_proj)
    found = plain_linears(projections)  # the common case: one call for all of them
    if found is None:
        found = plain_linears(projections[:-1])
        if found is None:
            return None
        found.append(None)  # a touched down projection: called as its module after the gate/up kernel
    down = found.pop()
    weights = _gate_up_weights(found, hidden)
    if weights is None:
        return None
    wg, wu, bg, bu, params = weights
    inter = wg.shape[0]
    if hidden % FUSED_WIDTH_MULTIPLE or inter % FUSED_WIDTH_MULTIPLE or not _usable(params, x, False):
        return None
    rows = _row_layout(x, hidden)
    if rows is None:
        return None
    x2, stride_x = rows
    try:
        if (down is not None and n_rows <= both_rows and _inactive_dropout(dropout)
                and not torch._C._get_deterministic_algorithms() and down[0].shape == (hidden, inter)
                and _usable(down if down[1] is not None else down[:1], x, False)):
            y = run_mlp_decode(x2, stride_x, wg, wu, down[0], bg, bu, down[1], approximate == "tanh", device_index)
            return y if x2 is x else y.view(x.shape)
        if n_rows > gate_up_rows:
            return None
        h = gate_up_geglu_impl(x2.view(n_rows, hidden) if x2 is x else x2, wg, wu, bg, bu, approximate)
    except Exception as exc:  # noqa: BLE001 (any failure: the modules' path still gives the answer)
        return _give_up(exc)
    h = h.view(*x.shape[:-1], inter)
    if dropout is not None:
        h = dropout(h)
    return down_proj(h) if down is None else F.linear(h, *down)


def fused_mlp(x: torch.Tensor, approximate: str, gate_proj: nn.Module, up_proj: nn.Module | None,
              down_proj: nn.Module, dropout: nn.Module | None = None, eager: bool | None = None) -> torch.Tensor | None:
    """down_proj(dropout(gelu(gate(x)) * up(x))) through the fused kernels, or None where they do not
    apply (the caller then runs its unfused path). `up_proj` None: `gate_proj` is one
    packed projection whose output's first half is the gate and second half the up (ModernBERT).
    eager: the caller's `not torch.compiler.is_compiling()` (None: looked up here).
    Every check reads state the user can change between calls (hooks, modes, dtypes), so none is
    cached; the eager inference path is one flat function (`fused_inference`)."""
    if FUSED_OFF or not (FUSED_OPT_IN or MEASURED_DEVICES):  # no table anywhere, no opt-in: one check
        return None
    if eager is None:
        eager = not torch.compiler.is_compiling()
    if not eager:
        return _fused_mlp_compiled(x, approximate, gate_proj, up_proj, down_proj, dropout)
    if torch.is_grad_enabled() and (x.requires_grad or _any_requires_grad(gate_proj, up_proj, down_proj)):
        return _mlp_training(x, approximate, gate_proj, up_proj, down_proj, dropout)
    if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
        return None
    return fused_inference(x, approximate, gate_proj, up_proj, down_proj, dropout)
