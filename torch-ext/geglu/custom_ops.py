"""Torch custom ops for GeGLU: registration, fake (meta) implementations, autograd.

Ops (names pass through `add_op_namespace_prefix`, so two builds can coexist):
  geglu_forward(gate, up, approximate, backward_in_place) -> h       (autograd)
  geglu_backward(grad, gate, up, approximate) -> (dgate, dup)
  geglu_backward_in_place(grad, gate, up, approximate) -> None       (dgate, dup into gate, up)
  geglu_packed_forward(x, approximate, backward_in_place) -> h       (autograd; x = [..., 2I])
  geglu_packed_backward(grad, x, approximate) -> dx
  geglu_packed_backward_in_place(grad, x, approximate) -> None       (dx into x)
  geglu_packed_forward_out(out, x, approximate) -> None              (writes out)

backward_in_place=True makes the backward write the gradients over the saved inputs, as
Liger does: one [T, I] buffer less at the peak of a training step. Only the layers use it,
for the projections they compute themselves (no one else holds those tensors); the public
functions never modify their inputs. The saved inputs' version is bumped, so a second
backward through the same graph fails loudly instead of reading overwritten values.

CUDA/ROCm/XPU tensors, and CPU tensors under TRITON_INTERPRET=1, run the Triton
kernels; plain CPU tensors run `_torch_*` below, the same math and rounding points
in PyTorch, so the torch-cpu variant is a working CPU implementation.

Each op body is a `*_impl` function. The public functions and layers call the impl
directly when nothing needs the dispatcher (`eager_fast_path`: no autograd, no tracing),
which saves the custom-op dispatch, tens of microseconds that decide small-token calls.
"""

import inspect
import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake
from torch._library.triton import triton_ops_to_kernels
from torch.library import triton_op

from ._ops import add_op_namespace_prefix
from .kernel_src import launch_geglu_backward, launch_geglu_forward
from .kernel_src.geglu_pointwise import _geglu_backward_kernel, _geglu_forward_kernel

from .checks import check_approximate, check_gate_up, check_out, check_packed, row_view


# Devices the Triton kernels run on (ROCm tensors are "cuda" tensors in PyTorch).
TRITON_DEVICES = ("cuda", "xpu")
_warned_devices: set[str] = set()


def _use_triton(t: torch.Tensor) -> bool:
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


def _functorch_active() -> bool:
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active and active())


def eager_fast_path(*tensors: torch.Tensor) -> bool:
    """True when a call may skip the op dispatcher: plain tensors (tracing and tensor
    subclasses such as fake, functional or distributed tensors go through the op; so do meta
    tensors, which the registered fake implementations answer), no autograd needed, and no
    torch.compile or functorch transform active."""
    for t in tensors:
        if type(t) is not torch.Tensor or t.is_meta or (t.requires_grad and torch.is_grad_enabled()):
            return False
    return not (torch.compiler.is_compiling() or _functorch_active())


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


# --- op bodies ---

def geglu_forward_impl(gate, up, approximate, traceable=False):
    if not _use_triton(gate):
        return _torch_forward(gate, up, approximate)
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    launch_geglu_forward(_rows(gate), _rows(up), _rows(out), approximate == "tanh", traceable=traceable)
    return out


def geglu_backward_impl(grad, gate, up, approximate, traceable=False):
    if not _use_triton(gate):
        return _torch_backward(grad, gate, up, approximate)
    grad_gate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    grad_up = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    launch_geglu_backward(
        _rows(grad), _rows(gate), _rows(up), _rows(grad_gate), _rows(grad_up), approximate == "tanh",
        traceable=traceable,
    )
    return grad_gate, grad_up


def geglu_backward_in_place_impl(grad, gate, up, approximate, traceable=False):
    g2, u2 = row_view(gate), row_view(up)
    if not _use_triton(gate) or g2 is None or u2 is None:
        # No row view to write through (or no Triton): compute aside, then copy over the inputs.
        grad_gate, grad_up = geglu_backward_impl(grad, gate, up, approximate, traceable)
        gate.copy_(grad_gate), up.copy_(grad_up)
        return
    launch_geglu_backward(_rows(grad), g2, u2, g2, u2, approximate == "tanh", traceable=traceable)


def geglu_packed_forward_out_impl(out, x, approximate, traceable=False):
    if not _use_triton(x):
        d = x.shape[-1] // 2
        out.copy_(_torch_forward(x[..., :d], x[..., d:], approximate))
        return out
    gate, up = _halves(x)
    launch_geglu_forward(gate, up, _rows(out), approximate == "tanh", traceable=traceable)
    return out


def geglu_packed_forward_impl(x, approximate, traceable=False):
    d = x.shape[-1] // 2
    if not _use_triton(x):
        return _torch_forward(x[..., :d], x[..., d:], approximate)
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype, device=x.device)
    return geglu_packed_forward_out_impl(out, x, approximate, traceable)


def geglu_packed_backward_impl(grad, x, approximate, traceable=False):
    d = x.shape[-1] // 2
    if not _use_triton(x):
        return torch.cat(_torch_backward(grad, x[..., :d], x[..., d:], approximate), dim=-1)
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gate, up = _halves(x)
    grad_gate, grad_up = _halves(grad_x)
    launch_geglu_backward(_rows(grad), gate, up, grad_gate, grad_up, approximate == "tanh", traceable=traceable)
    return grad_x


def geglu_packed_backward_in_place_impl(grad, x, approximate, traceable=False):
    x2 = row_view(x)
    if not _use_triton(x) or x2 is None:
        x.copy_(geglu_packed_backward_impl(grad, x, approximate, traceable))
        return
    d = x2.shape[-1] // 2
    gate, up = x2[:, :d], x2[:, d:]
    launch_geglu_backward(_rows(grad), gate, up, gate, up, approximate == "tanh", traceable=traceable)


# --- registration ---
#
# triton_op reads each op body's source at decoration time to find the Triton kernels it launches
# (for the AOTAutograd cache key), and that parse imports torch._inductor: over a second of every
# load. Op bodies are therefore wrapped in _OpBody, whose source inspect cannot read, and the
# kernels each op launches are declared in _declare_kernels instead.

class _OpBody:
    """fn, callable with fn's signature and annotations (schema inference reads them), but no
    readable source (`inspect.getsource` raises TypeError for an instance)."""

    def __init__(self, fn):
        self._fn = fn
        self.__signature__ = inspect.signature(fn)
        self.__name__, self.__qualname__, self.__module__ = fn.__name__, fn.__qualname__, fn.__module__
        self.__doc__, self.__annotations__, self.__globals__ = fn.__doc__, fn.__annotations__, fn.__globals__

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


def _declare_kernels(op, *kernels) -> None:
    triton_ops_to_kernels[op._qualname] = list(kernels)


# --- separate gate / up ---

@triton_op(add_op_namespace_prefix("geglu_forward"), mutates_args=())
@_OpBody
def geglu_forward(gate: torch.Tensor, up: torch.Tensor, approximate: str, backward_in_place: bool) -> torch.Tensor:
    return geglu_forward_impl(gate, up, approximate, traceable=True)


@triton_op(add_op_namespace_prefix("geglu_backward"), mutates_args=())
@_OpBody
def geglu_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, approximate: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return geglu_backward_impl(grad, gate, up, approximate, traceable=True)


@triton_op(add_op_namespace_prefix("geglu_backward_in_place"), mutates_args={"gate", "up"})
@_OpBody
def geglu_backward_in_place(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, approximate: str) -> None:
    geglu_backward_in_place_impl(grad, gate, up, approximate, traceable=True)


@geglu_backward_in_place.register_fake
def _(grad, gate, up, approximate):
    return None


@geglu_forward.register_fake
def _(gate, up, approximate, backward_in_place):
    return torch.empty_like(gate, memory_format=torch.contiguous_format)


@geglu_backward.register_fake
def _(grad, gate, up, approximate):
    return (torch.empty_like(gate, memory_format=torch.contiguous_format),
            torch.empty_like(gate, memory_format=torch.contiguous_format))


def _setup_separate(ctx, inputs, output):
    gate, up, approximate, backward_in_place = inputs
    ctx.save_for_backward(gate, up)
    ctx.approximate = approximate
    ctx.backward_in_place = backward_in_place


def _backward_separate(ctx, grad):
    gate, up = ctx.saved_tensors
    fast = eager_fast_path(grad, gate, up)
    if ctx.backward_in_place:
        if fast:
            geglu_backward_in_place_impl(grad, gate, up, ctx.approximate)
            _bump_versions(gate, up)
        else:
            geglu_backward_in_place(grad, gate, up, ctx.approximate)
        return gate, up, None, None
    grad_gate, grad_up = (geglu_backward_impl if fast else geglu_backward)(grad, gate, up, ctx.approximate)
    return grad_gate, grad_up, None, None


def _bump_versions(*tensors):
    # What the dispatcher does for a mutating op; the fast path writes through Triton directly.
    for t in tensors:
        torch.autograd.graph.increment_version(t)


geglu_forward.register_autograd(_backward_separate, setup_context=_setup_separate)
_declare_kernels(geglu_forward, _geglu_forward_kernel)
_declare_kernels(geglu_backward, _geglu_backward_kernel)
_declare_kernels(geglu_backward_in_place, _geglu_backward_kernel)


# --- packed [..., 2I]: activation on the first half ---

@triton_op(add_op_namespace_prefix("geglu_packed_forward"), mutates_args=())
@_OpBody
def geglu_packed_forward(x: torch.Tensor, approximate: str, backward_in_place: bool) -> torch.Tensor:
    return geglu_packed_forward_impl(x, approximate, traceable=True)


@triton_op(add_op_namespace_prefix("geglu_packed_forward_out"), mutates_args={"out"})
@_OpBody
def geglu_packed_forward_out(out: torch.Tensor, x: torch.Tensor, approximate: str) -> None:
    geglu_packed_forward_out_impl(out, x, approximate, traceable=True)


@triton_op(add_op_namespace_prefix("geglu_packed_backward"), mutates_args=())
@_OpBody
def geglu_packed_backward(grad: torch.Tensor, x: torch.Tensor, approximate: str) -> torch.Tensor:
    return geglu_packed_backward_impl(grad, x, approximate, traceable=True)


@triton_op(add_op_namespace_prefix("geglu_packed_backward_in_place"), mutates_args={"x"})
@_OpBody
def geglu_packed_backward_in_place(grad: torch.Tensor, x: torch.Tensor, approximate: str) -> None:
    geglu_packed_backward_in_place_impl(grad, x, approximate, traceable=True)


@geglu_packed_backward_in_place.register_fake
def _(grad, x, approximate):
    return None


@geglu_packed_forward.register_fake
def _(x, approximate, backward_in_place):
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


@geglu_packed_forward_out.register_fake
def _(out, x, approximate):
    return None


@geglu_packed_backward.register_fake
def _(grad, x, approximate):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_packed(ctx, inputs, output):
    x, approximate, backward_in_place = inputs
    ctx.save_for_backward(x)
    ctx.approximate = approximate
    ctx.backward_in_place = backward_in_place


def _backward_packed(ctx, grad):
    (x,) = ctx.saved_tensors
    fast = eager_fast_path(grad, x)
    if ctx.backward_in_place:
        if fast:
            geglu_packed_backward_in_place_impl(grad, x, ctx.approximate)
            _bump_versions(x)
        else:
            geglu_packed_backward_in_place(grad, x, ctx.approximate)
        return x, None, None
    return (geglu_packed_backward_impl if fast else geglu_packed_backward)(grad, x, ctx.approximate), None, None


geglu_packed_forward.register_autograd(_backward_packed, setup_context=_setup_packed)
_declare_kernels(geglu_packed_forward, _geglu_forward_kernel)
_declare_kernels(geglu_packed_forward_out, _geglu_forward_kernel)
_declare_kernels(geglu_packed_backward, _geglu_backward_kernel)
_declare_kernels(geglu_packed_backward_in_place, _geglu_backward_kernel)


# --- entry points for the public API and layers: checked inputs, fast path when eager ---

def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str, backward_in_place: bool = False) -> torch.Tensor:
    check_approximate(approximate)
    check_gate_up(gate, up)
    if eager_fast_path(gate, up):
        return geglu_forward_impl(gate, up, approximate)
    return geglu_forward(gate, up, approximate, backward_in_place)


def geglu_packed(x: torch.Tensor, approximate: str, backward_in_place: bool = False) -> torch.Tensor:
    check_packed(x)
    if eager_fast_path(x):
        return geglu_packed_forward_impl(x, approximate)
    return geglu_packed_forward(x, approximate, backward_in_place)


def geglu_packed_out(out: torch.Tensor, x: torch.Tensor, approximate: str, name: str) -> torch.Tensor:
    check_packed(x)
    check_out(out, x)
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        # As PyTorch's own out= functions: the result would silently leave the autograd graph.
        raise RuntimeError(
            f"{name}(out, x): out= functions do not support automatic differentiation, and "
            f"{'x' if x.requires_grad else 'out'} requires grad; use geglu.layers."
            f"{'GeluTanhAndMul' if approximate == 'tanh' else 'GeluAndMul'}()(x) (or geglu.geglu on the halves), "
            "or call it under torch.no_grad()")
    if eager_fast_path(out, x):
        return geglu_packed_forward_out_impl(out, x, approximate)
    geglu_packed_forward_out(out, x, approximate)
    return out
