"""A persistent gate/up GEMM with the GeGLU in its epilogue, its operands through tensor descriptors
(TMA), at prefill token counts on the GPU: correctness against float64, then config sweeps against
cuBLAS, device time under graph replay. Not part of the package: on the H200 its best form
reached 534-563 TFLOP/s against cuBLAS's 648-673 on the same GEMMs (benchmarks/NOTES.md, session
9), which loses to cuBLAS + the pointwise kernel at every token count.

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
import os
from functools import lru_cache
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (copy_bandwidth_gbs, cycling, environment, graph_us, int_list, load_local_build, median_us,  # noqa: E402
                    mlp_reference, mlp_weight_sets, rel_err, shape_list, time_totals, write_json)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "torch-ext" / "geglu" / "kernel_src"))
from gelu_math import gelu  # noqa: E402  (the package's GELU device function; imports nothing of the package)

USE_LIBDEVICE = os.environ.get("TRITON_INTERPRET") != "1"  # libdevice exists on a GPU only
DEFAULT_CONFIG = (128, 128, 64, 8, 8, 3)


@triton.jit
def _gate_up_geglu_gemm_kernel(
    x_desc, wg_desc, wu_desc, h_desc, bg_ptr, bu_ptr,
    n_rows, H, I,
    HAS_BIAS: tl.constexpr,
    APPROX_TANH: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr = True,
    WARP_SPECIALIZE: tl.constexpr = False,
):
    dtype = h_desc.dtype
    IS_FP32: tl.constexpr = dtype == tl.float32
    n_m = tl.cdiv(n_rows, BLOCK_M)
    n_n = tl.cdiv(I, BLOCK_N)
    k_tiles = tl.cdiv(H, BLOCK_K)
    per_group = GROUP_M * n_n
    for tile in tl.range(tl.program_id(0), n_m * n_n, tl.num_programs(0), flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        # Within a group, row tiles run fastest: the programs in flight read each weight tile
        # from HBM once and from L2 for the other row tiles.
        first_m = (tile // per_group) * GROUP_M
        group_m = min(n_m - first_m, GROUP_M)
        pid_m = first_m + (tile % per_group) % group_m
        pid_n = (tile % per_group) // group_m
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for ki in range(k_tiles):
            off_k = ki * BLOCK_K
            x = x_desc.load([off_m, off_k])
            wg = wg_desc.load([off_n, off_k])
            wu = wu_desc.load([off_n, off_k])
            if not USE_LIBDEVICE:  # the interpreter's dot mishandles bf16 (numpy has none): fp32 there
                x, wg, wu = x.to(tl.float32), wg.to(tl.float32), wu.to(tl.float32)
            acc_g = tl.dot(x, wg.T, acc_g, input_precision="ieee" if IS_FP32 else "tf32")
            acc_u = tl.dot(x, wu.T, acc_u, input_precision="ieee" if IS_FP32 else "tf32")
        if HAS_BIAS:
            cols = off_n + tl.arange(0, BLOCK_N)
            acc_g += tl.load(bg_ptr + cols, mask=cols < I, other=0.0).to(tl.float32)[None, :]
            acc_u += tl.load(bu_ptr + cols, mask=cols < I, other=0.0).to(tl.float32)[None, :]
        g = acc_g.to(dtype).to(tl.float32)  # the projections' outputs, as eager stores them
        u = acc_u.to(dtype).to(tl.float32)
        act = gelu(g, APPROX_TANH, USE_LIBDEVICE).to(dtype).to(tl.float32)
        h_desc.store([off_m, off_n], (act * u).to(dtype))


@lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    if device_index < 0:
        return 4  # the interpreter: a few programs, so the persistent loop runs several tiles each
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_gate_up_geglu_gemm(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, b_gate, b_up,
                              out: torch.Tensor, approx_tanh: bool, config: tuple = DEFAULT_CONFIG,
                              persistent: bool = True, flatten: bool = True, warp_specialize: bool = False) -> None:
    """out [T, I] = gelu(x w_gate^T + b_gate) * (x w_up^T + b_up) for x [T, H], weights [I, H],
    biases [I] or None (16-byte aligned bases and row strides, as TMA needs). config: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps,
    stages); persistent False: one program per tile."""
    block_m, block_n, block_k, group_m, warps, stages = config
    n_rows, hidden = x.shape
    inter = w_gate.shape[0]
    has_bias = b_gate is not None
    x_desc = TensorDescriptor(x, [n_rows, hidden], [x.stride(0), 1], [block_m, block_k])
    wg_desc = TensorDescriptor(w_gate, [inter, hidden], [w_gate.stride(0), 1], [block_n, block_k])
    wu_desc = TensorDescriptor(w_up, [inter, hidden], [w_up.stride(0), 1], [block_n, block_k])
    h_desc = TensorDescriptor(out, [n_rows, inter], [out.stride(0), 1], [block_m, block_n])
    tiles = triton.cdiv(n_rows, block_m) * triton.cdiv(inter, block_n)
    grid = (min(tiles, _sm_count(x.get_device() if x.is_cuda else -1)) if persistent else tiles,)
    _gate_up_geglu_gemm_kernel[grid](
        x_desc, wg_desc, wu_desc, h_desc, b_gate if has_bias else x, b_up if has_bias else x,
        n_rows, hidden, inter, has_bias, approx_tanh, USE_LIBDEVICE, block_m, block_n, block_k, group_m,
        flatten, warp_specialize, num_warps=warps, num_stages=stages)



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
    gemm = sys.modules[__name__]
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
        ws = mlp_weight_sets(hidden, inter, dt)
        copies = len(ws)
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
            point["totals"] = time_totals(variants, xs, ws, args.rep_ms)
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
