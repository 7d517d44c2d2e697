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

    python benchmarks/probes/probe_mlp_first_call.py --out DIR
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, load_local_build, write_json  # noqa: E402
from compare_peers import GemmaLikeMLP  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    k = load_local_build()
    mlp = GemmaLikeMLP(2048, 16384).to("cuda", torch.bfloat16)
    rows = []
    tokens = (2, 3, 5, 8, 16, 17, 18, 19, 31, 33, 34, 35, 64, 65, 66, 67, 100, 128, 129, 130, 131, 300)
    with torch.no_grad():
        for peer, forward in (("eager", mlp), ("ours", lambda x: k.layers.GeGLUMLP.forward(mlp, x))):
            for _ in range(3):
                forward(torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16))
            for t in tokens:
                x = torch.randn(t, 2048, device="cuda", dtype=torch.bfloat16)
                times = []
                for _ in range(11):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    forward(x)
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - start) * 1e6)
                steady = statistics.median(times[1:])
                rows.append(dict(peer=peer, H=2048, I=16384, T=t, first_us=times[0], second_us=times[1],
                                 steady_us=steady, ratio=times[0] / steady))
                print(f"{peer} first call T={t:3d}: {times[0]:8.1f} us, steady {steady:8.1f} us "
                      f"({times[0] / steady:.2f}x)", flush=True)
    write_json(args.out / "probe_mlp_first_call.json", {"env": environment(), "date": time.strftime("%Y-%m-%d"),
                                                          "rows": rows})


if __name__ == "__main__":
    main()
