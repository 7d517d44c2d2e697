"""The fused MLP kernels at middle token counts (T 32-512) on the GPU: correctness of the layer's
eager entry and of the gate/up kernel over several row blocks, then launch-config sweeps against
eager (cuBLAS + pointwise), device time under graph replay (and plain calls for the totals).

    python benchmarks/probes/probe_mlp_middle.py --out DIR [--dims 2048x16384,...] [--tokens 32,64,128,256,512]

Per (H, I, T): the gate/up kernel alone for each config (BLOCK_T, BLOCK_I, BLOCK_K, warps, stages),
the split-K down kernel alone for each config (T <= MAX_ROWS), cuBLAS's down projection, then the
totals: eager; the best gate/up config + cuBLAS; the best of both kernels (as `run_mlp_decode`
runs them); the layer's entry with the launch table's configs. Weights are cycled past the L2 as
in `probe_mlp_decode.py`; the roofline is the larger of the weight read at the copy bandwidth
measured in the same run and the FLOPs at the bf16 matrix rate (~790 TFLOP/s).
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (MATMUL_FLOPS, copy_bandwidth_gbs, cycling, environment, graph_us, int_list, load_local_build,  # noqa: E402
                    mlp_reference, mlp_weight_sets, mlp_weights, rel_err, shape_list, time_totals, write_json)

TILE_CONFIGS = [(64, 64, 4, 3), (64, 64, 4, 4), (64, 128, 4, 3), (128, 64, 8, 3), (128, 64, 4, 4), (32, 128, 4, 4),
                (64, 128, 8, 3), (128, 128, 8, 3), (32, 64, 4, 4)]
LARGE_T_CONFIGS = [(128, 64, 64, 4, 3), (128, 64, 64, 4, 4), (128, 128, 64, 8, 3), (128, 128, 64, 8, 4),
                   (128, 64, 128, 8, 3), (128, 128, 32, 8, 4), (128, 256, 64, 8, 3)]
DOWN_CONFIGS = [(32, 128, 16, 4, 4), (64, 128, 8, 4, 3), (64, 128, 4, 4, 4), (32, 256, 8, 4, 3), (64, 64, 8, 4, 4),
                (128, 64, 4, 8, 3)]


def gate_up_configs(t: int) -> list:
    if t <= 64:
        return [(t, *c) for c in TILE_CONFIGS]
    return [(64, *c) for c in TILE_CONFIGS] + LARGE_T_CONFIGS
def check_correctness(mlp) -> list:
    """The layer's entry (T <= MAX_ROWS) and the gate/up kernel (more rows, every swept BLOCK_T) against
    float64, with biases, odd shapes, bf16 and fp16; the bound is 4x eager's own error."""
    results = []
    for dt in (torch.bfloat16, torch.float16):
        for hidden, inter in ((2048, 16384), (1000, 3001)):
            w = mlp_weights(hidden, inter, dt)
            b = [(torch.randn(n, device="cuda") * 0.1).to(dt) for n in (inter, inter, hidden)]
            for t in (1, 17, 32, 33, 64, 100, 300):
                x = torch.randn(t, hidden, device="cuda", dtype=dt)
                row = dict(dtype=str(dt), H=hidden, I=inter, T=t)
                if t <= mlp.MAX_ROWS:
                    ref = mlp_reference(x, *w, *b)
                    eager = F.linear(F.gelu(F.linear(x, w[0], b[0]), approximate="tanh") * F.linear(x, w[1], b[1]),
                                     w[2], b[2])
                    row.update(eager_err=rel_err(eager, ref), entry_err=rel_err(mlp.run_mlp_decode(
                        x, hidden, *w, *b, True, 0), ref))
                    row["ok"] = row["entry_err"] <= 4 * row["eager_err"] + 1e-3
                else:
                    ref = mlp_reference(x, w[0], w[1], None, b[0], b[1])
                    eager = F.gelu(F.linear(x, w[0], b[0]), approximate="tanh") * F.linear(x, w[1], b[1])
                    row["eager_err"] = rel_err(eager, ref)
                    errs = []
                    for cfg in (None, (64, 64, 64, 4, 3), (128, 128, 64, 8, 3)):
                        h = torch.empty(t, inter, device="cuda", dtype=dt)
                        mlp.launch_gate_up_geglu(x, w[0], w[1], b[0], b[1], h, True, config=cfg)
                        errs.append(rel_err(h, ref))
                    row["gate_up_err"] = max(errs)
                    row["ok"] = row["gate_up_err"] <= 4 * row["eager_err"] + 1e-3
                results.append(row)
                if not row["ok"]:
                    print("WRONG", row, flush=True)
    print(f"correctness: {sum(r['ok'] for r in results)}/{len(results)} within bounds", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", default="2048x16384,3584x14336,2560x10240,768x3072", type=shape_list)
    parser.add_argument("--tokens", default="32,64,128,256,512", type=int_list)
    parser.add_argument("--rep-ms", type=int, default=30)
    args = parser.parse_args()
    k = load_local_build()
    mlp = importlib.import_module(k.__name__ + ".kernel_src.mlp")
    out = dict(env=environment(), date=time.strftime("%Y-%m-%d"))
    start = time.time()
    out["correctness"] = check_correctness(mlp)
    out["copy_gbs"] = bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s  [{time.time() - start:.0f}s]", flush=True)
    dt = torch.bfloat16
    out["summary"], out["rows"] = [], []
    for hidden, inter in args.dims:
        ws = mlp_weight_sets(hidden, inter, dt)
        copies = len(ws)
        floor_us = 3 * hidden * inter * 2 / (bw * 1e9) * 1e6
        for t in args.tokens:
            xs = [torch.randn(t, hidden, device="cuda", dtype=dt) for _ in range(copies)]
            hs = [torch.randn(t, inter, device="cuda", dtype=dt) for _ in range(copies)]
            h_out = torch.empty(t, inter, device="cuda", dtype=dt)
            y_out = torch.empty(t, hidden, device="cuda", dtype=dt)
            roofline_us = max(floor_us, 6 * t * hidden * inter / MATMUL_FLOPS * 1e6)
            point = dict(H=hidden, I=inter, T=t, floor_us=floor_us, roofline_us=roofline_us)
            timed = lambda fn: graph_us(cycling([lambda i=i: fn(i) for i in range(copies)]), rep_ms=args.rep_ms)
            parts = [("gate_up", gate_up_configs(t), lambda i, c: mlp.launch_gate_up_geglu(
                xs[i], ws[i][0], ws[i][1], None, None, h_out, True, config=c))]
            if t <= mlp.MAX_ROWS:
                # One zeroed workspace for every call: after the first, the arrival counters pass
                # SPLIT_K and no slice writes y (a [T, H] store); the weight reads and atomics are timed.
                zeroed = torch.zeros(mlp.workspace_numel(t, hidden, inter, 0) + hidden, device="cuda")
                parts.append(("down", DOWN_CONFIGS, lambda i, c: mlp.launch_down_split_k(
                    hs[i], ws[i][2], None, y_out, zeroed, config=c)))
            best = {}
            for kind, configs, part in parts:
                for cfg in configs:
                    row = dict(H=hidden, I=inter, T=t, variant=kind, config=list(cfg))
                    try:
                        part(0, cfg)
                        torch.cuda.synchronize()
                        row["us"] = timed(lambda i, c=cfg: part(i, c))
                    except Exception as exc:  # a config that does not fit (shared memory) is skipped
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                    out["rows"].append(row)
                    if "us" in row and (kind not in best or row["us"] < best[kind]["us"]):
                        best[kind] = row
            point["gate_up_best"] = dict(config=best["gate_up"]["config"], us=best["gate_up"]["us"])
            point["down_cublas_us"] = timed(lambda i: F.linear(hs[i], ws[i][2]))
            gu = tuple(best["gate_up"]["config"])

            def gate_up_cublas(x, w):
                h = torch.empty(t, inter, device="cuda", dtype=dt)
                mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True, config=gu)
                return F.linear(h, w[2])

            variants = {"eager": lambda x, w: F.linear(F.gelu(F.linear(x, w[0]), approximate="tanh") *
                                                       F.linear(x, w[1]), w[2]),
                        "gate_up+cublas": gate_up_cublas}
            if "down" in best:
                dn = tuple(best["down"]["config"])
                point["down_split_k_best"] = dict(config=list(dn), us=best["down"]["us"])

                def gate_up_split_k(x, w):
                    h = torch.empty(t, inter, device="cuda", dtype=dt)
                    workspace = torch.empty(mlp.workspace_numel(t, hidden, inter, 0) + hidden, device="cuda")
                    mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True, config=gu, workspace=workspace)
                    y = torch.empty(t, hidden, device="cuda", dtype=dt)
                    mlp.launch_down_split_k(h, w[2], None, y, workspace, config=dn)
                    return y

                variants["gate_up+split_k"] = gate_up_split_k
                variants["layer entry (table)"] = lambda x, w: mlp.run_mlp_decode(x, hidden, *w, None, None, None,
                                                                                   True, 0)
            point["totals"] = time_totals(variants, xs, ws, args.rep_ms)
            out["summary"].append(point)
            tot = point["totals"]
            print(f"H={hidden} I={inter} T={t} roof {roofline_us:.1f} | gate_up {gu} {best['gate_up']['us']:.1f} | "
                  f"down cublas {point['down_cublas_us']:.1f}"
                  + (f" split-k {point['down_split_k_best']['config']} {point['down_split_k_best']['us']:.1f}"
                     if "down" in best else "") + "\n    "
                  + " | ".join(f"{n} {r['us']:.1f} p{r['plain_us']:.1f} ({tot['eager']['us'] / r['us']:.2f}x)"
                               for n, r in tot.items()) + f"  [{time.time() - start:.0f}s]", flush=True)
            write_json(args.out / "probe_mlp_middle.json", out)
        del ws


if __name__ == "__main__":
    main()
