"""Decode-sized fused MLP on the GPU: correctness, then the launch-config sweep of the two fused
kernels against eager (cuBLAS + pointwise), device time under graph replay.

    python benchmarks/probes/probe_mlp_decode.py --out DIR [--dims 2048x16384,...] [--tokens 1,4,16]

Variants per (H, I, T):
- eager: down(gelu(gate(x)) * up(x)), five launches;
- gate_up + cuBLAS: `_gate_up_geglu_kernel` (each config), then F.linear for the down projection;
- one launch: `_mlp_decode_kernel` (each config), with its zeroed workspace allocated per call.
Weights are cycled over several copies whose total exceeds the L2 (60 MB on an H200), so every
call reads its weights from HBM as a model's decode step does. The floor is the three weight
matrices read once at the copy bandwidth measured in the same run.
"""

import argparse
import importlib
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import copy_bandwidth_gbs, cycling, environment, graph_us, load_local_build, median_us, write_json  # noqa: E402

GATE_UP_CONFIGS = [c for c in itertools.product((32, 64, 128), (128, 256), (4, 8), (3, 4))
                   if c[0] * c[1] <= 16384]
MLP_CONFIGS = [c for c in itertools.product((32, 64, 128), (128, 256), (64, 128), (4, 8), (3,))
               if c[0] * c[1] <= 16384]
L2_BYTES = 60 << 20


def reference(x, wg, wu, wd):
    """float64 with eager's rounding points."""
    dt = x.dtype
    g = (x.double() @ wg.double().T).to(dt).double()
    u = (x.double() @ wu.double().T).to(dt).double()
    h = (F.gelu(g, approximate="tanh").to(dt).double() * u).to(dt).double()
    return h @ wd.double().T


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", default="2048x16384,3584x14336,2560x10240,768x3072",
                        type=lambda v: [tuple(map(int, d.split("x"))) for d in v.split(",")])
    parser.add_argument("--tokens", default="1,4,16", type=lambda v: [int(t) for t in v.split(",")])
    parser.add_argument("--rep-ms", type=int, default=40)
    args = parser.parse_args()
    k = load_local_build()
    mlp = importlib.import_module(k.__name__ + ".kernel_src.mlp")
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    dt = torch.bfloat16
    rows, summary = [], []
    start = time.time()
    for hidden, inter in args.dims:
        wbytes = 3 * hidden * inter * 2
        copies = max(1, min(16, math.ceil(3 * L2_BYTES / wbytes)))
        ws = [tuple((torch.randn(*s, device="cuda") / s[1] ** 0.5).to(dt) for s in
                    ((inter, hidden), (inter, hidden), (hidden, inter))) for _ in range(copies)]
        floor_us = wbytes / (bw * 1e9) * 1e6
        for t in args.tokens:
            xs = [torch.randn(t, hidden, device="cuda", dtype=dt) for _ in range(copies)]
            pairs = list(zip(xs, ws))
            ref = reference(xs[0], *ws[0])
            eager = lambda x, w: F.linear(F.gelu(F.linear(x, w[0]), approximate="tanh") * F.linear(x, w[1]), w[2])

            def gate_up_then_down(x, w, cfg):
                h = torch.empty(t, inter, device="cuda", dtype=dt)
                mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True, config=cfg)
                return F.linear(h, w[2])

            def one_launch(x, w, cfg):
                y = torch.empty(t, hidden, device="cuda", dtype=dt)
                mlp.launch_mlp_decode(x, w[0], w[1], w[2], None, None, None, y, True, config=cfg)
                return y

            point = dict(H=hidden, I=inter, T=t, floor_us=floor_us, weight_copies=copies)
            e = eager(*pairs[0])
            point["eager_err"] = rel_err(e, ref)
            point["eager_us"] = graph_us(cycling([lambda p=p: eager(*p) for p in pairs]), rep_ms=args.rep_ms)
            best = {}
            for kind, configs, fn in (("gate_up", GATE_UP_CONFIGS, gate_up_then_down), ("mlp", MLP_CONFIGS, one_launch)):
                for cfg in configs:
                    row = dict(point, variant=kind, config=list(cfg))
                    try:
                        out = fn(*pairs[0], cfg)
                        torch.cuda.synchronize()
                        row["err"] = rel_err(out, ref)
                        row["us"] = graph_us(cycling([lambda p=p, c=cfg: fn(*p, c) for p in pairs]), rep_ms=args.rep_ms)
                    except Exception as exc:  # a config that does not fit (shared memory) is skipped
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                        rows.append(row)
                        continue
                    rows.append(row)
                    if row["err"] < 2e-2 and (kind not in best or row["us"] < best[kind]["us"]):
                        best[kind] = row
            for kind, row in best.items():
                cfg = tuple(row["config"])
                fn = gate_up_then_down if kind == "gate_up" else one_launch
                row["plain_us"] = median_us(cycling([lambda p=p: fn(*p, cfg) for p in pairs]), rep_ms=args.rep_ms)
                # Repeat the graph timing of the winner next to eager's, to see the spread.
                row["us_again"] = graph_us(cycling([lambda p=p: fn(*p, cfg) for p in pairs]), rep_ms=args.rep_ms)
            point["eager_plain_us"] = median_us(cycling([lambda p=p: eager(*p) for p in pairs]), rep_ms=args.rep_ms)
            point["eager_us_again"] = graph_us(cycling([lambda p=p: eager(*p) for p in pairs]), rep_ms=args.rep_ms)
            point["best"] = {kind: dict(config=r["config"], us=r["us"], us_again=r["us_again"], plain_us=r["plain_us"],
                                        err=r["err"]) for kind, r in best.items()}
            summary.append(point)
            line = (f"H={hidden:5d} I={inter:5d} T={t:3d} floor {floor_us:6.1f} | eager {point['eager_us']:6.1f}/"
                    f"{point['eager_us_again']:6.1f} plain {point['eager_plain_us']:6.1f}")
            for kind, r in best.items():
                line += (f" | {kind} {r['us']:6.1f}/{r['us_again']:6.1f} plain {r['plain_us']:6.1f} "
                         f"({floor_us / r['us']:.0%} floor, {point['eager_us'] / r['us']:.3f}x) {r['config']} err {r['err']:.1e}")
            print(line, f"[{time.time() - start:.0f}s]", flush=True)
            write_json(args.out / "probe_mlp_decode.json",
                       {"env": environment(), "copy_gbs": bw, "date": time.strftime("%Y-%m-%d"), "summary": summary,
                        "rows": rows})
        del ws


if __name__ == "__main__":
    main()
