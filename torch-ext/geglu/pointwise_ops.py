"""The pointwise GeGLU ops: registration, fake (meta) implementations, autograd, and the entry
points the public functions and layers call.

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

Three paths, one autograd setup (`_Layout` + `_save` / `_backward`, shared by both layouts):
- eager, no autograd needed: the op body directly (`dispatch.eager_fast_path`);
- eager with autograd: a `torch.autograd.Function` (`_EagerGeGLU`) over the op bodies, which
  costs a fraction of the custom-op dispatch;
- anything traced or wrapped (torch.compile, functorch, dispatch modes, tensor subclasses such
  as DTensor, meta tensors): the registered ops, which torch.compile and opcheck see.
"""

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch._library.triton import triton_ops_to_kernels
from torch.library import triton_op

from ._ops import add_op_namespace_prefix
from .checks import APPROXIMATIONS, check_approximate, check_gate_up, check_out, check_packed
from .dispatch import (AUTOGRAD, DIRECT, OP, _torch_forward, c_apply, eager_fast_path,
                       geglu_backward_impl, geglu_backward_in_place_impl, geglu_forward_impl,
                       geglu_packed_backward_impl, geglu_packed_backward_in_place_impl, geglu_packed_forward_impl,
                       geglu_forward_prepared, geglu_packed_forward_out_impl, has_tangent, route, transforms_active,
                       unwrap_if_dead)
from .kernel_src.launch import launch
from .kernel_src.pointwise import _geglu_backward_kernel, _geglu_forward_kernel


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


def _op(name: str, mutates_args=(), kernel=None):
    """Register fn as the triton_op `name`. Its body launches untraced where its inputs are plain
    eager tensors (a direct call of the op, a DTensor's local shards) and through wrap_triton
    where they are traced."""

    def register(fn):
        op = triton_op(add_op_namespace_prefix(name), mutates_args=mutates_args)(_OpBody(fn))
        _declare_kernels(op, kernel)
        return op

    return register


def _traced(*tensors) -> bool:
    return route(*tensors) == OP


# --- separate gate / up ---

@_op("geglu_forward", kernel=_geglu_forward_kernel)
def geglu_forward(gate: torch.Tensor, up: torch.Tensor, approximate: str, backward_in_place: bool) -> torch.Tensor:
    return geglu_forward_impl(gate, up, approximate, traceable=_traced(gate, up))


@_op("geglu_backward", kernel=_geglu_backward_kernel)
def geglu_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, approximate: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return geglu_backward_impl(grad, gate, up, approximate, traceable=_traced(grad, gate, up))


@_op("geglu_backward_in_place", mutates_args={"gate", "up"}, kernel=_geglu_backward_kernel)
def geglu_backward_in_place(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, approximate: str) -> None:
    geglu_backward_in_place_impl(grad, gate, up, approximate, traceable=_traced(grad, gate, up))


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


# --- packed [..., 2I]: activation on the first half ---

@_op("geglu_packed_forward", kernel=_geglu_forward_kernel)
def geglu_packed_forward(x: torch.Tensor, approximate: str, backward_in_place: bool) -> torch.Tensor:
    return geglu_packed_forward_impl(x, approximate, traceable=_traced(x))


@_op("geglu_packed_forward_out", mutates_args={"out"}, kernel=_geglu_forward_kernel)
def geglu_packed_forward_out(out: torch.Tensor, x: torch.Tensor, approximate: str) -> None:
    geglu_packed_forward_out_impl(out, x, approximate, traceable=_traced(out, x))


@_op("geglu_packed_backward", kernel=_geglu_backward_kernel)
def geglu_packed_backward(grad: torch.Tensor, x: torch.Tensor, approximate: str) -> torch.Tensor:
    return geglu_packed_backward_impl(grad, x, approximate, traceable=_traced(grad, x))


@_op("geglu_packed_backward_in_place", mutates_args={"x"}, kernel=_geglu_backward_kernel)
def geglu_packed_backward_in_place(grad: torch.Tensor, x: torch.Tensor, approximate: str) -> None:
    geglu_packed_backward_in_place_impl(grad, x, approximate, traceable=_traced(grad, x))


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


# --- one autograd setup for both layouts ---

@dataclass(frozen=True)
class _Layout:
    """The backward of one input layout: the op bodies (eager) and the registered ops (traced)."""

    backward_impl: Callable
    backward_op: Callable
    in_place_impl: Callable
    in_place_op: Callable


_SEPARATE = _Layout(geglu_backward_impl, geglu_backward, geglu_backward_in_place_impl, geglu_backward_in_place)
_PACKED = _Layout(geglu_packed_backward_impl, geglu_packed_backward, geglu_packed_backward_in_place_impl,
                  geglu_packed_backward_in_place)


def _save(ctx, layout: _Layout, tensors, approximate: str, backward_in_place: bool) -> None:
    ctx.save_for_backward(*tensors)
    ctx.layout, ctx.approximate, ctx.backward_in_place = layout, approximate, backward_in_place


def _backward(ctx, grad, fast: bool | None = None) -> tuple:
    """The gradients of the saved inputs (gate, up or x), then None for approximate and
    backward_in_place. fast: call the op bodies directly (None: decide by `eager_fast_path`)."""
    inputs, layout = ctx.saved_tensors, ctx.layout
    if fast is None:
        fast = eager_fast_path(grad, *inputs)
    if ctx.backward_in_place:
        if fast:
            layout.in_place_impl(grad, *inputs, ctx.approximate)
            for t in inputs:  # what the dispatcher does for a mutating op
                torch.autograd.graph.increment_version(t)
        else:
            layout.in_place_op(grad, *inputs, ctx.approximate)
        grads = inputs
    else:
        grads = (layout.backward_impl if fast else layout.backward_op)(grad, *inputs, ctx.approximate)
        if isinstance(grads, torch.Tensor):
            grads = (grads,)
    return (*grads, None, None)


def _setup_separate(ctx, inputs, output):
    gate, up, approximate, backward_in_place = inputs
    _save(ctx, _SEPARATE, (gate, up), approximate, backward_in_place)


def _setup_packed(ctx, inputs, output):
    x, approximate, backward_in_place = inputs
    _save(ctx, _PACKED, (x,), approximate, backward_in_place)


geglu_forward.register_autograd(_backward, setup_context=_setup_separate)
geglu_packed_forward.register_autograd(_backward, setup_context=_setup_packed)


def _eager_backward(ctx, grad) -> tuple:
    # The forward saw plain eager tensors, and so does its backward, unless it is being
    # differentiated itself (create_graph): then through the ops, which say they have no
    # double backward instead of returning a silently wrong one.
    fast = not torch.is_grad_enabled() and type(grad) is torch.Tensor
    # `geglu_forward_prepared`'s plan and gradients, taken in one step (a dict pop holds the GIL
    # throughout): each serves one backward only; a second one through a retained graph, also
    # from another thread, makes its own gradients.
    prepared = ctx.__dict__.pop("prepared", None)
    if prepared is not None and fast and grad.stride() == prepared[1]:
        # The launch inline, not through an op body: a Python call here costs twice its price.
        grad_gate, grad_up = prepared[2], prepared[3]
        launch(prepared[0], grad, *ctx.saved_tensors, grad_gate, grad_up)
        return grad_gate, grad_up, None, None
    if fast and not ctx.backward_in_place:
        # The common case without `_backward`'s call: autograd runs this on its device thread,
        # where each Python call costs about twice its main-thread price (benchmarks/NOTES.md).
        grads = ctx.layout.backward_impl(grad, *ctx.saved_tensors, ctx.approximate)
        return (*grads, None, None) if type(grads) is tuple else (grads, None, None)
    return _backward(ctx, grad, fast=fast)


class _EagerGeGLU(torch.autograd.Function):
    """Eager autograd over the op bodies: the same setup and backward as the registered ops."""

    @staticmethod
    def forward(ctx, gate, up, approximate, backward_in_place):
        # `_save` written out: each Python call is host time on every step (benchmarks/NOTES.md).
        ctx.save_for_backward(gate, up)
        ctx.layout, ctx.approximate, ctx.backward_in_place = _SEPARATE, approximate, backward_in_place
        if backward_in_place:
            return geglu_forward_impl(gate, up, approximate)
        out, prepared = geglu_forward_prepared(gate, up, approximate)
        if prepared is not None:
            ctx.prepared = prepared
        return out

    backward = staticmethod(_eager_backward)


class _EagerGeGLUPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, approximate, backward_in_place):
        _save(ctx, _PACKED, (x,), approximate, backward_in_place)
        return geglu_packed_forward_impl(x, approximate)

    backward = staticmethod(_eager_backward)


_apply_separate = c_apply(_EagerGeGLU)
_apply_packed = c_apply(_EagerGeGLUPacked)


# --- entry points for the public API and layers: checked inputs, then the cheapest path ---

def _needs_eager_composition() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, jacrev, functional per-sample gradients) or
    a forward-mode AD dual level runs this call eagerly. The registered ops' autograd cannot run
    under a transform (PyTorch's custom-op autograd has no functorch rule: "must override the
    setup_context staticmethod"), and no Triton kernel has a batching or forward-mode rule (an op
    body on a dual tensor would drop its tangent); eager's composition, with the kernels' rounding
    points, works under all of them. Under torch.compile the transform is traced, and the
    registered ops serve it as any traced call."""
    return not torch.compiler.is_compiling() and transforms_active()  # Dynamo never reads the state


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str, backward_in_place: bool = False) -> torch.Tensor:
    if approximate not in APPROXIMATIONS:  # inline: this runs on every call
        check_approximate(approximate)
    # getattr: a non-tensor argument goes on to check_gate_up, which names it.
    if getattr(gate, "is_nested", False) or getattr(up, "is_nested", False):
        # torch.nested tensors have no row layout to launch on; the op is elementwise, so eager's
        # composition serves every nested layout, autograd included.
        return F.gelu(gate, approximate=approximate) * up
    check_gate_up(gate, up)
    path = route(gate, up)
    if path == DIRECT:
        return geglu_forward_impl(gate, up, approximate)
    if path == AUTOGRAD:
        return _apply_separate(unwrap_if_dead(gate), unwrap_if_dead(up), approximate, backward_in_place)
    if _needs_eager_composition():
        return _torch_forward(gate, up, approximate)
    return geglu_forward(gate, up, approximate, backward_in_place)


def geglu_packed(x: torch.Tensor, approximate: str, backward_in_place: bool = False) -> torch.Tensor:
    if getattr(x, "is_nested", False):  # as in geglu(); aten's nested gelu takes contiguous halves only
        gate, up = (half.contiguous() for half in x.chunk(2, dim=-1))
        return F.gelu(gate, approximate=approximate) * up
    check_packed(x)
    path = route(x)
    if path == DIRECT:
        return geglu_packed_forward_impl(x, approximate)
    if path == AUTOGRAD:
        return _apply_packed(unwrap_if_dead(x), approximate, backward_in_place)
    if _needs_eager_composition():
        d = x.shape[-1] // 2
        return _torch_forward(x[..., :d], x[..., d:], approximate)
    return geglu_packed_forward(x, approximate, backward_in_place)


def geglu_packed_out(out: torch.Tensor, x: torch.Tensor, approximate: str, name: str) -> torch.Tensor:
    x_nested = getattr(x, "is_nested", False)
    if x_nested or getattr(out, "is_nested", False):
        raise TypeError(f"{name}(out, x): out= functions take no nested tensors ({'x' if x_nested else 'out'} "
                        "is one); use geglu.geglu on the halves of x")
    check_packed(x)
    check_out(out, x)
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        # As PyTorch's own out= functions: the result would silently leave the autograd graph.
        raise RuntimeError(
            f"{name}(out, x): out= functions do not support automatic differentiation, and "
            f"{'x' if x.requires_grad else 'out'} requires grad; use geglu.layers."
            f"{'GeluTanhAndMul' if approximate == 'tanh' else 'GeluAndMul'}()(x) (or geglu.geglu on the halves), "
            "or call it under torch.no_grad()")
    if has_tangent(x):  # as PyTorch's out= functions, rather than an out without the tangent
        raise RuntimeError(f"{name}(out, x): out= functions do not support forward-mode AD, and x carries a tangent; "
                           "use geglu.geglu on the halves of x")
    if eager_fast_path(out, x):
        return geglu_packed_forward_out_impl(out, x, approximate)
    geglu_packed_forward_out(out, x, approximate)
    return out
