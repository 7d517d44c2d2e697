"""Where the kernelized Gemma-shaped model loses host time outside its MLPs in plain calls.

`probe_model_split.py` (with `--control`) found the kernelized model's plain decode 10-20% slower
than two untouched copies while the MLP modules' own host time was equal. This probe times, by
forward hooks, the host time of each module kind (attention, norms, MLP, rotary) per decode of 32
tokens, in models that differ only in their MLPs' forward:

- kernelized: the layer as kernelize installs it (fused decode path);
- untouched, untouched_copy: eager GemmaMLP (an A/A control);
- our_pointwise: eager projections around our public `geglu()` (a Triton launch per MLP, no fused
  path): whether Triton launches slow later CUDA launches;
- host_busy: eager GemmaMLP plus ~60 us of pure Python work per call (no CUDA): whether extra host
  work between modules slows the next ones (caches, branch predictors);
- eager_in_place: eager's modules and aten kernels, but gelu and the product written over the gate
  projection's output (`gelu_`, `mul_`): the kernelized layer's allocations (gate and up only) with
  eager's launches: whether the caching allocator's state after the MLP, not the launch, slows
  what follows.

The models run in a rotating order over several rounds; medians per model.

`--prefill-cycles N` times 512-token prefills instead, in alternating cycles (one prefill per model
per cycle, the order shuffled), each module kind's host time and the prefill's wall time per model,
and per model the median over cycles of each against the untouched model's in the same cycle: where
the ~10 us per layer go that the kernelized model's prefill loses outside its MLP calls
(`benchmarks/NOTES.md`, session 19). It also counts, per model and prefill, what the CUDA caching
allocator did (`torch.cuda.memory_stats`: allocations, device mallocs and frees, retries, block
splits): a model whose prefill makes the allocator split blocks or call cudaMalloc pays for it on
the host. "GemmaDecoderLayer" includes its children; the residual adds
are the decoder layer less its attention, norms and MLP.

    python benchmarks/probes/probe_outside_mlp.py --out DIR [--layers 8 --rounds 6] [--prefill-cycles 300 --cpu 7]
"""

import argparse
import collections
import copy
import random
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, gemma_shaped_pair, load_local_build, pin_to_cpu, rotated, write_json  # noqa: E402

KINDS = ("GemmaAttention", "GemmaRMSNorm", "GemmaMLP", "GemmaRotaryEmbedding", "GemmaDecoderLayer")
# Cumulative counters of the CUDA caching allocator, differenced around each timed prefill.
ALLOCATOR_COUNTS = ("allocation.all.allocated", "num_device_alloc", "num_device_free", "num_alloc_retries",
                    "inactive_split.all.allocated", "segment.all.allocated")


class KindClock:
    """Host seconds inside modules of each kind (pre-hook to post-hook), summed per model."""

    def __init__(self, model):
        self.totals = collections.defaultdict(float)
        for module in model.modules():
            kind = type(module).__name__
            if kind in KINDS:
                module.register_forward_pre_hook(self._enter)
                module.register_forward_hook(lambda m, a, o, kind=kind: self._leave(m, kind))

    @staticmethod
    def _enter(module, args):
        module._probe_start = time.perf_counter()

    def _leave(self, module, kind):
        self.totals[kind] += time.perf_counter() - module._probe_start


def _our_pointwise_forward(geglu):
    def forward(self, x):
        return self.down_proj(geglu(self.gate_proj(x), self.up_proj(x), "tanh"))
    return forward


def _eager_in_place_forward(self, x):
    gate = self.gate_proj(x)
    torch.ops.aten.gelu_(gate, approximate="tanh")
    return self.down_proj(gate.mul_(self.up_proj(x)))


def _host_busy_forward(self, x):
    out = type(self).forward(self, x)
    deadline = time.perf_counter() + 60e-6
    while time.perf_counter() < deadline:
        pass
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cpu", type=int, default=-1, help="pin the process to this CPU (default: not pinned)")
    parser.add_argument("--prefill-cycles", type=int, default=0,
                        help="alternating 512-token prefills instead of rotating decode rounds")
    args = parser.parse_args()
    cpu = pin_to_cpu(args.cpu)
    k = load_local_build()
    untouched, kernelized = gemma_shaped_pair(k, args.layers, training=False)
    untouched.eval(), kernelized.eval()
    models = {"kernelized": kernelized, "untouched": untouched,
              "untouched_copy": copy.deepcopy(untouched), "our_pointwise": copy.deepcopy(untouched),
              "host_busy": copy.deepcopy(untouched), "eager_in_place": copy.deepcopy(untouched)}
    for name, forward in (("our_pointwise", _our_pointwise_forward(k.geglu)), ("host_busy", _host_busy_forward),
                          ("eager_in_place", _eager_in_place_forward)):
        for layer in models[name].model.layers:
            layer.mlp.forward = types.MethodType(forward, layer.mlp)
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")

    def decode(m):
        m.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)

    if args.prefill_cycles:
        prefill_cycles(args, models, cpu)
        return
    reference = None
    for name, m in models.items():  # warm-up, and the same tokens from every model
        with torch.no_grad():
            out = m.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)
        decode(m)
        if reference is None:
            reference = out
        print(f"{name}: tokens equal to the kernelized model's: {torch.equal(out, reference)}", flush=True)
    clocks = {name: KindClock(m) for name, m in models.items()}
    samples = {name: collections.defaultdict(list) for name in models}
    names = list(models)
    for r in range(args.rounds):
        for name in rotated(names, r):
            clocks[name].totals.clear()
            torch.cuda.synchronize()
            start = time.perf_counter()
            decode(models[name])
            samples[name]["generate_ms"].append((time.perf_counter() - start) * 1e3)
            for kind, seconds in clocks[name].totals.items():
                samples[name][kind + "_ms"].append(seconds * 1e3)
    rows = []
    for name in names:
        row = dict(model=name, **{key: statistics.median(v) for key, v in samples[name].items()},
                   rounds={key: v for key, v in samples[name].items()})
        rows.append(row)
        print(f"{name:15s} " + "  ".join(f"{key[:-3]} {row[key]:7.2f}" for key in samples[name]) + "  (ms per decode)",
              flush=True)
    write_json(args.out / "probe_outside_mlp.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                     "pinned_cpu": cpu, "layers": args.layers, "rows": rows})


def prefill_cycles(args, models: dict, cpu: int) -> None:
    ids = torch.randint(0, 32000, (1, 512), device="cuda")

    def prefill(m):
        with torch.no_grad():
            m(input_ids=ids, use_cache=False)

    for m in models.values():  # warm-up: plans, allocator, cuBLAS heuristics
        prefill(m), prefill(m)
    clocks = {name: KindClock(m) for name, m in models.items()}
    samples = {name: collections.defaultdict(list) for name in models}
    counts = {name: collections.defaultdict(list) for name in models}
    order, rng = list(models), random.Random(0)
    for _ in range(args.prefill_cycles):
        rng.shuffle(order)
        for name in order:
            clocks[name].totals.clear()
            before = torch.cuda.memory_stats()
            torch.cuda.synchronize()
            start = time.perf_counter()
            prefill(models[name])
            torch.cuda.synchronize()
            samples[name]["prefill_us"].append((time.perf_counter() - start) * 1e6)
            after = torch.cuda.memory_stats()
            for key in ALLOCATOR_COUNTS:
                counts[name][key].append(after.get(key, 0) - before.get(key, 0))
            totals = clocks[name].totals
            for kind in KINDS:
                samples[name][kind + "_us"].append(totals.get(kind, 0.0) * 1e6)
            samples[name]["residual_and_rest_us"].append(1e6 * (totals.get("GemmaDecoderLayer", 0.0) - sum(
                totals.get(kind, 0.0) for kind in ("GemmaAttention", "GemmaRMSNorm", "GemmaMLP"))))
    reference = samples["untouched"]
    rows = []
    for name, per in samples.items():
        row = dict(model=name, median_us={key: statistics.median(v) for key, v in per.items()},
                   minus_untouched_us={key: statistics.median(a - b for a, b in zip(v, reference[key]))
                                       for key, v in per.items()},
                   allocator_per_prefill={key: statistics.mean(v) for key, v in counts[name].items()})
        rows.append(row)
        print(f"{name:15s} " + "  ".join(f"{key[:-3]} {row['median_us'][key]:8.1f} ({row['minus_untouched_us'][key]:+6.1f})"
                                         for key in per) + "  (us per prefill; against untouched, same cycle)",
              flush=True)
        print(f"{'':15s} allocator per prefill: " + "  ".join(
            f"{key} {value:.1f}" for key, value in row["allocator_per_prefill"].items()), flush=True)
    write_json(args.out / "probe_outside_mlp_prefill.json", {
        "env": environment(), "date": time.strftime("%Y-%m-%d"), "pinned_cpu": cpu, "layers": args.layers,
        "tokens": 512, "cycles": args.prefill_cycles, "rows": rows})


if __name__ == "__main__":
    main()
