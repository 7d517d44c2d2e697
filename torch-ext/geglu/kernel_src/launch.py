"""The launch layer every kernel of this package goes through.

A kernel is compiled once per specialisation (its constexprs, dtypes, the alignment Triton
specialises pointers on) by an ordinary JIT call; the compiled handle that call returns is kept
in a `LaunchPlan`, and later calls with the same plan launch the handle directly with the plan's
grid and argument tail. That skips Triton's per-call binding, specialisation and cache-key work,
which is most of a small launch's host time.

The direct call reproduces the one in `JITFunction.run` of the Triton versions listed in
`DIRECT_LAUNCH_TRITON` (the tests check that call is still there, and on the GPU that both paths
give identical results). Under any other Triton, with launch hooks installed (profilers), under
the interpreter, or when the current device is not the one the handle was loaded on, the plan
launches through the ordinary JIT call instead, which is always correct.
"""

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from operator import or_

import torch
import triton

try:  # the grid-dependency instructions of programmatic dependent launch (Triton >= 3.4)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:
    gdc_launch_dependents = gdc_wait = None

try:
    from triton import knobs as _knobs
except ImportError:  # Triton < 3.4: no knobs, hence no launch hooks to honour there
    _knobs = None

try:  # compiles submitted to an executor by JITFunction.warmup (Triton >= 3.5)
    from triton import AsyncCompileMode
    from triton.runtime._async_compile import active_mode as _active_async_compile
except ImportError:
    AsyncCompileMode = _active_async_compile = None


INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# libdevice (tanh, erf) only exists on a real device; the interpreter gets equivalent formulas.
USE_LIBDEVICE = not INTERPRET

# Triton minor versions whose JITFunction.run launches a compiled kernel as `launch` does.
DIRECT_LAUNCH_TRITON = ("3.6", "3.9")
# Triton minor versions whose CUDA launcher wrapper (`CudaLauncher.__call__`) `launch` may skip for
# kernels without scratch memory, calling its C entry directly (a test reads the wrapper's source).
FAST_LAUNCH_TRITON = ("3.6",)
TRITON_MINOR = ".".join(triton.__version__.split(".")[:2])

PDL_AVAILABLE = USE_LIBDEVICE and gdc_wait is not None and torch.version.cuda is not None
_ALIGN = 16  # bytes: Triton specialises pointer arguments on this alignment
# Bound once (module attribute lookups on every launch); absent from CPU-only builds of torch, which
# never launch directly.
_current_device = getattr(torch._C, "_cuda_getDevice", None)
_current_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _direct_launch_enabled() -> bool:
    if INTERPRET or torch.version.cuda is None:  # ROCm/XPU launchers were not checked: JIT call
        return False
    if TRITON_MINOR not in DIRECT_LAUNCH_TRITON:
        warnings.warn(f"geglu: Triton {triton.__version__} was not checked for direct launches of compiled kernels "
                      f"(checked: {', '.join(DIRECT_LAUNCH_TRITON)}); using Triton's ordinary launch (slower at "
                      "small sizes, equally correct)", RuntimeWarning, stacklevel=2)
        return False
    return True


DIRECT_LAUNCH = _direct_launch_enabled()


@lru_cache(maxsize=None)
def pdl_supported(device_index: int) -> bool:
    """Whether this CUDA device can take programmatic dependent launches: compute capability
    9.0 or newer (Hopper on), a real device (not the interpreter), CUDA (not ROCm)."""
    return PDL_AVAILABLE and torch.cuda.get_device_capability(device_index)[0] >= 9


def _hooks_installed() -> bool:
    """Whether launch hooks are set (a profiler such as proton): they need Triton's own launch."""
    if _knobs is None:
        return False
    hook = _knobs.runtime.launch_enter_hook
    return hook is not None and bool(getattr(hook, "calls", True))


def launch_options(num_warps: int, num_stages: int | None = None, pdl: bool = False) -> dict:
    """The compile and launch options of one of this package's kernels. FP contraction (a * b + c
    as one fused multiply-add) is stated, not left to Triton's default: Triton 3.9 warns about an
    unstated one (once per process, in the user's output) and 3.10 turns it off, which would move
    the kernels' rounding between the pinned Tritons. On, as Triton has always compiled by default
    and as nvcc compiles eager's GELU kernels."""
    options = dict(num_warps=num_warps, enable_fp_fusion=True)
    if num_stages is not None:
        options["num_stages"] = num_stages
    if pdl:
        options["launch_pdl"] = True
    return options


# The options torch.compile's wrapper of a Triton kernel takes as launch options (Dynamo moves them
# to the kernel's config); any other keyword would be read as one of the kernel's arguments.
TRACED_OPTIONS = ("num_warps", "num_stages")


def traced_options(options: dict) -> dict:
    """Of `launch_options`, those a launch through `wrap_triton` passes on (Inductor compiles the
    traced kernel with its own options)."""
    return {name: value for name, value in options.items() if name in TRACED_OPTIONS}


@dataclass
class LaunchPlan:
    """One launch of one kernel, resolved once: the grid, the arguments after the pointers (in
    the kernel's parameter order, constexprs included), the launch options, and the compiled
    handle for aligned and for unaligned pointers (filled at the first launch of each)."""

    kernel: object
    grid: tuple[int, int, int]
    tail: tuple
    options: dict
    handles: list = field(default_factory=lambda: [None, None])


def launch(plan: LaunchPlan, *pointers: torch.Tensor) -> None:
    """Launch `plan` with these tensors as its pointer arguments, on the GPU they live on."""
    # One flat test for the steady state, first: every launch pays this Python on the host, and
    # inside a model several times its price in a loop (benchmarks/NOTES.md, sessions 15 and 18).
    # 16-byte aligned pointers, the aligned handle's C entry, the tensors on the GPU it was loaded
    # on and that GPU current, no launch hooks: call the entry, as JITFunction.run would.
    ptrs = [p.data_ptr() for p in pointers]
    handle = plan.handles[1]
    if (handle is not None and handle[2] is not None and DIRECT_LAUNCH and not reduce(or_, ptrs) % _ALIGN
            and handle[1] == pointers[0].get_device() == _current_device()
            and not getattr(_knobs.runtime.launch_enter_hook, "calls", True)):
        entry = handle[2]
        entry[0](*plan.grid, _current_raw_stream(handle[1]), *entry[1], *ptrs, *plan.tail)
        return
    _launch_general(plan, pointers, ptrs)


def _launch_general(plan: LaunchPlan, pointers, ptrs: list) -> None:
    """Every other launch: the first of a handle (compile or load), another GPU, unaligned
    pointers, launch hooks, a Triton whose launcher was not checked."""
    if not DIRECT_LAUNCH or _hooks_installed():
        with _on_device(pointers[0]):
            _launch_jit(plan, pointers)
        return
    aligned = 0 if reduce(or_, ptrs) % _ALIGN else 1
    handle = plan.handles[aligned]
    device = pointers[0].get_device()
    if handle is None or handle[1] != device:  # first launch on this GPU: compile or load
        with _on_device(pointers[0]):
            plan.handles[aligned] = kept_handle(_launch_jit(plan, pointers), device)
        return
    if device != _current_device():
        with torch.cuda.device(device):
            _launch_general(plan, pointers, ptrs)
        return
    # What JITFunction.run does once the kernel is compiled and bound (DIRECT_LAUNCH_TRITON).
    stream = _current_raw_stream(device)
    entry = handle[2]
    if entry is not None:
        entry[0](*plan.grid, stream, *entry[1], *ptrs, *plan.tail)
    else:
        compiled = handle[0]
        compiled.run(*plan.grid, stream, compiled.function, compiled.packed_metadata, None, None, None, *ptrs,
                     *plan.tail)


def kept_handle(compiled, device: int) -> tuple:
    """What a plan keeps of a compiled (and loaded) kernel: the kernel, its GPU, and the entry of
    its C launcher with the arguments that precede the grid's pointers, where the launcher's
    Python wrapper was checked to add nothing else for this kernel (`FAST_LAUNCH_TRITON`, no
    scratch memory); else None, and launches go through the wrapper."""
    return compiled, device, _launcher_entry(compiled)


def _launcher_entry(compiled):
    if TRITON_MINOR not in FAST_LAUNCH_TRITON:
        return None
    try:
        launcher = compiled.run
        if launcher.global_scratch_size or launcher.profile_scratch_size:
            return None
        # CudaLauncher.__call__(grid, stream, function, *args) of Triton 3.6 allocates no scratch
        # for such kernels and calls launch(grid, stream, function, cooperative, pdl, None, None, *args).
        fixed = (compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
                 compiled.packed_metadata, None, None, None)
        return launcher.launch, fixed
    except AttributeError:  # not a CUDA launcher (or a stand-in in tests): the wrapper
        return None


def _on_device(t: torch.Tensor):
    """The device guard of a launch on `t`'s device: Triton compiles, loads and launches on the
    current GPU, which need not be the one the tensors live on (`device_map="auto"` spreads a
    model's layers over several GPUs and leaves the current one alone). None needed for other
    devices' tensors (the interpreter's CPU tensors) or on the current GPU."""
    if not t.is_cuda or t.get_device() == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(t.get_device())


def _launch_jit(plan: LaunchPlan, pointers):
    """Triton's ordinary launch (compiles at the first call of a specialisation); returns the
    compiled kernel."""
    return plan.kernel[plan.grid](*pointers, *plan.tail, **plan.options)


# (specialisation key, dtype, device index) -> the kernel `warm_up_all` compiled for it. A kernel
# module says what its key is (`handle_key`): the plan's arguments but those not specialised
# (row counts), and its options; the dtype is part of the key because a plan's tail holds no
# pointer.
_warm_handles: dict = {}


def handle_key(kernel, tail: tuple, options: dict, dynamic: tuple[int, ...], dtype: torch.dtype,
               device_index: int) -> tuple:
    """What Triton compiles `kernel` for besides pointer alignment: its argument tail (a plan's
    `tail`) but the positions in `dynamic` (arguments it does not specialise on), its options, the
    dtype, and last the GPU."""
    static = tuple(v for i, v in enumerate(tail) if i not in dynamic)
    return kernel, static, tuple(options.items()), dtype, device_index


@dataclass(frozen=True)
class WarmUp:
    """One specialisation to compile ahead of its first launch: the kernel, pointer arguments that
    carry the dtypes and alignment, the argument tail, the launch options, and the `handle_key` of
    the plans it serves (None: keep nothing)."""

    kernel: object
    pointers: tuple
    tail: tuple
    options: dict
    key: tuple | None = None


def compile_threads() -> int:
    """Threads compiling one warm-up's kernels (GEGLU_COMPILE_THREADS; default: up to 8, one per
    CPU). 1 compiles them one after the other."""
    configured = os.environ.get("GEGLU_COMPILE_THREADS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(f"GEGLU_COMPILE_THREADS must be a whole number of threads, got {configured!r}") from None
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def warm_up_all(jobs) -> list:
    """Compile each job's kernel for its specialisation and load it onto the device now, so that a
    first launch in another size regime does not compile; each job with a key keeps its kernel for
    `with_warm_handle`. Returns the compiled kernels (None in the interpreter, which compiles
    nothing). The jobs (all on one device) compile in parallel threads where the Triton version is
    one checked for it (`DIRECT_LAUNCH_TRITON`): much of Triton's compile runs outside the GIL
    (MLIR passes, LLVM, ptxas). Loading stays on the calling thread."""
    jobs = list(jobs)
    if INTERPRET or not jobs:
        return [None] * len(jobs)
    threads = min(compile_threads(), len(jobs))
    with _on_device(jobs[0].pointers[0]):  # compiled for, and loaded onto, the pointers' GPU
        # Only one AsyncCompileMode may be active: under the caller's own, the jobs go to it.
        if threads > 1 and AsyncCompileMode is not None and TRITON_MINOR in DIRECT_LAUNCH_TRITON \
                and _active_async_compile.get() is None:
            with ThreadPoolExecutor(threads, thread_name_prefix="geglu-compile") as pool, AsyncCompileMode(pool):
                pending = [_warm_up_call(job) for job in jobs]
        else:
            pending = [_warm_up_call(job) for job in jobs]
        # A kernel already compiled comes back as itself, a new one under an AsyncCompileMode as a
        # future (finished here, or the caller's own mode's: then this waits for it).
        compiled = [p.result() if hasattr(p, "result") else p for p in pending]
        for job, kernel in zip(jobs, compiled):
            init = getattr(kernel, "_init_handles", None)  # Triton loads modules lazily at the first launch
            if init is not None:
                init()
            if job.key is not None:
                _warm_handles[job.key] = kernel
    return compiled


def dummy_pointer(dtype: torch.dtype, device_index: int) -> torch.Tensor:
    """A pointer argument for a warm-up on this GPU: Triton's warmup reads only its dtype and its
    alignment (16 bytes, as the caching allocator's blocks)."""
    return torch.empty(16, dtype=dtype, device=torch.device("cuda", device_index))


def _warm_up_call(job: WarmUp):
    return job.kernel.warmup(*job.pointers, *job.tail, **job.options, grid=(1,))


def with_warm_handle(plan: LaunchPlan, key: tuple) -> LaunchPlan:
    """`plan` with the kernel `warm_up_all` compiled for its `key` (16-byte aligned pointers) as its
    aligned handle, where there is one: the plan's first launch is then a direct one too, not
    Triton's JIT call (its binding and cache lookup cost about as much as a launch)."""
    compiled = _warm_handles.get(key)
    if compiled is not None and plan.handles[1] is None:
        plan.handles[1] = kept_handle(compiled, key[-1])  # the key ends with the device index
    return plan
