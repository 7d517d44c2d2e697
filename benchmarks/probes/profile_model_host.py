"""Where the host time of a kernelized Gemma-shaped model goes, against the same model untouched:
cProfile of plain decoding (no graphs) and of a 512-token prefill, top functions by own time,
plus the per-module host time of one decoder layer's MLP as the model calls it.

    python benchmarks/probes/profile_model_host.py [--layers 8]
"""

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import gemma_shaped_pair, load_local_build  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--top", type=int, default=22)
    args = parser.parse_args()
    k = load_local_build()
    untouched, ours = gemma_shaped_pair(k, args.layers)
    untouched.eval(), ours.eval()
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")
    prefill_ids = torch.randint(0, 32000, (1, 512), device="cuda")
    for name, m in (("kernelized", ours), ("untouched", untouched)):
        mlp = m.model.layers[0].mlp
        print(f"== {name}: mlp.forward = {mlp.forward}", flush=True)
        m.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        with torch.no_grad():
            for t in (1, 512):
                x = torch.randn(1, t, 2048, device="cuda", dtype=torch.bfloat16)
                for _ in range(20):
                    mlp(x)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(200):
                    mlp(x)
                host = (time.perf_counter() - start) / 200 * 1e6
                torch.cuda.synchronize()
                dev = (time.perf_counter() - start) / 200 * 1e6
                print(f"   mlp T={t}: host {host:.1f} us per call, host+device {dev:.1f} us", flush=True)
        for what, fn in (("decode 32 tokens", lambda: m.generate(prompt, max_new_tokens=32, min_new_tokens=32,
                                                                   do_sample=False)),
                         ("prefill 512 x3", lambda: [m(input_ids=prefill_ids, use_cache=False) for _ in range(3)])):
            with torch.no_grad():
                fn()
                torch.cuda.synchronize()
                prof = cProfile.Profile()
                start = time.perf_counter()
                prof.enable()
                fn()
                torch.cuda.synchronize()
                prof.disable()
                wall = (time.perf_counter() - start) * 1e3
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
            print(f"-- {name} {what}: {wall:.1f} ms under the profiler", flush=True)
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-(args.top + 3) * 200:])


if __name__ == "__main__":
    main()
