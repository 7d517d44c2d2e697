"""The persistent TMA gate/up GEMM (`kernel_src/mlp_gemm.py`) at prefill token counts on the GPU:
correctness against float64, then config sweeps against cuBLAS, device time under graph replay.

    python benchmarks/probes/probe_mlp_gemm.py --out DIR [--dims 2048x16384,...] [--tokens 256,...,8192]

Per (H, I, T): cuBLAS's two projections, eager's gate/up stage (two cuBLAS GEMMs, then gelu * up),
the pointer-based gate/up kernel (`mlp.py`, the table's config), the TMA GEMM for each config
(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps, stages); then the whole MLP: eager, the layer's
unfused path (cuBLAS + the pointwise kernel), and the best TMA config + cuBLAS down. The matrix
rate is measured in the same run (a large cuBLAS GEMM) and each time is also given as a
fraction of it.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (copy_bandwidth_gbs, cycling, environment, graph_us, int_list, load_local_build,  # noqa: E402
                    median_us, mlp_reference, rel_err, shape_list, weight_copies, write_json)

CONFIGS = [(128, 128, 64, 8, 8, 3), (128, 128, 64, 8, 8, 4), (128, 64, 64, 8, 4, 4), (128, 64, 64, 8, 8, 4),
           (64, 128, 64, 8, 4, 4), (128, 128, 32, 8, 8, 5), (256, 64, 64, 8, 8, 3), (64, 256, 64, 8, 8, 3),
           (128, 128, 64, 32, 8, 3)]


def check_correctness(gemm) -> list:
    """The GEMM against float64 (tanh and exact GELU, biases, bf16 and fp16, odd T and I); the bound
    is 4x eager's own error."""
    results = []
    for dt in (torch.bfloat16, torch.float16):
        for hidden, inter in ((2048, 16384), (1000, 3000)):
            wg, wu = ((torch.randn(inter, hidden, device="cuda") / hidden ** 0.5).to(dt) for _ in range(2))
            bg, bu = ((torch.randn(inter, device="cuda") * 0.1).to(dt) for _ in range(2))
            for t in (1, 129, 300, 1000, 4096):
                x = torch.randn(t, hidden, device="cuda", dtype=dt)
                for bias in (False, True):
                    b = (bg, bu) if bias else (None, None)
                    ref = mlp_reference(x, wg, wu, None, *b)
                    eager = F.gelu(F.linear(x, wg, b[0]), approximate="tanh") * F.linear(x, wu, b[1])
                    row = dict(dtype=str(dt), H=hidden, I=inter, T=t, bias=bias, eager_err=rel_err(eager, ref))
                    errs = []
                    for cfg in (CONFIGS[0], CONFIGS[2], CONFIGS[6]):
                        h = torch.full((t, inter), float("nan"), device="cuda", dtype=dt)
                        gemm.launch_gate_up_geglu_gemm(x, wg, wu, *b, h, True, config=cfg)
                        errs.append(rel_err(h, ref))
                    row["gemm_err"] = max(errs)
                    row["ok"] = row["gemm_err"] <= 4 * row["eager_err"] + 1e-3
                    results.append(row)
                    if not row["ok"]:
                        print("WRONG", row, flush=True)
    print(f"correctness: {sum(r['ok'] for r in results)}/{len(results)} within bounds", flush=True)
    return results


# Loop forms tried on the best tile configs of the first run: (persistent, flatten, warp_specialize).
FORMS = [(True, True, False), (True, False, False), (False, False, False), (True, True, True), (False, False, True)]


def sweep_forms(gemm, args, out) -> None:
    """The loop forms at (2048, 16384): is the persistent flattened loop what holds the rate?"""
    dt = torch.bfloat16
    hidden, inter = 2048, 16384
    w = [(torch.randn(inter, hidden, device="cuda") / hidden ** 0.5).to(dt) for _ in range(2)]
    out["forms"] = []
    for t in (512, 2048, 8192):
        x = torch.randn(t, hidden, device="cuda", dtype=dt)
        h = torch.empty(t, inter, device="cuda", dtype=dt)
        ref = mlp_reference(x, *w)
        cublas = graph_us(lambda: (F.linear(x, w[0]), F.linear(x, w[1])), rep_ms=args.rep_ms)
        line = [f"T={t} cuBLAS 2 GEMMs {cublas:.1f}"]
        for cfg in ((128, 128, 64, 8, 8, 3), (128, 128, 64, 8, 8, 4), (128, 64, 64, 8, 4, 4), (128, 128, 128, 8, 8, 2)):
            for form in FORMS:
                row = dict(T=t, config=list(cfg), form=list(form), cublas_us=cublas)
                try:
                    def fn(c=cfg, f=form):
                        gemm.launch_gate_up_geglu_gemm(x, *w, None, None, h, True, config=c, persistent=f[0],
                                                       flatten=f[1], warp_specialize=f[2])
                    h.fill_(float("nan"))
                    fn()
                    torch.cuda.synchronize()
                    row["err"] = rel_err(h, ref)
                    row["us"] = graph_us(fn, rep_ms=args.rep_ms)
                    row["tflops"] = 4 * t * hidden * inter / row["us"] / 1e6
                    line.append(f"{cfg[:3]}{cfg[4:]} {''.join('PFW'[i] if v else '-' for i, v in enumerate(form))} "
                                f"{row['us']:.1f} ({row['tflops']:.0f}, err {row['err']:.1e})")
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                    line.append(f"{cfg} {form} ERR {row['error'][:60]}")
                out["forms"].append(row)
        print("\n  ".join(line), flush=True)
        write_json(args.out / "probe_mlp_gemm_forms.json", out)


def matmul_rate(dt=torch.bfloat16) -> float:
    """cuBLAS's bf16 rate (FLOP/s) on an 8192 x 8192 x 8192 product."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=dt) for _ in range(2))
    return 2 * 8192 ** 3 / (median_us(lambda: a @ b) * 1e-6)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", default="2048x16384,3584x14336,2560x10240,768x3072", type=shape_list)
    parser.add_argument("--tokens", default="256,512,1024,2048,8192", type=int_list)
    parser.add_argument("--rep-ms", type=int, default=30)
    parser.add_argument("--forms", action="store_true", help="only the loop-form sweep at (2048, 16384)")
    args = parser.parse_args()
    k = load_local_build()
    mlp = importlib.import_module(k.__name__ + ".kernel_src.mlp")
    gemm = importlib.import_module(k.__name__ + ".kernel_src.mlp_gemm")
    out = dict(env=environment(), date=time.strftime("%Y-%m-%d"))
    start = time.time()
    if args.forms:
        out["matmul_tflops"] = matmul_rate() / 1e12
        print(f"cuBLAS bf16 {out['matmul_tflops']:.0f} TFLOP/s", flush=True)
        return sweep_forms(gemm, args, out)
    out["correctness"] = check_correctness(gemm)
    out["copy_gbs"] = copy_bandwidth_gbs()
    out["matmul_tflops"] = rate = matmul_rate() / 1e12
    print(f"copy {out['copy_gbs']:.0f} GB/s, cuBLAS bf16 {rate:.0f} TFLOP/s  [{time.time() - start:.0f}s]", flush=True)
    dt = torch.bfloat16
    out["summary"], out["rows"] = [], []
    for hidden, inter in args.dims:
        copies = weight_copies(hidden, inter)
        ws = [tuple((torch.randn(*s, device="cuda") / s[1] ** 0.5).to(dt) for s in
                    ((inter, hidden), (inter, hidden), (hidden, inter))) for _ in range(copies)]
        for t in args.tokens:
            xs = [torch.randn(t, hidden, device="cuda", dtype=dt) for _ in range(copies)]
            h_out = torch.empty(t, inter, device="cuda", dtype=dt)
            gate_up_flop = 4 * t * hidden * inter
            point = dict(H=hidden, I=inter, T=t, gate_up_gflop=gate_up_flop / 1e9)
            timed = lambda fn: graph_us(cycling([lambda i=i: fn(i) for i in range(copies)]), rep_ms=args.rep_ms)
            point["cublas_two_gemms_us"] = timed(lambda i: (F.linear(xs[i], ws[i][0]), F.linear(xs[i], ws[i][1])))
            point["eager_gate_up_us"] = timed(lambda i: F.gelu(F.linear(xs[i], ws[i][0]), approximate="tanh")
                                              * F.linear(xs[i], ws[i][1]))
            pointer_cfg = mlp.launch_config(0, "gate_up", hidden, inter, t)
            point["pointer_kernel"] = dict(config=list(pointer_cfg), us=timed(lambda i: mlp.launch_gate_up_geglu(
                xs[i], ws[i][0], ws[i][1], None, None, h_out, True, config=pointer_cfg)))
            best = None
            for cfg in CONFIGS:
                row = dict(H=hidden, I=inter, T=t, config=list(cfg))
                try:
                    gemm.launch_gate_up_geglu_gemm(xs[0], ws[0][0], ws[0][1], None, None, h_out, True, config=cfg)
                    torch.cuda.synchronize()
                    row["us"] = timed(lambda i, c=cfg: gemm.launch_gate_up_geglu_gemm(
                        xs[i], ws[i][0], ws[i][1], None, None, h_out, True, config=c))
                    row["tflops"] = gate_up_flop / row["us"] / 1e6
                except Exception as exc:  # a config that does not fit (shared memory, registers) is skipped
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                out["rows"].append(row)
                if "us" in row and (best is None or row["us"] < best["us"]):
                    best = row
            point["gemm_best"] = dict(config=best["config"], us=best["us"], tflops=best["tflops"],
                                      of_rate=best["tflops"] / rate)
            cfg = tuple(best["config"])

            def fused(x, w):
                h = torch.empty(t, inter, device="cuda", dtype=dt)
                gemm.launch_gate_up_geglu_gemm(x, w[0], w[1], None, None, h, True, config=cfg)
                return F.linear(h, w[2])

            variants = {
                "eager": lambda x, w: F.linear(F.gelu(F.linear(x, w[0]), approximate="tanh") * F.linear(x, w[1]),
                                               w[2]),
                "cublas+pointwise": lambda x, w: F.linear(k.geglu(F.linear(x, w[0]), F.linear(x, w[1])), w[2]),
                "gemm+cublas": fused,
            }
            point["totals"] = {}
            for name, fn in variants.items():
                calls = cycling([lambda i=i, f=fn: f(xs[i], ws[i]) for i in range(copies)])
                calls()
                point["totals"][name] = dict(us=graph_us(calls, rep_ms=args.rep_ms),
                                             plain_us=median_us(calls, rep_ms=args.rep_ms))
            out["summary"].append(point)
            tot = point["totals"]
            print(f"H={hidden} I={inter} T={t} | 2 GEMMs {point['cublas_two_gemms_us']:.1f} eager g/u "
                  f"{point['eager_gate_up_us']:.1f} ptr {point['pointer_kernel']['us']:.1f} | TMA {cfg} "
                  f"{best['us']:.1f} ({best['tflops']:.0f} TF/s)\n    "
                  + " | ".join(f"{n} {r['us']:.1f} p{r['plain_us']:.1f} ({tot['eager']['us'] / r['us']:.3f}x)"
                               for n, r in tot.items()) + f"  [{time.time() - start:.0f}s]", flush=True)
            write_json(args.out / "probe_mlp_gemm.json", out)
        del ws


if __name__ == "__main__":
    main()
