"""The registered ops: opcheck, torch.compile without graph breaks, CUDA graphs."""

import itertools

import pytest
import torch
import torch._dynamo.testing
import torch.nn.functional as F
import triton
import triton.language as tl

from conftest import HAS_CUDA, assert_close_to_reference, gpu
from reference import geglu64


def _op_cases(kernel, device, dtype):
    ops = kernel.pointwise_ops
    g = (2 * torch.randn(5, 3, 70, device=device)).to(dtype)
    u = torch.randn(5, 3, 70, device=device).to(dtype)
    x = torch.randn(5, 3, 140, device=device).to(dtype)
    dh = torch.randn(5, 3, 70, device=device).to(dtype)
    for approximate in ("tanh", "none"):
        for in_place in (False, True):
            yield ops.geglu_forward, (g.clone().requires_grad_(), u.clone().requires_grad_(), approximate, in_place)
            yield ops.geglu_packed_forward, (x.clone().requires_grad_(), approximate, in_place)
        yield ops.geglu_backward, (dh, g, u, approximate)
        yield ops.geglu_backward_in_place, (dh, g.clone(), u.clone(), approximate)
        yield ops.geglu_packed_backward, (dh, x, approximate)
        yield ops.geglu_packed_backward_in_place, (dh, x.clone(), approximate)
        yield ops.geglu_packed_forward_out, (torch.empty_like(dh), x, approximate)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(kernel, device, dtype):
    for op, args in _op_cases(kernel, device, dtype):
        if op in (kernel.pointwise_ops.geglu_forward, kernel.pointwise_ops.geglu_packed_forward) and args[-1]:
            # backward_in_place: the backward writes the gradients over the forward's inputs, here
            # opcheck's own leaf arguments, which its eager and compiled runs then share, so their
            # gradient comparison reads overwritten tensors (it failed ~1 run in 5). Everything
            # else is checked; test_torch_compile_fullgraph checks those gradients under
            # compile, on intermediate projections as the layers use them.
            torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration",
                                                        "test_faketensor"))
        else:
            torch.library.opcheck(op, args)


def test_in_place_backward_matches_and_guards_the_saved_inputs(kernel, device):
    """The layers' in-place backward gives the same gradients, also for inputs without a row
    view; a second backward through the same graph raises instead of reading overwritten inputs."""
    ops = kernel.pointwise_ops
    x = torch.randn(6, 40, device=device, requires_grad=True)
    w = torch.randn(2 * 70, 40, device=device)
    for layout in ("separate", "packed", "transposed"):
        grads = []
        for in_place in (False, True):
            x.grad = None
            proj = x @ w.t()
            if layout == "packed":
                h = ops.geglu_packed(proj, "tanh", backward_in_place=in_place)
            elif layout == "separate":
                h = ops.geglu(proj[:, :70].contiguous(), proj[:, 70:].contiguous(), "tanh", backward_in_place=in_place)
            else:  # column-major inputs: no row view to write through, the results must still arrive
                gate, up = (t.t().contiguous().t() for t in (proj[:, :70], proj[:, 70:]))
                h = ops.geglu(gate, up, "tanh", backward_in_place=in_place)
            loss = (h * torch.linspace(-1, 1, 70, device=device)).sum()
            loss.backward(retain_graph=True)
            grads.append(x.grad.clone())
            if in_place:
                with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                    loss.backward()
        torch.testing.assert_close(grads[0], grads[1])


def test_the_forward_over_gate_matches_and_writes_only_gate(kernel, device):
    """The layers' forward that writes h over the gate projection's output (their own tensor) gives
    the allocating forward's h bit for bit, for contiguous gates, gates with a row stride of their
    own, and gates without a row view (then a new tensor); `up` and the rest of gate's storage are
    never written."""
    dispatch = kernel.dispatch
    layouts = {"contiguous": lambda b: b[..., :90].contiguous(), "row strided": lambda b: b[..., :90],
               "column-major": lambda b: b[..., :90].transpose(0, 1).contiguous().transpose(0, 1)}
    for dtype in (torch.float32, torch.bfloat16):
        values = (2 * torch.randn(7, 3, 2 * 90, device=device)).to(dtype)
        up = torch.randn(7, 3, 90, device=device).to(dtype)
        up_before = up.clone()
        for (layout, make), approximate in itertools.product(layouts.items(), ("tanh", "none")):
            expected = dispatch.geglu_forward_impl(make(values.clone()), up, approximate)  # same layout
            base = values.clone()
            gate = make(base)
            h = dispatch.geglu_forward_over_gate_impl(gate, up, approximate)
            what = f"{dtype} {layout} {approximate}"
            torch.testing.assert_close(h, expected, rtol=0, atol=0, msg=what)
            torch.testing.assert_close(up, up_before, rtol=0, atol=0, msg=what)
            if layout != "column-major" and dispatch.use_triton(gate):
                assert h.data_ptr() == gate.data_ptr() and h.stride() == gate.stride(), what
            if layout == "row strided":  # the other half of each row is not gate's: untouched
                torch.testing.assert_close(base[..., 90:], values[..., 90:], rtol=0, atol=0, msg=what)


def test_op_namespace_is_the_build_id(kernel):
    import json
    from pathlib import Path

    meta = json.loads((Path(kernel.__file__).parent / "metadata.json").read_text())
    assert kernel.pointwise_ops.geglu_forward._qualname == f"{meta['id']}::geglu_forward"
    assert hasattr(getattr(torch.ops, meta["id"]), "geglu_packed_backward")


def _mlp_step(kernel, x, wg, wu, wd, packed, in_place=False):
    # in_place: the layers' backward over the projections' own outputs (which nobody else holds)
    ops = kernel.pointwise_ops
    if packed:
        h = ops.geglu_packed(x @ torch.cat([wg, wu]).t(), "tanh", backward_in_place=in_place)
    else:
        h = ops.geglu(x @ wg.t(), x @ wu.t(), "tanh", backward_in_place=in_place)
    return h @ wd.t()


@pytest.mark.parametrize("in_place", [False, True], ids=["", "in_place_backward"])
@pytest.mark.parametrize("packed", [False, True], ids=["separate", "packed"])
def test_torch_compile_fullgraph(kernel, device, packed, in_place):
    """fullgraph=True fails on any graph break. Inductor on the GPU; on CPU the aot_eager
    backend (Inductor cannot compile Triton for the CPU interpreter). With the in-place backward
    too, on intermediate projections as the layers use it (opcheck cannot check that one's
    gradients: its leaf arguments are what the backward overwrites)."""
    torch._dynamo.reset()
    backend = "inductor" if device == "cuda" else "aot_eager"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(33, 64, device=device, dtype=dtype, requires_grad=True)
    wg, wu, wd = (torch.randn(s, device=device, dtype=dtype) / 8 for s in [(96, 64), (96, 64), (64, 96)])
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(lambda *a: _mlp_step(kernel, *a, packed, in_place), fullgraph=True, backend=counter)
    y = compiled(x, wg, wu, wd)
    y.sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    y_eager = _mlp_step(kernel, x, wg, wu, wd, packed, in_place)
    y_eager.sum().backward()
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y, y_eager, **tol)
    torch.testing.assert_close(grad_compiled, x.grad, **tol)
    # A new token count recompiles once (dynamic shapes) and never breaks the graph; after that,
    # token counts reuse the graph. Under Inductor (GPU) the kernel launch itself is traced, so
    # this also checks that the launch puts no guard on the token count.
    for t in (17, 5, 120):
        compiled(torch.randn(t, 64, device=device, dtype=dtype), wg, wu, wd)
    assert counter.frame_count == 2, counter.frame_count


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_tight_against_eager(kernel, dtype):
    """bf16/fp16 on the GPU: same rounding points as eager, so nearly every element is equal."""
    torch.manual_seed(0)
    g = (2 * torch.randn(2048, 16384 // 4, device="cuda")).to(dtype).requires_grad_()
    u = torch.randn_like(g).requires_grad_()
    h = kernel.geglu(g, u)
    eager = F.gelu(g.detach(), approximate="tanh") * u.detach()
    frac = (h.detach() != eager).float().mean().item()
    assert frac < (1e-3 if dtype != torch.float32 else 1.0), frac
    assert_close_to_reference(h, geglu64(g, u, "tanh"))


@gpu
def test_cuda_graph_capture_and_replay(kernel):
    """Forward and backward captured together and replayed on new inputs; the small call's
    backward launches into gradients its forward made (`geglu_forward_prepared`)."""
    from reference import geglu64_grads

    torch.manual_seed(0)
    static_x = torch.randn(64, 2 * 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    static_g = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    static_u = torch.randn_like(static_g, requires_grad=True)
    small_g = torch.randn(3, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    small_u = torch.randn_like(small_g, requires_grad=True)
    weight = torch.randn(3, 4096, device="cuda")
    layer = kernel.layers.GeluTanhAndMul()

    def step():
        out_packed = layer(static_x)
        out_packed.float().sum().backward()
        out_sep = kernel.geglu(static_g, static_u, approximate="none")
        out_sep.float().sum().backward()
        out_small = kernel.geglu(small_g, small_u)
        (out_small.float() * weight).sum().backward()
        return out_packed, out_sep, out_small

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the capture
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    assert _prepared(kernel.geglu(small_g, small_u)) is not None
    graph = torch.cuda.CUDAGraph()
    static_x.grad = static_g.grad = static_u.grad = small_g.grad = small_u.grad = None
    with torch.cuda.graph(graph):
        out_packed, out_sep, out_small = step()
    dh_small = weight.to(torch.bfloat16)  # what the cast back to bf16 hands the node
    for _ in range(3):
        with torch.no_grad():
            for t in (static_x, static_g, static_u, small_g, small_u):
                t.copy_(torch.randn_like(t))
        graph.replay()
        torch.cuda.synchronize()
        d = 4096
        assert_close_to_reference(out_packed, geglu64(static_x[:, :d], static_x[:, d:], "tanh"))
        assert_close_to_reference(out_sep, geglu64(static_g, static_u, "none"))
        assert_close_to_reference(out_small, geglu64(small_g, small_u, "tanh"))
        ref = F.gelu(static_x[:, :d].detach().float(), approximate="tanh")
        torch.testing.assert_close(static_x.grad[:, d:].float(), ref, rtol=1e-2, atol=1e-2)
        want_g, want_u = geglu64_grads(dh_small, small_g, small_u, "tanh")
        assert_close_to_reference(small_g.grad, want_g, "dgate after replay", scale=dh_small * small_u)
        assert_close_to_reference(small_u.grad, want_u, "dup after replay")


def _dependent_chain(pointwise, g, u, pdl):
    """Forward and backward calls, each reading what the kernel just before it wrote: an aten
    kernel (no PDL) before ours, ours before ours, and ours after a copy (in-place backward).
    tanh keeps the values finite, so that equality is meaningful."""
    outs = []
    for _ in range(4):
        h = torch.empty_like(g)
        pointwise.launch_geglu_forward(g, u, h, True, traceable=False, pdl=pdl)
        h2 = torch.empty_like(g)
        pointwise.launch_geglu_forward(h, u, h2, True, traceable=False, pdl=pdl)
        dg, du = torch.empty_like(g), torch.empty_like(g)
        pointwise.launch_geglu_backward(h2, g, u, dg, du, False, traceable=False, pdl=pdl)
        g_in_place, u_in_place = g.clone(), u.clone()
        pointwise.launch_geglu_backward(h, g_in_place, u_in_place, g_in_place, u_in_place, True, traceable=False,
                                        pdl=pdl)
        outs += [h, h2, dg, du, g_in_place, u_in_place]
        g = torch.tanh(2 * g + dg)
    return outs


needs_pdl = pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability(0)[0] < 9,
                               reason="programmatic dependent launch needs a GPU of compute capability 9.0")


@needs_pdl
@pytest.mark.parametrize("shape", [(1, 3072), (5, 4100), (2048, 3072)])
def test_programmatic_dependent_launch_in_a_cuda_graph(pointwise, shape):
    """With PDL (opt-in) a launch may start before the previous kernel ends. A chain of dependent
    calls replayed from one CUDA graph gives the results of the same chain launched without PDL,
    bit for bit; so do plain stream launches."""
    assert pointwise.pdl_supported(0)
    torch.manual_seed(0)
    g0 = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    u0 = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    expected = _dependent_chain(pointwise, g0.clone(), u0.clone(), pdl=False)
    assert all(t.isfinite().all() and t.abs().max() > 0 for t in expected)
    g, u = g0.clone(), u0.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _dependent_chain(pointwise, g.clone(), u.clone(), pdl=True)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = _dependent_chain(pointwise, g, u, pdl=True)
    for _ in range(3):
        g.copy_(g0)
        u.copy_(u0)
        graph.replay()
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
    for a, b in zip(_dependent_chain(pointwise, g0.clone(), u0.clone(), pdl=True), expected):
        assert torch.equal(a, b)


@needs_pdl
def test_pdl_by_default_reaches_the_public_calls(kernel, pointwise, monkeypatch):
    """GEGLU_PDL=1 (read at import as `PDL_BY_DEFAULT`; launch plans are resolved once, so the
    test drops them around the switch) makes the public functions' launches
    programmatic dependent launches: the binaries they run carry launch_pdl, and the results do
    not change."""
    torch.manual_seed(0)
    g = torch.randn(7, 1000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn_like(g, requires_grad=True)
    dh = torch.randn_like(g)
    h0 = kernel.geglu(g, u)
    grads0 = torch.autograd.grad(h0, (g, u), dh)
    import importlib

    dispatch = importlib.import_module(kernel.__name__ + ".dispatch")

    def drop_plans():
        pointwise.plan.cache_clear()
        dispatch._plans.clear()

    monkeypatch.setattr(pointwise, "PDL_BY_DEFAULT", True)
    drop_plans()
    try:
        h = kernel.geglu(g, u)
        grads = torch.autograd.grad(h, (g, u), dh)
    finally:
        monkeypatch.undo()
        drop_plans()
    assert torch.equal(h, h0) and all(torch.equal(a, b) for a, b in zip(grads, grads0))
    for fn in (pointwise._geglu_forward_kernel, pointwise._geglu_backward_kernel):
        compiled = [k for cache in fn.device_caches.values() for k in cache[0].values()]
        assert any(k.metadata.launch_pdl for k in compiled), fn


@triton.jit
def _slow_producer_kernel(src, dst, n, delay_ns, BLOCK: tl.constexpr):
    """Lets dependent launches start at once, then copies src to dst after delay_ns."""
    tl.extra.cuda.gdc_launch_dependents()
    start = tl.extra.cuda.globaltimer()
    while tl.extra.cuda.globaltimer() - start < delay_ns:
        pass
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)


@needs_pdl
@pytest.mark.parametrize("shape", [(1, 3072), (300, 4100)])
def test_programmatic_dependent_launch_waits_for_its_input(pointwise, shape):
    """Our PDL launch right after a kernel that lets it start early but writes our input 1 ms
    later reads the written input. The same launch without the kernels' grid-dependency wait
    reads the stale input at least once in a few tries: the setup does overlap the two kernels, so
    the test can fail."""
    torch.manual_seed(0)
    src = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    up = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    expected = torch.empty_like(src)
    pointwise.launch_geglu_forward(src, up, expected, True, traceable=False, pdl=False)

    def run(wait: bool) -> torch.Tensor:
        gate, out = torch.zeros_like(src), torch.zeros_like(src)
        torch.cuda.synchronize()
        _slow_producer_kernel[(triton.cdiv(src.numel(), 1024),)](src, gate, src.numel(), 1_000_000, BLOCK=1024)
        if wait:
            pointwise.launch_geglu_forward(gate, up, out, True, traceable=False, pdl=True)
        else:  # the same launch with the wait compiled out
            cfg = pointwise.choose_config(*shape, contiguous=True)
            pointwise._geglu_forward_kernel[(triton.cdiv(src.numel(), cfg.block_cols),)](
                gate, up, out, *pointwise._sizes(*shape), shape[1], shape[1], shape[1], APPROX_TANH=True,
                USE_LIBDEVICE=True, INDEXING=cfg.indexing, BLOCK_ROWS=1, BLOCK_COLS=cfg.block_cols, ROW_GROUP=1,
                num_warps=cfg.num_warps, USE_PDL=False, launch_pdl=True)
        torch.cuda.synchronize()
        return out

    run(wait=True), run(wait=False)  # compile both first: a compile outlasts the producer
    for _ in range(3):
        assert torch.equal(run(wait=True), expected)
    # Whether the unwaited launch overtakes the producer depends on the GPU's other work (other test
    # processes share it): one stale read in a few tries shows the setup overlaps the kernels.
    assert any(not torch.equal(run(wait=False), expected) for _ in range(5))


@pytest.mark.skipif(HAS_CUDA, reason="CPU-only check")
def test_cpu_path_without_interpreter_uses_no_triton(kernel, monkeypatch):
    """Plain CPU tensors run the PyTorch implementation: it equals eager bit for bit."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g, u = torch.randn(8, 100, dtype=torch.bfloat16), torch.randn(8, 100, dtype=torch.bfloat16)
    assert torch.equal(kernel.geglu(g, u, approximate="none"), F.gelu(g) * u)


def test_loading_imports_neither_inductor_nor_transformers(build_dir):
    """get_local_kernel stays light: triton_op would parse every op body's source and import
    torch._inductor (over a second); the bodies hide their source and declare their kernels."""
    code = f"""
import sys, time, torch
from pathlib import Path
t = time.perf_counter()
from kernels import get_local_kernel
k = get_local_kernel(Path({str(build_dir)!r}))
print("SECONDS", time.perf_counter() - t)
print("HEAVY", sorted(m for m in ("torch._inductor", "transformers") if m in sys.modules))
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]


def test_every_op_declares_the_kernels_it_launches(kernel):
    """What triton_op would have found by parsing: the AOTAutograd cache key hashes these."""
    import importlib

    from torch._library.triton import get_triton_kernels_for_op

    ops = importlib.import_module(kernel.__name__ + ".pointwise_ops")
    pointwise = importlib.import_module(kernel.__name__ + ".kernel_src.pointwise")
    expected = {"geglu_forward": pointwise._geglu_forward_kernel, "geglu_packed_forward": pointwise._geglu_forward_kernel,
                "geglu_packed_forward_out": pointwise._geglu_forward_kernel,
                "geglu_backward": pointwise._geglu_backward_kernel,
                "geglu_backward_in_place": pointwise._geglu_backward_kernel,
                "geglu_packed_backward": pointwise._geglu_backward_kernel,
                "geglu_packed_backward_in_place": pointwise._geglu_backward_kernel}
    for name, triton_kernel in expected.items():
        op = getattr(ops, name)
        assert get_triton_kernels_for_op(op._qualname) == [triton_kernel], name


def test_double_backward_is_refused_loudly(kernel, device):
    """No second-order formula exists: differentiating the gradient must raise, not return zeros."""
    g = torch.randn(3, 40, device=device, requires_grad=True)
    u = torch.randn(3, 40, device=device, requires_grad=True)
    (dg,) = torch.autograd.grad(kernel.geglu(g, u).sum(), (g,), create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        dg.sum().backward()


def test_eager_autograd_records_the_package_node_through_the_c_apply(kernel, device):
    """Eager calls with autograd skip `Function.apply`'s Python wrapper for the C apply behind it
    (host time on every call): the node recorded is still the package's own, the gradients still
    right in both layouts, and a dead functorch wrapper is unwrapped as the wrapper would."""
    from reference import geglu64_grads

    ops, dispatch = kernel.pointwise_ops, kernel.dispatch
    assert ops._apply_separate is not ops._EagerGeGLU.apply, "this torch's C apply is no longer bound"
    assert kernel.mlp_ops._apply_geglu_down is not kernel.mlp_ops._GeGLUDown.apply
    g = torch.randn(7, 3, 50, device=device, requires_grad=True)
    u = torch.randn(7, 3, 50, device=device, requires_grad=True)
    x = torch.randn(7, 3, 100, device=device, requires_grad=True)
    dh = torch.randn(7, 3, 50, device=device)
    for approximate in ("tanh", "none"):
        h = kernel.geglu(g, u, approximate)
        assert type(h.grad_fn).__name__ == "_EagerGeGLUBackward"
        hp = ops.geglu_packed(x, approximate)
        assert type(hp.grad_fn).__name__ == "_EagerGeGLUPackedBackward"
        want_g, want_u = geglu64_grads(dh, g, u, approximate)
        got_g, got_u = torch.autograd.grad(h, (g, u), dh)
        assert_close_to_reference(got_g, want_g, "dgate", scale=dh * u)
        assert_close_to_reference(got_u, want_u, "dup")
        want_xg, want_xu = geglu64_grads(dh, x[..., :50], x[..., 50:], approximate)
        (got_x,) = torch.autograd.grad(hp, (x,), dh)
        assert_close_to_reference(got_x[..., :50], want_xg, "dx gate half", scale=dh * x[..., 50:])
        assert_close_to_reference(got_x[..., 50:], want_xu, "dx up half")

    captured = []

    def keep(a, b):
        captured.append((a, b))
        return (a * b).sum()

    torch.func.grad(keep)(g.detach(), u.detach())
    dead_g, dead_u = captured[0]
    assert torch._C._functorch.is_functorch_wrapped_tensor(dead_g)
    assert dispatch.route(dead_g, dead_u) == dispatch.AUTOGRAD
    out = kernel.geglu(dead_g, dead_u)
    assert out.grad_fn is None and not torch._C._functorch.is_functorch_wrapped_tensor(out)
    torch.testing.assert_close(out, kernel.geglu(g.detach(), u.detach()), rtol=0, atol=0)


def _prepared(h):
    """What h's autograd node keeps of `geglu_forward_prepared`'s backward until its backward takes it (or None)."""
    return vars(h.grad_fn).get("prepared")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_small_eager_backward_made_in_the_forward(kernel, device, dtype):
    """A small eager autograd call makes its backward's plan and gradients in the forward
    (`geglu_forward_prepared`): right gradients; each prepared pair used by one backward only (a second
    backward through a retained graph must not write over the gradients the first returned); a
    gradient of another layout, or a larger call, takes the ordinary backward. (Plain CPU tensors
    run the PyTorch implementation: nothing to prepare.)"""
    from reference import geglu64_grads

    dispatch = kernel.dispatch
    limit = dispatch.PREPARED_BACKWARD_MAX_BYTES // torch.empty((), dtype=dtype).element_size()
    g = (2 * torch.randn(3, 37, device=device)).to(dtype).requires_grad_()
    u = torch.randn(3, 37, device=device).to(dtype).requires_grad_()
    for approximate in ("tanh", "none"):
        h = kernel.geglu(g, u, approximate)
        assert (_prepared(h) is not None) == dispatch.use_triton(g)
        dh1, dh2 = (torch.randn_like(h) for _ in range(2))
        first = torch.autograd.grad(h, (g, u), dh1, retain_graph=True)
        assert _prepared(h) is None
        second = torch.autograd.grad(h, (g, u), dh2)
        for dh, (got_g, got_u) in ((dh1, first), (dh2, second)):
            want_g, want_u = geglu64_grads(dh, g, u, approximate)
            assert_close_to_reference(got_g, want_g, "dgate", scale=dh * u)
            assert_close_to_reference(got_u, want_u, "dup")
        assert first[0].data_ptr() != second[0].data_ptr()
        # a gradient laid out otherwise than h (column-major): the ordinary backward
        h = kernel.geglu(g, u, approximate)
        dh_t = torch.randn(37, 3, device=device).to(dtype).t()
        got_g, got_u = torch.autograd.grad(h, (g, u), dh_t)
        want_g, want_u = geglu64_grads(dh_t, g, u, approximate)
        assert_close_to_reference(got_g, want_g, "dgate, column-major grad", scale=dh_t * u)
        assert_close_to_reference(got_u, want_u, "dup, column-major grad")
    # saved-tensor hooks (activation offloading): the backward reads what the hooks unpack, not the
    # tensors the forward saw (here overwritten after the forward)
    g2, u2 = g.detach().clone().requires_grad_(), u.detach().clone().requires_grad_()
    want_g, want_u = geglu64_grads(dh1, g2, u2, "tanh")
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach().clone(), lambda t: t):
        h = kernel.geglu(g2, u2)
    with torch.no_grad():
        g2.mul_(-3.0), u2.add_(1.0)
    got_g, got_u = torch.autograd.grad(h, (g2, u2), dh1)
    assert_close_to_reference(got_g, want_g, "dgate, saved-tensor hooks", scale=dh1 * u)
    assert_close_to_reference(got_u, want_u, "dup, saved-tensor hooks")
    # activation checkpointing: the recomputed forward's preparation must not disturb the backward
    from torch.utils.checkpoint import checkpoint

    dh = torch.randn_like(g)
    want_g, want_u = geglu64_grads(dh, g, u, "tanh")
    for reentrant in (False, True):
        g.grad = u.grad = None
        checkpoint(lambda a, b: kernel.geglu(a, b) * 1, g, u, use_reentrant=reentrant).backward(dh)
        assert_close_to_reference(g.grad, want_g, f"dgate, checkpoint reentrant={reentrant}", scale=dh * u)
        assert_close_to_reference(u.grad, want_u, f"dup, checkpoint reentrant={reentrant}")
    assert _prepared(kernel.pointwise_ops.geglu(g, u, "tanh", backward_in_place=True)) is None
    big = torch.randn(2, limit // 2 + 1, device=device).to(dtype).requires_grad_()
    assert _prepared(kernel.geglu(big, big.detach().clone())) is None


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_torch_func_transforms_get_eager_composition_gradients(kernel, device, approximate):
    """grad, vmap, jvp and jacrev of geglu() (both layouts) answer as they do for eager's
    gelu(g) * u: the registered ops' autograd has no functorch rule, so under a transform the
    call computes eager's composition with the kernels' rounding points."""
    g = torch.randn(4, 3, 24, device=device, dtype=torch.float32)
    u = torch.randn(4, 3, 24, device=device, dtype=torch.float32)
    w = torch.randn(3, 24, device=device)

    def ours(a, b):
        return (kernel.geglu(a, b, approximate) * w).sum()

    def packed(a, b):
        return (kernel.pointwise_ops.geglu_packed(torch.cat([a, b], -1), approximate) * w).sum()

    def eager(a, b):
        return (F.gelu(a, approximate=approximate) * b * w).sum()

    want = torch.func.grad(eager, argnums=(0, 1))(g, u)
    for fn in (ours, packed):
        got = torch.func.grad(fn, argnums=(0, 1))(g, u)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        # per-sample gradients: vmap of grad over the leading dimension
        per_sample = torch.func.vmap(torch.func.grad(fn, argnums=(0, 1)))(g, u)
        for a, b in zip(per_sample, want):
            torch.testing.assert_close(a, b)
        _, tangent = torch.func.jvp(fn, (g, u), (torch.ones_like(g), torch.zeros_like(u)))
        _, tangent_eager = torch.func.jvp(eager, (g, u), (torch.ones_like(g), torch.zeros_like(u)))
        torch.testing.assert_close(tangent, tangent_eager)
    jac = torch.func.jacrev(lambda a: kernel.geglu(a, u[0, 0], approximate))(g[0, 0])
    jac_eager = torch.func.jacrev(lambda a: F.gelu(a, approximate=approximate) * u[0, 0])(g[0, 0])
    torch.testing.assert_close(jac, jac_eager)
    # outside any transform the same call still records the package's own node
    assert type(kernel.geglu(g.requires_grad_(), u).grad_fn).__name__ == "_EagerGeGLUBackward"


def test_forward_mode_ad_carries_the_tangent(kernel, device):
    """Dual tensors (torch.autograd.forward_ad) are plain tensors to every type check: an op body
    on one returned a result without its tangent, silently. geglu() (with and without autograd
    recording) and the packed layout now give eager's tangents; the out= functions refuse a dual
    input as PyTorch's do, and still answer outside a dual level."""
    import torch.autograd.forward_ad as fwAD

    g = torch.randn(5, 40, device=device)
    u = torch.randn(5, 40, device=device)
    tg, tu = torch.randn_like(g), torch.randn_like(u)
    for approximate in ("tanh", "none"):
        with fwAD.dual_level():
            want = fwAD.unpack_dual(
                F.gelu(fwAD.make_dual(g, tg), approximate=approximate) * fwAD.make_dual(u, tu)).tangent
            for requires_grad in (False, True):
                dg = fwAD.make_dual(g.clone().requires_grad_(requires_grad), tg)
                du = fwAD.make_dual(u.clone(), tu)
                got = fwAD.unpack_dual(kernel.geglu(dg, du, approximate)).tangent
                assert got is not None, "the tangent was dropped"
                torch.testing.assert_close(got, want)
            x = fwAD.make_dual(torch.cat([g, u], -1), torch.cat([tg, tu], -1))
            got = fwAD.unpack_dual(kernel.pointwise_ops.geglu_packed(x, approximate)).tangent
            torch.testing.assert_close(got, want)
            with pytest.raises(RuntimeError, match="forward-mode AD"):  # as aten's out= functions
                kernel.gelu_and_mul(torch.empty_like(g), x)
    out = torch.empty_like(g)
    kernel.gelu_tanh_and_mul(out, torch.cat([g, u], -1))
    torch.testing.assert_close(out, F.gelu(g, approximate="tanh") * u)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged], ids=["strided", "jagged"])
def test_nested_tensors_get_eager_composition(kernel, device, layout):
    """torch.nested inputs (no row layout to launch on) answer as eager's gelu(g) * u, forward and
    backward, in both layouts, where they crashed inside the input checks; the out= functions
    refuse them by name."""
    parts = [(torch.randn(n, 24, device=device), torch.randn(n, 24, device=device)) for n in (2, 5)]
    for approximate in ("tanh", "none"):
        g = torch.nested.as_nested_tensor([a for a, _ in parts], layout=layout).requires_grad_()
        if layout == torch.jagged:  # up must share gate's ragged structure
            u = torch.nested.nested_tensor_from_jagged(torch.cat([b for _, b in parts]), g.offsets())
        else:
            u = torch.nested.as_nested_tensor([b for _, b in parts], layout=layout)
        out = kernel.geglu(g, u, approximate)
        for got, (a, b) in zip(out.unbind(), parts):
            torch.testing.assert_close(got, F.gelu(a, approximate=approximate) * b)
        x = torch.nested.as_nested_tensor([torch.cat([a, b], -1) for a, b in parts], layout=layout)
        for got, (a, b) in zip(kernel.pointwise_ops.geglu_packed(x, approximate).unbind(), parts):
            torch.testing.assert_close(got, F.gelu(a, approximate=approximate) * b)
    (dg,) = torch.autograd.grad(out, (g,), torch.ones_like(out))
    for got, (a, b) in zip(dg.unbind(), parts):
        a = a.clone().requires_grad_()
        (want,) = torch.autograd.grad((F.gelu(a, approximate=approximate) * b).sum(), (a,))
        torch.testing.assert_close(got, want)
    with pytest.raises(TypeError, match="nested"):
        kernel.gelu_tanh_and_mul(torch.empty(2, 24, device=device), x)
