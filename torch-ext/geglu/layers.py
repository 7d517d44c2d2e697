"""Hub layers for `kernels.kernelize`: stateless modules whose `forward` replaces the
forward of a model's GeGLU block and reads the replaced module's own attributes.

Kernels rules: no __init__, no methods besides forward, no class variables besides
`has_backward` and `can_torch_compile`. Helpers live at module level.
"""

import torch
import torch.nn as nn

from . import custom_ops
from .layer_mapping import approximate_of


def _geglu(gate: torch.Tensor, up: torch.Tensor, act_fn: nn.Module, own_inputs: bool = False) -> torch.Tensor:
    # own_inputs: gate and up are projections this layer just computed and nobody else holds,
    # so the backward may write the gradients over them (one [T, I] buffer less at the peak).
    return custom_ops.geglu(gate, up, approximate_of(act_fn), backward_in_place=own_inputs)


_geglu_packed = custom_ops.geglu_packed


class GeGLUMLP(nn.Module):
    """down_proj(dropout(gelu(gate_proj(x)) * up_proj(x))).

    Replaces the gate/up/down MLPs (GemmaMLP and relatives). gelu is tanh or exact as the
    module's own `act_fn` says; biases are those of the projections; `dropout`, where the
    module has one (T5Gemma), applies between the product and down_proj.

    Shapes: x [..., hidden] -> [..., hidden]; the intermediate is [..., intermediate].
    """

    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear
    act_fn: nn.Module

    has_backward = True
    can_torch_compile = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _geglu(self.gate_proj(x), self.up_proj(x), self.act_fn, own_inputs=True)
        dropout = getattr(self, "dropout", None)
        if dropout is not None:
            h = dropout(h)
        return self.down_proj(h)


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
        h = self.dropout(_geglu(self.wi_0(hidden_states), self.wi_1(hidden_states), self.act, own_inputs=True))
        weight = self.wo.weight
        if isinstance(weight, torch.Tensor) and h.dtype != weight.dtype and weight.dtype != torch.int8:
            h = h.to(weight.dtype)
        return self.wo(h)


class LongT5DenseGatedGeGLU(T5DenseGatedGeGLU):
    """wo(dropout(gelu(wi_0(x)) * wi_1(x))), no dtype cast (LongT5DenseGatedActDense); the same
    attributes as T5DenseGatedGeGLU.

    Shapes: x [..., d_model] -> [..., d_model].
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(_geglu(self.wi_0(hidden_states), self.wi_1(hidden_states), self.act, own_inputs=True)))


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
        h = _geglu_packed(self.Wi(hidden_states), approximate_of(self.act), backward_in_place=True)
        return self.Wo(self.drop(h))


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
        return _geglu(gate, up, self.activation_fn)
