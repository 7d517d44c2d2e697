"""Probe: what a branch-free GELU-tanh would buy at tiny token counts, and what it would cost in
equality with eager (notes, variant 22). Not the shipped kernel: a flat forward written here with
either eager's formula (libdevice tanh, as shipped) or x * sigmoid(2z) through one exp and one
division, timed against the shipped kernel and torch.compile under CUDA-graph replay.

    python benchmarks/probe_gelu_formula.py --out DIR
"""
import argparse
import statistics
from pathlib import Path

import sys

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py
from common import cycling, eager_separate, environment, graph_replay, interleaved_rounds, load_local_pointwise, write_json

torch._dynamo.config.cache_size_limit = 256


@triton.jit
def _formula_forward_kernel(gate_ptr, up_ptr, out_ptr, N: tl.constexpr, BLOCK: tl.constexpr, FAST: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = 0.7978845608028654 * (g + 0.044715 * g * g * g)
    if FAST:
        act = g / (1.0 + tl.exp(-2.0 * z))  # 0.5 (1 + tanh z) = sigmoid(2 z): no branches
    else:
        act = 0.5 * g * (1.0 + libdevice.tanh(z))
    dtype = out_ptr.dtype.element_ty
    tl.store(out_ptr + offs, (act.to(dtype).to(tl.float32) * u).to(dtype), mask=mask)


def formula_forward(g, u, fast, block, warps):
    out = torch.empty_like(g)
    _formula_forward_kernel[(triton.cdiv(g.numel(), block),)](g, u, out, g.numel(), block, fast, num_warps=warps)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pw = load_local_pointwise()
    result = {"env": environment(), "numerics": [], "rows": []}
    torch.manual_seed(0)
    g = 3 * torch.randn(4 << 20, device="cuda", dtype=torch.bfloat16)
    u = torch.randn_like(g)
    eager = eager_separate(g, u)
    ref = torch.nn.functional.gelu(g.double(), approximate="tanh") * u.double()
    for fast in (False, True):
        h = formula_forward(g, u, fast, 512, 4)
        err = (h.double() - ref).abs() / (ref.abs() + 1e-30)
        row = dict(fast=fast, elements=g.numel(), differ_from_eager=(h != eager).float().mean().item(),
                   max_rel_err_vs_fp64=err[ref.abs() > 1e-3].max().item(),
                   eager_max_rel_err_vs_fp64=((eager.double() - ref).abs() / (ref.abs() + 1e-30))[ref.abs() > 1e-3].max().item())
        result["numerics"].append(row)
        print(row, flush=True)
    for inter in (3072, 14336):
        for t in (1, 16):
            sets = [(torch.randn(t, inter, device="cuda", dtype=torch.bfloat16),
                     torch.randn(t, inter, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]
            calls = {"ours": [lambda g=g, u=u: pw.launch_geglu_forward(g, u, torch.empty_like(g), True, traceable=False)
                              for g, u in sets]}
            for name, fn in (("compile", torch.compile(eager_separate)),
                             ("compile_dynamic", torch.compile(eager_separate, dynamic=True))):
                calls[name] = [lambda g=g, u=u, f=fn: f(g, u) for g, u in sets]
            for block, warps in ((256, 8), (128, 4)):
                for fast in (False, True):
                    calls[f"{'fast' if fast else 'libdevice'}_{block}x{warps}"] = [
                        lambda g=g, u=u, f=fast, b=block, w=warps: formula_forward(g, u, f, b, w) for g, u in sets]
            times = interleaved_rounds({n: graph_replay(cycling(c)) for n, c in calls.items()}, 9, rep_ms=50)
            row = dict(I=inter, T=t, **{f"{n}_us": statistics.median(v) for n, v in times.items()},
                       **{f"{n}_rounds_us": v for n, v in times.items()})
            result["rows"].append(row)
            print(f"I={inter} T={t} " + " ".join(f"{n}={statistics.median(v):.3f}" for n, v in
                                                 sorted(times.items(), key=lambda kv: statistics.median(kv[1]))), flush=True)
            write_json(args.out / "probe_gelu_formula.json", result)


if __name__ == "__main__":
    main()
