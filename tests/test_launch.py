"""The shared launch layer: the direct launch of compiled handles is tied to the Triton versions it
was checked against, agrees bit for bit with Triton's own launch, and plans resolve once."""

import importlib
import inspect
import os
import re
import threading
import types
import warnings

import pytest
import torch

from conftest import compiled_binaries, gpu


@pytest.fixture(scope="module")
def launch(kernel):
    return importlib.import_module(kernel.__name__ + ".kernel_src.launch")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_triton_launches_compiled_kernels_the_way_the_direct_launch_does(launch):
    """The direct launch repeats the call in JITFunction.run: if Triton changes it, this fails
    (and the minor version must be checked again before it joins DIRECT_LAUNCH_TRITON)."""
    import triton
    from triton.runtime.jit import JITFunction

    source = _squash(inspect.getsource(JITFunction.run))
    assert _squash("kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata,"
                   "launch_metadata,") in source
    assert "*bound_args.values())" in source, "the launcher no longer takes every argument, constexprs included"
    # The pinned Triton of this environment is one the direct launch was checked against.
    assert launch.TRITON_MINOR in launch.DIRECT_LAUNCH_TRITON, triton.__version__
    compiled = inspect.getsource(importlib.import_module("triton.compiler.compiler").CompiledKernel)
    for attribute in ("self.function", "self.packed_metadata", "def run("):
        assert attribute in compiled, attribute
    if launch.TRITON_MINOR in launch.FAST_LAUNCH_TRITON:
        # The launcher's Python wrapper, which `_run` skips for kernels without scratch memory: it
        # must still only allocate scratch and then call the C entry with these arguments.
        from triton.backends.nvidia.driver import CudaLauncher

        wrapper = _squash(inspect.getsource(CudaLauncher.__call__))
        assert wrapper.startswith(_squash("def __call__(self, gridX, gridY, gridZ, stream, function, *args):"))
        assert wrapper.endswith(_squash("self.launch(gridX, gridY, gridZ, stream, function, self.launch_cooperative_grid,"
                                        "self.launch_pdl, global_scratch, profile_scratch, *args)"))
        assert wrapper.count("allocate_scratch(") == 3 and wrapper.count("ifsize>0") == 1


def test_an_unchecked_triton_falls_back_to_the_jit_launch_with_one_warning(launch, monkeypatch):
    monkeypatch.setattr(launch, "TRITON_MINOR", "9.99")
    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.warns(RuntimeWarning, match=r"Triton .* was not checked for direct launches"):
        assert launch._direct_launch_enabled() is False
    monkeypatch.setattr(launch, "TRITON_MINOR", launch.DIRECT_LAUNCH_TRITON[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert launch._direct_launch_enabled() is True


def test_launch_hooks_take_tritons_own_launch(launch, monkeypatch):
    """A profiler's launch hook must see every launch: then the direct path stands aside."""
    from triton import knobs

    assert not launch._hooks_installed()
    hook = knobs.runtime.launch_enter_hook
    if hasattr(hook, "add"):
        seen = lambda metadata: None  # noqa: E731
        hook.add(seen)
        try:
            assert launch._hooks_installed()
        finally:
            hook.remove(seen)
    else:
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda metadata: None)
        assert launch._hooks_installed()


def test_kernel_parameters_are_in_the_order_plans_pass_them(pointwise):
    """A plan passes pointers, the row count, the width and its row divisor, the row strides, then
    the constexprs by position."""
    constexprs = list(pointwise._CONSTEXPR_NAMES)
    forward = pointwise._geglu_forward_kernel.arg_names
    backward = pointwise._geglu_backward_kernel.arg_names
    assert forward == ["gate_ptr", "up_ptr", "out_ptr", "n_rows", "n_cols", "row_magic", "row_shift",
                       "stride_gate", "stride_up", "stride_out",
                       *constexprs]
    assert backward == ["grad_ptr", "gate_ptr", "up_ptr", "grad_gate_ptr", "grad_up_ptr", "n_rows", "n_cols",
                        "row_magic", "row_shift", "stride_grad", "stride_gate", "stride_up", "stride_grad_gate",
                        "stride_grad_up", *constexprs]
    plan = pointwise.plan(False, 7, 96, (96, 96, 160), torch.float32, True, -1)
    assert len(plan.tail) == len(forward) - 3 and plan.tail[:7] == (7, 96, *pointwise.row_divisor(96), 96, 96, 160)
    assert -2**31 <= plan.tail[2] < 2**31  # a 32-bit argument: Inductor fails on larger constants
    assert pointwise.plan(False, 7, 96, (96, 96, 160), torch.float32, True, -1) is plan  # resolved once


def test_every_pointwise_plan_of_a_warmed_width_starts_with_its_compiled_handle(pointwise, launch, monkeypatch):
    """The warm-up at a width's first plan keeps each compiled kernel under the key its plans
    look up: a plan at any later token count (any regime) then launches directly from its first
    call, not through Triton's JIT call (the first call at a new T). A 64-bit row count compiles
    apart, and gets no handle."""
    kept = {}
    monkeypatch.setattr(launch, "_warm_handles", kept)
    monkeypatch.setattr(pointwise, "USE_LIBDEVICE", True)
    monkeypatch.setattr(pointwise, "_warmed", set())
    monkeypatch.setattr(pointwise, "table_for_device", lambda device_index: "H200")
    monkeypatch.setattr(pointwise, "_warm_pointers", lambda *args: (None,))
    monkeypatch.setattr(pointwise, "warm_up_all",
                        lambda jobs: [kept.setdefault(job.key, f"compiled {len(kept)}") for job in jobs])
    device_index = 7
    for backward in (False, True):
        for n_cols in (100, 3000, 16384):
            strides = (n_cols,) * (5 if backward else 3)
            handles = set()
            for n_rows in (1, 2, 17, 300, 5000, 100000):
                plan = pointwise.plan.__wrapped__(backward, n_rows, n_cols, strides, torch.bfloat16, True,
                                                  device_index, False)
                assert plan.handles[0] is None and plan.handles[1] is not None, (backward, n_cols, n_rows)
                assert plan.handles[1][1] == device_index
                handles.add(plan.handles[1][0])
            assert len(handles) > 1  # the regimes' tile shapes are different kernels
            fp16 = pointwise.plan.__wrapped__(backward, 17, n_cols, strides, torch.float16, True, device_index, False)
            assert fp16.handles[1][0] not in handles  # warmed for its own dtype, not given bf16's kernel
    huge = pointwise.plan.__wrapped__(False, 2**31, 1, (1, 1, 1), torch.bfloat16, True, device_index, False)
    assert huge.handles == [None, None]


class _FakeJitKernel:
    """Compiles the way Triton's JITFunction.warmup does under an AsyncCompileMode (submits the
    compile to the mode's executor and returns a future) and records which thread compiled and
    which loaded each specialisation."""

    def __init__(self):
        self.compiled_on, self.loaded_on = {}, {}

    def warmup(self, *args, grid, **options):
        from triton.runtime import _async_compile

        def compile_():
            self.compiled_on[args] = threading.current_thread().name
            kernel = types.SimpleNamespace(args=args)
            kernel._init_handles = lambda: self.loaded_on.setdefault(args, threading.current_thread().name)
            return kernel

        mode = _async_compile.active_mode.get()
        if mode is None:
            return compile_()
        submit = inspect.signature(mode.submit).parameters
        extra = (lambda future: None,) if "cleanup_fn" in submit else ()
        return mode.submit(args, compile_, lambda kernel: None, *extra)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_warm_up_compiles_its_kernels_side_by_side_and_loads_them_here(launch, monkeypatch, threads):
    """warm_up_all submits each job to Triton's AsyncCompileMode (GEGLU_COMPILE_THREADS threads;
    1: one after the other, on the calling thread), loads every kernel on the calling thread (the
    CUDA context and current device live there), returns them in the jobs' order and keeps each
    under its key."""
    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(launch, "_warm_handles", {})
    monkeypatch.setenv("GEGLU_COMPILE_THREADS", str(threads))
    fake = _FakeJitKernel()
    cpu = torch.empty(1)
    jobs = [launch.WarmUp(fake, (cpu,), (n, "tail"), {}, ("key", n)) for n in range(6)]
    kernels = launch.warm_up_all(jobs)
    assert [k.args for k in kernels] == [(cpu, n, "tail") for n in range(6)]
    assert launch._warm_handles == {("key", n): k for n, k in enumerate(kernels)}
    here = threading.current_thread().name
    assert set(fake.loaded_on.values()) == {here}
    expected = {here} if threads == 1 else {"geglu-compile"}
    assert {name.rsplit("_", 1)[0] for name in fake.compiled_on.values()} == expected
    monkeypatch.setattr(launch, "TRITON_MINOR", "9.99")  # an unchecked Triton compiles serially
    fake = _FakeJitKernel()
    launch.warm_up_all([launch.WarmUp(fake, (cpu,), (n,), {}) for n in range(3)])
    assert set(fake.compiled_on.values()) == {here}


def test_compile_threads_follow_the_environment(launch, monkeypatch):
    monkeypatch.setenv("GEGLU_COMPILE_THREADS", "3")
    assert launch.compile_threads() == 3
    monkeypatch.setenv("GEGLU_COMPILE_THREADS", "0")
    assert launch.compile_threads() == 1
    monkeypatch.setenv("GEGLU_COMPILE_THREADS", "eight")
    with pytest.raises(ValueError, match="GEGLU_COMPILE_THREADS must be a whole number of threads, got 'eight'"):
        launch.compile_threads()
    monkeypatch.delenv("GEGLU_COMPILE_THREADS")
    assert 1 <= launch.compile_threads() <= 8


def test_a_warm_up_inside_the_callers_own_async_compile_mode_uses_it(launch, monkeypatch):
    """Only one AsyncCompileMode may be active in a thread: a warm-up under the caller's own (a
    compiler that batches its compiles) submits to that one and waits for its kernels, instead of
    failing to enter a second."""
    from concurrent.futures import ThreadPoolExecutor

    from triton import AsyncCompileMode

    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(launch, "_warm_handles", {})
    monkeypatch.setenv("GEGLU_COMPILE_THREADS", "4")
    fake = _FakeJitKernel()
    jobs = [launch.WarmUp(fake, (torch.empty(1),), (n,), {}, ("key", n)) for n in range(3)]
    with ThreadPoolExecutor(2, thread_name_prefix="callers-pool") as pool, AsyncCompileMode(pool):
        kernels = launch.warm_up_all(jobs)
        assert [k.args[1:] for k in kernels] == [(0,), (1,), (2,)]
    assert {name.rsplit("_", 1)[0] for name in fake.compiled_on.values()} == {"callers-pool"}
    assert set(fake.loaded_on.values()) == {threading.current_thread().name}


def test_launch_tables_are_keyed_by_device(pointwise):
    assert pointwise.nearest_table("NVIDIA H200", (9, 0), 132) == "H200"
    assert pointwise.nearest_table("NVIDIA H100 80GB HBM3", (9, 0), 132) == "H100"
    assert pointwise.nearest_table("NVIDIA H800", (9, 0), 132) in ("H100", "H200")  # same generation
    assert pointwise.nearest_table("NVIDIA B200", (10, 0), 148) == pointwise.DEFAULT_TABLE
    assert set(pointwise.MEASURED_DEVICES) == set(pointwise.LAUNCH_TABLES)
    for table in pointwise.LAUNCH_TABLES.values():
        assert set(table) == {(c, b) for c in (True, False) for b in (True, False)}
        assert all(len(regimes) == len(pointwise.REGIME_LIMITS) + 1 for regimes in table.values())
    assert pointwise.table_for_device(-1) == pointwise.DEFAULT_TABLE


@gpu
def test_direct_launch_matches_the_jit_launch_bit_for_bit(kernel, pointwise, launch, monkeypatch):
    """Both launch paths on the same plans: forward and backward, aligned and unaligned pointers,
    another stream, CUDA-graph capture; a steady-state call never enters Triton's JIT."""
    assert launch.DIRECT_LAUNCH
    dispatch = importlib.import_module(kernel.__name__ + ".dispatch")
    base = torch.randn(4 * 5 * 3000 + 8, device="cuda", dtype=torch.bfloat16)
    for offset in (0, 1):  # offset 1: 2-byte misaligned pointers take the other handle
        g = base[offset:offset + 5 * 3000].view(5, 3000)
        u = base[offset + 5 * 3000:offset + 10 * 3000].view(5, 3000)
        dh = base[offset + 10 * 3000:offset + 15 * 3000].view(5, 3000)
        h = dispatch.geglu_forward_impl(g, u, "tanh")
        dg, du = dispatch.geglu_backward_impl(dh, g, u, "none")
        jit_calls = []
        original = launch._launch_jit
        monkeypatch.setattr(launch, "_launch_jit", lambda *a: jit_calls.append(a) or original(*a))
        for _ in range(3):
            torch.testing.assert_close(dispatch.geglu_forward_impl(g, u, "tanh"), h, rtol=0, atol=0)
            dg2, du2 = dispatch.geglu_backward_impl(dh, g, u, "none")
            torch.testing.assert_close((dg2, du2), (dg, du), rtol=0, atol=0)
        assert not jit_calls, "a steady-state call went through Triton's JIT launch"
        monkeypatch.setattr(launch, "DIRECT_LAUNCH", False)
        torch.testing.assert_close(dispatch.geglu_forward_impl(g, u, "tanh"), h, rtol=0, atol=0)
        torch.testing.assert_close(dispatch.geglu_backward_impl(dh, g, u, "none"), (dg, du), rtol=0, atol=0)
        monkeypatch.setattr(launch, "DIRECT_LAUNCH", True)
        monkeypatch.setattr(launch, "_launch_jit", original)
    kept = [h for p in dispatch._plans.values() if p is not None for h in p.handles if h is not None]
    assert kept
    if launch.TRITON_MINOR in launch.FAST_LAUNCH_TRITON:  # the launcher's C entry was what ran
        assert all(h[2] is not None for h in kept)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = dispatch.geglu_forward_impl(g, u, "tanh")
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(on_side, h, rtol=0, atol=0)
    out = torch.empty_like(h)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out.copy_(dispatch.geglu_forward_impl(g, u, "tanh"))
    out.zero_()
    graph.replay()
    torch.testing.assert_close(out, h, rtol=0, atol=0)


def _check_against_float64(dispatch, dh, g, u):
    """The device path's forward and backward on (g, u) against float64 autograd."""
    h = dispatch.geglu_forward_impl(g, u, "tanh")
    dg, du = dispatch.geglu_backward_impl(dh, g, u, "tanh")
    gf, uf = g.double().requires_grad_(), u.double().requires_grad_()
    ref = torch.nn.functional.gelu(gf, approximate="tanh") * uf
    ref.backward(dh.double())
    torch.testing.assert_close(h.double(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close((dg.double(), du.double()), (gf.grad, uf.grad), rtol=2e-2, atol=2e-2)


@gpu
def test_a_new_token_count_of_a_warmed_width_never_enters_tritons_jit(kernel, launch, monkeypatch):
    """After the first call of a width (which compiles every regime's kernel), the first call at
    any other token count launches the kept handle directly: forward and backward, and the right
    answer."""
    dispatch = importlib.import_module(kernel.__name__ + ".dispatch")
    n_cols = 2 * 1000 + 72  # a width no other test uses: its warm-up happens here
    g, u, dh = (torch.randn(1, n_cols, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    dispatch.geglu_forward_impl(g, u, "tanh"), dispatch.geglu_backward_impl(dh, g, u, "tanh")
    jit_calls = []
    original = launch._launch_jit
    monkeypatch.setattr(launch, "_launch_jit", lambda *a: jit_calls.append(a) or original(*a))
    for n_rows in (3, 65, 700, 9000):
        g, u, dh = (torch.randn(n_rows, n_cols, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        _check_against_float64(dispatch, dh, g, u)
    assert not jit_calls, f"{len(jit_calls)} first calls at a new token count went through Triton's JIT launch"


@gpu
def test_a_new_width_compiles_nothing(kernel, pointwise):
    """The width is a runtime argument: after one width's first calls (separate and packed
    operands, forward and backward), other widths of the same tile shapes (multiples of 512 from
    2048 columns) at any token count run the binaries already compiled, and answer right."""
    dispatch = importlib.import_module(kernel.__name__ + ".dispatch")
    kernels = (pointwise._geglu_forward_kernel, pointwise._geglu_backward_kernel)

    def check(n_rows, n_cols):
        x = torch.randn(n_rows, 2 * n_cols, device="cuda", dtype=torch.bfloat16)
        dh = torch.randn(n_rows, n_cols, device="cuda", dtype=torch.bfloat16)
        for g, u in ((x[:, :n_cols], x[:, n_cols:]), (x[:, :n_cols].contiguous(), x[:, n_cols:].contiguous())):
            _check_against_float64(dispatch, dh, g, u)

    check(3, 2560)
    before = compiled_binaries(*kernels)
    for n_cols in (2048, 3072, 5120 + 512, 16384):
        for n_rows in (1, 40, 700):
            check(n_rows, n_cols)
    assert compiled_binaries(*kernels) == before


class _OnGpu:
    """Stands in for a CUDA tensor on GPU `index` (the decision needs nothing else of it)."""

    is_cuda = True

    def __init__(self, index):
        self.index = index

    def get_device(self):
        return self.index


def test_launches_guard_the_tensors_gpu_when_it_is_not_the_current_one(launch, monkeypatch):
    """Triton compiles and launches on the current GPU; `device_map="auto"` leaves it at 0 while
    layers run on 1, 2, ...: a launch on another GPU's tensors switches to that GPU first (an
    unguarded one reads another GPU's memory, or crashes). No switch on the current GPU or for CPU
    tensors (the interpreter)."""
    entered = []

    class Guard:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            entered.append(self.index)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", Guard)
    with launch._on_device(_OnGpu(0)):
        pass
    with launch._on_device(torch.empty(1)):
        pass
    assert entered == []
    with launch._on_device(_OnGpu(2)):
        pass
    assert entered == [2]


class _Pointer(_OnGpu):
    def __init__(self, index, address):
        super().__init__(index)
        self.address = address

    def data_ptr(self):
        return self.address


def test_a_direct_launch_keeps_a_handle_per_alignment_and_launches_it_on_the_tensors_gpu(launch, monkeypatch):
    """The steady-state launch without a GPU: the first launch of a plan JIT-compiles and keeps the
    handle under its pointers' alignment; later launches call the kept C entry with the grid, the
    current stream, the fixed leading arguments, the pointers and the plan's tail; a misaligned
    pointer gets its own handle; tensors on another GPU than the current one launch under a guard
    for their GPU."""
    current = [0]
    launched, compiled_for, guarded = [], [], []

    class Guard:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            guarded.append(self.index)
            self.previous, current[0] = current[0], self.index

        def __exit__(self, *exc):
            current[0] = self.previous
            return False

    class Launcher:
        global_scratch_size = profile_scratch_size = 0
        launch_cooperative_grid = launch_pdl = False

        def launch(self, *args):
            launched.append(args)

    def jit(plan, pointers):
        compiled_for.append([p.data_ptr() for p in pointers])
        return types.SimpleNamespace(run=Launcher(), function=7, packed_metadata="meta")

    monkeypatch.setattr(launch, "DIRECT_LAUNCH", True)
    monkeypatch.setattr(launch, "TRITON_MINOR", launch.FAST_LAUNCH_TRITON[0])
    monkeypatch.setattr(launch, "_launch_jit", jit)
    monkeypatch.setattr(launch, "_current_device", lambda: current[0])
    monkeypatch.setattr(launch, "_current_raw_stream", lambda device: 1000 + device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "device", Guard)
    plan = launch.LaunchPlan(kernel=None, grid=(3, 1, 1), tail=(5, "tail"), options={})
    aligned = (_Pointer(0, 4096), _Pointer(0, 8192))
    launch.launch(plan, *aligned)
    assert compiled_for == [[4096, 8192]] and not launched and plan.handles[0] is None
    launch.launch(plan, *aligned)
    fixed = (7, False, False, None, None, "meta", None, None, None)
    assert launched == [(3, 1, 1, 1000, *fixed, 4096, 8192, 5, "tail")]
    launch.launch(plan, _Pointer(0, 4098), _Pointer(0, 8192))  # 2-byte aligned: a handle of its own
    assert len(compiled_for) == 2 and plan.handles[0] is not None and len(launched) == 1
    assert guarded == []
    plan.handles[1] = (plan.handles[1][0], 1, plan.handles[1][2])  # kept on GPU 1, which is not current
    launch.launch(plan, _Pointer(1, 4096), _Pointer(1, 8192))
    assert guarded == [1] and current == [0]
    assert launched[-1] == (3, 1, 1, 1001, *fixed, 4096, 8192, 5, "tail")
    # A launch hook (a profiler) installed after the handles were kept: Triton's own launch again.
    from triton import knobs

    hook = knobs.runtime.launch_enter_hook
    seen = lambda metadata: None  # noqa: E731
    if hasattr(hook, "add"):
        hook.add(seen)
    else:
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", seen)
    on_gpu_1 = (_Pointer(1, 4096), _Pointer(1, 8192))
    try:
        launch.launch(plan, *on_gpu_1)
    finally:
        if hasattr(hook, "add"):
            hook.remove(seen)
    assert len(compiled_for) == 3 and len(launched) == 2
    launch.launch(plan, *on_gpu_1)
    assert len(compiled_for) == 3 and len(launched) == 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_layer_on_the_second_gpu_runs_there_while_the_first_is_current(kernel):
    """What `device_map="auto"` does: the layer's tensors on cuda:1, the current device cuda:0; the
    pointwise kernel, the fused decode MLP and the training path all give eager's answer."""
    from tiny_models import GatedGeluMLP

    assert torch.cuda.current_device() == 0
    mlp = GatedGeluMLP(64, 160, bias=True).to("cuda:1", torch.bfloat16)
    for t in (1, 40, 300):
        x = torch.randn(2, t, 64, device="cuda:1", dtype=torch.bfloat16)
        with torch.no_grad():
            expected, got = mlp(x), kernel.layers.GeGLUMLP.forward(mlp, x)
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())
    g, u = (torch.randn(3, 1000, device="cuda:1", requires_grad=True) for _ in range(2))
    h = kernel.geglu(g, u)
    h.sum().backward()
    ref = torch.nn.functional.gelu(g.detach(), approximate="tanh") * u.detach()
    torch.testing.assert_close(h, ref)
    torch.cuda.synchronize(1)


@gpu
def test_a_new_mlp_shape_compiles_its_kernels_in_threads_and_answers_right(build_dir, tmp_path):
    """The first call of an MLP shape (a fresh process, an empty Triton cache) compiles the fused
    kernels' buckets and the pointwise forward's regimes side by side in compile threads, loads
    them, and the fused decode then answers as float64 does."""
    code = f"""
import threading, torch
from pathlib import Path
from kernels import get_local_kernel
k = get_local_kernel(Path({str(build_dir)!r}))
import importlib
mlp = importlib.import_module(k.__name__ + ".kernel_src.mlp")
import triton.compiler
threads = []
original = triton.compiler.compile
def recording(*args, **kwargs):
    threads.append(threading.current_thread().name)
    return original(*args, **kwargs)
# Triton 3.6 binds triton.compiler.compile to a kernel at its first compile, 3.9 at its creation.
triton.compiler.compile = recording
for fn in (mlp._gate_up_geglu_kernel, mlp._down_split_k_kernel):
    if "compile" in vars(fn):
        fn.compile = recording
hidden, inter = 1536, 6144
w = [torch.randn(*s, device="cuda", dtype=torch.float64) / s[1] ** 0.5 for s in ((inter, hidden),) * 2 + ((hidden, inter),)]
x = torch.randn(3, hidden, device="cuda", dtype=torch.float64)
y = mlp.run_mlp_decode(x.bfloat16(), hidden, *(t.bfloat16() for t in w), None, None, None, True, 0)
g, u = x.bfloat16().double() @ w[0].bfloat16().double().T, x.bfloat16().double() @ w[1].bfloat16().double().T
ref = (torch.nn.functional.gelu(g, approximate="tanh") * u) @ w[2].bfloat16().double().T
err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
print("THREADS", sorted(set(n.rsplit("_", 1)[0] for n in threads)), len(threads), "ERR", err)
"""
    import subprocess
    import sys

    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path), GEGLU_COMPILE_THREADS="4", GEGLU_FUSED_MLP="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "THREADS ['geglu-compile']" in out.stdout, out.stdout + out.stderr[-3000:]
    assert int(out.stdout.split()[-3]) >= 2
    assert float(out.stdout.split()[-1]) < 2e-2


@pytest.mark.parametrize("target, variant", [("sm_90", "torch-cuda"), ("sm_80", "torch-cuda"), ("sm_100", "torch-cuda"),
                                             ("sm_120", "torch-cuda"), ("gfx942", "torch-rocm")])
def test_every_launch_table_config_compiles_for_the_gpus_built_for(target, variant, build_dir, tmp_path):
    """tests/gpu_compile.py compiles every binary the launch tables can ask for with the pinned
    Triton, behind a stand-in driver (no GPU needed), from the kernel sources the build's variant
    ships: torch-cuda for sm_90 (H100, H200), sm_80 (A100), sm_100 (B200) and sm_120 (RTX 50),
    torch-rocm for gfx942 (MI300). The interpreter the other CPU tests run in never compiles. Each
    must compile, fit the target's shared memory, compile with FP contraction as stated
    (`launch.launch_options`), and nothing may warn (Triton 3.9 warns, in the user's output, about
    kernels that leave FP contraction to its default)."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # an empty cache: every binary compiles here
    shipped = build_dir / variant
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu_compile.py"), target, str(shipped)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout)
    assert report["source"].startswith(str(shipped))
    assert report["warnings"] == []
    kernels = report["kernels"]
    assert all(k["fp_fusion"] is True for k in kernels)
    assert all(k["shared"] <= report["shared_limit"] for k in kernels)
    assert all(k["shared"] > 0 for k in kernels if k["kernel"] == "_gate_up_geglu_kernel")  # its tiles are staged there
    # Every config of every fused-MLP table the target may take was among them.
    assert report["table_configs"]
    for table, configs in report["table_configs"].items():
        for kind, kernel in (("gate_up", "_gate_up_geglu_kernel"), ("down", "_down_split_k_kernel")):
            compiled = {tuple(k["config"]) for k in kernels if k["table"] == table and k["kernel"] == kernel}
            assert {tuple(c) for c in configs[kind]} <= compiled, (table, kind)
    # At the swept shapes (widths divisible by 16, as those of the Gemma, T5 v1.1 and ModernBERT
    # checkpoints) the fused MLP's tiles arrive by 16-byte asynchronous copies, with no element-wise
    # loads and no register spills. (A ragged width, (1000, 2730), has element-wise loads and spills:
    # the layers leave such widths to cuBLAS, `mlp_ops.FUSED_WIDTH_MULTIPLE`.)
    mlp_rows = [k for k in kernels if "shape" in k]
    if target.startswith("sm_"):
        even = [k for k in mlp_rows if all(n % 16 == 0 for n in k["shape"])]
        assert even and all(k["spill_bytes"] == 0 for k in even), [k for k in even if k["spill_bytes"]]
        assert all(k["async_copies"] > 0 and k["element_loads"] == 0 for k in even), even
        # The pointwise kernels at widths divisible by 16 (what the bandwidth figures rest on): every
        # global load as wide as a thread's share of the tile allows, up to a 16-byte vector.
        itemsize = {"torch.bfloat16": 2, "torch.float16": 2, "torch.float32": 4}
        narrow = []
        for k in kernels:
            if "load_bytes" in k and k["width"] % 16 == 0:
                _, block_rows, block_cols, _, _, warps = k["config"]
                share = block_rows * block_cols * itemsize[k["dtype"]] // (32 * warps)
                if set(map(int, k["load_bytes"])) != {min(16, share)}:
                    narrow.append(k)
        assert not narrow and any("load_bytes" in k for k in kernels), narrow
    # Both pointwise kernels under every measured table, and the traced form.
    tables = {(k["table"], k["kernel"]) for k in kernels}
    for table in ("H100", "H200", "traced"):
        assert {(table, "_geglu_forward_kernel"), (table, "_geglu_backward_kernel")} <= tables
