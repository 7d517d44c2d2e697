"""One autograd node for the whole GeGLU MLP in training, against the layer as it trains today
(three nn.Linear nodes around the GeGLU node) and eager: host time, plain-call time and peak
memory of forward + backward, and the gradients against float64.

    python benchmarks/probes/probe_mlp_training.py --out DIR [--dims 2048x16384,768x3072] [--tokens 16,...]

The whole-MLP node runs the same cuBLAS products and the package's pointwise kernels; its
backward writes dg and du over g and u (no one else holds them) and, with `recompute_h`, saves
g and u only and recomputes h for the down projection's weight gradient (one [T, I] activation
less per layer, one pointwise pass more). What it should show: whether one node instead of four
cuts the host time that bounds small training steps, and what the recompute costs. It did
(NOTES, session 10): the layer now trains through F.linear and one node for the GeGLU and the down
projection (`mlp_ops._GeGLUDown`), which is what "ours layer" times since.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, host_us, int_list, load_local_build, median_us, shape_list, write_json  # noqa: E402
from compare_peers import GemmaLikeMLP  # noqa: E402

dispatch = None  # the local build's dispatch module (op bodies), bound in main()


class WholeMLP(torch.autograd.Function):
    """y = (gelu(x Wg^T) * (x Wu^T)) Wd^T as one autograd node (bias-free, as Gemma's MLP)."""

    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down, approximate, recompute_h):
        x2 = x.reshape(-1, x.shape[-1])
        g, u = F.linear(x2, w_gate), F.linear(x2, w_up)
        h = dispatch.geglu_forward_impl(g, u, approximate)
        y = F.linear(h, w_down)
        ctx.save_for_backward(x2, w_gate, w_up, w_down, g, u, *(() if recompute_h else (h,)))
        ctx.approximate, ctx.x_shape = approximate, x.shape
        return y.view(*x.shape[:-1], w_down.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, w_gate, w_up, w_down, g, u, *saved_h = ctx.saved_tensors
        h = saved_h[0] if saved_h else dispatch.geglu_forward_impl(g, u, ctx.approximate)
        dy2 = dy.reshape(-1, dy.shape[-1])
        d_w_down = dy2.t() @ h
        dh = dy2 @ w_down
        dispatch.geglu_backward_in_place_impl(dh, g, u, ctx.approximate)  # g, u now hold dg, du
        dx = g @ w_gate + u @ w_up
        return dx.view(ctx.x_shape), g.t() @ x2, u.t() @ x2, d_w_down, None, None


def reference_grads(m, x, dy):
    """float64 gradients of x and the three weights (eager's rounding points ignored)."""
    xd = x.detach().double().requires_grad_(True)
    ws = [p.detach().double().requires_grad_(True) for p in (m.gate_proj.weight, m.up_proj.weight,
                                                               m.down_proj.weight)]
    y = F.linear(F.gelu(F.linear(xd, ws[0]), approximate="tanh") * F.linear(xd, ws[1]), ws[2])
    return torch.autograd.grad(y, [xd, *ws], dy.double())


def main():
    global dispatch
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", default="2048x16384,768x3072", type=shape_list)
    parser.add_argument("--tokens", default="16,128,512,2048", type=int_list)
    args = parser.parse_args()
    k = load_local_build()
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    out = dict(env=environment(), date=time.strftime("%Y-%m-%d"), rows=[])
    dt = torch.bfloat16
    for hidden, inter in args.dims:
        m = GemmaLikeMLP(hidden, inter).to("cuda", dt)
        params = [m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight]
        for t in args.tokens:
            x = torch.randn(1, t, hidden, device="cuda", dtype=dt, requires_grad=True)
            dy = torch.randn(1, t, hidden, device="cuda", dtype=dt)
            ref = reference_grads(m, x, dy)
            variants = {
                "eager": lambda: m(x),
                "ours layer": lambda: k.layers.GeGLUMLP.forward(m, x),
                "whole-MLP node": lambda: WholeMLP.apply(x, *params, "tanh", False),
                "whole-MLP node, h recomputed": lambda: WholeMLP.apply(x, *params, "tanh", True),
            }
            for name, fwd in variants.items():
                step = lambda f=fwd: torch.autograd.grad(f(), [x, *params], dy)
                grads = step()
                errs = [((a.double() - b).norm() / b.norm()).item() for a, b in zip(grads, ref)]
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step()
                torch.cuda.synchronize()
                row = dict(H=hidden, I=inter, T=t, variant=name, max_grad_err=max(errs),
                           peak_extra_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
                           host_us=host_us(step, calls=200), plain_us=median_us(step, rep_ms=50))
                out["rows"].append(row)
                print(f"H={hidden} I={inter} T={t:5d} {name:30s} plain {row['plain_us']:9.1f} us  host "
                      f"{row['host_us']:7.1f} us  peak +{row['peak_extra_mib']:8.1f} MiB  grad err "
                      f"{row['max_grad_err']:.1e}", flush=True)
            write_json(args.out / "probe_mlp_training.json", out)


if __name__ == "__main__":
    main()
