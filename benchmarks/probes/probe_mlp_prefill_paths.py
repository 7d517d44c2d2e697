"""Where does the kernelized model's 512-token prefill lose to the untouched one? (The code, not
the model object: `probe_mlp_code_in_model.py`.) The kernelized model's MLPs' forward is swapped
in place for each variant below, timed in rotating rounds pinned to one CPU; each prefill is timed
twice, until the forward returns (the host's enqueue time) and until the GPU is done (wall), so a
host-bound prefill shows as host ~ wall. Each MLP call also times itself (host microseconds from
entering its forward to returning), so a prefill's host time splits into the MLP calls and the rest
of the model. The device time of one prefill per variant comes from the profiler (sum of the GPU
kernels' times).

Variants (all compute down(gelu_tanh(gate(x)) * up(x)); past the fused kernels' token counts the
layer calls its projections as modules around the pointwise op):
  eager code         GemmaMLP.forward (four module calls, gelu and mul)
  our code           GeGLUMLP.forward, what kernelize binds (the rule, then the path it picks)
  session 16 code    the layer's path past the fused token counts until session 16: its checks,
                     then the projections as modules around the op body
  no rule            F.linear and the pointwise kernel on the projections' weights, no checks
  no rule, eager op  F.linear and eager's gelu * up on the weights, no checks
  modules, our op    the projections called as modules around the public pointwise op
  modules, op body   the same with the op body (no input checks, no routing)
  modules, bare launch  the same with the kernel's C launcher called directly on a plan resolved
                     beforehand (no Python between the projections and Triton's launcher)
  F.linear, launch() F.linear on the weights, then `launch` (the launch layer's Python) on a plan
                     resolved beforehand: the op body without its plan key and lookup
  F.linear, bare launch  F.linear on the weights, then the C launcher on the resolved plan
  identity           a forward that returns x (what the rest of the model costs)
  baseline build     with --baseline-build DIR: `GeGLUMLP.forward` of another build of this package
                     (an earlier commit's `build/`), loaded beside this one in the same process

Then most of the variants (`ALTERNATING`) in alternating prefills: one prefill each in turn, the order
shuffled every cycle, so that the host's drift within the run falls on all of them alike.

    python benchmarks/probes/probe_mlp_prefill_paths.py --out DIR [--rounds 9 --cpu 0 --tokens 512]
        [--baseline-build DIR] [--alternating-only] [--names "eager code;our code;..."]
"""

import argparse
import importlib
import random
import statistics
import sys
import time
from pathlib import Path
from types import MethodType

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, gemma_shaped_pair, load_local_build, pin_to_cpu, rotated, write_json  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--cycles", type=int, default=60, help="alternating prefills: cycles of one per variant")
    parser.add_argument("--baseline-build", type=Path, help="another build of this package: variant 'baseline build'")
    parser.add_argument("--alternating-only", action="store_true", help="skip the whole-prefill rounds")
    parser.add_argument("--names", help="semicolon-separated variants of the alternating prefills")
    args = parser.parse_args()
    cpu = pin_to_cpu(args.cpu)
    k = load_local_build()
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    mlp_ops = importlib.import_module(k.__name__ + ".mlp_ops")
    layers = importlib.import_module(k.__name__ + ".layers")
    _, model = gemma_shaped_pair(k)
    model.eval()
    layers_n = len(model.model.layers)

    def weights(m):
        mods = m._modules
        return mods["gate_proj"].weight, mods["up_proj"].weight, mods["down_proj"].weight

    def no_rule(self, x):
        wg, wu, wd = weights(self)
        return mlp_ops._unfused_mlp(x, wg, wu, wd, None, None, None, "tanh")

    def no_rule_eager_op(self, x):
        wg, wu, wd = weights(self)
        return F.linear(F.gelu(F.linear(x, wg), approximate="tanh") * F.linear(x, wu), wd)

    def modules_our_op(self, x):
        return self.down_proj(k.geglu(self.gate_proj(x), self.up_proj(x), approximate="tanh"))

    dispatch = importlib.import_module(k.__name__ + ".dispatch")

    def modules_op_body(self, x):
        return self.down_proj(dispatch.geglu_forward_impl(self.gate_proj(x), self.up_proj(x), "tanh"))

    pointwise = importlib.import_module(k.__name__ + ".kernel_src.pointwise")
    inter = model.config.intermediate_size
    bare = {}

    def modules_bare_launch(self, x):
        g, u = self.gate_proj(x), self.up_proj(x)
        out = torch.empty_like(g)
        bare["entry"](*bare["grid"], bare["stream"], *bare["fixed"], g.data_ptr(), u.data_ptr(), out.data_ptr(),
                      *bare["tail"])
        return self.down_proj(out)

    launch = importlib.import_module(k.__name__ + ".kernel_src.launch").launch

    def f_linear_launch(self, x):
        wg, wu, wd = weights(self)
        g, u = F.linear(x, wg), F.linear(x, wu)
        out = torch.empty_like(g)
        launch(bare["plan"], g, u, out)
        return F.linear(out, wd)

    def f_linear_bare_launch(self, x):
        wg, wu, wd = weights(self)
        g, u = F.linear(x, wg), F.linear(x, wu)
        out = torch.empty_like(g)
        bare["entry"](*bare["grid"], bare["stream"], *bare["fixed"], g.data_ptr(), u.data_ptr(), out.data_ptr(),
                      *bare["tail"])
        return F.linear(out, wd)

    def session16_code(self, x):
        modules = self._modules
        gate_proj, up_proj, down_proj = modules["gate_proj"], modules["up_proj"], modules["down_proj"]
        approximate, hooked = layers._activation(modules["act_fn"], True)
        eager = not torch.compiler.is_compiling()
        if not eager or torch.is_grad_enabled() or x.numel() <= mlp_ops.MAX_FUSED_TOKENS * x.shape[-1]:
            y = mlp_ops.fused_mlp(x, approximate, gate_proj, up_proj, down_proj, None, eager)
            if y is not None:
                return y
        return down_proj(layers._geglu(gate_proj(x), up_proj(x), approximate, (gate_proj, up_proj), eager))

    def identity(self, x):
        return x

    variants = {"eager code": GemmaMLP.forward, "our code": layers.GeGLUMLP.forward, "session 16 code": session16_code,
                "no rule": no_rule, "no rule, eager op": no_rule_eager_op, "modules, our op": modules_our_op,
                "modules, op body": modules_op_body, "modules, bare launch": modules_bare_launch,
                "F.linear, launch()": f_linear_launch, "F.linear, bare launch": f_linear_bare_launch,
                "identity": identity}
    names = tuple(args.names.split(";")) if args.names else ALTERNATING
    baseline = None
    if args.baseline_build:
        from kernels import get_local_kernel

        baseline = get_local_kernel(args.baseline_build.resolve())
        variants["baseline build"] = importlib.import_module(baseline.__name__ + ".layers").GeGLUMLP.forward
        names = names if args.names else (*names, "baseline build")
    spans = []  # host seconds of each MLP call of the current prefill

    def use(name):
        for layer in model.model.layers:
            layer.mlp.forward = MethodType(clocked(variants[name], spans), layer.mlp)

    ids = torch.randint(0, 32000, (1, args.tokens), device="cuda")

    def prefill():
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)

    def timed(repeat=5):
        host, wall, mlp = [], [], []
        for _ in range(repeat):
            torch.cuda.synchronize()
            spans.clear()
            start = time.perf_counter()
            prefill()
            host.append(time.perf_counter() - start)
            torch.cuda.synchronize()
            wall.append(time.perf_counter() - start)
            mlp.append(sum(spans) / len(spans))
        return 1e3 * statistics.median(host), 1e3 * statistics.median(wall), 1e6 * statistics.median(mlp)

    use("modules, op body")
    prefill()  # compiles and keeps the plan's handle
    plan = pointwise.plan(False, args.tokens, inter, (inter,) * 3, torch.bfloat16, True, 0)
    entry, bare["fixed"] = plan.handles[1][2]  # the C launcher of the aligned handle
    bare.update(entry=entry, grid=plan.grid, tail=plan.tail, stream=torch.cuda.current_stream().cuda_stream, plan=plan)
    device_ms = {}
    for name in () if args.alternating_only else variants:  # warm-up, then the device time of one prefill
        use(name)
        for _ in range(3):
            prefill()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            prefill()
            torch.cuda.synchronize()
        device_ms[name] = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3
    rounds = {name: {"host": [], "wall": [], "mlp_us": []} for name in variants}
    for r in range(0 if args.alternating_only else args.rounds):
        for name in rotated(list(variants), r):
            use(name)
            for key, value in zip(("host", "wall", "mlp_us"), timed()):
                rounds[name][key].append(value)
    summary = {name: {"host_ms": statistics.median(t["host"]), "wall_ms": statistics.median(t["wall"]),
                      "mlp_host_us_per_call": statistics.median(t["mlp_us"]), "device_ms": device_ms[name]}
               for name, t in rounds.items() if t["host"]}
    for name, s in summary.items():
        print(f"T={args.tokens} {name:20s} wall {s['wall_ms']:.3f} ms  host (enqueue) {s['host_ms']:.3f}  "
              f"of which the {layers_n} MLP calls {layers_n * 1e-3 * s['mlp_host_us_per_call']:.3f} "
              f"({s['mlp_host_us_per_call']:.1f} us each)  device (profiler) {s['device_ms']:.3f}", flush=True)
    alternating = alternating_prefills(model, variants, prefill, args.cycles, names)
    for name, m in alternating.items():
        print(f"T={args.tokens} alternating {name:20s} {m['us_per_call']:.1f} us a call, "
              f"{m['minus_eager_us']:+.1f} against eager's in the same cycles", flush=True)
    write_json(args.out / f"probe_mlp_prefill_paths_t{args.tokens}.json", {
        "env": environment(), "date": time.strftime("%Y-%m-%d"), "pinned_cpu": cpu, "layers": layers_n,
        "tokens": args.tokens, "median": summary, "rounds": rounds, "cycles": args.cycles,
        "alternating": alternating, "baseline_build": baseline.__name__ if args.baseline_build else None})


def clocked(forward, spans: list):
    """forward, timing itself: each call's host seconds appended to spans."""
    def timed_forward(self, x):
        start = time.perf_counter()
        y = forward(self, x)
        spans.append(time.perf_counter() - start)
        return y
    return timed_forward


# Alternating prefills: every variant in turn for one prefill each (all layers), the order shuffled
# each cycle. Each variant's calls keep the homogeneous model's code paths (every layer runs the
# same code, as a real model does) while the host's drift within the run (tens of percent over
# seconds on the lent hosts) falls on all variants alike. (Session 17's first form gave each layer
# another variant in one prefill: each variant then always followed the same other one, whose
# code left the caches colder or warmer for it, a bias of up to 20 us a call.)
ALTERNATING = ("eager code", "our code", "session 16 code", "no rule", "no rule, eager op", "modules, op body",
               "F.linear, launch()", "F.linear, bare launch")


def alternating_prefills(model, variants: dict, prefill, cycles: int, names=ALTERNATING,
                         baseline: str = "eager code") -> dict:
    """Host microseconds per MLP call of each variant in `names` over `cycles` cycles of one prefill
    per variant: the median over all calls, and the median over cycles of the difference between
    the variant's mean call and the baseline's in the same cycle."""
    layers = model.model.layers
    order = list(names)
    calls: dict = {name: [] for name in order}
    per_cycle: list[dict] = []
    rng = random.Random(0)
    for cycle in range(cycles + 1):
        rng.shuffle(order)
        means = {}
        for name in order:
            spans: list = []
            for layer in layers:
                layer.mlp.forward = MethodType(clocked(variants[name], spans), layer.mlp)
            torch.cuda.synchronize()
            prefill()
            means[name] = statistics.mean(spans)
            if cycle:  # cycle 0 warms each variant
                calls[name] += spans
        if cycle:
            per_cycle.append(means)
    return {name: {"us_per_call": 1e6 * statistics.median(calls[name]),
                   "minus_eager_us": 1e6 * statistics.median(c[name] - c[baseline] for c in per_cycle),
                   "calls": len(calls[name])} for name in names}


if __name__ == "__main__":
    main()
