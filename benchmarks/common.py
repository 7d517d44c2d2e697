"""Helpers shared by the GPU benchmark scripts: load the local build, time, count bytes."""

import copy
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def load_local_build(out: Path | None = None):
    """Build the variants from the working tree and load the one for this torch."""
    import build_variants
    from kernels import get_local_kernel

    out = out or ROOT / "build"
    build_variants.build(out)
    return get_local_kernel(out)


def pin_to_cpu(cpu: int | None) -> int:
    """Pin this process to one CPU (None: the first it may use; -1: leave it unpinned); returns the
    CPU. Host-bound plain calls on a lent many-vCPU host spread far less pinned (benchmarks/NOTES.md,
    sessions 12-13)."""
    cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    return cpu


def gemma_shaped_pair(k, layers: int = 8, hidden: int = 2048, intermediate: int = 16384, vocab: int = 32000,
                      training: bool = True):
    """A Gemma-shaped causal LM (random bf16 weights, on the GPU, seed 0) and a deep copy of it
    kernelized with kernel `k`'s layer mapping: (untouched, kernelized)."""
    from kernels import Mode, kernelize, use_kernel_mapping
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                         hidden_activation="gelu_pytorch_tanh")
    untouched = GemmaForCausalLM(config).to("cuda", torch.bfloat16)
    ours = copy.deepcopy(untouched)
    with use_kernel_mapping(k.layer_mapping.register(ours)):
        kernelize(ours, mode=Mode.TRAINING if training else Mode.INFERENCE, device="cuda")
    return untouched, ours


def load_local_pointwise(out: Path | None = None):
    """The local build's Triton module (launch functions with forced tile shapes, the kernels)."""
    import importlib

    return importlib.import_module(load_local_build(out).__name__ + ".kernel_src.pointwise")


def median_us(fn, warmup_ms: int = 25, rep_ms: int = 100, flush: str = "write") -> float:
    """Median device time of fn() in microseconds (events; do_bench clears L2 between reps).

    flush: how the L2 is cleared before each timed call. "write": do_bench's own way, zeroing a
    256 MB buffer, which leaves the L2 full of dirty lines that the timed call's first reads must
    write back first (up to the L2's 50 MB on an H200: ~12 us at the copy rate), a cost no call
    inside a model meets. "read": a max-reduction over the same buffer instead, which evicts the
    timed call's data as well but leaves only clean lines."""
    if flush == "write":
        return 1e3 * triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    if flush != "read":
        raise ValueError(f"flush must be 'write' or 'read', got {flush!r}")
    from unittest import mock

    sink = []  # the reduction's one-element output, made once

    def clear_by_reads(cache):
        if not sink:
            sink.append(cache.new_empty(()))
        torch.amax(cache, dim=0, out=sink[0])

    with mock.patch.object(triton.runtime.driver.active, "clear_cache", clear_by_reads):
        return 1e3 * triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def host_us(fn, calls: int = 2000, warmup: int = 200, with_device: bool = False):
    """Host microseconds per call of fn() (no synchronisation inside the loop); with_device: also
    the time per call until the GPU has finished them too."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    total = (time.perf_counter() - start) / calls * 1e6
    return (host, total) if with_device else host


class BareFunction(torch.autograd.Function):
    """The floor of a Python autograd node on this host, for reading host times under autograd: its
    forward only allocates, its backward returns its input."""

    @staticmethod
    def forward(ctx, a, b):
        return torch.empty(a.shape, dtype=a.dtype, device=a.device)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


def timed_ms(fn, repeat: int) -> float:
    """Milliseconds per call of fn(), synchronised before and after `repeat` calls (plain calls,
    host time and the GPU's together)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / repeat


def cycling(calls):
    """One function that runs calls[0], calls[1], ... in turn."""
    state = [0]

    def run():
        state[0] = (state[0] + 1) % len(calls)
        return calls[state[0]]()

    return run


def graph_replay(fn, calls: int = 10):
    """`calls` back-to-back calls of fn() captured in one CUDA graph; returns its replay, which
    keeps fn (and the tensors it holds, which the graph reads) alive."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()

    def replay(fn=fn):  # fn bound so that the inputs the graph reads outlive the capture
        graph.replay()

    return replay


def graph_us(fn, calls: int = 10, rep_ms: int = 100) -> float:
    """Device time per call in microseconds: `calls` back-to-back calls captured in one CUDA
    graph, replays timed by do_bench. Host launch overhead is excluded, which is what a serving
    stack that replays graphs sees; `median_us` gives the plain-call time."""
    return median_us(graph_replay(fn, calls), rep_ms=rep_ms) / calls


def eager_separate(g, u):
    """The eager GeGLU every peer is checked against: gelu(gate) * up."""
    return torch.nn.functional.gelu(g, approximate="tanh") * u


def eager_packed(x):
    """eager_separate on the two halves of a packed [T, 2I] projection."""
    g, u = x.chunk(2, dim=-1)
    return eager_separate(g, u)


def rotated(names: list, round_: int) -> list:
    """`names` in round `round_`'s order: each round starts one later, so that nobody always goes
    first (host-bound timings drift within a round)."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def interleaved_rounds(replays: dict, rounds: int, calls: int = 10, rep_ms: int = 100) -> dict:
    """Device time per call (us) of each graph replay of `calls` calls, the replays timed in turn
    `rounds` times, so that drift during the run (clocks, temperature) favours none of them:
    name -> the per-round times."""
    times = {name: [] for name in replays}
    for _ in range(rounds):
        for name, replay in replays.items():
            times[name].append(median_us(replay, rep_ms=rep_ms) / calls)
    return times


def copy_bandwidth_gbs(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    t = median_us(lambda: dst.copy_(src))
    return 2 * src.numel() / (t * 1e-6) / 1e9


def environment() -> dict:
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = "unknown"
    import kernels
    return {
        "device": props.name,
        "sms": props.multi_processor_count,
        "driver": driver,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "kernels": kernels.__version__,
        "python": platform.python_version(),
    }


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    if os.environ.get("OUT"):
        print(f"wrote {path}")


# --- shared by the MLP probes and comparisons ---

L2_BYTES = 60 << 20  # the H200's L2
MATMUL_FLOPS = 790e12  # bf16 dense matrix rate of the H200 (measured on this kind of machine)


def int_list(value: str) -> list[int]:
    """argparse type: "1,16,64" -> [1, 16, 64]."""
    return [int(v) for v in value.split(",")]


def shape_list(value: str) -> list[tuple[int, int]]:
    """argparse type: "2048x16384,768x3072" -> [(2048, 16384), (768, 3072)] (hidden x intermediate)."""
    return [tuple(map(int, d.split("x"))) for d in value.split(",")]


def weight_copies(hidden: int, inter: int) -> int:
    """Copies of the MLP's weights to cycle through so that each call reads its weights from HBM, as a
    model's decode step does (each matrix alone, as the parts are timed, also exceeds the L2)."""
    return max(1, min(16, math.ceil(3 * L2_BYTES / (hidden * inter * 2))))


def mlp_weights(hidden: int, inter: int, dtype: torch.dtype, device="cuda") -> tuple:
    """(Wg, Wu, Wd) laid out as nn.Linear keeps them, scaled so that every projection stays O(1)."""
    return tuple((torch.randn(*s, device=device) / s[1] ** 0.5).to(dtype)
                 for s in ((inter, hidden), (inter, hidden), (hidden, inter)))


def mlp_weight_sets(hidden: int, inter: int, dtype: torch.dtype) -> list[tuple]:
    """`weight_copies` independent sets of `mlp_weights` on the GPU, to cycle through past the L2."""
    return [mlp_weights(hidden, inter, dtype) for _ in range(weight_copies(hidden, inter))]


def time_totals(variants: dict, xs: list, ws: list, rep_ms: int) -> dict:
    """name -> {"us": graph replay, "plain_us": plain calls} of each variant(x, w), cycling over the
    input sets (xs[i], ws[i])."""
    totals = {}
    for name, fn in variants.items():
        calls = cycling([lambda x=x, w=w, f=fn: f(x, w) for x, w in zip(xs, ws)])
        calls()
        totals[name] = dict(us=graph_us(calls, rep_ms=rep_ms), plain_us=median_us(calls, rep_ms=rep_ms))
    return totals


def mlp_reference(x, wg, wu, wd=None, bg=None, bu=None, bd=None):
    """The GeGLU MLP (tanh) in float64 with eager's rounding points: each projection and gelu(g)
    rounded to x's dtype, then h; wd None: h itself."""
    dt = x.dtype
    g = F.linear(x.double(), wg.double(), None if bg is None else bg.double()).to(dt).double()
    u = F.linear(x.double(), wu.double(), None if bu is None else bu.double()).to(dt).double()
    h = (F.gelu(g, approximate="tanh").to(dt).double() * u).to(dt).double()
    return h if wd is None else F.linear(h, wd.double(), None if bd is None else bd.double())


def rel_err(out, ref) -> float:
    """Relative error in the 2-norm of out against a float64 reference."""
    return ((out.double() - ref).norm() / ref.norm()).item()

