"""Counting the Python functions a call enters (`sys.setprofile`): the CPU-side proxy for a layer's
host time inside a model (benchmarks/NOTES.md, sessions 15-16). Shared by the test that holds the
layer's count at eager's and by `benchmarks/probes/count_layer_calls.py`."""

import sys
from pathlib import Path

# Counted but not entered: the op bodies (on CUDA a plan lookup and the launch; under the
# interpreter the kernel itself). Not counted at all: the device check that CUDA tensors skip.
OP_BODIES = frozenset({"geglu_forward_impl", "geglu_forward_over_gate_impl", "run_mlp_decode", "gate_up_geglu_impl"})
CPU_ONLY = frozenset({"use_triton"})


def python_calls(fn) -> list[str]:
    """`file:function` of each Python function fn() enters, in order, fn itself excluded; the
    callees of OP_BODIES and CPU_ONLY are skipped, and CPU_ONLY is not counted."""
    calls, depth, skip_depth = [], 0, None

    def profile(frame, event, arg):
        nonlocal depth, skip_depth
        if event == "call":
            depth += 1
            if skip_depth is None:
                code = frame.f_code
                if code.co_name not in CPU_ONLY:
                    calls.append(f"{Path(code.co_filename).name}:{code.co_name}")
                if code.co_name in OP_BODIES or code.co_name in CPU_ONLY:
                    skip_depth = depth
        elif event == "return":
            if skip_depth == depth:
                skip_depth = None
            depth -= 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls[1:]


def python_instructions(fn) -> dict[str, int]:
    """Bytecode instructions fn() executes, per `file:function` (fn itself included), with
    `python_calls`' skips: a finer proxy than the function count, for changes inside functions."""
    counts: dict[str, int] = {}
    skip_depth, depth = None, 0

    def trace(frame, event, arg):
        nonlocal depth, skip_depth
        if event == "call":
            depth += 1
            code = frame.f_code
            if skip_depth is None and (code.co_name in OP_BODIES or code.co_name in CPU_ONLY):
                skip_depth = depth
            frame.f_trace_opcodes = True
            return trace
        if event == "return":
            if skip_depth == depth:
                skip_depth = None
            depth -= 1
        elif event == "opcode" and (skip_depth is None or skip_depth == depth):
            code = frame.f_code
            if code.co_name not in CPU_ONLY:
                site = f"{Path(code.co_filename).name}:{code.co_name}"
                counts[site] = counts.get(site, 0) + 1
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return counts
