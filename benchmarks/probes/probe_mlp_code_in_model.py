"""Is the kernelized Gemma-shaped model's plain prefill slower because of the MLP's code or because
of the model object? Four conditions on two model objects, each timed in the same rotating rounds,
pinned to one CPU: the untouched model and the kernelized copy, each with its MLPs' forward bound
to eager's `GemmaMLP.forward`, to the layer's `GeGLUMLP.forward` (what kernelize binds), and to the
layer's forward with eager's gelu * up in place of the pointwise kernel (its unfused path, T > 128),
swapped in place, so the code is compared within one object and the objects with one code.

    python benchmarks/probes/probe_mlp_code_in_model.py --out DIR [--rounds 9 --cpu 0]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import MethodType

import importlib

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, gemma_shaped_pair, load_local_build, pin_to_cpu, rotated, timed_ms, write_json  # noqa: E402


def bind(model, forward) -> None:
    for layer in model.model.layers:
        layer.mlp.forward = MethodType(forward, layer.mlp)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    cpu = pin_to_cpu(args.cpu)
    k = load_local_build()
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    untouched, kernelized = gemma_shaped_pair(k)  # kernelized as compare_model.py does
    objects = {"untouched": untouched.eval(), "kernelized": kernelized.eval()}
    mlp_ops = importlib.import_module(k.__name__ + ".mlp_ops")
    ours_pointwise = mlp_ops.geglu_forward_impl

    def eager_pointwise(gate, up, approximate):
        return F.gelu(gate, approximate=approximate) * up

    # code -> (the MLPs' forward, the pointwise function of the layer's unfused path)
    codes = {"eager code": (GemmaMLP.forward, ours_pointwise), "our code": (k.layers.GeGLUMLP.forward, ours_pointwise),
             "our code, eager pointwise": (k.layers.GeGLUMLP.forward, eager_pointwise)}

    def use(obj, code):
        forward, pointwise = codes[code]
        bind(objects[obj], forward)
        mlp_ops.geglu_forward_impl = pointwise

    prefill_ids = torch.randint(0, 32000, (1, 512), device="cuda")
    prompt = torch.randint(0, 32000, (1, 16), device="cuda")

    def prefill(m):
        with torch.no_grad():
            m(input_ids=prefill_ids, use_cache=False)

    def decode(m, new=32):
        m.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    cases = {"prefill_512_ms": (prefill, 5, 1), "decode_ms_per_token": (decode, 1, 32)}
    conditions = [(o, c) for o in objects for c in codes]
    for obj, code in conditions:  # warm-up: plans, allocator, cuBLAS heuristics
        use(obj, code)
        for fn, _, _ in cases.values():
            fn(objects[obj])
    rounds = {case: {f"{o}, {c}": [] for o, c in conditions} for case in cases}
    for r in range(args.rounds):
        for case, (fn, repeat, per) in cases.items():
            for obj, code in rotated(conditions, r):
                use(obj, code)
                rounds[case][f"{obj}, {code}"].append(timed_ms(lambda: fn(objects[obj]), repeat) / per)
    summary = {case: {name: statistics.median(t) for name, t in per.items()} for case, per in rounds.items()}
    for case, per in summary.items():
        print(case, "  ".join(f"{name} {t:.3f}" for name, t in per.items()), flush=True)
        for obj in objects:
            print(f"  {obj} object: eager code / our code {per[f'{obj}, eager code'] / per[f'{obj}, our code']:.3f}x")
        for code in codes:
            print(f"  {code}: untouched object / kernelized object "
                  f"{per[f'untouched, {code}'] / per[f'kernelized, {code}']:.3f}x")
    write_json(args.out / "probe_mlp_code_in_model.json", {
        "env": environment(), "date": time.strftime("%Y-%m-%d"), "pinned_cpu": cpu, "layers": 8,
        "median": summary, "rounds": rounds})


if __name__ == "__main__":
    main()
