"""The first call at a new width or MLP shape with the warm-up's kernels compiled in 1, 4, 8, 16
threads (`GEGLU_COMPILE_THREADS`), each in a fresh process with an empty Triton cache, the rounds
interleaved: the same calls as `probe_width_runtime.py`'s first calls (pointwise forward at
2048 columns, then 3072, 16384, 5120, 2560, 1000; the fused MLP at (2048, 16384), then (2304, 12288),
(2560, 10240), (3584, 14336)).

    python benchmarks/probes/probe_first_call_threads.py --out DIR [--threads 1,8] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import ROOT, environment, int_list, write_json  # noqa: E402

PROBE = Path(__file__).resolve().parent / "probe_width_runtime.py"
WORKING = ROOT / "torch-ext" / "geglu" / "kernel_src"


def one_process(threads: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TRITON_CACHE_DIR=cache, GEGLU_COMPILE_THREADS=str(threads))
        done = subprocess.run([sys.executable, str(PROBE), "--first-calls", str(WORKING)], env=env,
                              capture_output=True, text=True, check=True)
    return [dict(threads=threads, **json.loads(line)) for line in done.stdout.splitlines()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int_list, default=(1, 4, 8, 16))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for round_ in range(args.rounds):
        for threads in args.threads:
            for row in one_process(threads):
                rows.append(dict(round=round_, **row))
                print(f"round {round_} threads {threads:2d} {row['kind']:17s} {row.get('H', '')} {row['I']} "
                      f"T={row['T']}: {row['first_ms']:8.1f} ms (steady {row['steady_us']:.1f} us)", flush=True)
    summary = {}
    for row in rows:
        key = (row["kind"], row.get("H"), row["I"], row["T"])
        summary.setdefault(key, {}).setdefault(row["threads"], []).append(row["first_ms"])
    print("median first call, ms, by threads " + " ".join(f"{t:>8d}" for t in args.threads))
    for (kind, hidden, inter, n_rows), by_threads in summary.items():
        print(f"{kind:17s} {hidden or '':>5} {inter:6d} T={n_rows:3d} "
              + " ".join(f"{statistics.median(by_threads[t]):8.1f}" for t in args.threads))
    write_json(args.out / "probe_first_call_threads.json",
               {"env": environment(), "date": time.strftime("%Y-%m-%d"), "cpus": len(os.sched_getaffinity(0)),
                "rows": rows})


if __name__ == "__main__":
    main()
