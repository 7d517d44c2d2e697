"""Launch-parameter sweep of the pointwise kernels (device time under CUDA-graph replay), with
torch.compile's fused kernel timed on the same inputs as the reference. The heuristic in
kernel_src/pointwise.py is chosen from this sweep; notes: benchmarks/NOTES.md.

    python benchmarks/sweep_launch_configs.py --out DIR [--layouts separate,packed]
"""

import argparse
import itertools
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

from common import cycling, eager_packed, eager_separate, environment, graph_us, load_local_pointwise, write_json

torch._dynamo.config.cache_size_limit = 256
torch._dynamo.config.accumulated_cache_size_limit = 4096

graph_us = partial(graph_us, rep_ms=40)  # many configs: shorter timing windows than compare_peers

SETS = 3
INTERS = [3072, 10240, 14336, 16384]
TOKENS = [1, 16, 128, 512, 2048, 8192]
# (elements per program, warps): 1 to 16 elements per thread.
BLOCKS = [(256, 8), (256, 4), (256, 2), (512, 8), (512, 4), (512, 2), (1024, 8), (1024, 4), (1024, 2),
          (2048, 8), (2048, 4), (4096, 8)]


class FreshOutputs(SimpleNamespace):
    """An input set whose outputs are new tensors at each access, as a user's call allocates them
    (the allocator hands back the block just freed: one output address, as torch.compile's has)."""
    out = dg = du = property(lambda self: torch.empty_like(self.dh))


def name_of(cfg) -> str:
    return "heuristic" if cfg is None else f"{('tile', 'flat', 'flatdiv', 'rowgrid')[cfg.indexing]}{cfg.block_cols}w{cfg.num_warps}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layouts", default="separate,packed")
    parser.add_argument("--inters", default=",".join(map(str, INTERS)))
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--blocks", default=",".join(f"{c}x{w}" for c, w in BLOCKS),
                        help="(elements per program)x(warps), comma-separated")
    parser.add_argument("--refs", default="compile,compile_static",
                        help="torch.compile references timed at each shape (comma-separated; 'none': no references)")
    parser.add_argument("--fresh-outputs", action="store_true",
                        help="allocate outputs at every call, as a user's call and torch.compile's kernel do "
                             "(the default writes into one preallocated buffer per input set)")
    args = parser.parse_args()
    pw = load_local_pointwise()
    rows = []
    for layout in args.layouts.split(","):
        # Separate operands are contiguous (flat mode 1); packed halves have strided rows (mode 2).
        modes = (0, 1, 3) if layout == "separate" else (0, 2, 3)
        blocks = [tuple(map(int, b.split("x"))) for b in args.blocks.split(",")]
        configs = [pw.PointwiseConfig(1, c, w, m) for m, (c, w) in itertools.product(modes, blocks)]
        # References: what a user's torch.compile(fn) runs (it goes dynamic after the first new
        # shape) and a kernel specialised and autotuned for each shape (dynamic=False).
        base = eager_separate if layout == "separate" else eager_packed
        compiled = {"compile": torch.compile(base), "compile_static": torch.compile(base, dynamic=False)}
        compiled = {name: fn for name, fn in compiled.items() if name in args.refs.split(",")}
        for inter, t in itertools.product(map(int, args.inters.split(",")), map(int, args.tokens.split(","))):
            # SETS input sets cycled through by consecutive calls, as in compare_peers.py: one set
            # reused call after call stays in L2 at mid sizes and ranks shapes differently.
            sets = []
            for _ in range(SETS):
                x = torch.randn(t, 2 * inter, device="cuda", dtype=getattr(torch, args.dtype))
                g, u = (x[:, :inter], x[:, inter:]) if layout == "packed" else \
                    (torch.randn_like(x[:, :inter]), torch.randn_like(x[:, :inter]))
                dh = torch.randn_like(g)
                if args.fresh_outputs:
                    s = FreshOutputs(x=x, g=g, u=u, dh=dh)
                else:
                    s = SimpleNamespace(x=x, g=g, u=u, dh=dh, out=torch.empty_like(dh), dg=torch.empty_like(dh),
                                        du=torch.empty_like(dh))
                sets.append(s)
            refs = {name: cycling([(lambda f=f, s=s: f(s.g, s.u) if layout == "separate" else f(s.x)) for s in sets])
                    for name, f in compiled.items()}
            ref_us = {name: graph_us(ref) for name, ref in refs.items()}
            shape_rows = []
            for cfg in [None] + configs:
                fwd = graph_us(cycling([lambda s=s, c=cfg: pw.launch_geglu_forward(s.g, s.u, s.out, True, c, traceable=False)
                                        for s in sets]))
                bwd = graph_us(cycling([lambda s=s, c=cfg: pw.launch_geglu_backward(s.dh, s.g, s.u, s.dg, s.du, True, c,
                                                                             traceable=False) for s in sets]))
                shape_rows.append(dict(layout=layout, dtype=args.dtype, I=inter, T=t, config=name_of(cfg), fwd_us=fwd, bwd_us=bwd,
                                       **{f"{name}_fwd_us": us for name, us in ref_us.items()}))
            # Timed again after our configs: the spread between the two is the run's noise.
            for name, ref in refs.items():
                us = graph_us(ref)
                for r in shape_rows:
                    r[f"{name}_fwd_after_us"] = us
            rows += shape_rows
            h = shape_rows[0]
            top_f = sorted(shape_rows[1:], key=lambda r: r["fwd_us"])[:3]
            top_b = sorted(shape_rows[1:], key=lambda r: r["bwd_us"])[:2]
            refs_text = " ".join(f"{n} {h[n + '_fwd_us']:.2f}/{h[n + '_fwd_after_us']:.2f}" for n in refs)
            print(f"{args.dtype} {layout:8s} I={inter:5d} T={t:5d} {refs_text} | heur fwd "
                  f"{h['fwd_us']:7.2f} bwd {h['bwd_us']:7.2f} | fwd " +
                  " ".join(f"{r['config']} {r['fwd_us']:.2f}" for r in top_f) + " | bwd " +
                  " ".join(f"{r['config']} {r['bwd_us']:.2f}" for r in top_b), flush=True)
            write_json(args.out / f"sweep_launch_configs_{args.dtype}_{args.layouts.replace(',', '_')}.json",
                       {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()
