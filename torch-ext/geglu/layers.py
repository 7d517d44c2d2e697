"""Hub layers for `kernels.kernelize`: stateless modules whose `forward` replaces the
forward of a model's GeGLU block and reads the replaced module's own attributes.

Kernels rules: no __init__, no methods besides forward, no class variables besides
`has_backward` and `can_torch_compile`. Helpers live at module level.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _nn_module

from . import mlp_ops, pointwise_ops
from .checks import SUPPORTED_DTYPES
from .dispatch import geglu_forward_impl, geglu_forward_over_gate_impl, transforms_active
from .layer_mapping import approximate_of


def _nobody_else_holds(projections: tuple[nn.Module, ...]) -> bool:
    """Whether the projections' outputs can be held by no one but this layer, so that the
    backward may write the gradients over them (one [T, I] buffer less at the peak): plain
    nn.Linear modules (F.linear returns a fresh tensor; a subclass, a PEFT or quantized wrapper
    might not) with no forward hooks of their own and no global ones (a hook may keep the output),
    and no forward of their own (a patched or accelerate-wrapped forward may keep it too)."""
    return not mlp_ops.global_forward_hooks() and all(
        type(p) is nn.Linear and mlp_ops.untouched(p) for p in projections)


# The GELU variant of each transformers activation class met so far: one dict lookup a call instead
# of a walk over the class's MRO and the names (inside a model that walk cost ~5 us a call;
# benchmarks/NOTES.md, session 18).
_CLASS_APPROXIMATE: dict[type, str] = {}


def _activation(act: nn.Module, eager: bool = False) -> tuple[str, bool]:
    """(approximate, hooked) of the activation module: its GELU variant, "tanh" or "none"
    (ValueError for another activation; eager: the caller saw torch.compile not tracing, so the
    per-class memo may be used), and whether calling it could do more than its GELU:
    hooks of its own or global ones, forward or backward (activation capture, patching and
    attribution hook exactly this module), or a forward replaced on the instance. Then the layer
    calls it as eager does, on eager's composition. `hooked` is `not mlp_ops.untouched(act, True) or
    mlp_ops.global_hooks()` written out (a test holds them equal): this runs on every layer call,
    where each Python call costs host time (benchmarks/NOTES.md)."""
    if isinstance(act, nn.GELU):
        approximate = act.approximate
    elif not eager:  # traced: no memo (Dynamo would guard on it, and a fill would be a side effect)
        approximate = approximate_of(act)
    else:
        approximate = _CLASS_APPROXIMATE.get(type(act))
        if approximate is None:
            approximate = _CLASS_APPROXIMATE[type(act)] = approximate_of(act)  # raises, naming the activation
    forward = act.__dict__.get("forward")  # kernelize binds the class's own forward: that is untouched
    hooked = bool(act._forward_hooks or act._forward_pre_hooks or act._backward_hooks or act._backward_pre_hooks
                  or (forward is not None and (getattr(forward, "__func__", None) is not type(act).forward
                                               or getattr(forward, "__self__", None) is not act))
                  or _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                  or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)
    return approximate, hooked


def _attributes(module: nn.Module, *names: str) -> list:
    """The named attributes of the replaced module, submodules straight from `_modules`
    (nn.Module.__getattr__ costs about 2 us a lookup, on every eager call), others by getattr."""
    modules = module._modules
    return [modules[name] if name in modules else getattr(module, name) for name in names]


def _geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str, projections: tuple[nn.Module, ...] = (),
           eager: bool = False) -> torch.Tensor:
    # projections: the modules that made gate and up inside this layer (none: never write over them).
    # eager: the caller saw torch.compile not tracing.
    # len(), not bool(): Dynamo of torch 2.11 cannot trace bool() of a tuple.
    if gate.dtype not in SUPPORTED_DTYPES or up.dtype != gate.dtype:
        # A float64 model (gradient checks) or mixed dtypes, which the kernels do not take: eager's
        # math, as the replaced module computed it, instead of an error the model never raised.
        return F.gelu(gate, approximate=approximate) * up
    grad = torch.is_grad_enabled()
    if (eager and not grad and type(gate) is torch.Tensor and type(up) is torch.Tensor and gate.shape == up.shape
            and gate.dim() and gate.device == up.device and not gate.is_meta and not transforms_active()
            and not torch._C._len_torch_dispatch_stack()):
        # Inference outside any tracing, on plain tensors that pass geglu()'s checks (check_gate_up,
        # and route's DIRECT with the compile check already done): its op body, without geglu()'s
        # Python calls (each costs host time inside a model, benchmarks/NOTES.md).
        return geglu_forward_impl(gate, up, approximate)
    in_place = len(projections) > 0 and grad and _nobody_else_holds(projections)
    return pointwise_ops.geglu(gate, up, approximate, backward_in_place=in_place)


def _geglu_of_linears(x: torch.Tensor, w_gate: torch.Tensor, b_gate, w_up: torch.Tensor, b_up,
                      approximate: str) -> torch.Tensor:
    """The GeGLU of plain projections' F.linear outputs, in eager inference past the fused token
    counts: exactly what calling the projections computes, without their module calls (their host
    time inside a model, benchmarks/NOTES.md, session 17), h written over the gate projection's
    output, which no one else holds (one allocation less, session 18)."""
    gate, up = F.linear(x, w_gate, b_gate), F.linear(x, w_up, b_up)
    # Two F.linear outputs of one input share its dtype and device (F.linear refuses mixed ones),
    # so of `_geglu`'s checks only these remain (a tensor subclass or a torch-function mode's
    # output, another intermediate size, a dtype the kernels do not take, a transform or dispatch
    # mode that must see the op).
    if (type(gate) is torch.Tensor and type(up) is torch.Tensor and gate.dtype in SUPPORTED_DTYPES
            and gate.shape == up.shape and not transforms_active() and not torch._C._len_torch_dispatch_stack()):
        return geglu_forward_over_gate_impl(gate, up, approximate)
    return _geglu(gate, up, approximate, (), True)


def _geglu_packed(x: torch.Tensor, approximate: str, projection: nn.Module | None = None) -> torch.Tensor:
    if x.dtype not in SUPPORTED_DTYPES:  # as in _geglu
        gate, up = x.chunk(2, dim=-1)
        return F.gelu(gate, approximate=approximate) * up
    in_place = projection is not None and torch.is_grad_enabled() and _nobody_else_holds((projection,))
    return pointwise_ops.geglu_packed(x, approximate, backward_in_place=in_place)


class GeGLUMLP(nn.Module):
    """down_proj(dropout(gelu(gate_proj(x)) * up_proj(x))).

    Replaces the gate/up/down MLPs (GemmaMLP and relatives). gelu is tanh or exact as the
    module's own `act_fn` says; biases are those of the projections; `dropout`, where the
    module has one (T5Gemma), applies between the product and down_proj. With untouched
    projections, decode-sized inference runs the fused kernels and training one autograd node for
    the GeGLU and down_proj (`mlp_ops.fused_mlp` says when).

    Shapes: x [..., hidden] -> [..., hidden]; the intermediate is [..., intermediate].
    """

    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear
    act_fn: nn.Module

    has_backward = True
    can_torch_compile = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules
        try:  # the class's own submodules, without nn.Module.__getattr__ (a Python call each)
            gate_proj, up_proj, down_proj = modules["gate_proj"], modules["up_proj"], modules["down_proj"]
            act_fn = modules["act_fn"]
        except KeyError:
            gate_proj, up_proj, down_proj, act_fn = _attributes(self, "gate_proj", "up_proj", "down_proj", "act_fn")
        dropout = modules.get("dropout")
        eager = not torch.compiler.is_compiling()
        approximate, hooked = _activation(act_fn, eager)
        if hooked:
            h = act_fn(gate_proj(x)) * up_proj(x)
        else:
            grad = torch.is_grad_enabled()
            if not eager or grad or x.numel() <= mlp_ops.MAX_FUSED_TOKENS * x.shape[-1]:
                y = mlp_ops.fused_mlp(x, approximate, gate_proj, up_proj, down_proj, dropout, eager)
                if y is not None:
                    return y
            # Eager inference on plain projections (global hooks are in `hooked`): F.linear on their
            # weights is exactly what calling them computes, without three module calls' host time.
            found = mlp_ops.plain_linears((gate_proj, up_proj, down_proj)) if eager and not grad else None
            if found is not None:
                (w_gate, b_gate), (w_up, b_up), (w_down, b_down) = found
                h = _geglu_of_linears(x, w_gate, b_gate, w_up, b_up, approximate)
                return F.linear(h if dropout is None else dropout(h), w_down, b_down)
            h = _geglu(gate_proj(x), up_proj(x), approximate, (gate_proj, up_proj), eager)
        if dropout is not None:
            h = dropout(h)
        return down_proj(h)


class GeluTanhAndMul(nn.Module):
    """x -> gelu_tanh(x[..., :d]) * x[..., d:].

    Shapes: x [..., 2d] -> [..., d].
    """

    has_backward = True
    can_torch_compile = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _geglu_packed(x, "tanh")


class GeluAndMul(nn.Module):
    """x -> gelu(x[..., :d]) * x[..., d:], exact erf.

    Shapes: x [..., 2d] -> [..., d].
    """

    has_backward = True
    can_torch_compile = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _geglu_packed(x, "none")


def _t5_geglu(x: torch.Tensor, wi_0: nn.Module, wi_1: nn.Module, approximate: str, eager: bool) -> torch.Tensor:
    """gelu(wi_0(x)) * wi_1(x) of the T5 layers' unfused path: F.linear on plain projections in
    eager inference (`_geglu_of_linears`), else the projections as modules."""
    found = mlp_ops.plain_linears((wi_0, wi_1)) if eager and not torch.is_grad_enabled() else None
    if found is not None:
        (w_0, b_0), (w_1, b_1) = found
        return _geglu_of_linears(x, w_0, b_0, w_1, b_1, approximate)
    return _geglu(wi_0(x), wi_1(x), approximate, (wi_0, wi_1), eager)


class T5DenseGatedGeGLU(nn.Module):
    """wo(dropout(gelu(wi_0(x)) * wi_1(x))), the product cast to wo's dtype first where wo
    is kept in another float dtype (T5 keeps it in fp32), exactly as T5DenseGatedActDense.

    Shapes: x [..., d_model] -> [..., d_model]; the intermediate is [..., d_ff].
    """

    wi_0: nn.Linear
    wi_1: nn.Linear
    wo: nn.Linear
    act: nn.Module
    dropout: nn.Dropout

    has_backward = True
    can_torch_compile = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        wi_0, wi_1, wo, act, dropout = _attributes(self, "wi_0", "wi_1", "wo", "act", "dropout")
        weight = wo.weight
        eager = not torch.compiler.is_compiling()
        approximate, hooked = _activation(act, eager)
        if hooked:
            h = dropout(act(wi_0(hidden_states)) * wi_1(hidden_states))
        else:
            if isinstance(weight, torch.Tensor) and weight.dtype == hidden_states.dtype:  # no cast before wo
                y = mlp_ops.fused_mlp(hidden_states, approximate, wi_0, wi_1, wo, dropout, eager)
                if y is not None:
                    return y
            h = dropout(_t5_geglu(hidden_states, wi_0, wi_1, approximate, eager))
        if isinstance(weight, torch.Tensor) and h.dtype != weight.dtype and weight.dtype != torch.int8:
            h = h.to(weight.dtype)
        return wo(h)


class LongT5DenseGatedGeGLU(T5DenseGatedGeGLU):
    """wo(dropout(gelu(wi_0(x)) * wi_1(x))), no dtype cast (LongT5DenseGatedActDense); the same
    attributes as T5DenseGatedGeGLU.

    Shapes: x [..., d_model] -> [..., d_model].
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        wi_0, wi_1, wo, act, dropout = _attributes(self, "wi_0", "wi_1", "wo", "act", "dropout")
        eager = not torch.compiler.is_compiling()
        approximate, hooked = _activation(act, eager)
        if hooked:
            return wo(dropout(act(wi_0(hidden_states)) * wi_1(hidden_states)))
        y = mlp_ops.fused_mlp(hidden_states, approximate, wi_0, wi_1, wo, dropout, eager)
        if y is not None:
            return y
        return wo(dropout(_t5_geglu(hidden_states, wi_0, wi_1, approximate, eager)))


class ModernBertGeGLUMLP(nn.Module):
    """Wo(drop(gelu(a) * b)), [a, b] = Wi(x) split in halves: the packed layout, read in place.

    Shapes: x [..., hidden] -> [..., hidden]; Wi(x) is [..., 2 * intermediate].
    """

    Wi: nn.Linear
    Wo: nn.Linear
    act: nn.Module
    drop: nn.Dropout

    has_backward = True
    can_torch_compile = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        wi, wo, act, drop = _attributes(self, "Wi", "Wo", "act", "drop")
        approximate, hooked = _activation(act, not torch.compiler.is_compiling())
        if hooked:
            a, b = wi(hidden_states).chunk(2, dim=-1)
            return wo(drop(act(a) * b))
        y = mlp_ops.fused_mlp(hidden_states, approximate, wi, None, wo, drop)  # Wi packed
        if y is not None:
            return y
        h = _geglu_packed(wi(hidden_states), approximate, wi)
        return wo(drop(h))


class ClvpGeGLU(nn.Module):
    """a * gelu(b), [a, b] = proj(x) split in halves: the activation is on the SECOND half
    (ClvpGatedLinearUnit); both halves are read in place as strided views.

    Shapes: x [..., hidden] -> [..., intermediate]; proj(x) is [..., 2 * intermediate].
    """

    proj: nn.Linear
    activation_fn: nn.Module

    has_backward = True
    can_torch_compile = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        up, gate = self.proj(hidden_states).chunk(2, dim=-1)
        act = self.activation_fn
        approximate, hooked = _activation(act, not torch.compiler.is_compiling())
        if hooked:
            return up * act(gate)
        return _geglu(gate, up, approximate)
