"""Compile, for Hopper (sm_90), every binary the launch tables can ask for, on a machine without a
GPU: the package's own warm-up jobs through its own `warm_up_all` and Triton's ordinary compile
(front end, MLIR, LLVM, the bundled ptxas), behind a stand-in driver that loads nothing. The
interpreter that runs the other tests on the CPU never compiles, so this is where CI meets what
only the compiler rejects, a config that needs more shared memory than the GPU has (Triton's own
check at load, against the H100/H200's 227 KiB), and a compile that warns in the user's output.

Run as a script, without TRITON_INTERPRET (tests/test_launch.py does); prints one JSON object:
{"kernels": [{"kernel", "dtype", "config", "shared", "fp_fusion"}, ...], "warnings": [...],
"table_configs": {...}, "seconds": ...}.
"""

import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver

ROOT = Path(__file__).resolve().parent.parent
HOPPER_SHARED_MEMORY = 232448  # bytes a block may use on the H100 and H200 (cudaDevAttrMaxSharedMemoryPerBlockOptin)


class _HopperUtils:
    @staticmethod
    def get_device_properties(device):
        return {"max_shared_mem": HOPPER_SHARED_MEMORY, "multiprocessor_count": 132, "max_num_regs": 65536,
                "warpSize": 32}

    @staticmethod
    def load_binary(name, binary, shared, device):
        return None, None, 0, 0, 1024  # module, function, registers, spills, most threads per block


class HopperStandIn:
    """What Triton asks of its driver to compile for, and "load" onto, device 0 of compute
    capability 9.0; nothing reaches a GPU."""

    utils = _HopperUtils()

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    @staticmethod
    def launcher_cls(src, metadata):
        return None


def _on_cpu(dtype, device_index):
    return torch.empty(16, dtype=dtype)  # aligned as the caching allocator's blocks; never read


def jobs():
    """(launch table, job) for every binary the fused MLP and the pointwise kernels may compile on
    a Hopper GPU: the four swept MLP shapes (every rule of the H200 table), an odd one in fp16 with
    biases and exact GELU, both tables of the pointwise kernels over several widths and layouts,
    programmatic dependent launch, fp32, and the traced launches' 2-D tiles."""
    from kernel_src import launch, mlp, pointwise

    mlp.dummy_pointer = pointwise.dummy_pointer = _on_cpu
    found = []
    for table in ("H200", "default"):
        mlp.measured_table = lambda device_index, table=table: None if table == "default" else table
        for hidden, inter, bias, tanh, dtype in ((768, 3072, False, True, torch.bfloat16),
                                                 (2048, 16384, False, True, torch.bfloat16),
                                                 (2560, 10240, False, True, torch.bfloat16),
                                                 (3584, 14336, False, True, torch.bfloat16),
                                                 (1000, 2730, True, False, torch.float16)):
            found += [(table, job) for job in mlp.shape_warm_ups(hidden, inter, hidden, bias, bias, tanh, dtype, 0)]
            # Past the layers' token counts (the ops themselves take any): the table's last gate/up rules.
            plan = mlp.gate_up_launch(512, hidden, inter, hidden, inter, 0, bias, tanh,
                                      mlp.launch_config(0, "gate_up", hidden, inter, 512), dtype)
            found.append((table, launch.WarmUp(plan.kernel, (_on_cpu(dtype, 0),) * 6 + (_on_cpu(torch.float32, 0),),
                                               plan.tail, plan.options)))
    for table in pointwise.LAUNCH_TABLES:
        pointwise.table_for_device = lambda device_index, table=table: table
        pointwise._warmed.clear()
        for backward in (False, True):
            for n_cols, packed, dtype, pdl in ((16384, False, torch.bfloat16, False), (3072, True, torch.bfloat16, False),
                                               (1000, False, torch.float16, False), (24, True, torch.bfloat16, False),
                                               (16384, False, torch.float32, False), (3072, False, torch.bfloat16, True)):
                row = 2 * n_cols if packed else n_cols
                strides = (n_cols, row, row, n_cols, n_cols)[: 5 if backward else 3] if packed else (n_cols,) * (
                    5 if backward else 3)
                found += [(table, job) for job in pointwise.family_warm_ups(backward, n_cols, strides, dtype, backward, 0,
                                                                            pdl, not packed)]
    for backward in (False, True):  # the traced launches' form (torch.compile), also past 32-bit offsets
        kernel = pointwise._geglu_backward_kernel if backward else pointwise._geglu_forward_kernel
        for n_cols in (16384, 1000):
            cfg = pointwise.tiles_config(n_cols)
            tail = (*pointwise._sizes(2, n_cols), *(n_cols,) * (5 if backward else 3),
                    *pointwise._constexprs(n_cols, True, cfg, False))
            found.append(("traced", launch.WarmUp(kernel, (_on_cpu(torch.bfloat16, 0),) * (5 if backward else 3), tail,
                                                  launch.launch_options(cfg.num_warps))))
    return found


def table_config(job) -> list:
    """A fused MLP job's config as its launch table writes it (gate/up: BLOCK_T, BLOCK_I, BLOCK_K,
    warps, stages; down: BLOCK_N, BLOCK_K, SPLIT_K, warps, stages); a pointwise job's options and
    tile constexprs."""
    name, options = job.kernel.__name__, job.options
    if name == "_gate_up_geglu_kernel":
        return [*job.tail[-3:], options["num_warps"], options["num_stages"]]
    if name == "_down_split_k_kernel":
        return [*job.tail[-3:], options["num_warps"], options["num_stages"]]
    return [*job.tail[-5:], options["num_warps"]]


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("hopper_compile.py compiles for a GPU: run it without TRITON_INTERPRET=1")
    driver.set_active(HopperStandIn())
    sys.path.insert(0, str(ROOT))
    from kernel_src import launch, mlp

    table_jobs = jobs()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = launch.warm_up_all([job for _, job in table_jobs])  # compiles, then "loads" (the shared-memory check)
    seconds = time.perf_counter() - start
    kernels = []
    for (table, job), binary in zip(table_jobs, compiled):
        kernels.append({"table": table, "kernel": job.kernel.__name__, "dtype": str(job.pointers[0].dtype),
                        "config": table_config(job), "shared": binary.metadata.shared,
                        "fp_fusion": binary.metadata.enable_fp_fusion})
    table_configs = {name: {kind: sorted(set(rule[3] for rule in table[kind])) for kind in ("gate_up", "down")}
                     for name, table in mlp.MLP_LAUNCH_TABLES.items()}
    print(json.dumps({"kernels": kernels, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                      "table_configs": table_configs, "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
