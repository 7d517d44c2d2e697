"""How close the tiny-token forward is to the cost of any kernel launch (notes, variants 19-20).

At T=1 every GeGLU kernel takes about 2 us of device time, most of it launch and one memory
round trip. This times, interleaved over ROUNDS rounds with fresh outputs at every call (as a
user's call allocates them): an empty kernel, a kernel that loads and stores one element (also
as a programmatic dependent launch), our forward with and without programmatic dependent launch
(PDL) and under other tiny tile shapes, and torch.compile (default, dynamic=True, and with
Inductor's own PDL option where this torch has it).

Modes: `back_to_back` replays 10 calls of each implementation; `after_elementwise` and
`after_gemm` put a kernel that writes the inputs before every call, an elementwise aten kernel or
a matrix product (as the gate/up projection precedes the GeGLU in a model; neither lets a
dependent launch start early), and report the pair's time (`producer_only`: the producer alone).

    python benchmarks/launch_floor.py --out DIR
"""

import argparse
import itertools
import statistics
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from common import (cycling, eager_packed, eager_separate, environment, graph_replay, interleaved_rounds,
                    load_local_pointwise, write_json)

ROUNDS = 7
SETS = 3
HIDDEN = 1024  # the producing matrix product's inner dimension (after_gemm)

torch._dynamo.config.cache_size_limit = 256
torch._dynamo.config.accumulated_cache_size_limit = 4096


@triton.jit
def _empty_kernel(ptr):
    pass


@triton.jit
def _one_element_kernel(src, dst, USE_PDL: tl.constexpr):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    tl.store(dst, tl.load(src))


def _compiled_peers(base):
    peers = {"compile": torch.compile(base), "compile_dynamic": torch.compile(base, dynamic=True)}
    inductor_triton = torch._inductor.config.triton
    if hasattr(inductor_triton, "enable_pdl"):
        # Compiles at the first call: the option must be set then (the run's warm-up).
        def with_pdl(*args, _fn=torch.compile(base, dynamic=False)):
            with torch._inductor.config.patch({"triton.enable_pdl": True}):
                return _fn(*args)

        peers["compile_pdl"] = with_pdl
    return peers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inters", default="3072,14336")
    parser.add_argument("--tokens", default="1,16")
    parser.add_argument("--modes", default="back_to_back,after_elementwise,after_gemm")
    args = parser.parse_args()
    pw = load_local_pointwise()
    tiny = {"t128w4": (128, 4), "t512w8": (512, 8), "t1024w4": (1024, 4)}
    base = {"separate": eager_separate, "packed": eager_packed}
    rows = []
    for layout, inter, t in itertools.product(base, map(int, args.inters.split(",")), map(int, args.tokens.split(","))):
        compiled = _compiled_peers(base[layout])  # fresh per shape: a model has one width
        xs = [torch.randn(t, 2 * inter, device="cuda", dtype=torch.bfloat16) for _ in range(SETS)]
        sources = [torch.randn_like(x) for x in xs]
        activations = [torch.randn(t, HIDDEN, device="cuda", dtype=torch.bfloat16) for _ in range(SETS)]
        weight = torch.randn(HIDDEN, inter * (1 if layout == "separate" else 2), device="cuda", dtype=torch.bfloat16)
        ops = [(x[:, :inter], x[:, inter:]) if layout == "packed" else
               (x[:, :inter].contiguous(), x[:, inter:].contiguous()) for x in xs]
        one = lambda pdl: lambda: _one_element_kernel[(1,)](  # noqa: E731
            xs[0], torch.empty(1, device="cuda", dtype=xs[0].dtype), pdl, launch_pdl=pdl)
        # name -> one call per input set
        calls = {
            "empty_kernel": [lambda: _empty_kernel[(1,)](xs[0])] * SETS,
            "one_element_kernel": [one(False)] * SETS,
            "one_element_kernel_pdl": [one(True)] * SETS,
        }
        for name, pdl in (("ours", None), ("ours_pdl", True)):
            calls[name] = [lambda g=g, u=u, p=pdl: pw.launch_geglu_forward(
                g, u, torch.empty_like(g), True, traceable=False, pdl=p) for g, u in ops]
        for name, (block, warps) in tiny.items():
            cfg = pw.PointwiseConfig(1, block, warps, pw.FLAT if layout == "separate" else pw.FLAT_ROW_DIV)
            calls[f"ours_{name}"] = [lambda g=g, u=u, c=cfg: pw.launch_geglu_forward(
                g, u, torch.empty_like(g), True, c, traceable=False) for g, u in ops]
        for name, fn in compiled.items():
            calls[name] = [(lambda g=g, u=u, f=fn: f(g, u)) if layout == "separate" else
                           (lambda x=x, f=fn: f(x)) for (g, u), x in zip(ops, xs)]
        # Each writes input set i (the gate, or the packed projection), as the projection does in a model.
        targets = [g if layout == "separate" else x for (g, _), x in zip(ops, xs)]
        producers = {
            "after_elementwise": [lambda i=i: torch.mul(sources[i][:, :targets[i].shape[1]], 1.0, out=targets[i])
                                  for i in range(SETS)],
            "after_gemm": [lambda i=i: torch.mm(activations[i], weight, out=targets[i]) for i in range(SETS)],
        }

        for mode in args.modes.split(","):
            if mode == "back_to_back":
                replays = {name: graph_replay(cycling(c)) for name, c in calls.items()}
            else:
                replays = {"producer_only": graph_replay(cycling(producers[mode]))}
                replays.update({name: graph_replay(cycling([lambda p=p, c=c: (p(), c()) for p, c in zip(producers[mode], cs)]))
                                for name, cs in calls.items() if name.startswith(("ours", "compile"))})
            times = interleaved_rounds(replays, ROUNDS, rep_ms=50)
            row = dict(mode=mode, layout=layout, I=inter, T=t,
                       **{f"{n}_us": statistics.median(v) for n, v in times.items()},
                       **{f"{n}_rounds_us": v for n, v in times.items()})
            rows.append(row)
            print(f"{mode:14s} {layout:8s} I={inter:5d} T={t:3d} " + " ".join(
                f"{n}={statistics.median(v):.3f}" for n, v in sorted(times.items(), key=lambda kv: statistics.median(kv[1]))),
                flush=True)
            write_json(args.out / "launch_floor.json", {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()
