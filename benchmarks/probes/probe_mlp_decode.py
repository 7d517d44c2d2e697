"""Decode-sized fused MLP on the GPU: correctness, then the launch-config sweep of the two fused
kernels against eager (cuBLAS + pointwise), device time under graph replay.

    python benchmarks/probes/probe_mlp_decode.py --out DIR [--dims 2048x16384,...] [--tokens 1,4,16]

Middle T (32-512) has its own probe, `probe_mlp_middle.py` (row tiles up to 128, several row blocks).

Variants per (H, I, T):
- eager: down(gelu(gate(x)) * up(x)), five launches;
- the parts alone: `_gate_up_geglu_kernel` and `_down_split_k_kernel` (each config), cuBLAS's down;
- gate_up + cuBLAS: the best gate/up config, then F.linear for the down projection;
- gate_up + split_k: the best configs of both kernels, the gate/up kernel zeroing the down kernel's
  workspace (as the layer runs them);
- the layer's eager entry (`run_mlp_decode`: the configs of the launch table).
(A one-launch kernel, gate/up and down in one grid with fp32 atomics per program, was swept in an
earlier version of this probe: slower than gate_up + cuBLAS at every point; benchmarks/NOTES.md.)
Weights are cycled over several copies whose total exceeds the L2 (60 MB on an H200), so every
call reads its weights from HBM as a model's decode step does. The floor is the three weight
matrices read once at the copy bandwidth measured in the same run.
"""

import argparse
import importlib
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (MATMUL_FLOPS, copy_bandwidth_gbs, cycling, environment, graph_us, int_list, load_local_build,  # noqa: E402
                    median_us, mlp_reference, mlp_weight_sets, rel_err, shape_list, write_json)

# (BLOCK_I, BLOCK_K, warps, stages); BLOCK_T is the row tile that holds T (`mlp.row_tile`).
TILE_CONFIGS = [c for c in itertools.product((16, 32, 64, 128), (64, 128), (2, 4, 8), (3, 4, 5))
                if c[0] * c[1] <= 16384 and not (c[0] == 128 and c[2] == 2)]
DOWN_CONFIGS = list(itertools.product((32, 64, 128), (128, 256), (4, 8, 16), (4,), (3, 4)))
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", default="2048x16384,3584x14336,2560x10240,768x3072", type=shape_list)
    parser.add_argument("--tokens", default="1,4,16", type=int_list)
    parser.add_argument("--rep-ms", type=int, default=40)
    parser.add_argument("--quick", action="store_true",
                        help="gate/up: only the launch table's config; split-K down: BLOCK_N 64 only")
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
        ws = mlp_weight_sets(hidden, inter, dt)
        copies = len(ws)
        floor_us = wbytes / (bw * 1e9) * 1e6
        for t in args.tokens:
            xs = [torch.randn(t, hidden, device="cuda", dtype=dt) for _ in range(copies)]
            pairs = list(zip(xs, ws))
            ref = mlp_reference(xs[0], *ws[0])
            eager = lambda x, w: F.linear(F.gelu(F.linear(x, w[0]), approximate="tanh") * F.linear(x, w[1]), w[2])

            # Middle T: the matrix work's floor too (bf16 ~790 TFLOP/s measured on this kind of machine).
            roofline_us = max(floor_us, 6 * t * hidden * inter / MATMUL_FLOPS * 1e6)
            point = dict(H=hidden, I=inter, T=t, floor_us=floor_us, roofline_us=roofline_us, weight_copies=copies)
            hs = [torch.randn(t, inter, device="cuda", dtype=dt) for _ in range(copies)]
            h_out = torch.empty(t, inter, device="cuda", dtype=dt)
            y_out = torch.empty(t, hidden, device="cuda", dtype=dt)
            timed = lambda fn: graph_us(cycling([lambda i=i: fn(i) for i in range(copies)]), rep_ms=args.rep_ms)

            # The parts alone: gate/up kernel configs, cuBLAS down, split-K down configs.
            best = {}
            gate_up_configs = ([mlp.launch_config(0, "gate_up", hidden, inter, t)] if args.quick
                               else [(mlp.row_tile(t), *c) for c in TILE_CONFIGS])
            down_configs = [c for c in DOWN_CONFIGS if c[0] == 64] if args.quick else DOWN_CONFIGS
            parts = [("gate_up", gate_up_configs, lambda i, c: mlp.launch_gate_up_geglu(
                xs[i], ws[i][0], ws[i][1], None, None, h_out, True, config=c))]
            if t <= mlp.MAX_ROWS:  # the split-K down kernel takes one tile of rows
                parts.append(("down", down_configs, lambda i, c: mlp.launch_down_split_k(
                    hs[i], ws[i][2], None, y_out, torch.zeros(t * hidden + hidden, device="cuda"), config=c)))
            for kind, configs, part in parts:
                for cfg in configs:
                    row = dict(point, variant=kind, config=list(cfg))
                    try:
                        part(0, cfg)
                        torch.cuda.synchronize()
                        row["us"] = timed(lambda i, c=cfg: part(i, c))
                    except Exception as exc:  # a config that does not fit (shared memory) is skipped
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                    rows.append(row)
                    if "us" in row and (kind not in best or row["us"] < best[kind]["us"]):
                        best[kind] = row
            point["gate_up_alone"] = dict(config=best["gate_up"]["config"], us=best["gate_up"]["us"])
            if "down" in best:
                point["down_split_k_alone"] = dict(config=best["down"]["config"], us=best["down"]["us"])
            point["down_cublas_alone_us"] = timed(lambda i: F.linear(hs[i], ws[i][2]))
            gu, dn = tuple(best["gate_up"]["config"]), tuple(best["down"]["config"]) if "down" in best else None

            def gate_up_cublas(x, w):
                h = torch.empty(t, inter, device="cuda", dtype=dt)
                mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True, config=gu)
                return F.linear(h, w[2])

            def gate_up_split_k(x, w):
                h = torch.empty(t, inter, device="cuda", dtype=dt)
                workspace = torch.empty(t * hidden + triton.cdiv(hidden, dn[0]), device="cuda")
                mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True, config=gu, workspace=workspace)
                y = torch.empty(t, hidden, device="cuda", dtype=dt)
                mlp.launch_down_split_k(h, w[2], None, y, workspace, config=dn)
                return y

            def layer_entry(x, w):
                return mlp.run_mlp_decode(x, hidden, w[0], w[1], w[2], None, None, None, True, 0)

            variants = {"eager": eager, "gate_up+cublas": gate_up_cublas}
            if dn is not None:
                variants.update({"gate_up+split_k": gate_up_split_k, "layer entry (table configs)": layer_entry})
            point["totals"] = {}
            for name, fn in variants.items():
                out = fn(*pairs[0])
                torch.cuda.synchronize()
                calls = cycling([lambda p=p, f=fn: f(*p) for p in pairs])
                point["totals"][name] = dict(err=rel_err(out, ref), us=graph_us(calls, rep_ms=args.rep_ms),
                                             plain_us=median_us(calls, rep_ms=args.rep_ms))
            for name, fn in variants.items():  # a second round, to see the spread
                calls = cycling([lambda p=p, f=fn: f(*p) for p in pairs])
                point["totals"][name]["us_again"] = graph_us(calls, rep_ms=args.rep_ms)
            summary.append(point)
            tot = point["totals"]
            line = (f"H={hidden:5d} I={inter:5d} T={t:3d} floor {floor_us:6.1f} (with FLOPs {point['roofline_us']:6.1f}) | "
                    f"gate_up {point['gate_up_alone']['us']:.1f} {point['gate_up_alone']['config']} "
                    f"({2 * floor_us / 3 / point['gate_up_alone']['us']:.0%} of its weight read) | down cublas "
                    f"{point['down_cublas_alone_us']:.1f} ({floor_us / 3 / point['down_cublas_alone_us']:.0%})")
            if "down_split_k_alone" in point:
                line += (f" split-k {point['down_split_k_alone']['us']:.1f} {point['down_split_k_alone']['config']} "
                         f"({floor_us / 3 / point['down_split_k_alone']['us']:.0%})")
            line += "\n   "
            for name, r in tot.items():
                line += (f" {name} {r['us']:.1f}/{r['us_again']:.1f} p{r['plain_us']:.1f} "
                         f"({floor_us / min(r['us'], r['us_again']):.0%}, e{r['err']:.0e}) |")
            print(line, f"[{time.time() - start:.0f}s]", flush=True)
            write_json(args.out / "probe_mlp_decode.json",
                       {"env": environment(), "copy_gbs": bw, "date": time.strftime("%Y-%m-%d"), "summary": summary,
                        "rows": rows})
        del ws


if __name__ == "__main__":
    main()
