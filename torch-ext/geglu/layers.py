"""Hub layers for `kernels.kernelize`: stateless modules whose `forward` replaces the
forward of a model's GeGLU block and reads the replaced module's own attributes.

Kernels rules: no __init__, no methods besides forward, no class variables besides
`has_backward` and `can_torch_compile`. Helpers live at module level.
"""

import torch
import torch.nn as nn

from . import custom_ops
from .layer_mapping import approximate_of


def _geglu(gate: torch.Tensor, up: torch.Tensor, act_fn: nn.Module) -> torch.Tensor:
    custom_ops.check_gate_up(gate, up)
    return custom_ops.geglu_forward(gate, up, approximate_of(act_fn))


def _geglu_packed(x: torch.Tensor, approximate: str) -> torch.Tensor:
    custom_ops.check_packed(x)
    return custom_ops.geglu_packed_forward(x, approximate)


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
        h = _geglu(self.gate_proj(x), self.up_proj(x), self.act_fn)
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
