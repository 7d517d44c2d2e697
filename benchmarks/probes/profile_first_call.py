"""Where the first call of the layer at a new token count spends its time: torch.profiler (CPU and
CUDA) around the first and the second call at T = 65 and 130 ((2048, 16384) bf16; eager ran each
count first, as in `probe_mlp_first_call.py`), the top entries by self CPU time, and the wall
time of each call.

    python benchmarks/probes/profile_first_call.py
"""

import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import load_local_build  # noqa: E402
from compare_peers import GemmaLikeMLP  # noqa: E402


def main():
    k = load_local_build()
    mlp = GemmaLikeMLP(2048, 16384).to("cuda", torch.bfloat16)
    layer = lambda x: k.layers.GeGLUMLP.forward(mlp, x)  # noqa: E731
    with torch.no_grad():
        one = torch.randn(1, 2048, device="cuda", dtype=torch.bfloat16)
        layer(one)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):  # the profiler's own start-up
            layer(one)
        for t in (65, 130):
            x = torch.randn(t, 2048, device="cuda", dtype=torch.bfloat16)
            mlp(x), mlp(x)
            torch.cuda.synchronize()
            for which in ("first", "second"):
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    start = time.perf_counter()
                    layer(x)
                    torch.cuda.synchronize()
                    wall = (time.perf_counter() - start) * 1e6
                print(f"== T={t} {which} call: {wall:.0f} us (under the profiler)", flush=True)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)


if __name__ == "__main__":
    main()
