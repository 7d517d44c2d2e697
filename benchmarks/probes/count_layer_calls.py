"""How many Python functions one MLP call runs: eager GemmaMLP against our GeGLUMLP layer, on the
CPU machine (no GPU needed), under TRITON_INTERPRET=1 so that the layer takes its Triton path.

A host-bound plain call pays every Python function it enters (benchmarks/NOTES.md, session 15), so
this count is the CPU-side proxy for the layer's host time inside a model. The kernel's launch is
not counted: once the layer enters an op body (`geglu_forward_impl`, `run_mlp_decode`,
`gate_up_geglu_impl`: on CUDA a plan lookup and the launch) its callees are skipped, since under
the interpreter they run the kernel itself; `use_triton`, which CUDA tensors do not reach, is not
counted at all. The fused paths are turned on with GEGLU_FUSED_MLP=1 (the "default" launch table:
up to 16 tokens both fused kernels); token counts past `mlp_ops.MAX_FUSED_TOKENS` (128, the most any
table fuses) show the layer's unfused inference path without the fused rule, the one a prefill takes.

    TRITON_INTERPRET=1 GEGLU_FUSED_MLP=1 python benchmarks/probes/count_layer_calls.py [--tokens 512] [--list]
"""

import argparse
import collections
import importlib
import sys
from pathlib import Path
from types import MethodType

import torch

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]
from call_count import python_calls, python_instructions  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--list", action="store_true", help="print each function entered")
    args = parser.parse_args()
    import build_variants
    from kernels import get_local_kernel
    from transformers import GemmaConfig
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    build_variants.build(ROOT / "build")
    k = get_local_kernel(ROOT / "build")
    layers = importlib.import_module(k.__name__ + ".layers")
    config = GemmaConfig(hidden_size=64, intermediate_size=192, hidden_activation="gelu_pytorch_tanh")
    eager = GemmaMLP(config).to(torch.bfloat16)
    ours = GemmaMLP(config).to(torch.bfloat16)
    ours.forward = MethodType(layers.GeGLUMLP.forward, ours)  # what kernelize binds
    x = torch.randn(1, args.tokens, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, module in (("eager GemmaMLP", eager), ("ours GeGLUMLP", ours)):
            module(x)  # warm: plans, caches
            calls = python_calls(lambda: module(x))
            instructions = python_instructions(lambda: module(x))
            print(f"{name}: {len(calls)} Python functions, {sum(instructions.values())} bytecode instructions "
                  f"at T={args.tokens}")
            if args.list:
                for site, n in collections.Counter(calls).items():
                    print(f"  {n} x {site}, {instructions.get(site, 0)} instructions")


if __name__ == "__main__":
    main()
