#!/usr/bin/env python3
"""The main job: build the kernel, load it as users do, kernelize a small GeGLU model, run
forward and backward, and report what was replaced and how far the result is from eager.

    python scripts/demo.py                       # embedded default: a tiny Gemma from a config
    python scripts/demo.py --checkpoint google/gemma-2b   # a checkpoint already in the local HF cache

No downloads, no GPU needed (on CPU the Triton kernels run in the interpreter); on a GPU it
also times the kernelized model against eager.
"""

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # run the Triton kernels on the CPU
sys.path.insert(0, str(ROOT / "scripts"))

import build_variants  # noqa: E402


def tiny_gemma():
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=256, hidden_size=128, intermediate_size=344, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         hidden_activation="gelu_pytorch_tanh")
    return GemmaForCausalLM(config)


def checkpoint_problem(name: str) -> str | None:
    """Why `name` cannot be loaded offline (None if it can): a local folder with a config, or a
    model whose config.json the local Hugging Face cache holds."""
    if Path(name).is_dir():
        return None if (Path(name) / "config.json").is_file() else f"{name} is a folder without config.json"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    return (f"{name} is not in the local Hugging Face cache (the demo downloads nothing); "
            f"fetch it first with `hf download {name}`, or pass a local folder")


def load_checkpoint(name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a model id or path already in the local Hugging Face cache")
    parser.add_argument("--tokens", type=int, default=16, help="sequence length of the random batch")
    args = parser.parse_args(argv)
    if args.checkpoint:
        # Before huggingface_hub is imported: it reads the variable once, at import.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        problem = checkpoint_problem(args.checkpoint)
        if problem:
            print(f"demo: {problem}", file=sys.stderr)
            return 2

    from kernels import Mode, get_kernel, kernelize, use_kernel_mapping

    cfg = build_variants.read_build_toml()
    build_dir = Path(tempfile.mkdtemp(prefix="geglu-build-")) / "build"
    build_variants.build(build_dir)
    os.environ["LOCAL_KERNELS"] = f"{cfg.repo_id}={build_dir}"
    geglu = get_kernel(cfg.repo_id, version=cfg.version)
    print(f"loaded {cfg.repo_id} v{cfg.version} from {Path(geglu.__file__).parent}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    eager = (load_checkpoint(args.checkpoint) if args.checkpoint else tiny_gemma()).to(device)
    model = copy.deepcopy(eager)
    mapping = geglu.layer_mapping.register(model)
    with use_kernel_mapping(mapping, inherit_mapping=False):
        kernelize(model, mode=Mode.TRAINING, device=device)
    print(geglu.layer_mapping.summary(model))

    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, args.tokens), device=device)
    logits = model(input_ids=ids).logits
    logits_ref = eager(input_ids=ids).logits
    print(f"forward: max |logits - eager| = {(logits - logits_ref).abs().max().item():.3e} "
          f"(max |logits| = {logits_ref.abs().max().item():.3e})")
    logits.float().square().mean().backward()
    logits_ref.float().square().mean().backward()
    worst = max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), eager.parameters())
                if q.grad is not None)
    print(f"backward: max |grad - eager grad| over all parameters = {worst:.3e}")

    if device == "cuda":
        for name, m in (("eager", eager), ("geglu", model)):
            with torch.no_grad():
                for _ in range(3):
                    m(input_ids=ids)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(20):
                    m(input_ids=ids)
                torch.cuda.synchronize()
            print(f"{name}: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms per forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
