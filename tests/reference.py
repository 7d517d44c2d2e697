"""Float64 reference for GeGLU and its gradients."""

import math

import torch


def gelu64(x: torch.Tensor, approximate: str) -> torch.Tensor:
    x = x.double()
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def geglu64(gate, up, approximate):
    return gelu64(gate, approximate) * up.double()


def geglu64_grads(grad, gate, up, approximate):
    """(d gate, d up) of sum(grad * gelu(gate) * up) in float64.

    d gate = (dh * u) * gelu'(g). Like eager, the kernels round dh * u to the storage
    dtype before it meets gelu'(g); the reference applies that documented rounding point
    (a no-op in fp32) and is exact float64 everywhere else.
    """
    g = gate.detach().double().requires_grad_()
    gelu64(g, approximate).backward((grad * up).detach().to(grad.dtype).double())
    return g.grad, grad.double() * gelu64(gate.detach(), approximate)
