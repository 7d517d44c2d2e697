"""Where a plain (no CUDA graph) call of the kernelized Gemma-shaped model spends its time, against
the same model untouched, in interleaved rounds: the host's submission time (until the call
returns, no synchronisation), the synchronised wall time, the GPU's busy time (kernel durations
from torch.profiler, and the kernel count), and the host time of the MLP modules alone as the
model calls them (forward pre/post hooks on the MLP module: the layer's rule looks at the
projections' hooks, not at the MLP's own, so the fused paths still run). Answers whether the
model's plain-call gap is host time, device time, or waiting.

    python benchmarks/probes/probe_model_split.py --out DIR [--layers 8 --rounds 5 --control --host-steps]
"""

import argparse
import copy
import gc
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, gemma_shaped_pair, load_local_build, pin_to_cpu, rotated, write_json  # noqa: E402


class MlpClock:
    """Host microseconds spent inside the model's MLP modules (pre-hook to post-hook)."""

    def __init__(self, model):
        self.total = 0.0
        self.calls = 0
        self.handles = []
        for layer in model.model.layers:
            self.handles.append(layer.mlp.register_forward_pre_hook(self._enter))
            self.handles.append(layer.mlp.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self._start = time.perf_counter()

    def _leave(self, module, args, out):
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def reset(self):
        self.total, self.calls = 0.0, 0

    def remove(self):
        for h in self.handles:
            h.remove()


class GcClock:
    """Collections of Python's cyclic garbage collector and the host time they took (gc.callbacks):
    a collection runs inside whatever call allocates when the threshold is reached, so its time
    lands in unrelated functions of a profile."""

    def __init__(self):
        self.reset()
        gc.callbacks.append(self._event)

    def _event(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.ms += (time.perf_counter() - self._start) * 1e3
            self.collections[info["generation"]] += 1

    def reset(self):
        self.ms, self.collections = 0.0, [0, 0, 0]

    def remove(self):
        gc.callbacks.remove(self._event)


class StepClock:
    """Host microseconds inside named functions of the kernel's `mlp_ops` and `layers` modules (each
    wrapped by a timer for the clock's life; the layers look them up at call time): where the
    kernelized MLP's host time goes, step by step, the layer's own checks before `fused_mlp`
    included. Also the untouched model's act_fn and projection modules (hooks: those modules are
    not the layer's)."""

    STEPS = {"mlp_ops": ("fused_mlp", "_unfused_mlp", "geglu_forward_impl", "run_mlp_decode", "gate_up_geglu_impl",
                         "_projection_weights", "_cublas_and_pointwise"),
             "layers": ("_attributes", "approximate_of", "_activation_hooked")}

    def __init__(self, kernel_modules: dict, untouched_model):
        self.originals = {(module, name): getattr(module, name)
                          for key, module in kernel_modules.items() for name in self.STEPS[key]}
        self.totals = {name: 0.0 for _, name in self.originals}
        for (module, name), fn in self.originals.items():
            setattr(module, name, self._timed(name, fn))
        self.handles = []
        for layer in untouched_model.model.layers:
            for part in ("act_fn", "gate_proj", "up_proj", "down_proj"):
                module = getattr(layer.mlp, part)
                self.totals[f"untouched {part}"] = 0.0
                self.handles.append(module.register_forward_pre_hook(self._enter))
                self.handles.append(module.register_forward_hook(lambda m, a, o, part=part: self._leave(part)))

    def _timed(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - start
        return timed

    def _enter(self, module, args):
        self._start = time.perf_counter()

    def _leave(self, part):
        self.totals[f"untouched {part}"] += time.perf_counter() - self._start

    def reset(self):
        self.totals = dict.fromkeys(self.totals, 0.0)

    def remove(self):
        for (module, name), fn in self.originals.items():
            setattr(module, name, fn)
        for h in self.handles:
            h.remove()


def python_profile_diff(case: str, calls: dict, top: int = 25) -> None:
    """cProfile one call of each (after a synchronise), then print the functions whose own time
    (tottime) differs most between the first and the second, with their call counts."""
    import cProfile
    import pstats

    stats = {}
    for name, fn in calls.items():
        torch.cuda.synchronize()
        profiler = cProfile.Profile()
        profiler.enable()
        fn()
        profiler.disable()
        torch.cuda.synchronize()
        stats[name] = {f"{Path(file).name}:{line}({func})": (calls_, tottime)
                       for (file, line, func), (_, calls_, tottime, _, _) in pstats.Stats(profiler).stats.items()}
    (a, sa), (b, sb) = stats.items()
    keys = set(sa) | set(sb)
    diff = sorted(keys, key=lambda k: abs(sa.get(k, (0, 0.0))[1] - sb.get(k, (0, 0.0))[1]), reverse=True)[:top]
    total = {name: sum(t for _, t in st.values()) * 1e3 for name, st in stats.items()}
    print(f"{case}: cProfile own time, {a} {total[a]:.1f} ms vs {b} {total[b]:.1f} ms; largest differences:")
    for k in diff:
        (ca, ta), (cb, tb) = sa.get(k, (0, 0.0)), sb.get(k, (0, 0.0))
        print(f"  {k[:90]:90s} {a} {ta * 1e3:8.2f} ms ({ca:6d} calls)  {b} {tb * 1e3:8.2f} ms ({cb:6d} calls)")


def device_busy_us(fn) -> tuple[float, int]:
    """Sum of the CUDA kernels' durations of one fn() call (microseconds) and their count."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels), len(kernels)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python-profile", action="store_true",
                        help="also profile one call of each case with cProfile, both models, and print the "
                             "functions whose own time differs most between them")
    parser.add_argument("--control", action="store_true",
                        help="also time a second untouched copy (an A/A control: what the order and the copy alone "
                             "make of the comparison); the models' order rotates every round")
    parser.add_argument("--host-steps", action="store_true",
                        help="also time the layer's steps on the host (the rounds then carry the timers' cost)")
    parser.add_argument("--cpu", type=int, default=-1, help="pin the process to this CPU (default: not pinned)")
    args = parser.parse_args()
    cpu = pin_to_cpu(args.cpu)
    k = load_local_build()
    untouched, ours = gemma_shaped_pair(k, args.layers)
    models = {"kernelized": ours, "untouched": untouched}
    if args.control:
        models["untouched_copy"] = copy.deepcopy(untouched)
    train_ids = torch.randint(0, 32000, (2, 1024), device="cuda")
    prefill_ids = torch.randint(0, 32000, (1, 512), device="cuda")
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")

    def train_step(m):
        m.train()
        m.zero_grad(set_to_none=True)
        m(input_ids=train_ids, labels=train_ids).loss.backward()

    def prefill(m):
        m.eval()
        with torch.no_grad():
            m(input_ids=prefill_ids, use_cache=False)

    def decode(m):
        m.eval()
        m.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)

    cases = {"prefill_512": prefill, "decode_32_tokens": decode, "train_step_2x1024": train_step}
    clocks = {name: MlpClock(m) for name, m in models.items()}
    for fn in cases.values():  # warm-up
        for m in models.values():
            fn(m)
            fn(m)
    rows = []
    samples = {(c, n): {"host_ms": [], "wall_ms": [], "mlp_host_us_per_call": [], "gc_ms": [], "gc_collections": []}
               for c in cases for n in models}
    gc_clock = GcClock()
    steps = StepClock({key: importlib.import_module(f"{k.__name__}.{key}") for key in StepClock.STEPS},
                      untouched) if args.host_steps else None
    step_samples = {case: [] for case in cases}
    names = list(models)
    for r in range(args.rounds):
        order = rotated(names, r)
        for case, fn in cases.items():
            for name in order:
                m = models[name]
                torch.cuda.synchronize()
                clocks[name].reset()
                if steps is not None:
                    steps.reset()
                gc_clock.reset()
                start = time.perf_counter()
                fn(m)
                host = time.perf_counter() - start
                torch.cuda.synchronize()
                wall = time.perf_counter() - start
                s = samples[case, name]
                s["host_ms"].append(host * 1e3)
                s["wall_ms"].append(wall * 1e3)
                s["mlp_host_us_per_call"].append(clocks[name].total / max(clocks[name].calls, 1) * 1e6)
                s["gc_ms"].append(gc_clock.ms)
                s["gc_collections"].append(gc_clock.collections)
                if steps is not None:
                    calls = max(clocks[name].calls, 1)
                    if name == "untouched_copy":  # its modules carry no step timers
                        continue
                    mine = (lambda step: not step.startswith("untouched")) if name == "kernelized" else \
                        (lambda step: step.startswith("untouched"))
                    step_samples[case].append({step: t / calls * 1e6 for step, t in steps.totals.items()
                                               if mine(step) and t})
    gc_clock.remove()
    for clock in clocks.values():
        clock.remove()
    if steps is not None:
        steps.remove()
        for case, found in step_samples.items():
            keys = sorted({key for sample in found for key in sample})
            medians = {key: statistics.median(sample.get(key, 0.0) for sample in found) for key in keys}
            print(f"{case:18s} host us per MLP call, by step (medians of {args.rounds} rounds): "
                  + ", ".join(f"{key} {value:.1f}" for key, value in medians.items()), flush=True)
            rows.append(dict(case=case, model="host steps", steps_us_per_mlp_call=medians, rounds=found))
    if args.python_profile:
        for case, fn in cases.items():
            python_profile_diff(case, {name: (lambda m=m, fn=fn: fn(m)) for name, m in models.items()})
    for case, fn in cases.items():
        for name, m in models.items():
            busy, count = device_busy_us(lambda: fn(m))
            s = samples[case, name]
            row = dict(case=case, model=name, host_ms=statistics.median(s["host_ms"]),
                       wall_ms=statistics.median(s["wall_ms"]),
                       mlp_host_us_per_call=statistics.median(s["mlp_host_us_per_call"]),
                       gc_ms=statistics.median(s["gc_ms"]),
                       device_busy_ms=busy / 1e3, kernels=count, rounds=s)
            rows.append(row)
            print(f"{case:18s} {name:14s} wall {row['wall_ms']:7.2f} ms  host {row['host_ms']:7.2f} ms  "
                  f"device busy {row['device_busy_ms']:7.2f} ms ({count} kernels)  "
                  f"MLP host {row['mlp_host_us_per_call']:6.1f} us/call  gc {row['gc_ms']:.2f} ms "
                  f"{[sum(c[g] for c in s['gc_collections']) for g in range(3)]}", flush=True)
    write_json(args.out / "probe_model_split.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                     "pinned_cpu": cpu, "layers": args.layers, "rows": rows})


if __name__ == "__main__":
    main()
