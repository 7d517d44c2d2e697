"""Side-by-side timing on the GPU: our kernels vs eager PyTorch, torch.compile (default and
dynamic=True) and Liger, in one process. Writes JSON, a markdown table and a PNG plot.

    python benchmarks/compare_peers.py --out benchmarks/results/<device> [--sections pointwise,mlp,extras]

Bytes counted (bf16, T tokens, intermediate I): pointwise forward reads g, u and writes h:
3*T*I*2; backward reads dh, g, u and writes dg, du: 5*T*I*2. The fraction is achieved
bandwidth over the device-to-device copy bandwidth measured in the same run.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import copy_bandwidth_gbs, environment, load_local_build, median_us, rotating, write_json

DIMS = [(768, 3072), (2048, 16384), (2560, 10240), (3584, 14336)]
TOKENS = [1, 16, 128, 512, 2048, 8192]
PEERS = ["ours", "eager", "compile", "compile_dynamic", "liger"]

torch._dynamo.config.cache_size_limit = 256
torch._dynamo.config.accumulated_cache_size_limit = 4096


def liger_geglu():
    try:
        from liger_kernel.ops.geglu import LigerGELUMulFunction
    except ImportError:
        return None
    return LigerGELUMulFunction.apply


def eager_pointwise(g, u):
    return F.gelu(g, approximate="tanh") * u


def eager_packed(x):
    g, u = x.chunk(2, dim=-1)
    return F.gelu(g, approximate="tanh") * u


def pointwise_fns(k):
    """name -> (separate fn(g, u), packed fn(x) or None)."""
    liger = liger_geglu()
    fns = {
        "ours": (lambda g, u: k.geglu(g, u, approximate="tanh"), k.layers.GeluTanhAndMul()),
        "eager": (eager_pointwise, eager_packed),
        "compile": (torch.compile(eager_pointwise), torch.compile(eager_packed)),
        "compile_dynamic": (torch.compile(eager_pointwise, dynamic=True), torch.compile(eager_packed, dynamic=True)),
    }
    if liger is not None:
        fns["liger"] = (liger, None)  # Liger has no packed-input GeGLU
    return fns


def bench_pointwise(k, bw, dtype=torch.bfloat16, inters=(3072, 16384, 10240, 14336), tokens=TOKENS):
    rows = []
    fns = pointwise_fns(k)
    for inter in inters:
        for t in tokens:
            nxt = rotating(lambda: (torch.randn(t, inter, device="cuda", dtype=dtype),
                                    torch.randn(t, inter, device="cuda", dtype=dtype),
                                    torch.randn(t, 2 * inter, device="cuda", dtype=dtype),
                                    torch.randn(t, inter, device="cuda", dtype=dtype)))
            fwd_bytes, bwd_bytes = 3 * t * inter * dtype.itemsize, 5 * t * inter * dtype.itemsize
            for name, (sep, packed) in fns.items():
                row = dict(stage="pointwise", I=inter, T=t, dtype=str(dtype).removeprefix("torch."), peer=name)
                with torch.no_grad():
                    row["fwd_us"] = median_us(lambda: (lambda g, u, x, dh: sep(g, u))(*nxt()))
                    if packed is not None:
                        row["fwd_packed_us"] = median_us(lambda: (lambda g, u, x, dh: packed(x))(*nxt()))

                def fwd_bwd(g, u, x, dh, fn=sep):
                    g.requires_grad_(True), u.requires_grad_(True)
                    out = torch.autograd.grad(fn(g, u), (g, u), dh)
                    g.requires_grad_(False), u.requires_grad_(False)
                    return out

                row["fwd_bwd_us"] = median_us(lambda: fwd_bwd(*nxt()))
                if name == "ours":
                    row["bwd_us"] = median_us(lambda: (lambda g, u, x, dh: k.custom_ops.geglu_backward_impl(dh, g, u, "tanh"))(*nxt()))
                    row["bwd_packed_us"] = median_us(
                        lambda: (lambda g, u, x, dh: k.custom_ops.geglu_packed_backward_impl(dh, x, "tanh"))(*nxt()))
                elif name == "eager":
                    # What eager autograd runs for gelu(g) * u, given the saved gelu(g).
                    def eager_bwd(g, u, x, dh):
                        act = F.gelu(g, approximate="tanh")
                        return torch.ops.aten.gelu_backward(dh * u, g, approximate="tanh"), dh * act
                    saved = {}
                    def eager_bwd_saved(g, u, x, dh):
                        a = saved.setdefault(g.data_ptr(), F.gelu(g, approximate="tanh"))
                        return torch.ops.aten.gelu_backward(dh * u, g, approximate="tanh"), dh * a
                    row["bwd_us"] = median_us(lambda: eager_bwd_saved(*nxt()))
                for key in ("fwd_us", "fwd_packed_us"):
                    if key in row:
                        row[key.replace("_us", "_frac")] = fwd_bytes / (row[key] * 1e-6) / 1e9 / bw
                for key in ("bwd_us", "bwd_packed_us"):
                    if key in row:
                        row[key.replace("_us", "_frac")] = bwd_bytes / (row[key] * 1e-6) / 1e9 / bw
                rows.append(row)
            print(" | ".join(f"{r['peer']}:{r['fwd_us']:.1f}/{r.get('bwd_us', float('nan')):.1f}/{r['fwd_bwd_us']:.1f}"
                             for r in rows[-len(fns):]), f"  <- pointwise I={inter} T={t} fwd/bwd/fwd+bwd us", flush=True)
    return rows


class GemmaLikeMLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.act_fn = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def mlp_fns(k, hidden, inter):
    base = GemmaLikeMLP(hidden, inter).to("cuda", torch.bfloat16)
    ours = lambda x: k.layers.GeGLUMLP.forward(base, x)
    fns = {"ours": ours, "eager": base, "compile": torch.compile(base), "compile_dynamic": torch.compile(base, dynamic=True)}
    try:
        from liger_kernel.transformers.geglu import LigerGEGLUMLP
        from types import SimpleNamespace

        liger = LigerGEGLUMLP(SimpleNamespace(hidden_size=hidden, intermediate_size=inter, hidden_act="gelu_pytorch_tanh"))
        liger.to("cuda", torch.bfloat16).load_state_dict(base.state_dict(), strict=False)
        fns["liger"] = liger
    except ImportError:
        pass
    return base, fns


def bench_mlp(k, dims=DIMS, tokens=TOKENS):
    rows = []
    for hidden, inter in dims:
        base, fns = mlp_fns(k, hidden, inter)
        params = list(base.parameters())
        for t in tokens:
            nxt = rotating(lambda: torch.randn(t, hidden, device="cuda", dtype=torch.bfloat16))
            for name, fn in fns.items():
                row = dict(stage="mlp", H=hidden, I=inter, T=t, peer=name)
                with torch.no_grad():
                    row["fwd_us"] = median_us(lambda: fn(nxt()))
                mod_params = list(fn.parameters()) if isinstance(fn, nn.Module) else params

                def step(x):
                    x.requires_grad_(True)
                    y = fn(x)
                    grads = torch.autograd.grad(y, [x, *mod_params], torch.ones_like(y))
                    x.requires_grad_(False)
                    return grads

                row["train_us"] = median_us(lambda: step(nxt()))
                if t == tokens[-1]:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    x = nxt()
                    base_mem = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    step(x)
                    torch.cuda.synchronize()
                    row["train_peak_extra_mb"] = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
                rows.append(row)
            print(" | ".join(f"{r['peer']}:{r['fwd_us']:.1f}/{r['train_us']:.1f}" for r in rows[-len(fns):]),
                  f"  <- mlp H={hidden} I={inter} T={t} fwd/train us", flush=True)
    return rows


def bench_first_call(k, inter=16384, warm_t=2048, new_ts=(3001, 777, 5)):
    """Host time of the first call at a new token count after warm-up at another one, over the
    steady-state time at that count: tuning or recompiling would show here."""
    rows = []
    for name, (sep, _) in pointwise_fns(k).items():
        g = torch.randn(warm_t, inter, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            sep(g, g)
        for t in new_ts:
            g = torch.randn(t, inter, device="cuda", dtype=torch.bfloat16)
            torch.cuda.synchronize()
            start = time.perf_counter()
            sep(g, g)
            torch.cuda.synchronize()
            first = (time.perf_counter() - start) * 1e6
            steady = median_us(lambda: sep(g, g))
            rows.append(dict(stage="first_call", peer=name, I=inter, T=t, first_us=first, steady_us=steady, ratio=first / steady))
            print(f"first call {name:16s} T={t:5d}: {first:10.1f} us vs steady {steady:8.1f} us ({first / steady:.1f}x)", flush=True)
    return rows


def bench_launch_overhead(k):
    """Host microseconds per call at T=1 (I=16384), no synchronisation: what a decode step pays."""
    g = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    rows = []
    calls = {
        "ours geglu()": lambda: k.geglu(g, g),
        "ours op (dispatcher)": lambda: k.custom_ops.geglu_forward(g, g, "tanh"),
        "ours impl (kernel launch only)": lambda: k.custom_ops.geglu_forward_impl(g, g, "tanh"),
        "eager gelu*mul": lambda: eager_pointwise(g, g),
    }
    for name, fn in calls.items():
        for _ in range(200):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2000):
            fn()
        host = (time.perf_counter() - start) / 2000 * 1e6
        torch.cuda.synchronize()
        rows.append(dict(stage="launch_overhead", peer=name, host_us=host))
        print(f"host per call {name:32s} {host:6.1f} us", flush=True)
    return rows


def bench_other_dtypes(k, bw):
    rows = []
    for dtype in (torch.float16, torch.float32):
        rows += bench_pointwise(k, bw, dtype=dtype, inters=(16384,), tokens=(8192,))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sections", default="pointwise,mlp,extras")
    args = parser.parse_args()
    sections = args.sections.split(",")
    k = load_local_build()
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    result = {"env": environment(), "copy_gbs": bw, "date": time.strftime("%Y-%m-%d"), "rows": []}
    path = args.out / f"compare_{'_'.join(sections)}.json"
    if "extras" in sections:
        result["rows"] += bench_launch_overhead(k)
        result["rows"] += bench_first_call(k)
        result["rows"] += bench_other_dtypes(k, bw)
        write_json(path, result)
    if "pointwise" in sections:
        result["rows"] += bench_pointwise(k, bw)
        write_json(path, result)
    if "mlp" in sections:
        result["rows"] += bench_mlp(k)
        write_json(path, result)


if __name__ == "__main__":
    main()
