"""Why the backward kernel's launch costs ~19 us more inside autograd than alone (session 11's
`profile_autograd_host.log`: the op body 12.2 us alone, +31 us in the ladder): the same steps of
`geglu_backward_impl` (plan lookup, two allocations, the launcher call) timed step by step on the
main thread and inside an autograd.Function's backward (autograd's device thread), T=1, I=16384,
bf16, the launcher once through its Python wrapper and once through its C entry (`launch._run`).
Also records the current device as that thread sees it (which branch `launch` takes there).

    python benchmarks/probes/probe_autograd_thread.py [--out DIR]
"""

import argparse
import importlib
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, host_us, load_local_build, write_json  # noqa: E402

STEPS = ("plan lookup", "2 x empty_like", "data_ptr + stream", "launcher wrapper", "launcher C entry", "whole")


def timed_steps(dispatch, grad, gate, up, record):
    pc = time.perf_counter
    t0 = pc()
    key = (gate.shape, grad.stride(), gate.stride(), up.stride(), gate.dtype, gate.get_device(), "tanh", False)
    entry = dispatch._plans.get(key) or dispatch._plan_backward(key, grad, gate, up, "tanh", False)
    t1 = pc()
    grad_gate = torch.empty_like(gate, memory_format=torch.contiguous_format)
    grad_up = torch.empty_like(gate, memory_format=torch.contiguous_format)
    t2 = pc()
    device = gate.get_device()
    ptrs = [t.data_ptr() for t in (grad, gate, up, grad_gate, grad_up)]
    stream = torch._C._cuda_getCurrentRawStream(device)
    t3 = pc()
    compiled, _, c_entry = entry.handles[1]
    compiled.run(*entry.grid, stream, compiled.function, compiled.packed_metadata, None, None, None, *ptrs,
                 *entry.tail)
    t4 = pc()
    if c_entry is not None:  # the same launch again through the launcher's C entry (`launch._run`)
        c_entry[0](*entry.grid, stream, *c_entry[1], *ptrs, *entry.tail)
    t5 = pc()
    for name, dt in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
        record.setdefault(name, []).append(dt * 1e6)
    return grad_gate, grad_up


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    k = load_local_build()
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    g, u = (torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    dh = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    gd, ud = g.detach(), u.detach()
    dispatch.geglu_backward_impl(dh, gd, ud, "tanh")  # plan and handle exist from here
    seen = {}

    class Timed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, gate, up):
            ctx.save_for_backward(gate, up)
            return dispatch.geglu_forward_impl(gate, up, "tanh")

        @staticmethod
        def backward(ctx, grad):
            gate, up = ctx.saved_tensors
            seen.setdefault("thread", threading.current_thread().name)
            seen.setdefault("current_device", torch._C._cuda_getDevice())
            seen.setdefault("grad_device", grad.get_device())
            seen.setdefault("grad_contiguous", grad.is_contiguous())
            return timed_steps(dispatch, grad, gate, up, worker)

    results = {}
    for round_ in range(3):
        main_thread, worker = {}, {}
        for _ in range(args.calls):
            timed_steps(dispatch, dh, gd, ud, main_thread)
        torch.cuda.synchronize()
        for _ in range(args.calls):
            torch.autograd.grad(Timed.apply(g, u), (g, u), dh)
        torch.cuda.synchronize()
        for where, record in (("main thread", main_thread), ("autograd backward", worker)):
            for step in STEPS:
                results.setdefault((where, step), []).append(statistics.mean(record[step][200:]))
        results.setdefault(("fwd+bwd", "Timed node"), []).append(
            host_us(lambda: torch.autograd.grad(Timed.apply(g, u), (g, u), dh)))
        results.setdefault(("fwd+bwd", "geglu()"), []).append(
            host_us(lambda: torch.autograd.grad(k.geglu(g, u), (g, u), dh)))
        results.setdefault(("fwd+bwd", "eager gelu*mul"), []).append(host_us(
            lambda: torch.autograd.grad(torch.nn.functional.gelu(g, approximate="tanh") * u, (g, u), dh)))
    print("backward thread:", seen)
    rows = []
    for (where, step), values in results.items():
        rows.append(dict(where=where, step=step, us=statistics.median(values), rounds=values))
        print(f"{where:18s} {step:20s} {statistics.median(values):7.2f} us  (rounds "
              f"{', '.join(f'{v:.2f}' for v in values)})", flush=True)
    if args.out:
        write_json(args.out / "probe_autograd_thread.json",
                   {"env": environment(), "date": time.strftime("%Y-%m-%d"), "backward_thread": seen, "rows": rows})


if __name__ == "__main__":
    main()
