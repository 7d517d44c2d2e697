"""Sweep the pointwise kernels' launch parameters on the GPU, against the copy bandwidth.

    python benchmarks/sweep_pointwise.py --out results.json
"""

import argparse
import itertools
from pathlib import Path

import torch

from common import copy_bandwidth_gbs, environment, load_local_build, median_us, rotating, write_json

SHAPES = [(1, 16384), (16, 16384), (128, 16384), (512, 14336), (2048, 16384), (8192, 16384), (8192, 3072), (4096, 10240)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    k = load_local_build()
    pw = __import__(k.__name__ + ".kernel_src.geglu_pointwise", fromlist=["x"])
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s")
    configs = [None] + [
        pw.PointwiseConfig(block_rows=r, block_cols=c, num_warps=w)
        for c, r, w in itertools.product([512, 1024, 2048], [1, 2, 4, 8], [4, 8])
        if 512 <= r * c <= 16384
    ]
    rows = []
    for t, i in SHAPES:
        make = lambda: tuple(torch.randn(t, i, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        nxt = rotating(make)
        out = torch.empty(t, i, device="cuda", dtype=torch.bfloat16)
        dg, du = torch.empty_like(out), torch.empty_like(out)
        best = {}
        for cfg in configs:
            fwd = median_us(lambda: (lambda g, u, dh: pw.launch_geglu_forward(g, u, out, True, cfg))(*nxt()))
            bwd = median_us(lambda: (lambda g, u, dh: pw.launch_geglu_backward(dh, g, u, dg, du, True, cfg))(*nxt()))
            name = "heuristic" if cfg is None else f"r{cfg.block_rows}c{cfg.block_cols}w{cfg.num_warps}"
            fwd_frac = 3 * t * i * 2 / (fwd * 1e-6) / 1e9 / bw
            bwd_frac = 5 * t * i * 2 / (bwd * 1e-6) / 1e9 / bw
            rows.append(dict(T=t, I=i, config=name, fwd_us=fwd, bwd_us=bwd, fwd_frac=fwd_frac, bwd_frac=bwd_frac))
            for key, val in (("fwd", fwd), ("bwd", bwd)):
                if key not in best or val < best[key][1]:
                    best[key] = (name, val)
        h = [r for r in rows if r["T"] == t and r["I"] == i and r["config"] == "heuristic"][0]
        print(f"T={t:5d} I={i:5d} heuristic fwd {h['fwd_us']:8.1f}us ({h['fwd_frac']:.0%}) bwd {h['bwd_us']:8.1f}us "
              f"({h['bwd_frac']:.0%}) | best fwd {best['fwd'][0]} {best['fwd'][1]:.1f} bwd {best['bwd'][0]} {best['bwd'][1]:.1f}")
    write_json(args.out, {"env": environment(), "copy_gbs": bw, "rows": rows})


if __name__ == "__main__":
    main()
