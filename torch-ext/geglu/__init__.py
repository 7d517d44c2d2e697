"""GeGLU kernels: h = gelu(gate) * up, tanh-approximate or exact, forward and backward.

Public surface (kept small on purpose: additions need a new major version):
  geglu(gate, up, approximate="tanh")   differentiable, separate gate/up tensors
  gelu_tanh_and_mul(out, x)             out = gelu_tanh(x[..., :d]) * x[..., d:]
  gelu_and_mul(out, x)                  out = gelu(x[..., :d]) * x[..., d:]   (exact erf)
  layers                                Hub layers for kernels.kernelize
  layer_mapping                         which transformers classes the layers serve; tagging
                                        them and the kernels mapping (layer_mapping.json)
"""

import torch

from . import pointwise_ops as _pointwise_ops
from . import layer_mapping, layers

__all__ = ["geglu", "gelu_tanh_and_mul", "gelu_and_mul", "layers", "layer_mapping"]


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """gelu(gate) * up, differentiable in both inputs.

    Args:
        gate, up: tensors of the same shape [..., d], dtype float32/float16/bfloat16, on one
            device. Rows may be strided views (e.g. chunks of a fused projection).
        approximate: "tanh" (the tanh approximation) or "none" (exact erf), as in F.gelu.
    Returns:
        A new tensor [..., d] in the inputs' dtype.

    Under torch.func transforms (grad, vmap, jvp, ...), forward-mode AD and for torch.nested
    inputs, the result is eager's composition gelu(gate) * up, with the kernels' rounding points.
    """
    return _pointwise_ops.geglu(gate, up, approximate)


def gelu_tanh_and_mul(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out = gelu_tanh(x[..., :d]) * x[..., d:], written into `out` ([..., d]); returns out.
    Not differentiable (as PyTorch's out= functions): an x that requires grad is refused."""
    return _pointwise_ops.geglu_packed_out(out, x, "tanh", "gelu_tanh_and_mul")


def gelu_and_mul(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out = gelu(x[..., :d]) * x[..., d:] with exact erf, written into `out` ([..., d]); returns out.
    Not differentiable (as PyTorch's out= functions): an x that requires grad is refused."""
    return _pointwise_ops.geglu_packed_out(out, x, "none", "gelu_and_mul")
