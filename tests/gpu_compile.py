"""Compile every binary the launch tables can ask for, for a GPU this machine does not have: the
package's own warm-up jobs through its own `warm_up_all` and Triton's ordinary compile (front end,
MLIR, LLVM, then the bundled ptxas or lld), behind a stand-in driver that loads nothing. The
interpreter that runs the other tests on the CPU never compiles, so this is where CI meets what
only the compiler rejects, a config that needs more shared memory than the GPU has (Triton's own
check at load), and a compile that warns in the user's output.

Targets (`TARGETS`): sm_90, the H100 and H200 (every measured table); sm_80, sm_100 and sm_120
(A100, B200, RTX 50: the pointwise tables, and the fused MLP's "default" one, taken only on request);
gfx942, the MI300 of the ROCm build (the same; no programmatic dependent launch there).

    python tests/gpu_compile.py sm_90 [FOLDER]   # without TRITON_INTERPRET; tests/test_launch.py runs it

FOLDER: where `kernel_src` is imported from, a built variant (`build/torch-cuda`, `build/torch-rocm`:
the files that variant ships); the repository's own folder if not given.

It prints one JSON object: {"source": the `kernel_src/launch.py` it read, "kernels": [{"table",
"kernel", "dtype", "config", "shared", "fp_fusion"; the fused MLP's also "shape", and on CUDA
"registers", "spill_bytes", "async_copies", "element_loads"}, ...], "warnings": [...],
"table_configs": {...}, "shared_limit": ..., "seconds": ...}.
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
# target -> (Triton's target, bytes of shared memory a block may use (CUDA: the opt-in maximum per
# block; ROCm: a workgroup's LDS), the fused-MLP tables it may take: the H200's on Hopper, elsewhere
# only the "default" one that GEGLU_FUSED_MLP=1 asks for).
TARGETS = {
    "sm_80": (GPUTarget("cuda", 80, 32), 166912, ("default",)),  # A100
    "sm_90": (GPUTarget("cuda", 90, 32), 232448, ("H200", "default")),  # H100, H200
    "sm_100": (GPUTarget("cuda", 100, 32), 232448, ("default",)),  # B200 (Triton's second ptxas)
    "sm_120": (GPUTarget("cuda", 120, 32), 101376, ("default",)),  # RTX 50 series: 99 KiB
    "gfx942": (GPUTarget("hip", "gfx942", 64), 65536, ("default",)),  # MI300, the ROCm build
}


MLP_KERNELS = ("_gate_up_geglu_kernel", "_down_split_k_kernel")


class StandInDriver:
    """What Triton asks of its driver to compile for, and "load" onto, device 0 of `target`;
    nothing reaches a GPU."""

    def __init__(self, target: GPUTarget, shared_limit: int):
        self.target = target
        self.utils = self
        self.shared_limit = shared_limit

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_device_properties(self, device):
        return {"max_shared_mem": self.shared_limit, "multiprocessor_count": 132, "warpSize": self.target.warp_size}

    @staticmethod
    def load_binary(name, binary, shared, device):
        return None, None, 0, 0, 1024  # module, function, registers, spills, most threads per block

    @staticmethod
    def launcher_cls(*source_and_metadata):  # (src, metadata) in 3.9, (src) in some earlier Tritons
        return None


def _on_cpu(dtype, device_index):
    return torch.empty(16, dtype=dtype)  # aligned as the caching allocator's blocks; never read


def jobs(mlp_tables, pdl: bool) -> list:
    """(launch table, job) for every binary the fused MLP and the pointwise kernels may compile: the
    four swept MLP shapes (between them every rule of the H200 table) and an odd one in fp16 with
    biases and exact GELU, under each of `mlp_tables`; both pointwise tables over several widths and
    layouts, fp32, programmatic dependent launch where `pdl`; and the traced launches' 2-D tiles."""
    from kernel_src import launch, mlp, pointwise

    mlp.dummy_pointer = pointwise.dummy_pointer = _on_cpu
    found = []
    for table in mlp_tables:
        mlp.measured_table = lambda device_index, table=table: None if table == "default" else table
        mlp._cached_rule.cache_clear()
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
    cases = [(16384, False, torch.bfloat16, False), (3072, True, torch.bfloat16, False),
             (1000, False, torch.float16, False), (24, True, torch.bfloat16, False),
             (16384, False, torch.float32, False)] + ([(3072, False, torch.bfloat16, True)] if pdl else [])
    for table in pointwise.LAUNCH_TABLES:
        pointwise.table_for_device = lambda device_index, table=table: table
        pointwise._warmed.clear()
        for backward in (False, True):
            n_operands = 5 if backward else 3
            for n_cols, packed, dtype, with_pdl in cases:
                # packed: gate and up (and their gradients) are the halves of rows twice as wide
                strides = ((n_cols,) + (2 * n_cols,) * (n_operands - 1)) if packed else (n_cols,) * n_operands
                # exact GELU forward, tanh backward: each kernel meets one of the two, both GELUs compile
                found += [(table, job) for job in pointwise.family_warm_ups(backward, n_cols, strides, dtype,
                                                                            backward, 0, with_pdl, not packed)]
    for backward in (False, True):  # the traced launches' form (torch.compile), also past 32-bit offsets
        kernel = pointwise._geglu_backward_kernel if backward else pointwise._geglu_forward_kernel
        n_operands = 5 if backward else 3
        for n_cols in (16384, 1000):
            cfg = pointwise.tiles_config(n_cols)
            tail = (*pointwise._sizes(2, n_cols), *(n_cols,) * n_operands,
                    *pointwise._constexprs(n_cols, True, cfg, False))
            found.append(("traced", launch.WarmUp(kernel, (_on_cpu(torch.bfloat16, 0),) * n_operands, tail,
                                                  launch.launch_options(cfg.num_warps))))
    return found


def table_config(job) -> list:
    """A fused MLP job's config as its launch table writes it (gate/up: BLOCK_T, BLOCK_I, BLOCK_K,
    warps, stages; down: BLOCK_N, BLOCK_K, SPLIT_K, warps, stages); a pointwise job's tile
    constexprs and warps."""
    options = job.options
    if job.kernel.__name__ in MLP_KERNELS:
        return [*job.tail[-3:], options["num_warps"], options["num_stages"]]
    return [*job.tail[-5:], options["num_warps"]]


def global_load_widths(ptx: str) -> dict:
    """{bytes per global load instruction: how many} in a kernel's PTX."""
    import re

    widths = {}
    for vector, bits in re.findall(r"ld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfsu](\d+)\b", ptx):
        size = int(vector or 1) * int(bits) // 8
        widths[size] = widths.get(size, 0) + 1
    return widths


def load_forms(ptx: str) -> tuple[int, int]:
    """(asynchronous copies to shared memory, 2-byte element-wise global loads) in a kernel's PTX:
    the fused MLP's tiles arrive by the first where its widths are multiples of 16 elements."""
    import re

    return ptx.count("cp.async.cg.shared.global"), len(re.findall(r"ld\.global(?:\.\w+)*\.b16\b", ptx))


def ptxas_spills(binary) -> tuple[int, int]:
    """(registers, bytes of spill stores) of a CUDA binary, from ptxas's report on its PTX (Triton
    keeps no such count without loading the module)."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia import compiler as nvidia

    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / "kernel.ptx"
        ptx.write_text(binary.asm["ptx"])
        arch = binary.metadata.target.arch
        try:  # the ptxas Triton compiled it with: per architecture in 3.6 and 3.9
            ptxas = nvidia.get_ptxas(arch)
        except TypeError:
            ptxas = nvidia.get_ptxas()
        ptxas = ptxas.path if hasattr(ptxas, "path") else ptxas[0]
        name = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"  # as Triton names the architecture
        report = subprocess.run([ptxas, "-v", f"--gpu-name={name}", str(ptx), "-o",
                                 str(ptx.with_suffix(".o"))], capture_output=True, text=True, check=True).stderr
    return (int(re.search(r"Used (\d+) registers", report).group(1)),
            int(re.search(r"(\d+) bytes spill stores", report).group(1)))


def main(target_name: str, folder: Path = ROOT) -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("gpu_compile.py compiles for a GPU: run it without TRITON_INTERPRET=1")
    target, shared_limit, mlp_tables = TARGETS[target_name]
    driver.set_active(StandInDriver(target, shared_limit))
    sys.path.insert(0, str(folder))
    from kernel_src import launch, mlp

    table_jobs = jobs(mlp_tables, pdl=target.backend == "cuda" and target.arch >= 90)  # as `launch.pdl_supported`
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Compiles, then "loads": Triton's shared-memory check against the stand-in's limit.
        compiled = launch.warm_up_all([job for _, job in table_jobs])
    seconds = time.perf_counter() - start
    kernels, spills = [], {}
    for (table, job), binary in zip(table_jobs, compiled):
        row = {"table": table, "kernel": job.kernel.__name__, "dtype": str(job.pointers[0].dtype),
               "config": table_config(job), "shared": binary.metadata.shared,
               "fp_fusion": binary.metadata.enable_fp_fusion}
        if row["kernel"] in MLP_KERNELS:
            # [hidden, intermediate]; on CUDA also ptxas's registers and spilled bytes (once per binary)
            row["shape"] = list(job.tail[4:6] if row["kernel"] == "_gate_up_geglu_kernel" else job.tail[3:5])
            if target.backend == "cuda":
                if binary.hash not in spills:
                    spills[binary.hash] = ptxas_spills(binary)
                row["registers"], row["spill_bytes"] = spills[binary.hash]
                row["async_copies"], row["element_loads"] = load_forms(binary.asm["ptx"])
        else:  # the pointwise kernels: the width; on CUDA bytes per load (16: full vectors)
            row["width"] = job.tail[1]
            if target.backend == "cuda":
                row["load_bytes"] = global_load_widths(binary.asm["ptx"])
        kernels.append(row)
    table_configs = {name: {kind: sorted(set(rule[3] for rule in mlp.MLP_LAUNCH_TABLES[name][kind]))
                            for kind in ("gate_up", "down")} for name in mlp_tables}
    print(json.dumps({"source": launch.__file__, "kernels": kernels,
                      "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                      "table_configs": table_configs, "shared_limit": shared_limit, "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sm_90", Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT)
