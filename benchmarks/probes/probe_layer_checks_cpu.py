"""What each part of the layer's inference checks costs inside a host-bound model, on the CPU machine
(no GPU): a tiny Gemma (8 layers of (64, 256), bf16, CPU tensors) kernelized, its 512-token prefill
timed in alternating prefills as `probe_mlp_prefill_paths.py` does on the GPU (one variant per
prefill, the order shuffled each cycle, each MLP call timing itself). The op body's CPU form is
replaced by eager's gelu * up so that only the Python around it differs from eager's forward.

Variants: eager `GemmaMLP.forward`; the layer's `GeGLUMLP.forward`; a copy of its inference path
with one part left out at a time (the activation check, the compile/grad/token-count rule, the
projections' plainness check, `_geglu`'s input checks, the prelude's attribute reads); all of them
left out ("bare": F.linear and the op body); with --baseline-build DIR, the `GeGLUMLP.forward` of
another build of this package (an earlier commit's `build/`) loaded beside this one ("baseline").

    python benchmarks/probes/probe_layer_checks_cpu.py [--cycles 300 --tokens 512 --baseline-build DIR]
"""

import argparse
import importlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "benchmarks" / "probes")]
from probe_mlp_prefill_paths import alternating_prefills  # noqa: E402


def inference_path(layers, mlp_ops, dispatch, activation=True, rule=True, plain=True, checks=True, prelude=True):
    """The layer's eager inference path past the fused token counts, with the named parts left out."""
    def forward(self, x):
        modules = self._modules
        gate_proj, up_proj, down_proj = modules["gate_proj"], modules["up_proj"], modules["down_proj"]
        act_fn, dropout = modules["act_fn"], None
        if prelude:
            dropout = modules.get("dropout")
        approximate = "tanh"
        if activation:
            approximate, _ = layers._activation(act_fn, True)
        eager, grad = True, False
        if rule:
            eager, grad = not torch.compiler.is_compiling(), torch.is_grad_enabled()
            if not eager or grad or x.numel() <= mlp_ops.MAX_FUSED_TOKENS * x.shape[-1]:
                raise RuntimeError("time past the fused token counts, without autograd")
        if plain:
            (wg, bg), (wu, bu), (wd, bd) = mlp_ops.plain_linears((gate_proj, up_proj, down_proj))
        else:
            (wg, bg), (wu, bu), (wd, bd) = [(m._parameters["weight"], m._parameters["bias"])
                                            for m in (gate_proj, up_proj, down_proj)]
        gate, up = F.linear(x, wg, bg), F.linear(x, wu, bu)
        h = layers._geglu(gate, up, approximate, (), eager) if checks else dispatch.geglu_forward_impl(gate, up,
                                                                                                     approximate)
        return F.linear(h if dropout is None else dropout(h), wd, bd)
    return forward


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--baseline-build", type=Path, help="another build of this package: variant 'baseline'")
    args = parser.parse_args()
    import build_variants
    from kernels import Mode, get_local_kernel, kernelize, use_kernel_mapping
    from transformers import GemmaConfig, GemmaForCausalLM
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    build_variants.build(ROOT / "build")
    k = get_local_kernel(ROOT / "build")
    layers, mlp_ops, dispatch = (importlib.import_module(f"{k.__name__}.{m}") for m in ("layers", "mlp_ops", "dispatch"))
    eager_op = lambda g, u, approximate: F.gelu(g, approximate=approximate) * u  # noqa: E731  (eager's two ops)
    dispatch._torch_forward = eager_op
    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=256, hidden_size=64, intermediate_size=256, num_hidden_layers=8,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         hidden_activation="gelu_pytorch_tanh")
    model = GemmaForCausalLM(config).to(torch.bfloat16).eval()
    with use_kernel_mapping(k.layer_mapping.register(model)):
        kernelize(model, mode=Mode.INFERENCE, device="cpu")
    path = lambda **left_out: inference_path(layers, mlp_ops, dispatch, **{k: False for k in left_out})  # noqa: E731
    variants = {"eager": GemmaMLP.forward, "ours": layers.GeGLUMLP.forward, "copy": path(),
                "-activation": path(activation=1), "-rule": path(rule=1), "-plain": path(plain=1),
                "-checks": path(checks=1), "-prelude": path(prelude=1),
                "bare": path(activation=1, rule=1, plain=1, checks=1, prelude=1)}
    if args.baseline_build:
        baseline = get_local_kernel(args.baseline_build.resolve())
        importlib.import_module(f"{baseline.__name__}.dispatch")._torch_forward = eager_op
        variants["baseline"] = importlib.import_module(f"{baseline.__name__}.layers").GeGLUMLP.forward
    ids = torch.randint(0, config.vocab_size, (1, args.tokens))

    def prefill():
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)

    torch.cuda.synchronize = lambda: None  # the CPU model has nothing to wait for
    result = alternating_prefills(model, variants, prefill, args.cycles, names=tuple(variants), baseline="eager")
    for name, m in result.items():
        print(f"T={args.tokens} {name:12s} {m['us_per_call']:7.1f} us a call, {m['minus_eager_us']:+6.1f} against "
              "eager's in the same cycles")


if __name__ == "__main__":
    main()
