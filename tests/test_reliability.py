"""Reliability: no silent corruption. Each test here failed (or crashed) on the code before
the fix it names; CPU parts run in CI, the @gpu parts on the GPU machine.

Interpreter caveats (upstream Triton, not the kernel): TRITON_INTERPRET=1 is not thread-safe
and mishandles bf16 subnormals, so thread tests use the PyTorch CPU path and subnormal checks
run on the GPU."""

import copy
import gc
import os
import threading
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import HAS_CUDA, INTERPRETED, assert_close_to_reference, gpu
from reference import geglu64, geglu64_grads, gelu64

DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def fresh_seed():
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))


class GateUpDown(nn.Module):
    def __init__(self, hidden=24, inter=40):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(hidden, inter), nn.Linear(hidden, inter)
        self.down_proj = nn.Linear(inter, hidden)
        self.act_fn = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class PackedMLP(nn.Module):  # ModernBertMLP's attributes
    def __init__(self, hidden=24, inter=40):
        super().__init__()
        self.Wi, self.Wo = nn.Linear(hidden, 2 * inter), nn.Linear(inter, hidden)
        self.act, self.drop = nn.GELU(), nn.Dropout(0.0)

    def forward(self, x):
        a, b = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(a) * b))


def _kernelized(kernel, module, layer):
    from kernels import LocalLayerRepository, Mode, kernelize, replace_kernel_forward_from_hub, use_kernel_mapping

    replace_kernel_forward_from_hub(type(module), layer)
    repo = LocalLayerRepository(repo_path=kernel.layer_mapping._PACKAGE_DIR, layer_name=layer)
    with use_kernel_mapping({layer: {DEVICE: repo}}, inherit_mapping=False):
        kernelize(module, mode=Mode.TRAINING, device=DEVICE)
    return module


@pytest.mark.parametrize("how", ["module hook", "global hook", "forward patched on the instance"])
@pytest.mark.parametrize("cls,layer,proj", [(GateUpDown, "GeGLUMLP", "gate_proj"),
                                            (PackedMLP, "ModernBertGeGLUMLP", "Wi")])
def test_a_hooked_projection_output_is_not_overwritten_by_backward(kernel, cls, layer, proj, how):
    """Whoever may hold a projection's output (its hook, a global hook, a forward patched onto the
    instance as accelerate's hooks do) still holds it unchanged after backward."""
    model = _kernelized(kernel, cls().to(DEVICE), layer)
    projection = getattr(model, proj)
    kept = []

    def keep(module, inputs, output):
        if how == "global hook" and module is not projection:
            return
        kept.append((output, output.detach().clone()))

    if how == "forward patched on the instance":
        plain = projection.forward
        projection.forward = lambda x: (out := plain(x), keep(projection, (x,), out))[0]
        handle = None
    else:
        handle = (nn.modules.module.register_module_forward_hook(keep) if how == "global hook"
                  else projection.register_forward_hook(keep))
    try:
        model(torch.randn(3, 5, 24, device=DEVICE)).square().sum().backward()
    finally:
        if handle is not None:
            handle.remove()
    (held, copy_at_forward), = kept
    torch.testing.assert_close(held, copy_at_forward, rtol=0, atol=0)  # not dL/dgate


_ACTIVATION_CASES = [(GateUpDown, "GeGLUMLP", "act_fn"), (PackedMLP, "ModernBertGeGLUMLP", "act")]


@pytest.mark.parametrize("how", ["module hook", "pre-hook", "forward patched on the instance", "global hook"])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("cls,layer,act", _ACTIVATION_CASES)
def test_what_is_on_the_activation_module_runs(kernel, monkeypatch, cls, layer, act, how, grad):
    """Activation capture and patching hook the MLP's activation module (interpretability tools
    do): the kernelized layer calls it then, as eager does, and gives eager's answer with the
    hook's change applied (here it doubles the activation), in inference (where the fused kernels
    would otherwise run) and in training."""
    monkeypatch.setattr(kernel.mlp_ops, "FUSED_OPT_IN", True)  # the fused path is on where it may run
    eager = cls().to(DEVICE, torch.bfloat16)
    model = _kernelized(kernel, copy.deepcopy(eager), layer)
    seen = []

    def attach(module):
        target = getattr(module, act)
        if how == "module hook":
            return target.register_forward_hook(lambda m, i, o: seen.append(1) or 2 * o)
        if how == "pre-hook":
            return target.register_forward_pre_hook(lambda m, i: seen.append(1) or (2 * i[0],))
        if how == "global hook":
            return nn.modules.module.register_module_forward_hook(
                lambda m, i, o: (seen.append(1) or 2 * o) if isinstance(m, nn.GELU) else None)
        plain = target.forward
        target.forward = lambda x: seen.append(1) or 2 * plain(x)
        return None

    x = torch.randn(3, 5, 24, device=DEVICE, dtype=torch.bfloat16)
    outputs = []
    for module in (eager, model):
        handle = attach(module)
        try:
            with torch.set_grad_enabled(grad):
                outputs.append(module(x.requires_grad_(grad)))
        finally:
            if handle is not None:
                handle.remove()
    assert len(seen) == 2, "the activation's hook ran in eager and in the kernelized layer alike"
    expected, got = outputs
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


@pytest.mark.parametrize("cls,layer,act", _ACTIVATION_CASES)
def test_a_backward_hook_on_the_activation_module_runs(kernel, cls, layer, act):
    """Attribution tools hook the activation's backward: the kernelized layer's gradients pass
    through it as eager's do (here the hook doubles the gradient)."""
    eager = cls().to(DEVICE)
    model = _kernelized(kernel, copy.deepcopy(eager), layer)
    seen, grads = [], []
    x0 = torch.randn(3, 5, 24, device=DEVICE)
    for module in (eager, model):
        handle = getattr(module, act).register_full_backward_hook(lambda m, gi, go: seen.append(1) or (2 * gi[0],))
        try:
            x = x0.clone().requires_grad_()
            module(x).square().sum().backward()
            grads.append(x.grad)
        finally:
            handle.remove()
    assert len(seen) == 2
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4 * grads[0].abs().max().item())


def test_without_hooks_the_backward_still_writes_in_place(kernel):
    """The memory saving stays where nobody can hold the projections: a saved-tensor hook (which
    the layer cannot see) watches the tensors autograd saved being overwritten."""
    model = _kernelized(kernel, GateUpDown().to(DEVICE), "GeGLUMLP")
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t, t.clone())) or t, lambda t: t):
        y = model(torch.randn(3, 5, 24, device=DEVICE))
    y.square().sum().backward()
    wide = [(t, c) for t, c in saved if t.shape[-1] == 40]
    assert wide and any(not torch.equal(t, c) for t, c in wide)


@pytest.mark.parametrize("fn", ["gelu_tanh_and_mul", "gelu_and_mul"])
def test_out_functions_refuse_inputs_that_require_grad(kernel, fn):
    x = torch.randn(3, 8, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"{fn}\(out, x\): out= functions do not support automatic"):
        getattr(kernel, fn)(torch.empty(3, 4, device=DEVICE), x)
    with torch.no_grad():
        getattr(kernel, fn)(torch.empty(3, 4, device=DEVICE), x)  # fine without autograd


@pytest.mark.parametrize("make_out", [lambda: torch.empty(1, 4, device=DEVICE).expand(3, 4),
                                      lambda: torch.empty(16, device=DEVICE).as_strided((3, 4), (2, 1))],
                         ids=["expanded", "overlapping"])
def test_out_with_elements_sharing_memory_is_refused(kernel, make_out):
    with pytest.raises(ValueError, match="elements that share memory"):
        kernel.gelu_and_mul(make_out(), torch.randn(3, 8, device=DEVICE))


@pytest.mark.parametrize("fn", ["gelu_tanh_and_mul", "gelu_and_mul"])
def test_out_functions_compile_fullgraph(kernel, fn):
    torch._dynamo.reset()
    f = torch.compile(lambda o, x: getattr(kernel, fn)(o, x), fullgraph=True)
    x, out = torch.randn(5, 16, device=DEVICE), torch.empty(5, 8, device=DEVICE)
    f(out, x)
    assert_close_to_reference(out, geglu64(x[:, :8], x[:, 8:], "tanh" if "tanh" in fn else "none"))


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_torch_export_keeps_the_op_and_the_answer(kernel, strict):
    """torch.export of a module calling geglu() and of a kernelized MLP, strict (Dynamo) and
    non-strict (fake tensors through Python): the exported graph holds the package's op, and the
    exported module answers as the module does."""
    op_name = kernel.pointwise_ops.geglu_forward._qualname.replace("::", ".")  # as graph targets print

    class CallsGeGLU(nn.Module):
        def forward(self, g, u):
            return kernel.geglu(g, u, "none")

    g, u = torch.randn(3, 5, 40, device=DEVICE), torch.randn(3, 5, 40, device=DEVICE)
    mlp = _kernelized(kernel, GateUpDown().to(DEVICE), "GeGLUMLP")
    x = torch.randn(2, 5, 24, device=DEVICE)
    for module, args, want in ((CallsGeGLU(), (g, u), geglu64(g, u, "none")), (mlp, (x,), mlp(x))):
        exported = torch.export.export(module, args, strict=strict)
        targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
        assert any(op_name in t for t in targets), targets
        got = exported.module()(*args)
        if module is mlp:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        else:
            assert_close_to_reference(got, want, "exported geglu()")


def test_fake_and_meta_tensors_give_shapes_not_false_overlaps(kernel):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, out = torch.randn(4, 10), torch.empty(4, 5)
        assert kernel.gelu_tanh_and_mul(out, x) is out
    x, out = torch.randn(4, 10, device="meta"), torch.empty(4, 5, device="meta")
    assert kernel.gelu_and_mul(out, x) is out


def test_meta_inputs_give_meta_outputs_for_every_op_and_layer(kernel):
    g = torch.randn(2, 3, 6, device="meta", requires_grad=True)
    u = torch.randn(2, 3, 6, device="meta", requires_grad=True)
    h = kernel.geglu(g, u, approximate="none")
    assert h.device.type == "meta" and h.shape == (2, 3, 6)
    h.sum().backward()
    assert g.grad.device.type == "meta" and u.grad.shape == u.shape
    x = torch.randn(5, 12, device="meta")
    for layer in (kernel.layers.GeluTanhAndMul(), kernel.layers.GeluAndMul()):
        assert layer(x).shape == (5, 6) and layer(x).device.type == "meta"
    with torch.device("meta"):  # a model built on meta, as `from_pretrained` does before loading
        model = GateUpDown()
    model = _kernelized(kernel, model, "GeGLUMLP")
    assert model(torch.randn(3, 24, device="meta")).device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_tanh_backward_is_finite_at_huge_gate_values(kernel, device, dtype):
    big = torch.finfo(dtype).max
    gate = torch.tensor([2e19, -2e19, 1e30, -1e30, big, -big, 40.0, -40.0], device=device).to(dtype)
    gate = gate.clamp(-big, big).requires_grad_()
    up = torch.ones_like(gate, requires_grad=True)
    grad = torch.ones_like(gate)
    kernel.geglu(gate, up).backward(grad)
    ref_gate, ref_up = geglu64_grads(grad, gate, up, "tanh")
    assert torch.isfinite(gate.grad).all(), gate.grad
    torch.testing.assert_close(gate.grad.double(), ref_gate.nan_to_num(), rtol=0, atol=0)


SPECIALS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e38, -1e38, 3.0, -3.0, 1e-40]


def _eager(gate, up, grad, approximate, packed):
    """Eager PyTorch's h, d gate, d up (fp32, same device), separate or packed."""
    if packed:
        x = torch.stack([gate, up], dim=-1).requires_grad_()
        h = F.gelu(x[:, :1], approximate=approximate) * x[:, 1:]
        h.backward(grad[:, None])
        return h[:, 0].detach(), x.grad[:, 0], x.grad[:, 1]
    g, u = gate.clone().requires_grad_(), up.clone().requires_grad_()
    h = F.gelu(g, approximate=approximate) * u
    h.backward(grad)
    return h.detach(), g.grad, u.grad


def _placement(t):
    return torch.stack([t.isnan(), t == torch.inf, t == -torch.inf])


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("layout", ["separate", "packed"])
def test_nan_and_inf_placement_equals_eager(kernel, device, approximate, layout):
    """Every pair of special values (NaN, +-inf, +-0, +-1e38, a subnormal), fp32, forward and
    backward: for non-finite inputs NaN and +-inf land where eager's do (where eager's separate
    and packed computations disagree with each other, where the float64 reference puts them); for
    finite inputs where the reference puts them (nothing overflows inside the kernel). Finite
    results match the reference."""
    vals = torch.tensor(SPECIALS)
    gate, up = torch.cartesian_prod(vals, vals).T.contiguous().to(device)
    grad = torch.ones_like(gate)
    if layout == "separate":
        g, u = gate.clone().requires_grad_(), up.clone().requires_grad_()
        h = kernel.geglu(g, u, approximate=approximate)
        h.backward(grad)
        ours = (h.detach(), g.grad, u.grad)
    else:
        x = torch.stack([gate, up], dim=-1).requires_grad_()
        h = (kernel.layers.GeluTanhAndMul() if approximate == "tanh" else kernel.layers.GeluAndMul())(x)
        h.backward(grad[:, None])
        ours = (h.detach()[:, 0], x.grad[:, 0], x.grad[:, 1])
    eager_sep = _eager(gate, up, grad, approximate, packed=False)
    eager_packed = _eager(gate, up, grad, approximate, packed=True)
    # The float64 reference, with gelu' taken on its own (autograd of the product would turn the
    # inf * 0 of a partial term into NaN where the derivative is finite).
    g64 = gate.double().requires_grad_()
    gelu64(g64, approximate).sum().backward()
    dh_u = (grad * up).double()
    refs = (geglu64(gate, up, approximate), dh_u * g64.grad, grad.double() * gelu64(gate, approximate))
    for name, got, e1, e2, ref in zip(("h", "d gate", "d up"), ours, eager_sep, eager_packed, refs):
        got, e1, e2, ref = (t.detach().cpu() for t in (got, e1, e2, ref))
        ref32 = ref.float()  # beyond fp32's range a finite float64 value is inf in fp32
        # Finite gates: the reference (no overflow inside the kernel, where eager's tanh backward
        # overflows x^3 into NaN); non-finite inputs: eager, unless its layouts disagree.
        use_eager = (_placement(e1) == _placement(e2)).all(0) & ~gate.isfinite().cpu()
        expected = torch.where(use_eager, _placement(e1), _placement(ref32))
        wrong = (_placement(got) != expected).any(0)
        assert not wrong.any(), f"{name}: gate {gate.cpu()[wrong]}, up {up.cpu()[wrong]}: {got[wrong]} vs {e1[wrong]}"
        # Finite values: eager's, else the reference; subnormal results to an absolute tiny; 1 + erf
        # cancels at negative gates (fp32 erf's absolute error over a small 1 + erf: ~1e-4 relative).
        close_to = torch.where(e1.isfinite(), e1.double(), ref)
        finite = got.isfinite() & close_to.isfinite()
        torch.testing.assert_close(got[finite].double(), close_to[finite], rtol=3e-4, atol=torch.finfo(torch.float32).tiny,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_unsupported_device_falls_back_to_pytorch_with_one_warning(kernel):
    import importlib

    ops = importlib.import_module(kernel.__name__ + ".dispatch")
    fake = SimpleNamespace(is_cuda=False, device=SimpleNamespace(type="mps"))
    ops._warned_devices.discard("mps")
    with pytest.warns(RuntimeWarning, match="no Triton kernel for mps tensors; running the PyTorch"):
        assert ops.use_triton(fake) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.use_triton(fake) is False  # once


def test_tagging_warns_when_transformers_ignores_the_installed_kernels(kernel, monkeypatch):
    import transformers.utils.import_utils as import_utils

    monkeypatch.setattr(import_utils, "is_kernels_available", lambda *a, **k: False)
    monkeypatch.setattr(kernel.layer_mapping._warn_if_transformers_ignores_kernels, "done", False, raising=False)
    with pytest.warns(RuntimeWarning, match=r"ignores the installed kernels .*use_kernels=True\) and KernelConfig"):
        kernel.layer_mapping.tag_classes(GateUpDown())


def test_threads_share_the_host_caches_safely(kernel, monkeypatch):
    """Eight threads each loading the kernel and running kernelized models of different widths at
    once (PyTorch CPU path on the CPU: the interpreter is not thread-safe; the GPU run uses the
    kernels) equal eager."""
    from pathlib import Path

    from kernels import get_local_kernel

    if not HAS_CUDA:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    errors = []

    def work(i):
        try:
            loaded = get_local_kernel(Path(kernel.layer_mapping._PACKAGE_DIR))
            assert loaded is kernel  # one module per build, whichever thread loads it
            eager = GateUpDown(hidden=16 + i, inter=24 + 8 * i).to(DEVICE)
            model = _kernelized(loaded, copy.deepcopy(eager), "GeGLUMLP")
            for t in (1, 3, 17, 64):
                x = torch.randn(t, 16 + i, device=DEVICE)
                with torch.no_grad():
                    torch.testing.assert_close(model(x), eager(x), rtol=1e-5, atol=1e-5)
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# --- GPU: sizes, time, compilers and graphs (recorded in benchmarks/results/h200/GPU_TESTS.md) ---

@gpu
def test_memory_is_flat_and_results_bitwise_repeatable_over_many_calls(kernel):
    """10,000 calls with varying token counts and two widths, forward and backward: the memory
    held by live tensors returns to the same figure (no host- or device-side cache grows with T)."""
    widths = (3072, 16384)
    gen = torch.Generator(device="cuda").manual_seed(1)
    held = []
    for i in range(10_000):
        t = 1 + (i * 37) % 700
        g = torch.randn(t, widths[i % 2], device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
        h = kernel.geglu(g, g.detach())
        if i % 10 == 0:
            h.sum().backward()
        del g, h
        if i % 1000 == 999:
            torch.cuda.synchronize()
            held.append(torch.cuda.memory_allocated())
    assert max(held) == min(held), held
    g = torch.randn(4099, 16384, device="cuda", dtype=torch.bfloat16)
    u = torch.randn_like(g)
    first = kernel.geglu(g, u)
    assert all(torch.equal(first, kernel.geglu(g, u)) for _ in range(20))
    dh = torch.randn_like(g)
    grads = [torch.autograd.grad(kernel.geglu(g.requires_grad_(), u), g, dh)[0] for _ in range(5)]
    assert all(torch.equal(grads[0], x) for x in grads[1:])


def test_kernelized_gemma_traced_by_dynamo_never_recompiles_on_the_cpu(kernel):
    """What Dynamo guards on, without a GPU (its eager backend): the kernelized layers' Python read
    while tracing (the activation's variant, the rule's module state) stays the same when the
    eager copy of the model runs in between, so no new graph at any token count. (The layers keep
    a per-class memo of the activation's variant for eager calls; a traced call filling it was a
    side effect that retraced.) Tracing the layers warns about nothing: Dynamo warned, in the
    user's output, about the cached activation lookup it traced."""
    from torch._dynamo.utils import counters
    from tiny_models import FAMILIES
    from kernels import Mode, kernelize, use_kernel_mapping

    model = FAMILIES["gemma"][0]().eval()
    with use_kernel_mapping(kernel.layer_mapping.register(model), inherit_mapping=False):
        kernelize(model, mode=Mode.INFERENCE | Mode.TORCH_COMPILE, device="cpu")
    kernel.layers._CLASS_APPROXIMATE.clear()  # as in a fresh process
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, dynamic=True, backend="eager")
    eager = copy.deepcopy(model)
    with torch.no_grad():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t in (1, 2):  # warm-up: the static first trace, then the dynamic one
                compiled(input_ids=torch.randint(0, 128, (1, t)))
        assert not [str(w.message) for w in caught]
        frames = counters["stats"]["unique_graphs"]
        for t in (1, 3, 17, 130, 300):
            ids = torch.randint(0, 128, (1, t))
            torch.testing.assert_close(compiled(input_ids=ids).logits, eager(input_ids=ids).logits, rtol=2e-3, atol=2e-3)
    assert counters["stats"]["unique_graphs"] == frames, dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])
    torch._dynamo.reset()


@gpu
def test_kernelized_gemma_under_dynamic_compile_never_recompiles(kernel):
    from torch._dynamo.utils import counters
    from tiny_models import FAMILIES

    model = FAMILIES["gemma"][0]().cuda().eval()
    from kernels import Mode, kernelize, use_kernel_mapping

    with use_kernel_mapping(kernel.layer_mapping.register(model), inherit_mapping=False):
        kernelize(model, mode=Mode.INFERENCE | Mode.TORCH_COMPILE, device="cuda")
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, dynamic=True, fullgraph=False)
    eager = copy.deepcopy(model)
    with torch.no_grad():
        for t in (1, 2):  # warm-up: the static first trace, then the dynamic one
            compiled(input_ids=torch.randint(0, 128, (1, t), device="cuda"))
        frames = counters["stats"]["unique_graphs"]
        for t in (1, 3, 5, 7, 8, 9, 13, 16, 17, 31, 32, 33, 64, 100, 127, 128, 255, 256, 300, 512):
            ids = torch.randint(0, 128, (1, t), device="cuda")
            torch.testing.assert_close(compiled(input_ids=ids).logits, eager(input_ids=ids).logits, rtol=2e-3, atol=2e-3)
    assert counters["stats"]["unique_graphs"] == frames, dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])


@gpu
def test_cuda_graph_of_a_kernelized_forward_replays_with_new_inputs(kernel):
    eager = GateUpDown(512, 1536).cuda().to(torch.bfloat16)
    model = _kernelized(kernel, copy.deepcopy(eager), "GeGLUMLP")
    static_x = torch.randn(8, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):
            model(static_x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
        for _ in range(5):
            static_x.copy_(torch.randn_like(static_x))
            graph.replay()
            # 8 tokens take the fused decode kernels on a GPU with a measured table: eager's rounding
            # points, fp32 sums in another order (and atomics in arrival order), so one bf16 ulp.
            expected = eager(static_x)
            torch.testing.assert_close(static_y, expected, rtol=2**-8, atol=2**-8 * expected.abs().max().item())
            torch.testing.assert_close(static_y, model(static_x), rtol=2**-8, atol=2**-8 * expected.abs().max().item())


@gpu
def test_autocast_matches_eager_under_autocast(kernel):
    eager = GateUpDown(256, 1024).cuda()
    model = _kernelized(kernel, copy.deepcopy(eager), "GeGLUMLP")
    x = torch.randn(64, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, y_ref = model(x), eager(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


@gpu
def test_subnormals_on_the_gpu(kernel):
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        tiny = torch.finfo(dtype).tiny
        gate = (torch.rand(4096, device="cuda") * tiny).to(dtype) * torch.tensor([1.0, -1.0], device="cuda").repeat(2048).to(dtype)
        up = torch.randn(4096, device="cuda").to(dtype)
        h = kernel.geglu(gate, up)
        torch.testing.assert_close(h, (F.gelu(gate.float(), approximate="tanh").to(dtype).float() * up.float()).to(dtype),
                                   rtol=0, atol=0)
