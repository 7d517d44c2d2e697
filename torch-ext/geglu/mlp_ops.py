"""The fused gate/up + GeGLU op for decode-sized inputs, and the rule for when a layer may use it.

  gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate) -> h      (no autograd)

The fused path reads the projections' weights directly, so it engages only where that changes
nothing the user can observe (`fused_gate_up`): plain `nn.Linear` projections (not a subclass, a
PEFT/LoRA wrapper, a quantized or parametrized linear) holding plain contiguous weights of the
input's dtype and device, no forward hooks or pre-hooks (module or global), no autograd needed, an
eager call (not traced), 1 to 16 tokens, a 16-bit dtype (fp32 follows cuBLAS's TF32 setting, which
this kernel does not), and a GPU whose launch table is measured or `GEGLU_FUSED_MLP=1`. Everywhere
else the layer calls its projections as modules, as before.
"""

import math
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.library import triton_op
from torch.nn.modules import module as _nn_module

from ._ops import add_op_namespace_prefix
from .checks import row_view
from .dispatch import DIRECT, route, use_triton
from .kernel_src.mlp import MAX_ROWS, MEASURED_DEVICES, _gate_up_geglu_kernel, launch_gate_up_geglu, measured_table
from .pointwise_ops import _declare_kernels, _OpBody

FUSED_DTYPES = (torch.bfloat16, torch.float16)
FUSED_OPT_IN = os.environ.get("GEGLU_FUSED_MLP", "0") not in ("", "0")  # read once, at import


def fused_mlp_enabled(device_index: int) -> bool:
    """Whether the fused path may run on this device: a measured launch table, or the opt-in."""
    return FUSED_OPT_IN or measured_table(device_index) is not None


def _torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate):
    # The same rounding points in PyTorch: each projection rounded to the dtype, then the GeGLU.
    return F.gelu(F.linear(x, w_gate, b_gate), approximate=approximate) * F.linear(x, w_up, b_up)


def gate_up_geglu_impl(x, w_gate, w_up, b_gate, b_up, approximate, traceable=False):
    if not use_triton(x):
        return _torch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, approximate)
    out = torch.empty((x.shape[0], w_gate.shape[0]), dtype=x.dtype, device=x.device)
    launch_gate_up_geglu(x, w_gate, w_up, b_gate, b_up, out, approximate == "tanh", traceable=traceable)
    return out


@triton_op(add_op_namespace_prefix("gate_up_geglu"), mutates_args=())
@_OpBody
def gate_up_geglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate: Optional[torch.Tensor],
                  b_up: Optional[torch.Tensor], approximate: str) -> torch.Tensor:
    return gate_up_geglu_impl(x, w_gate, w_up, b_gate, b_up, approximate,
                              traceable=route(x) != DIRECT)


@gate_up_geglu.register_fake
def _(x, w_gate, w_up, b_gate, b_up, approximate):
    return x.new_empty((x.shape[0], w_gate.shape[0]))


_declare_kernels(gate_up_geglu, _gate_up_geglu_kernel)


def _untouched_linear(p: nn.Module) -> bool:
    """A plain nn.Linear whose forward would be exactly F.linear(x, weight, bias)."""
    if type(p) is not nn.Linear or p._forward_hooks or p._forward_pre_hooks:
        return False
    w, b = p.weight, p.bias
    return type(w) is nn.Parameter and (b is None or type(b) is nn.Parameter)


def fused_gate_up(gate_proj: nn.Module, up_proj: nn.Module, x: torch.Tensor, approximate: str
                  ) -> torch.Tensor | None:
    """h = gelu(gate_proj(x)) * up_proj(x) through the fused kernel, or None where the fused path
    does not apply (then the caller runs the projections as modules)."""
    if not (FUSED_OPT_IN or MEASURED_DEVICES):  # the common case costs one check
        return None
    if x.dtype not in FUSED_DTYPES or not (x.is_cuda or use_triton(x)):
        return None
    n_rows = math.prod(x.shape[:-1])
    if not 0 < n_rows <= MAX_ROWS or not fused_mlp_enabled(x.get_device()):
        return None
    if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
        return None
    if not (_untouched_linear(gate_proj) and _untouched_linear(up_proj)):
        return None
    wg, wu, bg, bu = gate_proj.weight, up_proj.weight, gate_proj.bias, up_proj.bias
    if (bg is None) != (bu is None) or wg.shape != wu.shape or wg.shape[1] != x.shape[-1]:
        return None
    weights = (wg, wu) if bg is None else (wg, wu, bg, bu)
    # Autograd needed, tracing, or a tensor subclass input: the modules' path (the weights are
    # plain Parameters, checked above).
    if route(x) != DIRECT or (torch.is_grad_enabled() and any(w.requires_grad for w in weights)):
        return None
    for t in weights:
        if t.dtype != x.dtype or t.device != x.device or not t.is_contiguous():
            return None
    x2 = row_view(x)
    if x2 is None:
        return None
    h = gate_up_geglu_impl(x2, wg, wu, bg, bu, approximate)
    return h.view(*x.shape[:-1], wg.shape[0])
