"""Host time per call of 200 back-to-back MLP-shaped calls at T=512 ((2048, 16384), bf16, no
synchronisation inside the loop), where each call's GPU time (~170 us) exceeds its host time, so
launches pile up in the stream: which step makes the host wait for the GPU? Eager's sequence, the
same with our pointwise op body instead of gelu * up, our unfused path, and the pointwise op alone.

    python benchmarks/probes/probe_launch_queue.py
"""

import importlib
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import host_us, load_local_build  # noqa: E402


def main():
    k = load_local_build()
    mlp_ops = importlib.import_module(k.__name__ + ".mlp_ops")
    dispatch = importlib.import_module(k.__name__ + ".dispatch")
    wg, wu = (torch.randn(16384, 2048, device="cuda", dtype=torch.bfloat16) / 45 for _ in range(2))
    wd = torch.randn(2048, 16384, device="cuda", dtype=torch.bfloat16) / 128
    x = torch.randn(1, 512, 2048, device="cuda", dtype=torch.bfloat16)
    g, u = F.linear(x, wg), F.linear(x, wu)
    from compare_peers import GemmaLikeMLP

    mlp = GemmaLikeMLP(2048, 16384).to("cuda", torch.bfloat16)
    calls = {
        "eager: 3 F.linear + gelu * up": lambda: F.linear(F.gelu(F.linear(x, wg), approximate="tanh") * F.linear(x, wu), wd),
        "3 F.linear + our pointwise op body": lambda: F.linear(dispatch.geglu_forward_impl(F.linear(x, wg), F.linear(x, wu), "tanh"), wd),
        "our _unfused_mlp": lambda: mlp_ops._unfused_mlp(x, wg, wu, wd, None, None, None, "tanh"),
        "our GeGLUMLP layer (as kernelize installs it)": lambda: k.layers.GeGLUMLP.forward(mlp, x),
        "eager GemmaMLP module": lambda: mlp(x),
        "our pointwise op body alone": lambda: dispatch.geglu_forward_impl(g, u, "tanh"),
        "eager gelu * up alone": lambda: F.gelu(g, approximate="tanh") * u,
    }
    times = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(3):
            for name, fn in calls.items():
                times[name].append(host_us(fn, calls=200, warmup=20, with_device=True))
    for name, ts in times.items():
        host = statistics.median(t[0] for t in ts)
        total = statistics.median(t[1] for t in ts)
        print(f"{name:40s} host {host:7.1f} us/call  host+device {total:7.1f} us/call", flush=True)


if __name__ == "__main__":
    main()
