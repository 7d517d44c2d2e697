"""Probe: what Inductor launches for the T=1 GeGLU forward (grid, block, registers; its source
with TORCH_LOGS=output_code), and our forward under other tiny tile shapes and with fewer
runtime arguments, interleaved with it (notes, variant 21).

    python benchmarks/probe_inductor_tiny.py --out DIR
"""
import argparse
import json
import statistics
import tempfile
from pathlib import Path

import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py
from common import (cycling, eager_packed, eager_separate, environment, graph_replay, interleaved_rounds,
                    load_local_pointwise, write_json)

torch._dynamo.config.cache_size_limit = 256


def launches(fn):
    """Name, grid, block and registers of each kernel that fn() launches (profiler trace)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [dict(name=ev["name"], grid=ev.get("args", {}).get("grid"), block=ev.get("args", {}).get("block"),
                 regs=ev.get("args", {}).get("registers per thread"))
            for ev in _trace_events(prof) if ev.get("cat") == "kernel"]


def _trace_events(prof):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        return json.load(open(f.name))["traceEvents"]


def lean_forward(pw, g, u, block, warps):
    """Our flat forward (one row, or contiguous operands) with only the pointers and the sizes as
    runtime arguments (strides passed as None: compile-time constants the flat form never reads)."""
    out = torch.empty_like(g)
    pw._geglu_forward_kernel[(g.numel() // block,)](
        g, u, out, *pw._sizes(*g.shape), None, None, None, APPROX_TANH=True, USE_LIBDEVICE=True,
        INDEXING=pw.FLAT, BLOCK_ROWS=1, BLOCK_COLS=block, ROW_GROUP=1, USE_PDL=False, num_warps=warps)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pw = load_local_pointwise()
    t = 1
    result = {"env": environment(), "launches": {}, "rows": []}
    for layout, inter in ((lay, i) for i in (3072, 14336) for lay in ("separate", "packed")):
        xs = [torch.randn(t, 2 * inter, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
        ops = [(x[:, :inter], x[:, inter:]) if layout == "packed" else
               (x[:, :inter].contiguous(), x[:, inter:].contiguous()) for x in xs]
        base = eager_separate if layout == "separate" else eager_packed
        calls = {}
        for name, fn in (("compile", torch.compile(base)), ("compile_dynamic", torch.compile(base, dynamic=True))):
            calls[name] = [(lambda g=g, u=u, f=fn: f(g, u)) if layout == "separate" else (lambda x=x, f=fn: f(x))
                           for (g, u), x in zip(ops, xs)]
            calls[name][0]()
        calls["ours"] = [lambda g=g, u=u: pw.launch_geglu_forward(g, u, torch.empty_like(g), True, traceable=False)
                         for g, u in ops]
        for block, warps in ((128, 4), (256, 8)):
            cfg = pw.PointwiseConfig(1, block, warps, pw.FLAT)
            calls[f"ours_{block}x{warps}"] = [lambda g=g, u=u, c=cfg: pw.launch_geglu_forward(
                g, u, torch.empty_like(g), True, c, traceable=False) for g, u in ops]
            calls[f"lean_{block}x{warps}"] = [lambda g=g, u=u, b=block, w=warps: lean_forward(pw, g, u, b, w)
                                              for g, u in ops]
        for name in ("compile", "compile_dynamic", "ours", "lean_256x8"):
            result["launches"][f"{layout}/{name}"] = launches(calls[name][0])
            print(layout, name, result["launches"][f"{layout}/{name}"], flush=True)
        g, u = ops[0]
        ref = torch.empty_like(g)
        pw.launch_geglu_forward(g, u, ref, True, traceable=False)
        assert torch.equal(ref, lean_forward(pw, g, u, 128, 4))
        times = interleaved_rounds({n: graph_replay(cycling(c)) for n, c in calls.items()}, 9, rep_ms=50)
        row = dict(layout=layout, I=inter, T=t, **{f"{n}_us": statistics.median(v) for n, v in times.items()},
                   **{f"{n}_rounds_us": v for n, v in times.items()})
        result["rows"].append(row)
        print(layout, " ".join(f"{n}={statistics.median(v):.3f}" for n, v in
                               sorted(times.items(), key=lambda kv: statistics.median(kv[1]))), flush=True)
        write_json(args.out / "probe_inductor_tiny.json", result)


if __name__ == "__main__":
    main()
