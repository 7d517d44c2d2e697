"""Tensor parallelism through transformers' tp_plan="auto" on two CPU processes (gloo): DTensor
weights, gate/up column-wise and down row-wise with its all-reduce; the kernelized model gives
the untouched model's logits, greedy tokens and training-step gradients. The same script runs on
two GPUs over NCCL (scripts/tp_check.py --gpu)."""

import json
import os
import subprocess
import sys

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
