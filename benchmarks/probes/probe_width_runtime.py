"""The width as a runtime argument against the width as a compile-time constant, in one run.

Two copies of `kernel_src` are loaded side by side: the working tree's (the width a runtime
argument) and a baseline copy (`--baseline DIR`, a `kernel_src` folder of the commit before, where
the width was a constexpr). Measured:

1. device time of the pointwise kernels (forward and backward, separate and packed operands, bf16,
   I = 16384 and 2560, T 1 to 8192) and of the fused decode MLP (`run_mlp_decode`, and gate/up alone
   at 128 tokens) at the comparison's shapes: graph replay of 10 calls cycling over input sets past
   the L2, the two copies interleaved over several rounds (medians);
2. the first call at a new width, each copy in a fresh process with an empty Triton cache: the
   pointwise forward at 2048 columns, then at other widths; the fused MLP at (2048, 16384), then at
   other shapes (host time of the synchronised call, against the median of the next 10), and once
   more with the disk cache those calls filled (a later process's first call).

    python benchmarks/probes/probe_width_runtime.py --out DIR --baseline DIR [--extra NAME=DIR]
"""

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (ROOT, cycling, environment, graph_replay, int_list, interleaved_rounds, mlp_reference,  # noqa: E402
                    rel_err, write_json)

WORKING = ROOT / "torch-ext" / "geglu" / "kernel_src"
POINTWISE_WIDTHS = (16384, 2560)
POINTWISE_TOKENS = (1, 16, 128, 512, 2048, 8192)
MLP_POINTS = ((2048, 16384, (1, 16, 64, 128)), (2560, 10240, (1, 16)), (3584, 14336, (1, 16)))


def load_copy(path: Path, name: str):
    """A `kernel_src` folder imported as package `name`: its pointwise and mlp modules."""
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(name + ".pointwise"), importlib.import_module(name + ".mlp")


def pointwise_calls(pw, backward: bool, packed: bool, n_rows: int, n_cols: int, sets: int):
    """A function cycling over `sets` input sets; each set's first call is checked (synchronised)
    against a float64 reference on a sample of rows, so a bad launch is caught at its point."""
    calls = []
    for _ in range(sets):
        x = torch.randn(n_rows, 2 * n_cols, device="cuda", dtype=torch.bfloat16)
        g, u = (x[:, :n_cols], x[:, n_cols:]) if packed else (x[:, :n_cols].contiguous(), x[:, n_cols:].contiguous())
        if backward:
            dh, dg, du = (torch.empty_like(g, memory_format=torch.contiguous_format).normal_() for _ in range(3))
            call = lambda g=g, u=u, dh=dh, dg=dg, du=du: pw.launch_geglu_backward(dh, g, u, dg, du, True,
                                                                                  traceable=False)
            outs = (dg, du)
        else:
            out = torch.empty(n_rows, n_cols, device="cuda", dtype=torch.bfloat16)
            call = lambda g=g, u=u, out=out: pw.launch_geglu_forward(g, u, out, True, traceable=False)
            outs = (out,)
        call()
        torch.cuda.synchronize()
        rows = torch.unique(torch.tensor([0, n_rows // 2, n_rows - 1], device="cuda"))
        gd, ud = g[rows].double().requires_grad_(), u[rows].double().requires_grad_()
        ref = torch.nn.functional.gelu(gd, approximate="tanh") * ud
        if backward:
            ref.backward(dh[rows].double())
            refs = (gd.grad, ud.grad)
        else:
            refs = (ref.detach(),)
        for got, want in zip(outs, refs):
            torch.testing.assert_close(got[rows].double(), want, rtol=2e-2, atol=2e-2)
        calls.append(call)
    return cycling(calls)


def add_ratios(row: dict, times: dict) -> None:
    """Each copy's median against the constexpr copy's: `ratio` for the working tree's, `ratio_NAME`
    for an extra copy's."""
    row["ratio"] = row["runtime_width_us"] / row["constexpr_width_us"]
    for name in times.keys() - {"runtime_width", "constexpr_width"}:
        row[f"ratio_{name}"] = row[f"{name}_us"] / row["constexpr_width_us"]


def device_times(copies: dict, rounds: int, widths, tokens, mlp: bool) -> list[dict]:
    rows = []
    for n_cols in widths:
        for n_rows in tokens:
            sets = max(2, min(8, (1 << 29) // (n_rows * n_cols * 2 * 5)))
            for backward in (False, True):
                for packed in (False, True):
                    replays = {name: graph_replay(pointwise_calls(pw, backward, packed, n_rows, n_cols, sets))
                               for name, (pw, _) in copies.items()}
                    times = interleaved_rounds(replays, rounds)
                    row = dict(kernel="pointwise_backward" if backward else "pointwise_forward",
                               layout="packed" if packed else "separate", T=n_rows, I=n_cols,
                               **{f"{name}_us": statistics.median(t) for name, t in times.items()},
                               **{f"{name}_rounds": t for name, t in times.items()})
                    add_ratios(row, times)
                    rows.append(row)
                    print(f"{row['kernel']:18s} {row['layout']:8s} I={n_cols:5d} T={n_rows:5d}: runtime "
                          f"{row['runtime_width_us']:8.2f} constexpr {row['constexpr_width_us']:8.2f} us "
                          f"({row['ratio']:.3f})" + "".join(f" {k[6:]} {v:.3f}" for k, v in row.items()
                                                            if k.startswith("ratio_")), flush=True)
    device_index = torch.cuda.current_device()
    for hidden, inter, tokens in MLP_POINTS if mlp else ():
        weights = [tuple((torch.randn(*s, device="cuda") / s[1] ** 0.5).to(torch.bfloat16)
                         for s in ((inter, hidden), (inter, hidden), (hidden, inter)))
                   for _ in range(max(1, min(8, (200 << 20) // (3 * hidden * inter * 2) + 1)))]
        for n_rows in tokens:
            xs = [torch.randn(n_rows, hidden, device="cuda", dtype=torch.bfloat16) for _ in weights]
            replays, errors = {}, {}
            for name, (_, mlp) in copies.items():
                both_rows, _ = mlp.max_rows(device_index)
                if n_rows <= both_rows:
                    def call(x, w, mlp=mlp):
                        return mlp.run_mlp_decode(x, hidden, *w, None, None, None, True, device_index)
                    kind = "fused_mlp"
                else:
                    def call(x, w, mlp=mlp):
                        h = torch.empty(x.shape[0], inter, device="cuda", dtype=x.dtype)
                        mlp.launch_gate_up_geglu(x, w[0], w[1], None, None, h, True)
                        return h
                    kind = "gate_up_alone"
                out = call(xs[0], weights[0])
                ref = mlp_reference(xs[0], *weights[0][:2], *(weights[0][2:] if kind == "fused_mlp" else ()))
                errors[name] = rel_err(out, ref)
                replays[name] = graph_replay(cycling([lambda x=x, w=w, c=call: c(x, w) for x, w in zip(xs, weights)]))
            times = interleaved_rounds(replays, rounds)
            row = dict(kernel=kind, H=hidden, I=inter, T=n_rows, rel_err=errors,
                       **{f"{name}_us": statistics.median(t) for name, t in times.items()},
                       **{f"{name}_rounds": t for name, t in times.items()})
            add_ratios(row, times)
            rows.append(row)
            print(f"{kind:18s} ({hidden}, {inter}) T={n_rows:3d}: runtime {row['runtime_width_us']:8.2f} constexpr "
                  f"{row['constexpr_width_us']:8.2f} us ({row['ratio']:.3f}), rel err {errors}", flush=True)
    return rows


def timed_call(fn, steady_calls: int = 10) -> dict:
    """Host time of fn()'s first call (synchronised), and the median of the next steady_calls."""
    times = []
    for _ in range(1 + steady_calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return dict(first_ms=times[0] / 1e3, steady_us=statistics.median(times[1:]))


def first_calls(path: str) -> None:
    """(In a fresh process.) The first calls at new widths and shapes of one copy, as JSON lines."""
    pw, mlp = load_copy(Path(path), "copy_under_test")
    device_index = torch.cuda.current_device()
    torch.randn(1, device="cuda")  # the CUDA context, before any timing
    for n_cols in (2048, 3072, 16384, 5120, 2560, 1000):
        for n_rows in (1, 700):
            g, u = (torch.randn(n_rows, n_cols, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            out = torch.empty_like(g)
            row = timed_call(lambda: pw.launch_geglu_forward(g, u, out, True, traceable=False))
            print(json.dumps(dict(kind="pointwise_forward", I=n_cols, T=n_rows, **row)), flush=True)
    for hidden, inter in ((2048, 16384), (2304, 12288), (2560, 10240), (3584, 14336)):
        w = tuple((torch.randn(*s, device="cuda") / s[1] ** 0.5).to(torch.bfloat16)
                  for s in ((inter, hidden), (inter, hidden), (hidden, inter)))
        x = torch.randn(1, hidden, device="cuda", dtype=torch.bfloat16)
        row = timed_call(lambda: mlp.run_mlp_decode(x, hidden, *w, None, None, None, True, device_index))
        print(json.dumps(dict(kind="fused_mlp", H=hidden, I=inter, T=1, **row)), flush=True)


def first_call_rows(copies: dict) -> list[dict]:
    rows = []
    for name, path in copies.items():
        with tempfile.TemporaryDirectory() as cache:
            for disk_cache in ("empty", "filled"):
                env = dict(os.environ, TRITON_CACHE_DIR=cache)
                done = subprocess.run([sys.executable, __file__, "--first-calls", str(path)], env=env,
                                      capture_output=True, text=True, check=True)
                for line in done.stdout.splitlines():
                    row = dict(copy=name, disk_cache=disk_cache, **json.loads(line))
                    rows.append(row)
                    print(f"first call {name:16s} cache {disk_cache:6s} {row['kind']:17s} "
                          f"{row.get('H', '')} {row['I']} T={row['T']}: {row['first_ms']:8.1f} ms "
                          f"(steady {row['steady_us']:.1f} us)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--baseline", type=Path, help="a kernel_src folder with the width as a constexpr")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                        help="another kernel_src folder timed beside the two (device times only)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--widths", type=int_list, default=POINTWISE_WIDTHS)
    parser.add_argument("--tokens", type=int_list, default=POINTWISE_TOKENS)
    parser.add_argument("--no-mlp", action="store_true", help="pointwise kernels only")
    parser.add_argument("--no-first-calls", action="store_true", help="device times only")
    parser.add_argument("--first-calls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_calls:
        first_calls(args.first_calls)
        return
    paths = {"runtime_width": WORKING, "constexpr_width": args.baseline.resolve()}
    first = [] if args.no_first_calls else first_call_rows(paths)
    paths.update((name, Path(path).resolve()) for name, path in (extra.split("=", 1) for extra in args.extra))
    copies = {name: load_copy(path, f"kernel_src_{name}") for name, path in paths.items()}
    rows = device_times(copies, args.rounds, args.widths, args.tokens, not args.no_mlp)
    write_json(args.out / "probe_width_runtime.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                       "device_rows": rows, "first_call_rows": first})


if __name__ == "__main__":
    main()
