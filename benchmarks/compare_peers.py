"""Side-by-side timing on the GPU: our kernels vs eager PyTorch, torch.compile (default and
dynamic=True) and Liger, in one process. Writes JSON; `report.py` turns it into the markdown
table and the PNG plot.

    python benchmarks/compare_peers.py --out DIR [--sections extras,pointwise,mlp]

Two times per case: `*_us` is device time per call (calls captured in a CUDA graph and
replayed: no host launch overhead), `*_plain_us` a plain call timed by do_bench (host
overhead included where the GPU waits on the host). Bytes counted (bf16, T tokens,
intermediate I): pointwise forward reads g, u and writes h: 3*T*I*2; backward reads dh, g, u
and writes dg, du: 5*T*I*2. `*_frac` is achieved bandwidth over the device-to-device copy
bandwidth measured in the same run.
"""

import argparse
import random
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (BareFunction, copy_bandwidth_gbs, cycling, eager_packed, eager_separate, environment, graph_replay, graph_us, host_us,
                    int_list, interleaved_rounds, load_local_build, median_us, shape_list, write_json)

DIMS = [(768, 3072), (2048, 16384), (2560, 10240), (3584, 14336)]
TOKENS = [1, 16, 64, 128, 512, 2048, 8192]
SETS = 3  # independent input sets, cycled through by consecutive calls
ROUNDS = 3  # forward device times: peers timed in turn this many times, median kept

torch._dynamo.config.cache_size_limit = 256
torch._dynamo.config.accumulated_cache_size_limit = 4096


def peers(k):
    """name -> (separate fn(g, u), packed fn(x) or None)."""
    fns = {
        "ours": (lambda g, u: k.geglu(g, u, approximate="tanh"), k.layers.GeluTanhAndMul()),
        "eager": (eager_separate, eager_packed),
        "compile": (torch.compile(eager_separate), torch.compile(eager_packed)),
        "compile_dynamic": (torch.compile(eager_separate, dynamic=True), torch.compile(eager_packed, dynamic=True)),
    }
    try:
        from liger_kernel.ops.geglu import LigerGELUMulFunction

        fns["liger"] = (LigerGELUMulFunction.apply, None)  # Liger has no packed-input GeGLU
    except ImportError:
        pass
    return fns


def both_times(row, key, fn, timers=(("_us", graph_us), ("_plain_us", median_us))):
    for suffix, timer in timers:
        try:
            row[key + suffix] = timer(fn)
        except Exception as exc:  # one peer failing (e.g. under graph capture) must not end the run
            row[key + suffix] = float("nan")
            row[key + suffix.replace("us", "error")] = f"{type(exc).__name__}: {str(exc)[:200]}"


def interleaved_plain_us(rows, key, fns, flush="write"):
    """Plain-call time of each peer's fn (do_bench median, host time included), the peers timed in
    turn ROUNDS times and the median kept: plain calls are host-bound and the GPU machine's host
    drifts by tens of percent over seconds, which one timing per peer would charge to whichever
    peer ran then. Per-round times go to key + '_plain_rounds_us'. flush "read": the L2 cleared by
    reads instead of do_bench's writes (`median_us`), the keys then `_plain_readflush_...`."""
    times = {name: [] for name in fns}
    tag = "_plain" if flush == "write" else "_plain_readflush"
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            try:
                times[name].append(median_us(fn, rep_ms=50, flush=flush))
            except Exception as exc:  # noqa: BLE001 (one peer failing must not end the run)
                rows[name][key + tag + "_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    for name, t in times.items():
        rows[name][key + tag + "_us"] = statistics.median(t) if t else float("nan")
        rows[name][key + tag + "_rounds_us"] = t


def interleaved_us(rows, key, fns, calls=10):
    """Device time per call of each peer's fn (graph replay), the peers timed in turn ROUNDS
    times and the median kept, so that drift during the run (clocks, temperature) does not
    favour whichever peer happens to be timed first. Per-round times go to key + '_rounds_us'."""
    replays = {}
    for name, fn in fns.items():
        try:
            replays[name] = graph_replay(fn, calls)
        except Exception as exc:  # one peer failing under graph capture must not end the run
            rows[name][key + "_us"] = float("nan")
            rows[name][key + "_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    for name, times in interleaved_rounds(replays, ROUNDS, calls).items():
        rows[name][key + "_us"] = statistics.median(times)
        rows[name][key + "_rounds_us"] = times


def bench_pointwise(k, bw, dtype=torch.bfloat16, inters=(3072, 16384, 10240, 14336), tokens=TOKENS):
    rows = []
    fns = peers(k)
    nbytes = dtype.itemsize
    for inter in inters:
        for t in tokens:
            sets = [SimpleNamespace(
                g=torch.randn(t, inter, device="cuda", dtype=dtype, requires_grad=True),
                u=torch.randn(t, inter, device="cuda", dtype=dtype, requires_grad=True),
                x=torch.randn(t, 2 * inter, device="cuda", dtype=dtype, requires_grad=True),
                dh=torch.randn(t, inter, device="cuda", dtype=dtype)) for _ in range(SETS)]
            shape_rows, forward = {}, {"fwd": {}, "fwd_packed": {}}
            for name, (sep, packed) in fns.items():
                row = shape_rows[name] = dict(stage="pointwise", I=inter, T=t, dtype=str(dtype).removeprefix("torch."),
                                              peer=name)
                # Bind this peer's functions now: these run after the loop, with every peer.
                forward["fwd"][name] = cycling([lambda s=s, f=sep: f(s.g, s.u) for s in sets])
                if packed is not None:
                    forward["fwd_packed"][name] = cycling([lambda s=s, f=packed: f(s.x) for s in sets])
                with torch.no_grad():
                    for key, fn in forward.items():
                        if name in fn:  # device time below, interleaved across peers
                            both_times(row, key, fn[name], timers=(("_plain_us", median_us),))
                both_times(row, "fwd_bwd", cycling(
                    [lambda s=s: torch.autograd.grad(sep(s.g, s.u), (s.g, s.u), s.dh) for s in sets]))
                if packed is not None:
                    both_times(row, "fwd_bwd_packed", cycling(
                        [lambda s=s: torch.autograd.grad(packed(s.x), (s.x,), s.dh) for s in sets]))
                if name == "ours":
                    ops = k.dispatch
                    both_times(row, "bwd", cycling(
                        [lambda s=s: ops.geglu_backward_impl(s.dh, s.g.detach(), s.u.detach(), "tanh") for s in sets]))
                    both_times(row, "bwd_packed", cycling(
                        [lambda s=s: ops.geglu_packed_backward_impl(s.dh, s.x.detach(), "tanh") for s in sets]))
                elif name == "eager":
                    # What eager autograd runs in backward for gelu(g) * u, given the saved gelu(g).
                    acts = [F.gelu(s.g.detach(), approximate="tanh") for s in sets]
                    both_times(row, "bwd", cycling([
                        lambda s=s, a=a: (torch.ops.aten.gelu_backward(s.dh * s.u.detach(), s.g.detach(), approximate="tanh"),
                                          s.dh * a) for s, a in zip(sets, acts)]))
            with torch.no_grad():
                for key, fn in forward.items():
                    interleaved_us(shape_rows, key, fn)
            for row in shape_rows.values():
                for key in [k_ for k_ in list(row) if k_.endswith("_us") and not k_.endswith("_rounds_us")]:
                    moved = (3 if key.startswith("fwd_") and not key.startswith("fwd_bwd") else
                             5 if key.startswith("bwd") else 8) * t * inter * nbytes
                    row[key.replace("_us", "_gbs")] = moved / (row[key] * 1e-6) / 1e9
                    row[key.replace("_us", "_frac")] = row[key.replace("_us", "_gbs")] / bw
                rows.append(row)
            print(f"pointwise {str(dtype)[6:]} I={inter:5d} T={t:5d} fwd/fwd_bwd device us: " + " | ".join(
                f"{r['peer']} {r['fwd_us']:.1f}/{r['fwd_bwd_us']:.1f}" for r in rows[-len(fns):]), flush=True)
            del sets
    return rows


class GemmaLikeMLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.act_fn = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _unfused(k, fn):
    """fn() with the fused MLP kernels switched off (GEGLU_FUSED_MLP=0, as if read at import)."""
    ops, before = k.mlp_ops, k.mlp_ops.FUSED_OFF
    ops.FUSED_OFF = True
    try:
        return fn()
    finally:
        ops.FUSED_OFF = before


def mlp_peers(k, hidden, inter, baseline=None):
    base = GemmaLikeMLP(hidden, inter).to("cuda", torch.bfloat16)
    fns = {
        "ours": lambda x: k.layers.GeGLUMLP.forward(base, x),
        # The layer of another build (--baseline-build: an earlier commit's), on the same module.
        **({"ours_baseline": lambda x: baseline.layers.GeGLUMLP.forward(base, x)} if baseline else {}),
        # The layer without its fused decode kernels (cuBLAS projections + our pointwise kernel).
        "ours_unfused": lambda x: _unfused(k, lambda: k.layers.GeGLUMLP.forward(base, x)),
        "eager": base,
        "compile": torch.compile(base),
        "compile_dynamic": torch.compile(base, dynamic=True),
        # The kernelized layer under torch.compile (what a user who compiles a kernelized model
        # runs: the fused kernels inside the graph through the opaque `mlp_inference` op).
        "ours_compiled": torch.compile(lambda x: k.layers.GeGLUMLP.forward(base, x), dynamic=True),
    }
    try:
        from liger_kernel.transformers.geglu import LigerGEGLUMLP

        liger = LigerGEGLUMLP(SimpleNamespace(hidden_size=hidden, intermediate_size=inter, hidden_act="gelu_pytorch_tanh"))
        liger.to("cuda", torch.bfloat16).load_state_dict(base.state_dict())
        fns["liger"] = liger
    except ImportError:
        pass
    return base, fns


def bench_mlp(k, dims=DIMS, tokens=TOKENS, bw=None, plain_only=False, baseline=None, read_flush=False):
    """The whole MLP per peer. `fwd_weight_frac`: the three weight matrices read once at the copy
    bandwidth `bw` (GB/s), over the forward's device time (the decode roofline). plain_only: the
    forward's plain calls only (no graph replay, no training step): the host-bound side, quickly.
    read_flush: the forward's plain calls timed a second time with the L2 cleared by reads
    (`fwd_plain_readflush_us`, `median_us`)."""
    rows = []
    for hidden, inter in dims:
        base, fns = mlp_peers(k, hidden, inter, baseline)
        for t in tokens:
            xs = [torch.randn(t, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(SETS)]
            point_rows, forwards, steps = {}, {}, {}
            for name, fn in fns.items():
                params = list(fn.parameters()) if isinstance(fn, nn.Module) else list(base.parameters())
                row = point_rows[name] = dict(stage="mlp", H=hidden, I=inter, T=t, peer=name)
                forwards[name] = cycling([lambda x=x, fn=fn: fn(x) for x in xs])
                if plain_only:
                    continue
                with torch.no_grad():
                    both_times(row, "fwd", forwards[name], timers=(("_us", graph_us),))
                step = lambda x, fn=fn, params=params: torch.autograd.grad(
                    fn(x), [x, *params], torch.ones(t, hidden, device="cuda", dtype=torch.bfloat16))
                steps[name] = cycling([lambda x=x, step=step: step(x) for x in xs])
                both_times(row, "train", steps[name], timers=(("_us", graph_us),))
            with torch.no_grad():
                interleaved_plain_us(point_rows, "fwd", forwards)
                if read_flush:
                    interleaved_plain_us(point_rows, "fwd", forwards, flush="read")
            if plain_only:
                rows += point_rows.values()
                print(f"mlp H={hidden} I={inter} T={t:5d} fwd plain us: " + " | ".join(
                    f"{r['peer']} {r['fwd_plain_us']:.1f}" for r in point_rows.values()), flush=True)
                continue
            interleaved_plain_us(point_rows, "train", steps)
            for name, fn in fns.items():
                row, step = point_rows[name], steps[name]
                if t == max(tokens):
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    step()
                    torch.cuda.synchronize()
                    row["train_peak_extra_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
                if bw:
                    row["weight_floor_us"] = 3 * hidden * inter * 2 / (bw * 1e3)
                    row["fwd_weight_frac"] = row["weight_floor_us"] / row["fwd_us"]
                rows.append(row)
            print(f"mlp H={hidden} I={inter} T={t:5d} fwd/train device us: " + " | ".join(
                f"{r['peer']} {r['fwd_us']:.1f}/{r['train_us']:.1f}" for r in rows[-len(fns):]), flush=True)
        del base, fns
    return rows


def bench_first_call(k, inter=16384, warm_t=2048, new_ts=(3001, 4099, 777, 1029, 5, 3, 61, 97)):
    """Host time (synchronised) of the first call at a new token count after warm-up at another
    one, over the second call at that count timed the same way: tuning or recompiling shows here."""
    rows = []
    for name, (sep, _) in peers(k).items():
        g = torch.randn(warm_t, inter, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            sep(g, g)
        for t in new_ts:
            g = torch.randn(t, inter, device="cuda", dtype=torch.bfloat16)
            times = []
            for _ in range(2):
                torch.cuda.synchronize()
                start = time.perf_counter()
                sep(g, g)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - start) * 1e6)
            rows.append(dict(stage="first_call", peer=name, I=inter, T=t, first_us=times[0], second_us=times[1],
                             ratio=times[0] / times[1]))
            print(f"first call {name:16s} T={t:5d}: {times[0]:10.1f} us, second {times[1]:8.1f} us "
                  f"({times[0] / times[1]:.1f}x)", flush=True)
    return rows


def bench_host_overhead(k, rounds: int = 41, calls_per_round: int = 200):
    """Host microseconds per call at T=1, no synchronisation: what a decode step pays on this
    machine's CPU when it does not replay graphs. Each round times `calls_per_round` calls of every
    row in turn, the order shuffled (the lent hosts drift within a run: short rounds put that drift
    on every row alike); the median over rounds is kept. The MLP rows (small dims, so the GPU never holds the host back) subtract the
    host time of the module's three projections called alone."""
    g = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    gr, ur = (torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    dh = torch.randn(1, 16384, device="cuda", dtype=torch.bfloat16)
    mlp = GemmaLikeMLP(256, 1024).to("cuda", torch.bfloat16)
    x = torch.randn(1, 256, device="cuda", dtype=torch.bfloat16)

    def projections():
        mlp.gate_proj(x), mlp.up_proj(x)
        return mlp.down_proj(h_small)

    h_small = torch.randn(1, 1024, device="cuda", dtype=torch.bfloat16)
    ours_layer = lambda: k.layers.GeGLUMLP.forward(mlp, x)  # noqa: E731  (what kernelize installs)
    calls = {
        "ours geglu()": lambda: k.geglu(g, g),
        "ours registered op (dispatcher)": lambda: k.pointwise_ops.geglu_forward(g, g, "tanh", False),
        "ours kernel launch only": lambda: k.dispatch.geglu_forward_impl(g, g, "tanh"),
        "eager gelu*mul (2 aten ops)": lambda: eager_separate(g, g),
        "ours geglu() forward+backward, autograd": lambda: torch.autograd.grad(k.geglu(gr, ur), (gr, ur), dh),
        "eager gelu*mul forward+backward, autograd": lambda: torch.autograd.grad(eager_separate(gr, ur), (gr, ur), dh),
        # Floors of this machine's CPU, for reading the rows above: one allocation, and an
        # autograd.Function whose forward only allocates and whose backward returns its input.
        "reference: torch.empty alone": lambda: torch.empty(g.shape, dtype=g.dtype, device=g.device),
        "reference: bare autograd.Function forward+backward, autograd":
            lambda: torch.autograd.grad(BareFunction.apply(gr, ur), (gr, ur), dh),
        "_projections": projections,
        "_ours layer": ours_layer,
        "_eager layer": lambda: mlp(x),
    }
    with torch.no_grad():
        ours_layer()  # compile / plan outside the timing
    times = {name: [] for name in calls}
    order, rng = list(calls), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            grad = "autograd" in name
            with torch.enable_grad() if grad else torch.no_grad():
                times[name].append(host_us(calls[name], calls=calls_per_round, warmup=20))
    med = {name: statistics.median(t) for name, t in times.items()}
    med["ours GeGLUMLP layer (excl. projections)"] = med.pop("_ours layer") - med["_projections"]
    med["eager GemmaMLP (excl. projections)"] = med.pop("_eager layer") - med["_projections"]
    rows = []
    for name, host in med.items():
        rows.append(dict(stage="host_overhead", peer=name.lstrip("_"), host_us=host,
                         rounds_us=times.get(name, [])))
        print(f"host per call {name:45s} {host:6.1f} us", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sections", default="extras,pointwise,mlp",
                        help="comma-separated: host (host time per call only), extras (host, first call, "
                             "fp16/fp32 points), pointwise, mlp")
    parser.add_argument("--dims", default=",".join(f"{h}x{i}" for h, i in DIMS),
                        type=shape_list, help="mlp section: HxI")
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)), type=int_list)
    parser.add_argument("--inters", default="3072,16384,10240,14336", type=int_list,
                        help="pointwise section: intermediate sizes")
    parser.add_argument("--baseline-build", type=Path,
                        help="mlp section: another build of this package (an earlier commit's build/), "
                             "peer ours_baseline")
    parser.add_argument("--plain-only", action="store_true",
                        help="mlp section: the forward's plain calls only (compare_mlp_plain.json)")
    parser.add_argument("--read-flush", action="store_true",
                        help="mlp section: also time the plain calls with the L2 cleared by reads, not do_bench's "
                             "writes (fwd_plain_readflush_us)")
    args = parser.parse_args()
    k = load_local_build()
    baseline = None
    if args.baseline_build:
        from kernels import get_local_kernel

        baseline = get_local_kernel(args.baseline_build.resolve())
    bw = copy_bandwidth_gbs()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    result = {"env": environment(), "copy_gbs": bw, "date": time.strftime("%Y-%m-%d"), "rows": []}
    for section in args.sections.split(","):
        if section == "host":
            result["rows"] += bench_host_overhead(k)
        elif section == "extras":
            result["rows"] += bench_host_overhead(k)
            result["rows"] += bench_first_call(k)
            for dtype in (torch.float16, torch.float32):
                result["rows"] += bench_pointwise(k, bw, dtype=dtype, inters=(16384,), tokens=(8192,))
        elif section == "pointwise":
            for inter in args.inters:  # saved after each width: a run cut short keeps what it measured
                result["rows"] += bench_pointwise(k, bw, inters=(inter,), tokens=args.tokens)
                write_json(args.out / "compare_pointwise.json", result)
        elif section == "mlp":
            section += "_plain" if args.plain_only else ""
            for dims in args.dims:  # saved after each shape, as above
                result["rows"] += bench_mlp(k, dims=(dims,), tokens=args.tokens, bw=bw, plain_only=args.plain_only,
                                          baseline=baseline, read_flush=args.read_flush)
                write_json(args.out / f"compare_{section}.json", result)
        write_json(args.out / f"compare_{section}.json", {**result, "rows": [r for r in result["rows"]]})
        result["rows"] = []


if __name__ == "__main__":
    main()
