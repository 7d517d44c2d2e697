#!/usr/bin/env python3
"""Tensor parallelism: a Gemma-shaped model loaded with transformers' `tp_plan="auto"` (DTensor
weights: gate/up column-wise, down row-wise with an all-reduce), kernelized with this package's
layers, against the same model untouched. Run under torchrun, one process per device:

    torchrun --nproc_per_node 2 scripts/tp_check.py --build build --out tp.json          # CPU, gloo
    torchrun --nproc_per_node 2 scripts/tp_check.py --build build --out tp.json --gpu \\
        --hidden 2048 --intermediate 16384 --layers 4 --time                            # GPUs, NCCL

Checks logits, 20 greedy tokens and a training step's gradients (kernelized vs untouched, same
weights); with --time also decode ms per token and a prefill time. Rank 0 writes the JSON."""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist


def init_distributed(gpu: bool) -> tuple[int, int, torch.device]:
    """torchrun's rank and world size, this process's device (its GPU with `gpu`, else the CPU),
    and the process group over NCCL or gloo."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if gpu else "gloo")
    return rank, world, device


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp32, DTensors gathered first."""
    a, b = ((t.full_tensor() if hasattr(t, "full_tensor") else t).float() for t in (a, b))
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def finish_distributed(rank: int, out: Path, result: dict) -> None:
    """Rank 0 writes (and prints) the JSON; then every rank leaves the process group together."""
    if rank == 0:
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", type=Path, required=True, help="the kernel build folder (scripts/build_variants.py)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu", action="store_true", help="CUDA + NCCL (default: CPU + gloo)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=160)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--time", action="store_true")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the checkpoint is saved")
    args = p.parse_args(argv)

    rank, world, device = init_distributed(args.gpu)
    dtype = getattr(torch, args.dtype)

    from kernels import Mode, get_local_kernel, kernelize, use_kernel_mapping
    from transformers import AutoModelForCausalLM, GemmaConfig, GemmaForCausalLM

    geglu = get_local_kernel(args.build.resolve())
    ckpt = args.workdir / f"tp-gemma-{args.hidden}-{args.intermediate}-{args.layers}-{args.dtype}"
    if rank == 0 and not (ckpt / "config.json").exists():
        torch.manual_seed(0)
        config = GemmaConfig(vocab_size=512, hidden_size=args.hidden, intermediate_size=args.intermediate,
                             num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
                             head_dim=args.hidden // 8, max_position_embeddings=1024)
        GemmaForCausalLM(config).to(dtype).save_pretrained(ckpt)
    dist.barrier()

    def load():
        m = AutoModelForCausalLM.from_pretrained(ckpt, tp_plan="auto", dtype=dtype)
        return m.to(device)  # a one-process plan leaves the weights where they loaded

    untouched, model = load(), load()
    with use_kernel_mapping(geglu.layer_mapping.register(model), inherit_mapping=False):
        kernelize(model, mode=Mode.TRAINING, device=device.type)
    summary = geglu.layer_mapping.summary(model)
    dtensor_weights = type(model.model.layers[0].mlp.gate_proj.weight).__name__

    torch.manual_seed(1)
    ids = torch.randint(0, 512, (2, 24), device=device)
    result = {"world_size": world, "device": torch.cuda.get_device_name(device) if args.gpu else "cpu",
              "dims": [args.hidden, args.intermediate, args.layers], "dtype": args.dtype, "summary": summary,
              "gate_proj_weight_type": dtensor_weights}
    model.eval(), untouched.eval()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits.float(), untouched(input_ids=ids).logits.float()
    result["logits_max_abs_diff"] = (a - b).abs().max().item()
    result["logits_rel_err"] = ((a - b).norm() / b.norm()).item()
    gen_a = model.generate(ids[:1, :8], max_new_tokens=20, do_sample=False)
    gen_b = untouched.generate(ids[:1, :8], max_new_tokens=20, do_sample=False)
    result["greedy_20_identical"] = bool(torch.equal(gen_a, gen_b))

    model.train(), untouched.train()
    with use_kernel_mapping(geglu.layer_mapping.register(model), inherit_mapping=False):
        kernelize(model, mode=Mode.TRAINING, device=device.type)
    for m in (model, untouched):
        m.zero_grad()
        m(input_ids=ids, labels=ids).loss.backward()
    worst = 0.0
    for (name, p1), p2 in zip(model.named_parameters(), untouched.parameters()):
        worst = max(worst, relative_error(p1.grad, p2.grad))
    result["grad_max_rel_err"] = worst

    if args.time:
        result["timing"] = timings(model, untouched, device)
    finish_distributed(rank, args.out, result)
    return 0


def timings(model, untouched, device, rounds=5):
    """Median decode ms per token (plain generate) and a 512-token prefill, interleaved rounds."""
    model.eval(), untouched.eval()
    ids = torch.randint(0, 512, (1, 512), device=device)
    out = {}
    for name, m in (("kernelized", model), ("untouched", untouched)):
        out[name] = {"decode_ms_per_token": [], "prefill_512_ms": []}
    with torch.no_grad():
        for _ in range(rounds):
            for name, m in (("kernelized", model), ("untouched", untouched)):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                m(input_ids=ids)
                torch.cuda.synchronize()
                out[name]["prefill_512_ms"].append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                m.generate(ids[:, :16], max_new_tokens=64, min_new_tokens=64, do_sample=False)
                torch.cuda.synchronize()
                out[name]["decode_ms_per_token"].append((time.perf_counter() - t0) * 1e3 / 64)
    return {n: {k: sorted(v)[len(v) // 2] for k, v in d.items()} for n, d in out.items()}


if __name__ == "__main__":
    sys.exit(main())
