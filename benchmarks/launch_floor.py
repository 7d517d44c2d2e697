"""How close the tiny-token forward is to the cost of any kernel launch (H100 notes, variant 16).

At T=1 every GeGLU kernel takes about 2 us of device time, most of it launch and one memory
round trip. This times, interleaved over ROUNDS rounds with fresh outputs at every call (as a
user's call allocates them): an empty kernel, a kernel that loads and stores one element, our
forward under its heuristic and under other tiny tile shapes, and torch.compile (default and
dynamic=True).

    python benchmarks/launch_floor.py --out DIR
"""

import argparse
import importlib
import itertools
import statistics
from pathlib import Path

import torch
import triton
import triton.language as tl

from common import (cycling, eager_packed, eager_separate, environment, graph_replay, interleaved_rounds,
                    load_local_build, write_json)

ROUNDS = 7
SETS = 3


@triton.jit
def _empty_kernel(ptr):
    pass


@triton.jit
def _one_element_kernel(src, dst):
    tl.store(dst, tl.load(src))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inters", default="3072,14336")
    parser.add_argument("--tokens", default="1,16")
    args = parser.parse_args()
    k = load_local_build()
    pw = importlib.import_module(k.__name__ + ".kernel_src.geglu_pointwise")
    tiny = {"t128w4": (128, 4), "t256w8": (256, 8), "t512w8": (512, 8), "t1024w4": (1024, 4)}
    base = {"separate": eager_separate, "packed": eager_packed}
    compiled = {layout: {"compile": torch.compile(fn), "compile_dynamic": torch.compile(fn, dynamic=True)}
                for layout, fn in base.items()}
    rows = []
    for layout, inter, t in itertools.product(base, map(int, args.inters.split(",")), map(int, args.tokens.split(","))):
        xs = [torch.randn(t, 2 * inter, device="cuda", dtype=torch.bfloat16) for _ in range(SETS)]
        ops = [(x[:, :inter], x[:, inter:]) if layout == "packed" else
               (x[:, :inter].contiguous(), x[:, inter:].contiguous()) for x in xs]
        fns = {
            "empty_kernel": lambda: _empty_kernel[(1,)](xs[0]),
            "one_element_kernel": lambda: _one_element_kernel[(1,)](xs[0], torch.empty(1, device="cuda",
                                                                                       dtype=xs[0].dtype)),
            "ours": cycling([lambda g=g, u=u: pw.launch_geglu_forward(g, u, torch.empty_like(g), True,
                                                                       traceable=False) for g, u in ops]),
        }
        for name, (block, warps) in tiny.items():
            for indexing in ((pw.FLAT, pw.ROW_GRID) if layout == "separate" else (pw.FLAT_ROW_DIV, pw.ROW_GRID)):
                cfg = pw.PointwiseConfig(1, block, warps, indexing)
                fns[f"ours_{('tile', 'flat', 'flatdiv', 'rowgrid')[indexing]}_{name}"] = cycling(
                    [lambda g=g, u=u, c=cfg: pw.launch_geglu_forward(g, u, torch.empty_like(g), True, c,
                                                                      traceable=False) for g, u in ops])
        for name, fn in compiled[layout].items():
            fns[name] = cycling([(lambda g=g, u=u, f=fn: f(g, u)) if layout == "separate" else
                                 (lambda x=x, f=fn: f(x)) for (g, u), x in zip(ops, xs)])
        times = interleaved_rounds({name: graph_replay(fn) for name, fn in fns.items()}, ROUNDS, rep_ms=50)
        row = dict(layout=layout, I=inter, T=t, **{f"{n}_us": statistics.median(v) for n, v in times.items()},
                   **{f"{n}_rounds_us": v for n, v in times.items()})
        rows.append(row)
        print(f"{layout:8s} I={inter:5d} T={t:3d} " + " ".join(
            f"{n}={statistics.median(v):.3f}" for n, v in sorted(times.items(), key=lambda kv: statistics.median(kv[1]))),
            flush=True)
        write_json(args.out / "launch_floor.json", {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()
