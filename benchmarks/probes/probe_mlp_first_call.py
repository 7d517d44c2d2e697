"""First call of the fused MLP at a new token count, after warm-up at T=1, against the second call
at that count (host time, synchronised): a new T must not compile anything (the row count is a
runtime argument, and the first call of a shape compiled the kernels of every token bucket of the
table) and costs one launch plan. Counts from 2 to 300 cross every bucket (16, 32, 64, 128) and the
table's limits (both kernels to 64, gate/up alone to 128, then the unfused layer).

Eager (the same module's own forward) runs every count first: its first call at a new count
shows what cuBLAS costs there (it loads a GEMM kernel's module at its first use), which the
layer's cuBLAS projections would pay too; the layer's rows then show the layer's own cost.
The steady call is the median of 10 calls after the first (`second_us`: the first of them), and
each bucket is entered at three new counts (one sample each is one host hiccup away from the bar).

Each call's time is split into the host's part (until the call returns) and the wait for the GPU
after it. `--python-profile 65,129`: the layer's first call at those counts runs under cProfile
(its row's first call then includes cProfile's own cost); the functions by own time, in
microseconds, go to `profile_first_call_T<count>.txt`. The kernels the layer's first call compiled
ahead (`launch._warm_handles`) are checked for CUDA's lazy loading (`cuFuncIsLoaded`: with lazy
loading, on by default since CUDA 12.2, a function's code may reach the GPU only at its first
launch); `--func-load` loads them all (`cuFuncLoad`) right after that first call, as a warm-up could.

    python benchmarks/probes/probe_mlp_first_call.py --out DIR [--python-profile 65,129] [--func-load]
"""

import argparse
import cProfile
import ctypes
import importlib
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, load_local_build, write_json  # noqa: E402
from compare_peers import GemmaLikeMLP  # noqa: E402


def profile_text(profiler) -> str:
    """cProfile's entries by own time, in microseconds (pstats prints seconds to 3 decimals)."""
    stats = pstats.Stats(profiler).stats
    lines = [f"{'own us':>9} {'cum us':>9} {'calls':>6}  function"]
    for (file, line, name), (_, calls, own, cum, _) in sorted(stats.items(), key=lambda e: -e[1][2])[:40]:
        lines.append(f"{own * 1e6:9.1f} {cum * 1e6:9.1f} {calls:6d}  {Path(file).name}:{line}({name})")
    return "\n".join(lines) + "\n"


def loading_states(kernels, load: bool) -> dict:
    """How many of these compiled kernels CUDA reports loaded / not loaded (`cuFuncIsLoaded`, CUDA
    12.4+; "unknown" where the driver lacks it); load: `cuFuncLoad` each one not loaded."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        is_loaded, func_load = cuda.cuFuncIsLoaded, cuda.cuFuncLoad
    except (OSError, AttributeError):
        return {"unknown": len(list(kernels))}
    counts = {"loaded": 0, "not loaded": 0, "loaded now": 0}
    for kernel in kernels:
        state = ctypes.c_int(-1)
        function = ctypes.c_void_p(kernel.function)
        is_loaded(ctypes.byref(state), function)
        if state.value == 1:
            counts["loaded"] += 1
            continue
        counts["not loaded"] += 1
        if load and func_load(function) == 0:
            counts["loaded now"] += 1
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-profile", default="", help="comma-separated token counts: the layer's first "
                        "call there under cProfile")
    parser.add_argument("--func-load", action="store_true", help="load every warmed kernel after the first call")
    args = parser.parse_args()
    profiled = {int(t) for t in args.python_profile.split(",") if t}
    k = load_local_build()
    launch = importlib.import_module(k.__name__ + ".kernel_src.launch")
    lazy = {}
    mlp = GemmaLikeMLP(2048, 16384).to("cuda", torch.bfloat16)
    rows = []
    tokens = (2, 3, 5, 8, 16, 17, 18, 19, 31, 33, 34, 35, 64, 65, 66, 67, 100, 128, 129, 130, 131, 300)
    with torch.no_grad():
        for peer, forward in (("eager", mlp), ("ours", lambda x: k.layers.GeGLUMLP.forward(mlp, x))):
            for _ in range(3):
                forward(torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16))
            if peer == "ours":
                lazy = loading_states(launch._warm_handles.values(), args.func_load)
                print("warmed kernels' loading states:", lazy, flush=True)
            for t in tokens:
                x = torch.randn(t, 2048, device="cuda", dtype=torch.bfloat16)
                times, host = [], []
                for i in range(11):
                    profiler = cProfile.Profile() if (i == 0 and peer == "ours" and t in profiled) else None
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    if profiler:
                        profiler.enable()
                    forward(x)
                    returned = time.perf_counter()
                    torch.cuda.synchronize()
                    if profiler:
                        profiler.disable()
                    times.append((time.perf_counter() - start) * 1e6)
                    host.append((returned - start) * 1e6)
                    if profiler:
                        (args.out / f"profile_first_call_T{t}.txt").write_text(profile_text(profiler))
                steady = statistics.median(times[1:])
                rows.append(dict(peer=peer, H=2048, I=16384, T=t, first_us=times[0], second_us=times[1],
                                 steady_us=steady, ratio=times[0] / steady, first_host_us=host[0],
                                 steady_host_us=statistics.median(host[1:])))
                print(f"{peer} first call T={t:3d}: {times[0]:8.1f} us (host {host[0]:7.1f}), steady {steady:8.1f} us "
                      f"(host {statistics.median(host[1:]):6.1f}) ({times[0] / steady:.2f}x)", flush=True)
    write_json(args.out / f"probe_mlp_first_call{'_func_load' if args.func_load else ''}.json",
               {"env": environment(), "date": time.strftime("%Y-%m-%d"), "func_load": args.func_load,
                "cuda_module_loading": os.environ.get("CUDA_MODULE_LOADING"), "warmed_loading_states": lazy,
                "python_profile": sorted(profiled),
                "rows": rows})


if __name__ == "__main__":
    main()
