"""Launch-parameter sweep at small token counts (device time under CUDA-graph replay), with
torch.compile's fused kernel as the reference. Notes: benchmarks/NOTES.md.

    python benchmarks/sweep_small_tokens.py --out DIR
"""

import argparse
import importlib
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from common import environment, graph_us, load_local_build, write_json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    k = load_local_build()
    pw = importlib.import_module(k.__name__ + ".kernel_src.geglu_pointwise")
    compiled = torch.compile(lambda g, u: F.gelu(g, approximate="tanh") * u)
    configs = [pw.PointwiseConfig(1, c, w, flat) for c, w, flat in
               itertools.product([256, 512, 1024, 2048], [1, 2, 4, 8], [False, True])
               if c // (32 * w) in (1, 2, 4, 8, 16)]
    rows = []
    for inter, t in itertools.product([3072, 10240, 16384], [1, 16, 128]):
        g, u, dh = (torch.randn(t, inter, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out, dg, du = torch.empty_like(g), torch.empty_like(g), torch.empty_like(g)
        ref = graph_us(lambda: compiled(g, u))
        for cfg in [None] + configs:
            fwd = graph_us(lambda: pw.launch_geglu_forward(g, u, out, True, cfg, traceable=False))
            bwd = graph_us(lambda: pw.launch_geglu_backward(dh, g, u, dg, du, True, cfg, traceable=False))
            name = "heuristic" if cfg is None else f"{'flat' if cfg.flat else 'c'}{cfg.block_cols}w{cfg.num_warps}"
            rows.append(dict(I=inter, T=t, config=name, fwd_us=fwd, bwd_us=bwd, compile_fwd_us=ref))
        best_f = min(rows[-len(configs) - 1:], key=lambda r: r["fwd_us"])
        best_b = min(rows[-len(configs) - 1:], key=lambda r: r["bwd_us"])
        h = rows[-len(configs) - 1]
        print(f"I={inter:5d} T={t:5d} compile {ref:6.2f} | heuristic fwd {h['fwd_us']:6.2f} bwd {h['bwd_us']:6.2f} | "
              f"best fwd {best_f['config']} {best_f['fwd_us']:6.2f} best bwd {best_b['config']} {best_b['bwd_us']:6.2f}",
              flush=True)
    write_json(args.out / "sweep_small_tokens.json", {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()
