"""Is the kernelized Gemma-shaped model's plain prefill slower than the untouched one because of the
MLP's code or because of the model object? The untouched model, the kernelized copy and a second
untouched copy (the A/A control), each with its MLPs' forward bound to eager's `GemmaMLP.forward`
or to the layer's `GeGLUMLP.forward` (what kernelize binds), swapped in place: the code is compared
within one object and the objects with one code. Pinned to one CPU.

Two timings: rotating rounds of several calls per condition (`--rounds`, medians), and alternating
cycles (`--alternating-cycles`): one 512-token prefill per condition per cycle, the order shuffled,
each synchronised and timed alone, and the median over cycles of each condition's time over the
untouched model's with eager code in the same cycle (one call each leaves the host's drift
milliseconds to act, not seconds).

    python benchmarks/probes/probe_mlp_code_in_model.py --out DIR [--rounds 9] [--alternating-cycles 300] [--cpu 0] [--no-gc]
"""

import argparse
import copy
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from types import MethodType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, gemma_shaped_pair, load_local_build, pin_to_cpu, rotated, timed_ms, write_json  # noqa: E402


def bind(model, forward) -> None:
    for layer in model.model.layers:
        layer.mlp.forward = MethodType(forward, layer.mlp)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--alternating-cycles", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--no-gc", action="store_true", help="Python's cyclic garbage collector off while timing")
    args = parser.parse_args()
    cpu = pin_to_cpu(args.cpu)
    k = load_local_build()
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    untouched, kernelized = gemma_shaped_pair(k)  # kernelized as compare_model.py does
    objects = {"untouched": untouched.eval(), "kernelized": kernelized.eval(),
               "untouched copy": copy.deepcopy(untouched).eval()}
    codes = {"eager code": GemmaMLP.forward, "our code": k.layers.GeGLUMLP.forward}
    conditions = [(o, c) for o in objects for c in codes]
    reference = "untouched, eager code"
    prefill_ids = torch.randint(0, 32000, (1, 512), device="cuda")
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")

    def prefill(m):
        with torch.no_grad():
            m(input_ids=prefill_ids, use_cache=False)

    def decode(m, new=32):
        m.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    def run(condition, fn, repeat=1):
        obj, code = condition
        bind(objects[obj], codes[code])
        return timed_ms(lambda: fn(objects[obj]), repeat)

    cases = {"prefill_512_ms": (prefill, 5, 1), "decode_ms_per_token": (decode, 1, 32)}
    for condition in conditions:  # warm-up: plans, allocator, cuBLAS heuristics
        for fn, _, _ in cases.values():
            run(condition, fn)
    if args.no_gc:  # whether collections that the MLP's code triggers land outside its own calls
        gc.collect()
        gc.disable()
    rounds = {case: {f"{o}, {c}": [] for o, c in conditions} for case in cases}
    for r in range(args.rounds):
        for case, (fn, repeat, per) in cases.items():
            for condition in rotated(conditions, r):
                rounds[case][", ".join(condition)].append(run(condition, fn, repeat) / per)
    summary = {case: {name: statistics.median(t) for name, t in per.items()} for case, per in rounds.items() if args.rounds}
    for case, per in summary.items():
        print(case, "  ".join(f"{name} {t:.3f}" for name, t in per.items()), flush=True)
    alternating = {}
    if args.alternating_cycles:
        per_cycle = {", ".join(c): [] for c in conditions}
        order, rng = list(conditions), random.Random(0)
        for _ in range(args.alternating_cycles):
            rng.shuffle(order)
            for condition in order:
                per_cycle[", ".join(condition)].append(run(condition, prefill))
        ref = per_cycle[reference]
        alternating = {name: {"median_ms": statistics.median(t),
                              "over_reference": statistics.median(a / b for a, b in zip(t, ref))}
                       for name, t in per_cycle.items()}
        for name, a in alternating.items():
            print(f"prefill alternating, {name:32s} {a['median_ms']:.3f} ms, {a['over_reference']:.4f}x the "
                  f"untouched model with eager code in the same cycle", flush=True)
    write_json(args.out / f"probe_mlp_code_in_model{'_no_gc' if args.no_gc else ''}.json", {
        "env": environment(), "date": time.strftime("%Y-%m-%d"), "pinned_cpu": cpu, "layers": 8,
        "median": summary, "rounds": rounds, "alternating_cycles": args.alternating_cycles,
        "alternating_prefill_512": alternating, "gc_disabled": args.no_gc})


if __name__ == "__main__":
    main()
