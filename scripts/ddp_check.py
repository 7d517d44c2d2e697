#!/usr/bin/env python3
"""Data-parallel training: a small Gemma kernelized with this package's layers against the same
model untouched, both wrapped in DistributedDataParallel or FSDP2 (`fully_shard` on each decoder
layer and the root). Run under torchrun, one process per device:

    torchrun --nproc_per_node 2 scripts/ddp_check.py --build build --out ddp.json [--fsdp]   # CPU, gloo
    torchrun --nproc_per_node 2 scripts/ddp_check.py --build build --out ddp.json --gpu      # GPUs, NCCL

Each rank feeds its own batch; after two optimizer steps (SGD) the check compares, per step, the
loss and every parameter's gradient (reduced across ranks by the wrapper; FSDP2's shards gathered)
and at the end the parameters. Rank 0 writes the JSON."""

import argparse
import copy
import sys
from pathlib import Path

import torch

from tp_check import finish_distributed, init_distributed, relative_error


def autograd_node_names(tensor) -> set[str]:
    """The type names of the autograd nodes behind `tensor`: whether the package's nodes ran in its
    forward (also the tests' check, tests/test_mlp_training.py)."""
    seen, names, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", type=Path, required=True, help="the kernel build folder (scripts/build_variants.py)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu", action="store_true", help="CUDA + NCCL (default: CPU + gloo)")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DistributedDataParallel")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=160)
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args(argv)

    rank, world, device = init_distributed(args.gpu)

    from kernels import Mode, get_local_kernel, kernelize, use_kernel_mapping
    from transformers import GemmaConfig, GemmaForCausalLM

    geglu = get_local_kernel(args.build.resolve())
    torch.manual_seed(0)  # the same weights on every rank
    config = GemmaConfig(vocab_size=512, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
                         head_dim=args.hidden // 8, max_position_embeddings=256)
    config._attn_implementation = "eager"
    untouched = GemmaForCausalLM(config).to(device)
    model = copy.deepcopy(untouched)
    with use_kernel_mapping(geglu.layer_mapping.register(model), inherit_mapping=False):
        kernelize(model, mode=Mode.TRAINING, device=device.type)
    summary = geglu.layer_mapping.summary(model)

    wrapped = {}
    for name, m in (("kernelized", model), ("untouched", untouched)):
        m.train()
        if args.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in m.model.layers:
                fully_shard(layer)
            fully_shard(m)
            wrapped[name] = m
        else:
            from torch.nn.parallel import DistributedDataParallel

            wrapped[name] = DistributedDataParallel(m, device_ids=[device.index] if args.gpu else None)
    optimizers = {name: torch.optim.SGD(w.parameters(), lr=0.5) for name, w in wrapped.items()}

    result = {"world_size": world, "wrapper": "fsdp2" if args.fsdp else "ddp",
              "device": torch.cuda.get_device_name(device) if args.gpu else "cpu", "summary": summary,
              "steps": []}
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own batch
    for step in range(2):
        ids = torch.randint(0, 512, (2, 24), generator=generator).to(device)
        losses = {}
        for name, w in wrapped.items():
            optimizers[name].zero_grad()
            loss = w(input_ids=ids, labels=ids).loss
            if name == "kernelized" and step == 0:
                result["package_nodes"] = sorted(n for n in autograd_node_names(loss) if "GeGLU" in n)
            loss.backward()
            losses[name] = loss.detach()
        params = list(zip(wrapped["kernelized"].named_parameters(), wrapped["untouched"].parameters()))
        missing = [n for (n, a), b in params if (a.grad is None) != (b.grad is None)]
        grad_err = max(relative_error(a.grad, b.grad) for (_, a), b in params
                       if a.grad is not None and b.grad is not None)
        result["steps"].append({"loss_kernelized": losses["kernelized"].item(),
                                "loss_untouched": losses["untouched"].item(),
                                "grad_max_rel_err": grad_err, "grads_missing_on_one_side": missing})
        for opt in optimizers.values():
            opt.step()
    result["param_max_rel_err"] = max(relative_error(a, b) for (_, a), b in params)
    finish_distributed(rank, args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
