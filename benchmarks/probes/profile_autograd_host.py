"""Where the host time of geglu() forward+backward under autograd goes on the GPU machine (T=1):
the pieces timed alone, then cProfile of the whole call.

    python benchmarks/probes/profile_autograd_host.py
"""

import cProfile
import importlib
import pstats
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import eager_separate, host_us, load_local_build  # noqa: E402


def _ladder(dispatch):
    """autograd.Functions that add one piece of ours at a time, from a bare node to ours."""

    class Bare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g, u):
            return torch.empty_like(g)

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    class Saves(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g, u):
            ctx.save_for_backward(g, u)
            return torch.empty_like(g)

        @staticmethod
        def backward(ctx, grad):
            g, u = ctx.saved_tensors
            return grad, grad

    class ForwardKernel(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g, u):
            ctx.save_for_backward(g, u)
            return dispatch.geglu_forward_impl(g, u, "tanh")

        @staticmethod
        def backward(ctx, grad):
            g, u = ctx.saved_tensors
            return grad, grad

    class BothKernels(ForwardKernel):
        @staticmethod
        def backward(ctx, grad):
            g, u = ctx.saved_tensors
            return dispatch.geglu_backward_impl(grad, g, u, "tanh")

    return {"ladder: bare Function": Bare, "ladder: + save g, u": Saves, "ladder: + forward kernel": ForwardKernel,
            "ladder: + backward kernel": BothKernels}


def main():
    k = load_local_build()
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    g, u = (torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    dh = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    gd, ud = g.detach(), u.detach()
    h = k.geglu(g, u)
    pieces = {
        "forward impl": lambda: dispatch.geglu_forward_impl(gd, ud, "tanh"),
        "backward impl": lambda: dispatch.geglu_backward_impl(dh, gd, ud, "tanh"),
        "geglu() with autograd, no backward": lambda: k.geglu(g, u),
        "backward only (retain_graph)": lambda: torch.autograd.grad(h, (g, u), dh, retain_graph=True),
        "forward+backward": lambda: torch.autograd.grad(k.geglu(g, u), (g, u), dh),
        "eager forward+backward": lambda: torch.autograd.grad(eager_separate(g, u), (g, u), dh),
    }
    for name, fn_class in _ladder(dispatch).items():
        pieces[name + ", forward+backward"] = lambda f=fn_class: torch.autograd.grad(f.apply(g, u), (g, u), dh)
    pieces["eager forward only (grad on)"] = lambda: eager_separate(g, u)
    times = {name: [] for name in pieces}
    for _ in range(3):  # interleaved rounds, medians: the host's drift hits every piece alike
        for name, fn in pieces.items():
            times[name].append(host_us(fn))
    for name, t in times.items():
        print(f"{name:52s} {statistics.median(t):7.1f} us  (rounds {', '.join(f'{x:.1f}' for x in t)})", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        torch.autograd.grad(k.geglu(g, u), (g, u), dh)
    torch.cuda.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
