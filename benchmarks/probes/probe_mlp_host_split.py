"""Host time of the GeGLUMLP layer's steps against eager GemmaMLP, as a model calls the MLP
([1, T, H] bf16, no grad), at decode and prefill token counts: the layer, eager's module, the
layer's rule alone (`fused_mlp` with the work stubbed out), the unfused path's pieces (three
F.linear, the pointwise op body) and eager's pieces. Interleaved rounds, medians.

    python benchmarks/probes/probe_mlp_host_split.py --out DIR
"""

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, host_us, load_local_build, write_json  # noqa: E402
from compare_peers import GemmaLikeMLP  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    k = load_local_build()
    mlp_ops = importlib.import_module(k.__name__ + ".mlp_ops")
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    mlp = GemmaLikeMLP(2048, 16384).to("cuda", torch.bfloat16)
    wg, wu, wd = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    rows = []
    with torch.no_grad():
        for t in (1, 512):
            x = torch.randn(1, t, 2048, device="cuda", dtype=torch.bfloat16)
            g, u = F.linear(x, wg), F.linear(x, wu)
            h = F.gelu(g, approximate="tanh") * u
            unfused, decode = mlp_ops._unfused_mlp, mlp_ops.run_mlp_decode
            calls = {
                "ours layer": lambda: k.layers.GeGLUMLP.forward(mlp, x),
                "eager module": lambda: mlp(x),
                "ours rule only (work stubbed)": lambda: mlp_ops.fused_mlp(x, "tanh", mlp.gate_proj, mlp.up_proj,
                                                                           mlp.down_proj, None),
                "ours _unfused_mlp": lambda: unfused(x, wg, wu, wd, None, None, None, "tanh"),
                "3 x F.linear": lambda: (F.linear(x, wg), F.linear(x, wu), F.linear(h, wd)),
                "3 x nn.Linear module": lambda: (mlp.gate_proj(x), mlp.up_proj(x), mlp.down_proj(h)),
                "ours pointwise op body": lambda: dispatch.geglu_forward_impl(g, u, "tanh"),
                "eager gelu(g) * u": lambda: F.gelu(g, approximate="tanh") * u,
                "eager act module * u": lambda: mlp.act_fn(g) * u,
            }
            # At T=512 a call is ~180 us on the GPU: 50 calls (about 250 launches) stay inside the
            # launch queue, so the loop times the host, not the device.
            times = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    if name == "ours rule only (work stubbed)":
                        mlp_ops._unfused_mlp = lambda x, *a: x
                        mlp_ops.run_mlp_decode = lambda x, *a: x
                    try:
                        times[name].append(host_us(fn, calls=50 if t > 1 else 2000))
                    finally:
                        mlp_ops._unfused_mlp, mlp_ops.run_mlp_decode = unfused, decode
            for name, ts in times.items():
                rows.append(dict(T=t, what=name, host_us=statistics.median(ts), rounds_us=ts))
                print(f"T={t:4d} {name:32s} {statistics.median(ts):7.1f} us  "
                      f"({', '.join(f'{v:.1f}' for v in ts)})", flush=True)
    write_json(args.out / "probe_mlp_host_split.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                        "rows": rows})


if __name__ == "__main__":
    main()
