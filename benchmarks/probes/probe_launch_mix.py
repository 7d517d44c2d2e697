"""Does a Triton launch (the driver API's cuLaunchKernelEx) make the next aten launch (the runtime
API) cost more host time than an aten launch before it does? The 512-token prefill of a model whose
MLPs launch the pointwise kernel ran ~1% slower than with eager's two aten ops, although the MLP
calls themselves took less host time (session 19): a cost landing after the call would explain it.
Pairs (first, then) timed on the host, no synchronisation, alternating cycles of bursts, medians.

    python benchmarks/probes/probe_launch_mix.py [--out DIR] [--cycles 300] [--burst 50]
"""

import argparse
import importlib
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, load_local_build, write_json  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    k = load_local_build()
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    g = torch.randn(512, 16384, device="cuda", dtype=torch.bfloat16)
    u = torch.randn_like(g)
    small = torch.randn(512, 2048, device="cuda", dtype=torch.bfloat16)
    firsts = {"triton pointwise": lambda: dispatch.geglu_forward_impl(g, u, "tanh"),
              "aten gelu * up": lambda: F.gelu(g, approximate="tanh") * u}
    then = lambda: small.add(1.0)  # noqa: E731  (an aten launch, as the residual add after the MLP)
    for fn in firsts.values():
        fn(), then()
    per = {name: {"first": [], "then": []} for name in firsts}
    order, rng = list(firsts), random.Random(0)
    pc = time.perf_counter
    for _ in range(args.cycles):
        rng.shuffle(order)
        for name in order:
            fn = firsts[name]
            torch.cuda.synchronize()
            a = b = 0.0
            for _ in range(args.burst):
                t0 = pc()
                fn()
                t1 = pc()
                then()
                t2 = pc()
                a, b = a + t1 - t0, b + t2 - t1
            per[name]["first"].append(a / args.burst * 1e6)
            per[name]["then"].append(b / args.burst * 1e6)
    rows = []
    for name, d in per.items():
        rows.append(dict(first=name, first_us=statistics.median(d["first"]), then_aten_add_us=statistics.median(d["then"])))
        print(f"{name:18s} {rows[-1]['first_us']:6.2f} us, then aten add {rows[-1]['then_aten_add_us']:6.2f} us", flush=True)
    if args.out:
        write_json(args.out / "probe_launch_mix.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                        "cycles": args.cycles, "burst": args.burst, "rows": rows})


if __name__ == "__main__":
    main()
