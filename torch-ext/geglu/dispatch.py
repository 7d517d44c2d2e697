"""Which implementation a call gets, and the op bodies.

- The path rule (`route`): a call on plain tensors outside any tracing (no torch.compile,
  functorch transform or dispatch mode) skips the op dispatcher (the op body directly, or eager
  autograd over it); everything else (fake, functional, distributed, meta tensors) goes through
  the registered ops.
- The device rule (`use_triton`): CUDA/ROCm/XPU tensors, and CPU tensors under
  TRITON_INTERPRET=1, run the Triton kernels; plain CPU tensors run `_torch_*` below, the same
  math and rounding points in PyTorch, so the torch-cpu variant is a working CPU implementation.
- The op bodies (`*_impl`), on the row views every launch works on. An untraced call on CUDA
  tensors finds its launch plan by the tensors' shape, strides, dtype and device in one dict
  lookup (`_plans`), so a steady-state call costs an allocation and a direct launch.
"""

import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake
from torch.autograd import forward_ad as _forward_ad

from .checks import row_view
from .kernel_src import launch_geglu_backward, launch_geglu_forward
from .kernel_src.launch import launch
from .kernel_src.pointwise import plan

# Devices the Triton kernels run on (ROCm tensors are "cuda" tensors in PyTorch).
TRITON_DEVICES = ("cuda", "xpu")
_warned_devices: set[str] = set()


def use_triton(t: torch.Tensor) -> bool:
    if t.is_cuda:
        return True
    kind = t.device.type
    if kind in TRITON_DEVICES:
        return True
    if kind == "cpu":
        # Interpreted kernels are plain Python: they cannot run on the fake tensors that
        # torch.compile / opcheck trace with, so a traced CPU graph holds the PyTorch
        # implementation (same math) instead.
        return os.environ.get("TRITON_INTERPRET") == "1" and not is_fake(t)
    if kind not in _warned_devices and kind != "meta":
        _warned_devices.add(kind)
        warnings.warn(f"geglu: no Triton kernel for {kind} tensors; running the PyTorch implementation "
                      "(eager's math and rounding) instead", RuntimeWarning, stacklevel=3)
    return False


# Bound once: `route` runs on every call (functorch transforms are a torch 2.x C binding).
_functorch_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None) or (lambda: False)


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, ...) or a forward-mode AD dual level
    (`torch.autograd.forward_ad.dual_level`) is active: both need every op of the computation to
    carry their rules (batching, tangents), which a Triton kernel does not. Unchecked, an op body on
    a dual tensor would return a result without its tangent, silently."""
    return _functorch_transforms_active() or _forward_ad._current_level >= 0


def has_tangent(t: torch.Tensor) -> bool:
    """Whether t is a dual tensor of the active forward-mode AD level (it carries a tangent)."""
    return _forward_ad._current_level >= 0 and _forward_ad.unpack_dual(t).tangent is not None


OP, DIRECT, AUTOGRAD = 0, 1, 2  # the routes of `route`


def route(*tensors: torch.Tensor) -> int:
    """Which path a call on these tensors takes. OP, through the registered op: tracing and tensor
    subclasses (fake, functional, distributed tensors), meta tensors (the registered fake
    implementations answer them), torch.compile, torch.func transforms and forward-mode AD
    (`transforms_active`), and dispatch modes (make_fx, FlopCounterMode must see the op).
    Otherwise plain eager tensors: DIRECT (the op body, no autograd needed) or AUTOGRAD (eager
    with autograd)."""
    grad = False
    for t in tensors:
        if type(t) is not torch.Tensor or t.is_meta:
            return OP
        grad = grad or t.requires_grad
    if torch.compiler.is_compiling() or transforms_active() or torch._C._len_torch_dispatch_stack():
        return OP
    return AUTOGRAD if grad and torch.is_grad_enabled() else DIRECT


def c_apply(function: type[torch.autograd.Function]):
    """`function.apply` without its Python wrapper, which binds default arguments and checks for
    functorch transforms on every call (~3 us of host time): the C apply that wrapper ends in, for
    calls `route` sent to AUTOGRAD (no transform active). Callers pass their tensors through
    `unwrap_if_dead`, the wrapper's one step for such calls. `function.apply` where this torch has
    no C apply to bind."""
    base = getattr(torch._C, "_FunctionBase", None)
    c_apply_method = vars(base).get("apply") if base is not None else None
    if c_apply_method is None or not hasattr(c_apply_method, "__get__"):
        return function.apply
    return c_apply_method.__get__(None, function)


try:  # what Function.apply does to each tensor outside functorch transforms
    from torch._C._functorch import unwrap_if_dead
except ImportError:
    def unwrap_if_dead(t):
        return t


def eager_fast_path(*tensors: torch.Tensor) -> bool:
    """Plain eager tensors and no autograd needed: the op body may be called directly."""
    return route(*tensors) == DIRECT


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A 2-D [rows, last] view; a contiguous copy only if the layout cannot be viewed so
    (for inputs only: writes into a copy would be lost)."""
    view = row_view(t)
    return view if view is not None else t.contiguous().view(math.prod(t.shape[:-1]), t.shape[-1])


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = _rows(x)
    d = x2.shape[-1] // 2
    return x2[:, :d], x2[:, d:]


# --- PyTorch implementation for plain CPU tensors (same rounding points as the kernels) ---

def _torch_gelu(gate, approximate):
    # aten's CPU gelu gives NaN for +inf in contiguous tensors (its vectorized path) but +inf in
    # strided ones: take the limit, gelu(+inf) = +inf, in every layout.
    return torch.where(gate == torch.inf, gate, F.gelu(gate, approximate=approximate))


def _torch_forward(gate, up, approximate):
    return _torch_gelu(gate, approximate) * up


# Beyond this magnitude gelu' is exactly 1 or 0 in every supported dtype; clamping finite gates
# there keeps aten's tanh gelu_backward from overflowing x^3 into NaN (it does for |x| > 1.8e19).
_GRAD_CLAMP = 1e4


def _torch_backward(grad, gate, up, approximate):
    grad_up = grad * _torch_gelu(gate, approximate)
    where = gate
    if approximate == "tanh":
        where = torch.where(gate.isfinite(), gate.clamp(-_GRAD_CLAMP, _GRAD_CLAMP), gate)
    grad_gate = torch.ops.aten.gelu_backward(grad * up, where, approximate=approximate)
    return grad_gate, grad_up


# --- launch plans of untraced CUDA calls, by the tensors' layout ---

_plans: dict = {}
_MAX_PLANS = 4096
_NOT_PLANNED = None  # a layout without row views (or empty): the general path


def _planned(key, backward: bool, approximate: str, shape, strides: tuple[int, ...], dtype, device_index: int):
    """The plan for tensors of this shape whose row views have these row strides; _NOT_PLANNED
    when a layout has no row view or nothing to compute."""
    n_cols = shape[-1]
    n_rows = math.prod(shape[:-1])
    entry = _NOT_PLANNED
    if n_rows and n_cols and None not in strides:
        entry = plan(backward, n_rows, n_cols, strides, dtype, approximate == "tanh", device_index)
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    _plans[key] = entry
    return entry


def _row_stride(t: torch.Tensor) -> int | None:
    view = row_view(t)
    return None if view is None else view.stride(0)


def _plan_forward(key, gate, up, approximate: str, over_gate: bool):
    """The forward's plan (a miss of `key` in `_plans`), h written into a fresh contiguous tensor
    or (over_gate) over gate."""
    g = _row_stride(gate)
    return _planned(key, False, approximate, gate.shape, (g, _row_stride(up), g if over_gate else gate.shape[-1]),
                    gate.dtype, gate.get_device())


def _plan_backward(key, grad, gate, up, approximate: str, in_place: bool):
    """The backward's plan (a miss of `key` in `_plans`), the gradients written into fresh
    contiguous tensors or (in_place) over gate and up."""
    g, u = _row_stride(gate), _row_stride(up)
    outputs = (g, u) if in_place else (gate.shape[-1],) * 2
    return _planned(key, True, approximate, gate.shape, (_row_stride(grad), g, u, *outputs), gate.dtype,
                    gate.get_device())


# --- op bodies ---

def geglu_forward_impl(gate, up, approximate, traceable=False):
    if not traceable and gate.is_cuda:
        # Plan lookups inline, not in a helper: each Python call is host time on every launch (and
        # about twice its main-thread price on autograd's device thread, benchmarks/NOTES.md).
        key = (gate.shape, gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, False)
        entry = _plans.get(key, False)
        if entry is False:
            entry = _plan_forward(key, gate, up, approximate, False)
        if entry is not _NOT_PLANNED:
            # empty_like: a third of torch.empty(shape, dtype=, device=)'s host time (no keyword parsing)
            out = torch.empty_like(gate, memory_format=torch.contiguous_format)
            launch(entry, gate, up, out)
            return out
    if not use_triton(gate):
        return _torch_forward(gate, up, approximate)
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    launch_geglu_forward(_rows(gate), _rows(up), _rows(out), approximate == "tanh", traceable=traceable)
    return out


def geglu_forward_over_gate_impl(gate, up, approximate):
    """h = gelu(gate) * up written over gate, which the caller alone holds (a projection's fresh
    output inside a layer): one [T, I] allocation less, on the host (inside a model each call costs
    several times its loop price, benchmarks/NOTES.md) and at the memory peak. Returns h: gate
    itself where the kernels write it (each element is read before its own program writes it),
    a new tensor elsewhere (no row view, plain CPU tensors). Eager, untraced calls only."""
    if gate.is_cuda:
        key = (gate.shape, gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, True)
        entry = _plans.get(key, False)
        if entry is False:
            entry = _plan_forward(key, gate, up, approximate, True)
        if entry is not _NOT_PLANNED:
            launch(entry, gate, up, gate)
            return gate
    g2, u2 = row_view(gate), row_view(up)
    if not use_triton(gate) or g2 is None or u2 is None:
        return geglu_forward_impl(gate, up, approximate)
    launch_geglu_forward(g2, u2, g2, approximate == "tanh", traceable=False)
    return gate


def geglu_backward_impl(grad, gate, up, approximate, traceable=False):
    if not traceable and gate.is_cuda:
        key = (gate.shape, grad.stride(), gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, False)
        entry = _plans.get(key, False)
        if entry is False:
            entry = _plan_backward(key, grad, gate, up, approximate, False)
        if entry is not _NOT_PLANNED:
            grad_gate = torch.empty_like(gate, memory_format=torch.contiguous_format)
            grad_up = torch.empty_like(gate, memory_format=torch.contiguous_format)
            launch(entry, grad, gate, up, grad_gate, grad_up)
            return grad_gate, grad_up
    if not use_triton(gate):
        return _torch_backward(grad, gate, up, approximate)
    grad_gate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    grad_up = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    launch_geglu_backward(
        _rows(grad), _rows(gate), _rows(up), _rows(grad_gate), _rows(grad_up), approximate == "tanh",
        traceable=traceable,
    )
    return grad_gate, grad_up


# Gradients up to this many bytes each are made in the forward of an eager autograd call
# (`geglu_forward_prepared`): the host-bound sizes, where they hold next to no memory.
PREPARED_BACKWARD_MAX_BYTES = 1 << 18


def geglu_forward_prepared(gate, up, approximate):
    """(h, its prepared backward) for the eager autograd node of a small call: the backward's plan
    for a gradient laid out as h, that layout's strides, and the two gradient tensors, made here in
    the forward; None where that does not apply (larger than PREPARED_BACKWARD_MAX_BYTES, no row
    views, no Triton kernel). Autograd runs the backward on its device thread, where each Python
    step costs about twice its main-thread price (benchmarks/NOTES.md): the lookup and the two
    allocations cost less here. The price is their memory (at most twice
    PREPARED_BACKWARD_MAX_BYTES) from forward to backward."""
    out = geglu_forward_impl(gate, up, approximate)
    if gate.numel() * gate.element_size() > PREPARED_BACKWARD_MAX_BYTES or \
            not (gate.is_cuda or gate.device.type == "cpu" and use_triton(gate)):
        return out, None
    out_strides = out.stride()
    key = (gate.shape, out_strides, gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, False)
    entry = _plans.get(key, False)
    if entry is False:
        entry = _plan_backward(key, out, gate, up, approximate, False)
    if entry is _NOT_PLANNED:
        return out, None
    return out, (entry, out_strides, torch.empty_like(gate, memory_format=torch.contiguous_format),
                 torch.empty_like(gate, memory_format=torch.contiguous_format))


def geglu_backward_in_place_impl(grad, gate, up, approximate, traceable=False):
    if not traceable and gate.is_cuda:
        key = (gate.shape, grad.stride(), gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, True)
        entry = _plans.get(key, False)
        if entry is False:
            entry = _plan_backward(key, grad, gate, up, approximate, True)
        if entry is not _NOT_PLANNED:
            launch(entry, grad, gate, up, gate, up)
            return
    g2, u2 = row_view(gate), row_view(up)
    if not use_triton(gate) or g2 is None or u2 is None:
        # No row view to write through (or no Triton): compute aside, then copy over the inputs.
        grad_gate, grad_up = geglu_backward_impl(grad, gate, up, approximate, traceable)
        gate.copy_(grad_gate), up.copy_(grad_up)
        return
    launch_geglu_backward(_rows(grad), g2, u2, g2, u2, approximate == "tanh", traceable=traceable)


def geglu_packed_forward_out_impl(out, x, approximate, traceable=False):
    if not use_triton(x):
        d = x.shape[-1] // 2
        out.copy_(_torch_forward(x[..., :d], x[..., d:], approximate))
        return out
    gate, up = _halves(x)
    launch_geglu_forward(gate, up, _rows(out), approximate == "tanh", traceable=traceable)
    return out


def geglu_packed_forward_impl(x, approximate, traceable=False):
    d = x.shape[-1] // 2
    if not use_triton(x):
        return _torch_forward(x[..., :d], x[..., d:], approximate)
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype, device=x.device)
    return geglu_packed_forward_out_impl(out, x, approximate, traceable)


def geglu_packed_backward_impl(grad, x, approximate, traceable=False):
    d = x.shape[-1] // 2
    if not use_triton(x):
        return torch.cat(_torch_backward(grad, x[..., :d], x[..., d:], approximate), dim=-1)
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gate, up = _halves(x)
    grad_gate, grad_up = _halves(grad_x)
    launch_geglu_backward(_rows(grad), gate, up, grad_gate, grad_up, approximate == "tanh", traceable=traceable)
    return grad_x


def geglu_packed_backward_in_place_impl(grad, x, approximate, traceable=False):
    x2 = row_view(x)
    if not use_triton(x) or x2 is None:
        x.copy_(geglu_packed_backward_impl(grad, x, approximate, traceable))
        return
    d = x2.shape[-1] // 2
    gate, up = x2[:, :d], x2[:, d:]
    launch_geglu_backward(_rows(grad), gate, up, gate, up, approximate == "tanh", traceable=traceable)
