"""Parallel training and inference on two CPU processes (gloo). Tensor parallelism through
transformers' tp_plan="auto": DTensor weights, gate/up column-wise and down row-wise with its
all-reduce; the kernelized model gives the untouched model's logits, greedy tokens and
training-step gradients. Data parallelism (DistributedDataParallel, FSDP2): the same losses,
reduced gradients and parameters over two optimizer steps. The same scripts run on two GPUs over
NCCL (scripts/tp_check.py --gpu, scripts/ddp_check.py --gpu)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def test_tp_plan_auto_on_two_processes_matches_the_untouched_model(build_dir, tmp_path):
    out = tmp_path / "tp.json"
    # The two CPU processes must not see a GPU: transformers would bind rank r to cuda:r (a GPU
    # machine with one device fails there); the NCCL run is scripts/tp_check.py --gpu.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("LOCAL_KERNELS", None)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", str(ROOT / "scripts" / "tp_check.py"), "--build", str(build_dir),
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["gate_proj_weight_type"] == "DTensor"
    assert result["summary"].startswith("geglu: GemmaMLP -> GeGLUMLP x2"), result["summary"]
    assert result["logits_rel_err"] < 1e-5 and result["greedy_20_identical"]
    assert result["grad_max_rel_err"] < 1e-4


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_data_parallel_training_matches_the_untouched_model(build_dir, tmp_path, wrapper):
    """DistributedDataParallel and FSDP2 (fully_shard per decoder layer) on two CPU processes
    (gloo), each rank its own batch: the kernelized model's MLPs run the package's training node,
    and two SGD steps give the untouched model's losses, reduced gradients and parameters."""
    out = tmp_path / "dp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # as above
    env.pop("LOCAL_KERNELS", None)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", str(ROOT / "scripts" / "ddp_check.py"), "--build", str(build_dir),
                          "--out", str(out), *(["--fsdp"] if wrapper == "fsdp" else [])],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["wrapper"] == ("fsdp2" if wrapper == "fsdp" else "ddp")
    assert result["summary"].startswith("geglu: GemmaMLP -> GeGLUMLP x2"), result["summary"]
    assert result["package_nodes"], "the kernelized MLPs did not run the package's autograd node"
    for step in result["steps"]:
        assert abs(step["loss_kernelized"] - step["loss_untouched"]) <= 1e-5 * abs(step["loss_untouched"])
        assert step["grad_max_rel_err"] < 1e-4 and not step["grads_missing_on_one_side"]
    assert result["param_max_rel_err"] < 1e-4
