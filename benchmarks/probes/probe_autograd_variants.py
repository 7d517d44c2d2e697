"""Host time of `geglu()`'s forward+backward under autograd, T=1, I=16384, bf16: the package's node
against variants of it, in the same process and cycles (each cycle times a burst of calls of every
variant in turn, the order shuffled; medians over cycles, and of each cycle's difference against
eager's gelu * up in the same cycle). What each variant changes:

- "C apply": `autograd.Function.apply`'s Python wrapper (default-argument binding, functorch
  checks) skipped for the C apply it ends in, with the dead-wrapper unwrap it does kept;
- "flat": forward and backward each one Python frame (plan lookup, allocation and launch inline),
  where the package's node calls `_save` and the op body forward, the op body backward;
- "one allocation": both gradients as the two halves of one [2, T, I] buffer;
- "key from forward": the backward's plan key built in the forward (only grad's strides added);
- "prepared": the backward's plan looked up and both gradients allocated in the forward, on the
  caller's thread (what the package does since session 20 for gradients up to 256 KiB each).

The backward runs on autograd's device thread, where each Python step costs about twice its
main-thread price (`probe_autograd_thread.py`).

    python benchmarks/probes/probe_autograd_variants.py [--out DIR] [--cycles 300] [--burst 20] [--baseline-build DIR]
"""

import argparse
import importlib
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import BareFunction, environment, load_local_build, write_json  # noqa: E402

_C_APPLY = torch._C._FunctionBase.__dict__["apply"]
try:
    from torch._C._functorch import unwrap_if_dead
except ImportError:  # not in every torch: the probe then skips the unwrap
    def unwrap_if_dead(t):
        return t


def variants(k):
    ops = importlib.import_module(k.__name__ + ".pointwise_ops")
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    launch = importlib.import_module(k.__name__ + ".kernel_src.launch").launch
    plans = dispatch._plans
    check_approximate, check_gate_up, route = ops.check_approximate, ops.check_gate_up, ops.route

    def flat(one_alloc: bool, key_from_forward: bool, prepared: bool = False):
        class Flat(torch.autograd.Function):
            @staticmethod
            def forward(ctx, gate, up, approximate, backward_in_place):
                ctx.save_for_backward(gate, up)
                ctx.approximate = approximate
                key = (gate.shape, gate.stride(), up.stride(), gate.dtype, gate.get_device(), approximate, False)
                entry = plans.get(key) or dispatch._plan_forward(key, gate, up, approximate, False)
                if key_from_forward:
                    ctx.key = key
                out = torch.empty_like(gate, memory_format=torch.contiguous_format)
                launch(entry, gate, up, out)
                if prepared:
                    bkey = (gate.shape, out.stride(), gate.stride(), up.stride(), gate.dtype, gate.get_device(),
                            approximate, False)
                    ctx.prepared = (plans.get(bkey) or dispatch._plan_backward(bkey, out, gate, up, approximate, False),
                                    out.stride(), torch.empty_like(gate, memory_format=torch.contiguous_format),
                                    torch.empty_like(gate, memory_format=torch.contiguous_format))
                return out

            @staticmethod
            def backward(ctx, grad):
                gate, up = ctx.saved_tensors
                if prepared and grad.stride() == ctx.prepared[1]:
                    entry, _, dgate, dup = ctx.prepared
                    ctx.prepared = None
                    launch(entry, grad, gate, up, dgate, dup)
                    return dgate, dup, None, None
                if key_from_forward:
                    key = (ctx.key, grad.stride())
                else:
                    key = (gate.shape, grad.stride(), gate.stride(), up.stride(), gate.dtype, gate.get_device(),
                           ctx.approximate, False)
                entry = plans.get(key)
                if entry is None:
                    entry = dispatch._plan_backward(key, grad, gate, up, ctx.approximate, False)
                if one_alloc:
                    dgate, dup = torch.empty((2, *gate.shape), dtype=gate.dtype, device=gate.device).unbind(0)
                else:
                    dgate = torch.empty_like(gate, memory_format=torch.contiguous_format)
                    dup = torch.empty_like(gate, memory_format=torch.contiguous_format)
                launch(entry, grad, gate, up, dgate, dup)
                return dgate, dup, None, None

        return Flat

    def checked(apply):
        def call(gate, up, approximate="tanh"):
            check_approximate(approximate)
            check_gate_up(gate, up)
            route(gate, up)
            return apply(gate, up, approximate, False)
        return call

    def c_apply(cls):
        bound = _C_APPLY.__get__(None, cls)
        return lambda gate, up, approximate, backward_in_place: bound(
            unwrap_if_dead(gate), unwrap_if_dead(up), approximate, backward_in_place)

    flat_plain, flat_one, flat_key = flat(False, False), flat(True, False), flat(True, True)
    flat_prepared = flat(False, False, prepared=True)
    return {
        "eager gelu*mul": lambda g, u: torch.nn.functional.gelu(g, approximate="tanh") * u,
        "reference: bare Function": lambda g, u: BareFunction.apply(g, u),
        "geglu() (package)": k.geglu,
        "package node, C apply": checked(c_apply(ops._EagerGeGLU)),
        "flat node": checked(flat_plain.apply),
        "flat node, C apply": checked(c_apply(flat_plain)),
        "flat node, C apply, one allocation": checked(c_apply(flat_one)),
        "flat node, C apply, one allocation, key from forward": checked(c_apply(flat_key)),
        "flat node, C apply, prepared": checked(c_apply(flat_prepared)),
    }


def alternating(calls: dict, g, u, dh, cycles: int, burst: int, rng) -> dict:
    """Host microseconds per forward+backward of each variant over `cycles` cycles of `burst` calls
    per variant, the order shuffled every cycle (the host's drift falls on every variant alike):
    per cycle the mean of the burst; returned per variant, the list over cycles."""
    per_cycle = {name: [] for name in calls}
    order = list(calls)
    for _ in range(cycles):
        rng.shuffle(order)
        for name in order:
            fn = calls[name]
            torch.autograd.grad(fn(g, u), (g, u), dh)  # its plans and the allocator's blocks warm
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(burst):
                torch.autograd.grad(fn(g, u), (g, u), dh)
            per_cycle[name].append((time.perf_counter() - start) / burst * 1e6)
    return per_cycle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--burst", type=int, default=20, help="calls per variant and cycle")
    parser.add_argument("--baseline-build", type=Path, help="an earlier commit's build/: its geglu() as a variant")
    args = parser.parse_args()
    k = load_local_build()
    baseline = None
    if args.baseline_build:
        from kernels import get_local_kernel

        baseline = get_local_kernel(args.baseline_build.resolve())
    g, u = (torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    dh = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    calls = variants(k)
    if baseline is not None:
        calls[f"geglu() (baseline build {baseline.__name__})"] = baseline.geglu
    ref = [t.double() for t in torch.autograd.grad(calls["eager gelu*mul"](g, u), (g, u), dh)]
    checks = {}
    for name, fn in calls.items():
        if name.startswith("reference"):
            continue
        got = torch.autograd.grad(fn(g, u), (g, u), dh)
        checks[name] = max(float((a.double() - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
        print(f"check {name:55s} max rel err vs eager {checks[name]:.2e}", flush=True)
    per_cycle = alternating(calls, g, u, dh, args.cycles, args.burst, random.Random(0))
    eager = per_cycle["eager gelu*mul"]
    rows = []
    for name, values in per_cycle.items():
        minus = statistics.median(v - e for v, e in zip(values, eager))
        rows.append(dict(variant=name, fwd_bwd_host_us=statistics.median(values), minus_eager_us=minus,
                         max_rel_err_vs_eager=checks.get(name)))
        print(f"{name:55s} {statistics.median(values):7.1f} us, {minus:+6.1f} against eager's in the same cycles",
              flush=True)
    if args.out:
        write_json(args.out / "probe_autograd_variants.json",
                   {"env": environment(), "date": time.strftime("%Y-%m-%d"), "T": 1, "I": 16384,
                    "dtype": "bfloat16", "cycles": args.cycles, "burst": args.burst, "baseline_build": baseline.__name__ if baseline else None, "rows": rows})


if __name__ == "__main__":
    main()
