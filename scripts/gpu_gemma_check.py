#!/usr/bin/env python3
"""GPU check of the transformers load-time path on a Gemma-2B-shaped stack (random weights,
bf16, a few layers): tag the classes, from_pretrained(use_kernels=True, kernel_config=...),
then logits vs eager, 20 greedy tokens vs eager, and one training step's gradients.

    python scripts/gpu_gemma_check.py --out results.json
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_variants  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    import transformers
    from kernels import get_kernel
    from transformers import AutoModelForCausalLM, GemmaConfig, GemmaForCausalLM, KernelConfig

    cfg = build_variants.read_build_toml()
    build_dir = Path(tempfile.mkdtemp()) / "build"
    build_variants.build(build_dir)
    os.environ["LOCAL_KERNELS"] = f"{cfg.repo_id}={build_dir}"

    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=args.layers,
                         num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                         hidden_activation="gelu_pytorch_tanh", dtype="bfloat16")
    saved = Path(tempfile.mkdtemp()) / "gemma-2b-shaped"
    GemmaForCausalLM(config).to(torch.bfloat16).save_pretrained(saved)

    eager = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.bfloat16, device_map="cuda").eval()
    geglu = get_kernel(cfg.repo_id, revision=f"v{cfg.version}")
    geglu.layer_mapping.tag_classes()
    kernel_config = KernelConfig({"GeGLUMLP": (f"{cfg.repo_id}:GeGLUMLP", {"revision": f"v{cfg.version}"})},
                                 inherit_mapping=False)  # offline machine: no Hub lookups for other layers
    model = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.bfloat16, device_map="cuda", use_kernels=True,
                                                 kernel_config=kernel_config).eval()
    replaced = [n for n, m in model.named_modules() if "forward" in m.__dict__
                and m.forward.__func__.__module__.endswith(".layers")]

    ids = torch.randint(0, config.vocab_size, (2, 64), device="cuda")
    with torch.no_grad():
        logits, ref = model(input_ids=ids).logits.float(), eager(input_ids=ids).logits.float()
    logits_err = (logits - ref).abs().max().item()
    rel = ((logits - ref).norm() / ref.norm()).item()

    prompt = ids[:1, :8]
    gen = model.generate(prompt, max_new_tokens=20, do_sample=False)
    gen_ref = eager.generate(prompt, max_new_tokens=20, do_sample=False)

    model.train(), eager.train()  # transformers re-kernelizes in TRAINING mode
    x = torch.randint(0, config.vocab_size, (2, 128), device="cuda")
    for m in (model, eager):
        m.zero_grad(set_to_none=True)
        m(input_ids=x, labels=x).loss.backward()
    grad_rel = max(
        ((p.grad.float() - q.grad.float()).norm() / q.grad.float().norm().clamp_min(1e-30)).item()
        for (name, p), q in zip(model.named_parameters(), eager.parameters()) if "mlp" in name
    )
    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "layers": args.layers,
        "replaced": replaced,
        "logits_max_abs_err": logits_err,
        "logits_rel_err": rel,
        "greedy_identical": bool(torch.equal(gen, gen_ref)),
        "greedy_tokens": gen[0, 8:].tolist(),
        "mlp_grad_max_rel_err": grad_rel,
    }
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    ok = len(replaced) == args.layers and result["greedy_identical"] and rel < 2e-2 and grad_rel < 5e-2
    print("GEMMA CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
