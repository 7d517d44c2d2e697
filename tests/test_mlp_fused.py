"""The fused MLP kernels for decode-sized inputs (gate/up + GeGLU, split-K down), and the rule that
keeps the layers off them wherever reading the weights directly would skip something the user put
on a projection."""

import importlib
import itertools
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from call_count import python_calls
from conftest import HAS_CUDA, TOLERANCES, assert_close_to_reference, compiled_binaries
from tiny_models import GatedGeluMLP

DEVICE = "cuda" if HAS_CUDA else "cpu"  # CPU: the kernel runs in the Triton interpreter


@pytest.fixture(scope="module")
def mlp_ops(kernel):
    return importlib.import_module(kernel.__name__ + ".mlp_ops")


@pytest.fixture(scope="module")
def mlp_kernels(kernel):
    return importlib.import_module(kernel.__name__ + ".kernel_src.mlp")


@pytest.fixture(autouse=True)
def _warm_up_only_where_tested(request, mlp_kernels, monkeypatch):
    """On a GPU, a shape's first call compiles every token bucket (about a second each); the tests
    here use a new shape each, so they skip that unless marked `warms_up` (the tests of the warmed
    plans themselves)."""
    if HAS_CUDA and request.node.get_closest_marker("warms_up") is None:
        monkeypatch.setattr(mlp_kernels, "warm_up_shape", lambda *args: None)


@pytest.fixture
def fused_on(mlp_ops, monkeypatch):
    """GEGLU_FUSED_MLP=1, as read at import."""
    monkeypatch.setattr(mlp_ops, "FUSED_OPT_IN", True)


def _reference(x, wg, wu, bg, bu, approximate):
    """float64 with eager's rounding points (each projection, then gelu, rounded to the dtype)."""
    dt = x.dtype
    g = x.double() @ wg.double().T + (0 if bg is None else bg.double())
    u = x.double() @ wu.double().T + (0 if bu is None else bu.double())
    g_r, u_r = g.to(dt).double(), u.to(dt).double()
    act = torch.nn.functional.gelu(g_r, approximate=approximate).to(dt).double()
    # An fp32 sum in another order may round a projection to the neighbouring value: the error
    # bound scales with |u| (1 + |g|).
    return act * u_r, 2 * u.abs() * (1 + g.abs())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 64, 96), (3, 72, 200), (16, 130, 300), (100, 48, 72)], ids=str)
def test_fused_gate_up_matches_float64(mlp_ops, dtype, shape):
    t, hidden, inter = shape
    for approximate, bias in itertools.product(("tanh", "none"), (False, True)):
        x = torch.randn(t, hidden, device=DEVICE).to(dtype)
        wg, wu = ((torch.randn(inter, hidden, device=DEVICE) / hidden**0.5).to(dtype) for _ in range(2))
        bg, bu = ((torch.randn(inter, device=DEVICE) / 4).to(dtype) for _ in range(2)) if bias else (None, None)
        h = mlp_ops.gate_up_geglu_impl(x, wg, wu, bg, bu, approximate)
        assert h.shape == (t, inter) and h.dtype == dtype
        ref, scale = _reference(x, wg, wu, bg, bu, approximate)
        assert_close_to_reference(h, ref, f"{approximate} bias={bias}", scale=scale)


def _mlp_reference(x, wg, wu, wd, bg, bu, bd, approximate):
    """float64 with eager's rounding points (h rounded before the down projection too)."""
    h, _ = _reference(x, wg, wu, bg, bu, approximate)
    h = h.to(x.dtype).double()
    y = h @ wd.double().T + (0 if bd is None else bd.double())
    # A projection rounded the other way moves g, u, gelu(g) and so h by an ulp or so each (the
    # interpreter truncates where the GPU rounds): a few ulps of h, bounded by 4 |h| |wd|. The
    # relative-norm check in the test is the one that sees a missing split or block.
    return y, 4 * h.abs() @ wd.double().abs().T


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 64, 96), (5, 72, 200), (16, 130, 300), (23, 40, 70), (64, 48, 80)], ids=str)
def test_mlp_decode_matches_float64(mlp_ops, mlp_kernels, dtype, shape):
    t, hidden, inter = shape
    for approximate, bias, down_bias in itertools.product(("tanh", "none"), (False, True), (False, True)):
        x = torch.randn(t, hidden, device=DEVICE).to(dtype)
        wg, wu = ((torch.randn(inter, hidden, device=DEVICE) / hidden**0.5).to(dtype) for _ in range(2))
        wd = (torch.randn(hidden, inter, device=DEVICE) / inter**0.5).to(dtype)
        bg, bu = ((torch.randn(inter, device=DEVICE) / 4).to(dtype) for _ in range(2)) if bias else (None, None)
        bd = (torch.randn(hidden, device=DEVICE) / 4).to(dtype) if down_bias else None
        ref, scale = _mlp_reference(x, wg, wu, wd, bg, bu, bd, approximate)
        # The op body, and the layers' eager entry (one plan lookup; x given as [1, T, H]).
        eager_entry = mlp_kernels.run_mlp_decode(x[None], hidden, wg, wu, wd, bg, bu, bd, approximate == "tanh",
                                                 x.get_device())
        for entry, y in (("op", mlp_ops.mlp_decode_impl(x, wg, wu, wd, bg, bu, bd, approximate)),
                         ("eager entry", eager_entry[0])):
            assert y.shape == (t, hidden) and y.dtype == dtype
            what = f"{entry} {approximate} bias={bias} down bias={down_bias}"
            assert_close_to_reference(y, ref, what, scale=scale)
            # And as a whole: every split-K slice and block of outputs is in the sum.
            rel = ((y.double() - ref).norm() / ref.norm()).item()
            assert rel < 2 * TOLERANCES[dtype][0], f"{what}: relative error {rel}"


def _MLP(hidden=64, inter=160, bias=False):
    return GatedGeluMLP(hidden, inter, "tanh", bias)


class _LoRALikeLinear(nn.Linear):
    """A subclass whose forward adds something F.linear on its weight would miss."""

    def forward(self, x):
        return super().forward(x) + 1.0


def _device_index() -> int:
    return torch.device(DEVICE).index or 0 if HAS_CUDA else -1


def _count_fused(mlp_ops, monkeypatch, what=("gate_up_geglu_impl", "run_mlp_decode")):
    """Calls of the layers' fused paths (gate/up alone, or the whole MLP), or of the mlp_ops
    functions named."""
    calls = []
    for name in (what,) if isinstance(what, str) else what:
        original = getattr(mlp_ops, name)
        monkeypatch.setattr(mlp_ops, name, lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k))
    return calls


def test_the_eager_inference_path_answers_as_the_modules_or_leaves_it(kernel, mlp_ops, mlp_kernels, fused_on,
                                                                      monkeypatch):
    """`fused_inference` (the eager inference path of `fused_mlp`, one flat function) takes the cases
    the fused kernels serve, each as the modules answer (both kernels; the gate/up kernel alone past
    the down kernel's rows, for a hooked down projection, whose hook runs, or under an active
    dropout, which applies), and returns None for every case they do not serve."""
    calls = _count_fused(mlp_ops, monkeypatch, ("gate_up_geglu_impl", "run_mlp_decode"))
    both_rows, gate_up_rows = mlp_kernels.max_rows(_device_index())
    gate_up_rows = max(both_rows, gate_up_rows)
    hooked = []

    def fresh(bias=False):
        return _MLP(bias=bias).to(DEVICE, torch.bfloat16).eval()

    def x_of(rows, dtype=torch.bfloat16, strided=False):
        x = torch.randn(1, rows, 128 if strided else 64, device=DEVICE, dtype=dtype)
        return x[..., :64] if strided else x  # rows 128 apart, unit column stride

    def with_hooked_down():
        mlp = fresh()
        mlp.down_proj.register_forward_hook(lambda m, i, o: hooked.append(1) or 3 * o)
        return mlp

    def inference(mlp, x, drop=None):
        return mlp_ops.fused_inference(x, "tanh", mlp.gate_proj, mlp.up_proj, mlp.down_proj, drop)

    def modules(mlp, x, drop=None):
        h = F.gelu(mlp.gate_proj(x), approximate="tanh") * mlp.up_proj(x)
        return mlp.down_proj(h if drop is None else drop(h))

    zeroing = nn.Dropout(1.0)  # in training mode: zeroes h, so the result is the down bias alone
    taken = {
        "plain": (fresh(), x_of(1), None, 1),
        "biases": (fresh(True), x_of(3), None, 1),
        "strided rows": (fresh(), x_of(2, strided=True), None, 1),
        "the gate/up kernel alone": (fresh(True), x_of(gate_up_rows), None, 1),
        "dropout in eval mode": (fresh(), x_of(1), nn.Dropout(0.5).eval(), 1),
        "hooked down projection": (with_hooked_down(), x_of(1), None, 1),
        "dropout in training": (fresh(True), x_of(1), zeroing, 1),
    }
    left = {
        "fp32": (fresh().float(), x_of(1, torch.float32)),
        "past the token counts": (fresh(), x_of(gate_up_rows + 1)),
        "subclassed up projection": (_with_subclass(fresh()), x_of(1)),
    }
    rtol, atol = TOLERANCES[torch.bfloat16]
    with torch.no_grad():
        for what, (mlp, x, drop, kernels) in taken.items():
            before = len(calls)
            got = inference(mlp, x, drop)
            assert got is not None and len(calls) == before + kernels, f"{what}: the fused kernels should take it"
            expected = modules(mlp, x, drop)
            torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item(),
                                       msg=what)
        assert len(hooked) == 2, "the down projection's hook runs on the fused path as on the modules'"
        for what, (mlp, x) in left.items():
            before = len(calls)
            assert inference(mlp, x) is None and len(calls) == before, f"{what}: no fused kernel should take it"
        if HAS_CUDA:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                assert inference(fresh(), x_of(1)) is None, "autocast"


def test_layer_takes_the_fused_path_for_decode_inference(kernel, mlp_ops, fused_on, monkeypatch):
    calls = _count_fused(mlp_ops, monkeypatch)
    downs = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    for bias, deterministic, strided in itertools.product((False, True), (False, True), (False, True)):
        mlp = _MLP(bias=bias).to(DEVICE, torch.bfloat16)
        x = torch.randn(2, 3, 64, device=DEVICE, dtype=torch.bfloat16)
        if strided:  # rows 96 elements apart: a slice of a wider tensor
            x = torch.randn(2, 3, 96, device=DEVICE, dtype=torch.bfloat16)[..., :64]
        with torch.no_grad():
            before, downs_before = len(calls), len(downs)
            torch.use_deterministic_algorithms(deterministic, warn_only=True)  # warn_only: cuBLAS asks for a setting
            try:
                got = kernel.layers.GeGLUMLP.forward(mlp, x)
            finally:
                torch.use_deterministic_algorithms(False)
            assert len(calls) == before + 1, "decode-sized eager inference should take the fused kernel"
            # The split-K down sums in arrival order: not under deterministic algorithms.
            assert len(downs) == downs_before + (not deterministic)
            expected = mlp(x)
        rtol, atol = TOLERANCES[torch.bfloat16]
        torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


def test_layer_keeps_the_modules_path_wherever_the_fused_one_would_skip_something(kernel, mlp_ops, mlp_kernels,
                                                                                 fused_on, monkeypatch):
    calls = _count_fused(mlp_ops, monkeypatch)
    x = torch.randn(3, 64, device=DEVICE, dtype=torch.bfloat16)

    def fresh():
        return _MLP().to(DEVICE, torch.bfloat16)

    def run(mlp, inp=x, grad=False):
        with torch.set_grad_enabled(grad):
            return kernel.layers.GeGLUMLP.forward(mlp, inp)

    seen = []
    cases = {
        "more tokens than the table sends": lambda: run(fresh(), torch.randn(
            max(mlp_kernels.max_rows(_device_index())) + 1, 64, device=DEVICE, dtype=torch.bfloat16)),
        "autograd": lambda: run(fresh(), grad=True),
        "float32": lambda: run(fresh().float(), x.float()),
        "forward hook": lambda: run(_hooked(fresh(), "register_forward_hook", lambda m, i, o: seen.append(1))),
        "forward pre-hook": lambda: run(_hooked(fresh(), "register_forward_pre_hook", lambda m, i: seen.append(1))),
        "forward patched on the instance (accelerate's offload hooks do this)": lambda: run(_patched_forward(fresh())),
        "Linear subclass": lambda: run(_with_subclass(fresh())),
        "parametrized weight": lambda: run(_parametrized(fresh())),
        "non-contiguous weight": lambda: run(_transposed_weight(fresh())),
        "fused path switched off": lambda: _switched_off(mlp_ops, monkeypatch, lambda: run(fresh())),
        "tensor-subclass weight (as DTensor shards are)": lambda: run(_subclass_weight(fresh())),
        "autocast to float16": lambda: _autocast_fp16(lambda: run(fresh())),
    }
    for name, case in cases.items():
        before = len(calls)
        case()
        assert len(calls) == before, f"{name}: the fused path ran"
    assert len(seen) == 2, "each hook must have been called by the projection it sits on"
    mlp = _patched_forward(fresh())
    with torch.no_grad():  # the patched forward's doubling is applied
        expected = mlp(x)
        rtol, atol = TOLERANCES[torch.bfloat16]
        torch.testing.assert_close(run(mlp), expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        run(fresh())
        assert not calls, "a global forward hook must keep the modules' path"
    finally:
        handle.remove()
    monkeypatch.setattr(mlp_ops, "FUSED_OPT_IN", False)
    monkeypatch.setattr(mlp_ops, "MEASURED_DEVICES", {})
    run(fresh())
    assert not calls, "no measured launch table and no opt-in: the fused path must stay off"


def test_past_the_fused_token_range_plain_projections_are_not_called_as_modules(kernel, mlp_kernels, fused_on,
                                                                               monkeypatch):
    """More tokens than the fused kernels take, eager inference (a prefill): F.linear on plain
    projections' weights, which is what calling them computes, around the pointwise kernel: no
    module call (their host time inside a model, benchmarks/NOTES.md session 17), bit for bit the
    modules' products. Anything the user put on any one projection (a hook, a patched forward, a
    subclass, a parametrization) makes the layer call all three as modules, and it takes effect."""
    n_rows = max(mlp_kernels.max_rows(_device_index())) + 3
    x = torch.randn(n_rows, 64, device=DEVICE, dtype=torch.bfloat16)
    layer_forward = kernel.layers.GeGLUMLP.forward
    with torch.no_grad():
        for bias in (False, True):
            mlp = _MLP(bias=bias).to(DEVICE, torch.bfloat16)
            expected = mlp.down_proj(kernel.geglu(mlp.gate_proj(x), mlp.up_proj(x), "tanh"))
            seen = []
            with monkeypatch.context() as patch:
                linear_forward = nn.Linear.forward
                # On the class: the projections stay plain, so that the layer skips their calls.
                patch.setattr(nn.Linear, "forward", lambda m, i: seen.append(i.shape) or linear_forward(m, i))
                got = layer_forward(mlp, x)
            assert seen == [], "plain projections past the fused range should not be called as modules"
            torch.testing.assert_close(got, expected, rtol=0, atol=0)  # same products, same kernel
        rtol, atol = TOLERANCES[torch.bfloat16]
        for name in ("gate_proj", "up_proj", "down_proj"):
            touches = {
                "forward hook": lambda m: m.register_forward_hook(lambda mod, i, o: 3 * o),
                "forward pre-hook": lambda m: m.register_forward_pre_hook(lambda mod, i: (3 * i[0],)),
                "forward patched on the instance": lambda m: setattr(m, "forward", lambda i, f=m.forward: 3 * f(i)),
                "parametrized weight": lambda m: torch.nn.utils.parametrize.register_parametrization(
                    m, "weight", _Tripled()),
            }
            for what, touch in touches.items():
                mlp = _MLP(bias=True).to(DEVICE, torch.bfloat16)
                touch(getattr(mlp, name))
                expected = mlp(x)  # eager GatedGeluMLP: the projections as modules, the touch applied
                got = layer_forward(mlp, x)
                torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item(),
                                           msg=lambda m, what=what, name=name: f"{what} on {name}: {m}")
            mlp = _MLP(bias=True).to(DEVICE, torch.bfloat16)
            lora = _LoRALikeLinear(*reversed(getattr(mlp, name).weight.shape)).to(DEVICE, torch.bfloat16)
            lora.load_state_dict(getattr(mlp, name).state_dict())
            setattr(mlp, name, lora)
            expected = mlp(x)
            torch.testing.assert_close(layer_forward(mlp, x), expected, rtol=4 * rtol,
                                       atol=4 * atol * expected.abs().max().item(), msg=f"subclass as {name}")


def test_t5_layers_past_the_fused_token_range_call_f_linear_on_plain_projections(kernel, mlp_kernels, fused_on,
                                                                                  monkeypatch):
    """The T5 layers' unfused inference, as GeGLUMLP's: F.linear on plain wi_0 and wi_1 (no module
    call), bit for bit the modules' products around the pointwise kernel; wo stays a module call
    (T5 casts h to its dtype first). A hook on either projection sends the layer to the module calls
    and takes effect."""
    from transformers import T5Config
    from transformers.models.longt5.modeling_longt5 import LongT5DenseGatedActDense
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    n_rows = max(mlp_kernels.max_rows(_device_index())) + 3
    x = torch.randn(1, n_rows, 64, device=DEVICE, dtype=torch.bfloat16)
    config = T5Config(d_model=64, d_ff=160, feed_forward_proj="gated-gelu")
    rtol, atol = TOLERANCES[torch.bfloat16]
    for layer, cls in (("T5DenseGatedGeGLU", T5DenseGatedActDense), ("LongT5DenseGatedGeGLU", LongT5DenseGatedActDense)):
        forward = getattr(kernel.layers, layer).forward
        with torch.no_grad():
            module = cls(config).to(DEVICE, torch.bfloat16).eval()
            expected = module.wo(kernel.geglu(module.wi_0(x), module.wi_1(x), "tanh"))
            seen = []
            with monkeypatch.context() as patch:
                linear_forward = nn.Linear.forward
                # On the class: the projections stay plain, so that the layer skips their calls.
                patch.setattr(nn.Linear, "forward", lambda m, i: seen.append(m) or linear_forward(m, i))
                got = forward(module, x)
            assert seen == [module.wo], f"{layer}: only wo should be called as a module"
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=layer)
            for name in ("wi_0", "wi_1"):
                module = cls(config).to(DEVICE, torch.bfloat16).eval()
                getattr(module, name).register_forward_hook(lambda m, i, o: 3 * o)
                expected = module(x)
                torch.testing.assert_close(forward(module, x), expected, rtol=4 * rtol,
                                           atol=4 * atol * expected.abs().max().item(), msg=f"{layer}, hooked {name}")


class _Tripled(nn.Module):
    def forward(self, w):
        return 3 * w


def test_training_keeps_the_modules_path_for_what_the_node_would_skip(kernel, mlp_ops, fused_on, monkeypatch):
    """The training node reads the weights directly too: every case the inference rule refuses
    refuses it as well, and the training step runs through the modules (hooks run, the subclass's
    and the parametrization's forwards apply)."""
    taken = []
    original = mlp_ops._mlp_training
    monkeypatch.setattr(mlp_ops, "_mlp_training", lambda *a: (lambda y: taken.append(y is not None) or y)(original(*a)))
    x = torch.randn(3, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)

    def fresh():
        return _MLP().to(DEVICE, torch.bfloat16)

    seen = []
    cases = {
        "forward hook": lambda: _hooked(fresh(), "register_forward_hook", lambda m, i, o: seen.append(1)),
        "forward pre-hook": lambda: _hooked(fresh(), "register_forward_pre_hook", lambda m, i: seen.append(1)),
        "forward patched on the instance": lambda: _patched_forward(fresh()),
        "Linear subclass": lambda: _with_subclass(fresh()),
        "parametrized weight": lambda: _parametrized(fresh()),
        "tensor-subclass weight (as DTensor shards are)": lambda: _subclass_weight(fresh()),
    }
    for name, make in cases.items():
        mlp = make()
        kernel.layers.GeGLUMLP.forward(mlp, x).float().sum().backward()
        assert taken and not any(taken), f"{name}: the training node ran"
        assert all(p.grad is not None for p in mlp.parameters() if p.requires_grad), name
    assert len(seen) == 2, "each hook must have been called by the projection it sits on"
    taken.clear()
    kernel.layers.GeGLUMLP.forward(fresh(), x).float().sum().backward()
    assert taken == [True], "an untouched MLP in training should take the node"


def _switched_off(mlp_ops, monkeypatch, fn):
    monkeypatch.setattr(mlp_ops, "FUSED_OFF", True)  # GEGLU_FUSED_MLP=0
    try:
        return fn()
    finally:
        monkeypatch.setattr(mlp_ops, "FUSED_OFF", False)


def test_down_kernel_only_where_the_down_module_would_do_nothing_else(kernel, mlp_ops, fused_on, monkeypatch):
    """A hooked down projection or an active dropout: gate/up stays fused, the down projection and
    the dropout run as modules (the hook sees h, the dropout applies)."""
    calls = _count_fused(mlp_ops, monkeypatch)
    downs = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    x = torch.randn(3, 64, device=DEVICE, dtype=torch.bfloat16)
    mlp = _MLP().to(DEVICE, torch.bfloat16)
    seen = []
    handle = mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    with torch.no_grad():
        kernel.layers.GeGLUMLP.forward(mlp, x)
    handle.remove()
    assert seen == [(3, 160)] and len(calls) == 1 and not downs
    mlp.dropout = nn.Dropout(0.5).train()
    with torch.no_grad():
        a, b = (kernel.layers.GeGLUMLP.forward(mlp, x) for _ in range(2))
    assert len(calls) == 3 and not downs and not torch.equal(a, b), "an active dropout must apply"
    mlp.dropout.eval()
    with torch.no_grad():
        kernel.layers.GeGLUMLP.forward(mlp, x)
    assert len(downs) == 1, "a dropout in eval mode is the identity: the whole MLP may be fused"


def test_t5_and_modernbert_layers_take_the_fused_path(kernel, mlp_ops, fused_on, monkeypatch):
    from transformers import ModernBertConfig, T5Config
    from transformers.models.modernbert.modeling_modernbert import ModernBertMLP
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    downs = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    cases = {
        "T5DenseGatedGeGLU": T5DenseGatedActDense(T5Config(d_model=64, d_ff=160, feed_forward_proj="gated-gelu")),
        "ModernBertGeGLUMLP": ModernBertMLP(ModernBertConfig(hidden_size=64, intermediate_size=160,
                                                             hidden_activation="gelu", mlp_bias=True)),
    }
    import torch._dynamo.testing

    for layer, module in cases.items():
        module = module.to(DEVICE, torch.bfloat16).eval()
        x = torch.randn(1, 4, 64, device=DEVICE, dtype=torch.bfloat16)
        forward = getattr(kernel.layers, layer).forward
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounterWithBackend("inductor" if HAS_CUDA else "aot_eager")
        compiled = torch.compile(lambda x: forward(module, x), fullgraph=True, backend=counter)
        rtol, atol = TOLERANCES[torch.bfloat16]
        for run in (lambda x: forward(module, x), compiled):  # eager, then traced (packed weights sliced there)
            with torch.no_grad():
                before = len(downs)
                got = run(x)
                expected = module(x)
            assert len(downs) == before + 1, f"{layer}: decode-sized inference should take the fused kernels"
            torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
        assert counter.frame_count == 1


def _autocast_fp16(fn):
    with torch.autocast(DEVICE, dtype=torch.float16):
        y = fn()
    assert y.dtype == torch.float16, "under autocast the projections compute in float16"
    return y


class _TaggedTensor(torch.Tensor):
    """A tensor subclass: nn.Parameter keeps its type, as it does for DTensor weights."""


def _subclass_weight(mlp):
    w = mlp.up_proj.weight.detach().as_subclass(_TaggedTensor)
    mlp.up_proj.weight = nn.Parameter(w)
    assert type(mlp.up_proj.weight) is not nn.Parameter
    return mlp


def _patched_forward(mlp):
    # What accelerate's add_hook_to_module does (a new `forward` on the instance), here doubling
    # up_proj's output.
    plain = mlp.up_proj.forward
    mlp.up_proj.forward = lambda x: 2 * plain(x)
    return mlp


def test_only_the_class_forward_bound_to_the_module_counts_as_untouched(mlp_ops):
    """kernelize sets `module.forward = MethodType(type(module).forward, module)` on every layer
    it has no kernel for: untouched. Anything else set as the instance's forward is a patch: a
    lambda, accelerate's `functools.partial` wrapper (which copies the name and docstring of the
    forward it wraps), another class's forward, or the class's forward bound to another module."""
    import functools
    from types import MethodType

    act, other = nn.GELU(approximate="tanh"), nn.GELU(approximate="tanh")
    assert mlp_ops.untouched(act)
    act.forward = MethodType(nn.GELU.forward, act)
    assert mlp_ops.untouched(act, backward=True)
    patches = {
        "lambda": lambda x: 2 * x,
        "accelerate's wrapper": functools.update_wrapper(functools.partial(lambda m, x: m(x), act), act.forward),
        "another class's forward": MethodType(nn.SiLU.forward, act),
        "bound to another module": MethodType(nn.GELU.forward, other),
    }
    for what, forward in patches.items():
        act.forward = forward
        assert not mlp_ops.untouched(act), what


def test_the_layers_activation_check_agrees_with_untouched_and_global_hooks(kernel, mlp_ops):
    """`layers._activation` repeats `untouched(act, backward=True) or global_hooks()` inline (it runs
    on every layer call): both answers must stay the same for every kind of hook and patch."""
    import functools
    from types import MethodType

    activation = kernel.layers._activation
    module_hooks = ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
                    "register_full_backward_pre_hook")
    global_hooks = ("register_module_forward_hook", "register_module_forward_pre_hook",
                    "register_module_full_backward_hook", "register_module_full_backward_pre_hook")

    def agrees(act, what):
        expected = not mlp_ops.untouched(act, backward=True) or mlp_ops.global_hooks()
        assert activation(act) == (act.approximate, expected), what
        return expected

    act = nn.GELU(approximate="tanh")
    assert not agrees(act, "plain")
    act.forward = MethodType(nn.GELU.forward, act)  # what kernelize binds
    assert not agrees(act, "kernelize's own forward")
    act.forward = functools.partial(nn.GELU.forward, act)
    assert agrees(act, "a patched forward")
    del act.forward
    for name in module_hooks:
        handle = getattr(act, name)(lambda *args: None)
        assert agrees(act, name)
        handle.remove()
    for name in global_hooks:
        handle = getattr(nn.modules.module, name)(lambda *args: None)
        try:
            assert agrees(act, name)
        finally:
            handle.remove()
    assert not agrees(act, "all removed")


def test_plain_linears_agrees_with_untouched_and_parameter_types(mlp_ops):
    """`plain_linears` repeats `untouched` inline for nn.Linear (it runs on every inference call past
    the fused token counts): both answers must stay the same for every hook and patch, and only
    plain Parameters count."""
    import functools
    from types import MethodType

    def agrees(p, what):
        for backward in (False, True):
            params = p._parameters
            expected = (type(p) is nn.Linear and mlp_ops.untouched(p, backward)
                        and type(params.get("weight")) is nn.Parameter
                        and (params.get("bias") is None or type(params["bias"]) is nn.Parameter))
            got = mlp_ops.plain_linears((nn.Linear(2, 3), p), backward)
            assert (got is not None) == expected, (what, backward)
            if got is not None:
                assert got[1][0] is params["weight"] and got[1][1] is params.get("bias"), what

    p = nn.Linear(4, 5)
    agrees(p, "plain")
    p.forward = MethodType(nn.Linear.forward, p)  # what kernelize binds
    agrees(p, "kernelize's own forward")
    p.forward = functools.partial(nn.Linear.forward, p)
    agrees(p, "a patched forward")
    del p.forward
    for name in ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
                 "register_full_backward_pre_hook"):
        handle = getattr(p, name)(lambda *args: None)
        agrees(p, name)
        handle.remove()
    agrees(_LoRALikeLinear(4, 5), "a subclass")
    q = nn.Linear(4, 5, bias=False)
    agrees(q, "no bias")
    torch.nn.utils.parametrize.register_parametrization(q, "weight", _Tripled())
    agrees(q, "parametrized")


def _hooked(mlp, method, hook):
    getattr(mlp.gate_proj, method)(hook)
    return mlp


def _with_subclass(mlp):
    lora = _LoRALikeLinear(64, 160, bias=False).to(mlp.up_proj.weight.device, torch.bfloat16)
    lora.load_state_dict(mlp.up_proj.state_dict())
    mlp.up_proj = lora
    return mlp


def _parametrized(mlp):
    class Scale(nn.Module):
        def forward(self, w):
            return 2 * w

    torch.nn.utils.parametrize.register_parametrization(mlp.gate_proj, "weight", Scale())
    return mlp


def _transposed_weight(mlp):
    w = mlp.gate_proj.weight.detach()
    mlp.gate_proj.weight = nn.Parameter(w.t().contiguous().t())
    return mlp


def test_fused_op_is_registered_for_tracing(mlp_ops):
    """opcheck compares the eager kernel with the traced graph (on the CPU, the PyTorch form):
    fp32, where both sum exactly enough for its tolerance; 16-bit sums differ in order."""
    x = torch.randn(3, 64, device=DEVICE)
    wg, wu = (torch.randn(96, 64, device=DEVICE) / 8 for _ in range(2))
    bg, bu = (torch.randn(96, device=DEVICE) for _ in range(2))
    torch.library.opcheck(mlp_ops.gate_up_geglu, (x, wg, wu, None, None, "tanh"))
    torch.library.opcheck(mlp_ops.gate_up_geglu, (x, wg, wu, bg, bu, "none"))
    wd, bd = torch.randn(64, 96, device=DEVICE) / 10, torch.randn(64, device=DEVICE)
    torch.library.opcheck(mlp_ops.mlp_decode, (x, wg, wu, wd, None, None, None, "tanh"))
    torch.library.opcheck(mlp_ops.mlp_decode, (x, wg, wu, wd, bg, bu, bd, "none"))
    for t in (3, 70, 200):  # the compiled layers' op: any token count
        xt = torch.randn(t, 64, device=DEVICE)
        torch.library.opcheck(mlp_ops.mlp_inference, (xt, wg, wu, wd, bg, bu, bd, "tanh"))


def test_layer_compiles_fullgraph_onto_the_fused_paths_without_recompiling(kernel, mlp_ops, fused_on, monkeypatch):
    """Under torch.compile (fullgraph, dynamic shapes) the layer calls the opaque `mlp_inference`
    op, which picks its path on the real token count: one graph for every T, the fused kernels up
    to the table's limit inside it, and no table lookup traced (planted here as a graph break,
    which fullgraph=True turns into an error)."""
    import torch._dynamo.testing

    enabled = mlp_ops.fused_mlp_enabled

    def untraceable_lookup(device_index):
        torch._dynamo.graph_break()  # a no-op outside tracing
        return enabled(device_index)

    monkeypatch.setattr(mlp_ops, "fused_mlp_enabled", untraceable_lookup)
    calls = _count_fused(mlp_ops, monkeypatch, "mlp_inference_impl")
    decodes = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    torch._dynamo.reset()
    mlp = _MLP(bias=True).to(DEVICE, torch.bfloat16)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor" if HAS_CUDA else "aot_eager")
    compiled = torch.compile(lambda x: kernel.layers.GeGLUMLP.forward(mlp, x), fullgraph=True, dynamic=True,
                             backend=counter)
    both_rows, gate_up_rows = mlp_ops.fused_token_limits(_device_index())
    tokens = (2, 3, both_rows, both_rows + 1, gate_up_rows + 7)
    rtol, atol = TOLERANCES[torch.bfloat16]
    with torch.no_grad():
        for t in tokens:
            x = torch.randn(1, t, 64, device=DEVICE, dtype=torch.bfloat16)
            expected = mlp(x)
            torch.testing.assert_close(compiled(x), expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
    assert counter.frame_count == 1
    assert len(calls) == len(tokens)
    assert len(decodes) == sum(t <= both_rows for t in tokens)
    with torch.enable_grad():  # training under compile: the modules' path (autograd), a new graph
        mlp.requires_grad_(True)
        compiled(torch.randn(3, 64, device=DEVICE, dtype=torch.bfloat16)).sum().backward()
    assert len(calls) == len(tokens) and mlp.gate_proj.weight.grad is not None


@pytest.mark.parametrize("hidden, inter", [(64, 152), (72, 160)])
def test_widths_not_a_multiple_of_16_take_cublas(kernel, mlp_ops, fused_on, monkeypatch, hidden, inter):
    """The layers fuse only widths that are multiples of 16 (`mlp_ops.FUSED_WIDTH_MULTIPLE`: where
    the tables were measured; elsewhere the kernels' PTX has element-wise loads, tests/gpu_compile.py):
    a ragged hidden or intermediate size takes cuBLAS's projections in eager inference and in the
    compiled layers' op, and answers as the modules do; an aligned one still fuses."""
    calls = _count_fused(mlp_ops, monkeypatch)
    rtol, atol = TOLERANCES[torch.bfloat16]
    with torch.no_grad():
        for widths, fused in (((hidden, inter), False), ((64, 160), True)):
            mlp = _MLP(*widths, bias=True).to(DEVICE, torch.bfloat16)
            x = torch.randn(2, 3, widths[0], device=DEVICE, dtype=torch.bfloat16)
            expected = mlp(x)
            before = len(calls)
            got = kernel.layers.GeGLUMLP.forward(mlp, x)
            traced = mlp_ops.mlp_inference_impl(x.view(-1, widths[0]), mlp.gate_proj.weight, mlp.up_proj.weight,
                                                mlp.down_proj.weight, mlp.gate_proj.bias, mlp.up_proj.bias,
                                                mlp.down_proj.bias, "tanh")
            assert len(calls) == before + 2 * fused, f"{widths}: fused {fused}"
            for y in (got, traced.view(x.shape)):
                torch.testing.assert_close(y, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


def test_launch_rules_take_symbolic_sizes(mlp_kernels):
    """Traced launches look their configs up with symbolic sizes (unhashable: no cache for them);
    the traced config is the eager one at MAX_ROWS tokens."""
    from torch.fx.experimental.proxy_tensor import make_fx

    seen = []

    def trace(x, w):
        seen.append(mlp_kernels.launch_config(-1, "gate_up", x.shape[1], w.shape[0], x.shape[0]))
        return x.new_empty(mlp_kernels.workspace_numel(x.shape[0], x.shape[1], w.shape[0], -1))

    make_fx(trace, tracing_mode="symbolic")(torch.randn(3, 64), torch.randn(96, 64))
    assert seen == [mlp_kernels.launch_config(-1, "gate_up", 64, 96, mlp_kernels.MAX_ROWS)]


def test_traced_launch_writes_no_argument_twice(mlp_kernels, monkeypatch):
    """Functionalization (torch.compile, opcheck) clones every argument a traced kernel writes and
    copies each back: an output passed twice would be overwritten by its stale second copy (a wrong
    h on the GPU under opcheck before this was fixed)."""
    seen = []
    monkeypatch.setattr(mlp_kernels, "_traced_launch", lambda kernel, names, plan, pointers: seen.append(pointers))
    x, w = torch.randn(3, 64), torch.randn(96, 64)
    out = torch.empty(3, 96)
    mlp_kernels.launch_gate_up_geglu(x, w, w, None, None, out, True, traceable=True)
    written = seen[0][5:]  # h and the workspace
    assert written[0] is out and written[1].data_ptr() != out.data_ptr()


def test_first_call_of_a_shape_compiles_every_token_count_it_may_meet(mlp_kernels, monkeypatch):
    """The warm-up at a shape's first call covers the specialisation of every plan the layers build
    for 1 to `gate_up_max_rows` tokens (both kernels, and gate/up alone), so that no later token
    count compiles (the first-call bar); here with the H200 table, whose rules change configs at
    16, 32, 64 and 128 tokens."""
    monkeypatch.setattr(mlp_kernels, "measured_table", lambda device_index: "H200")
    monkeypatch.setattr(mlp_kernels, "warm_up_shape", lambda *args: None)  # device 7 may not exist
    device_index = 7  # an index no other test caches rules under
    both_rows, gate_up_rows = mlp_kernels.max_rows(device_index)
    for hidden, inter, has_bias in ((2048, 16384, False), (768, 3072, True), (100, 300, False)):
        warmed = {mlp_kernels.specialisation(p) for p in mlp_kernels.shape_plans(
            hidden, inter, hidden, has_bias, has_bias, True, torch.bfloat16, device_index)}
        for n_rows in range(1, gate_up_rows + 1):
            gate_up_cfg = mlp_kernels.launch_config(device_index, "gate_up", hidden, inter, n_rows)
            alone = mlp_kernels.gate_up_launch(n_rows, hidden, inter, hidden, inter, 0, has_bias, True, gate_up_cfg,
                                               torch.bfloat16)
            assert mlp_kernels.specialisation(alone) in warmed, (hidden, inter, n_rows)
            if n_rows <= both_rows:
                plans = mlp_kernels.decode_plans.__wrapped__(n_rows, hidden, inter, hidden, has_bias, has_bias, True,
                                                             torch.bfloat16, device_index)
                assert {mlp_kernels.specialisation(p) for p in plans[:2]} <= warmed, (hidden, inter, n_rows)


def test_launch_rules_cover_every_token_count(mlp_kernels):
    """Every table has a config for every shape and token count, with a row tile that fits the
    down kernel's single tile where the layers send both kernels."""
    for name, table in mlp_kernels.MLP_LAUNCH_TABLES.items():
        assert table["max_rows"] <= mlp_kernels.MAX_ROWS, name
        for hidden, inter in ((64, 96), (768, 3072), (2048, 16384), (3584, 14336), (8192, 65536)):
            for n_rows in (1, 16, 17, 32, 33, 64, 65, 128, 129, 512, 5000):
                for kernel in ("gate_up", "down"):
                    rules = table[kernel]
                    bucket = mlp_kernels._rows_bucket(n_rows)
                    cfg = next(c for h, i, r, c in rules if hidden >= h and inter <= i and bucket <= r)
                    if kernel == "gate_up":
                        assert cfg[0] in (16, 32, 64, 128), (name, cfg)
                        assert n_rows > 16 or cfg[0] == 16, (name, n_rows, cfg)  # one 16-row tile at decode


def test_fused_op_declares_its_kernel(mlp_ops):
    from torch._library.triton import get_triton_kernels_for_op

    kernel_module = importlib.import_module(mlp_ops.__name__.rsplit(".", 1)[0] + ".kernel_src.mlp")
    assert get_triton_kernels_for_op(mlp_ops.gate_up_geglu._qualname) == [kernel_module._gate_up_geglu_kernel]
    assert get_triton_kernels_for_op(mlp_ops.mlp_decode._qualname) == [kernel_module._gate_up_geglu_kernel,
                                                                       kernel_module._down_split_k_kernel]


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
def test_fused_layer_replays_in_a_cuda_graph(kernel, mlp_ops, fused_on, monkeypatch):
    """Capture the fused decode path (workspace allocation, two launches) and replay it on new
    inputs: the replay equals an eager call of the fused path and the modules' own result."""
    downs = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    mlp = _MLP(hidden=256, inter=1024, bias=True).to("cuda", torch.bfloat16)
    static_x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            kernel.layers.GeGLUMLP.forward(mlp, static_x)  # plans and compiled kernels outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = kernel.layers.GeGLUMLP.forward(mlp, static_x)
        assert len(downs) == 2
        for _ in range(3):
            x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
            static_x.copy_(x)
            graph.replay()
            expected = mlp(x)
            eager_fused = kernel.layers.GeGLUMLP.forward(mlp, x)
            rtol, atol = TOLERANCES[torch.bfloat16]
            torch.testing.assert_close(static_y, eager_fused, rtol=rtol, atol=atol * expected.abs().max().item())
            torch.testing.assert_close(static_y, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


def test_a_failing_fused_kernel_warns_once_and_falls_back(kernel, mlp_ops, fused_on, monkeypatch):
    """A machine whose Triton cannot compile the fused kernels still gets correct results."""
    def broken(*args, **kwargs):
        raise RuntimeError("no such instruction")

    monkeypatch.setattr(mlp_ops, "run_mlp_decode", broken)
    monkeypatch.setattr(mlp_ops, "FUSED_OFF", False)
    mlp = _MLP().to(DEVICE, torch.bfloat16)
    x = torch.randn(2, 64, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="fused decode MLP kernels failed"):
        got = kernel.layers.GeGLUMLP.forward(mlp, x)
    assert mlp_ops.FUSED_OFF
    calls = _count_fused(mlp_ops, monkeypatch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        again = kernel.layers.GeGLUMLP.forward(mlp, x)
        expected = mlp(x)
    assert not calls, "after a failure the fused path stays off"
    rtol, atol = TOLERANCES[torch.bfloat16]
    for y in (got, again):
        torch.testing.assert_close(y, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


def test_fused_ops_refuse_bad_inputs_by_name(mlp_ops):
    x = torch.randn(3, 64, device=DEVICE, dtype=torch.bfloat16)
    wg, wu = (torch.randn(96, 64, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    wd = torch.randn(64, 96, device=DEVICE, dtype=torch.bfloat16)
    cases = [
        ("at most 64 tokens", (torch.randn(65, 64, device=DEVICE, dtype=torch.bfloat16), wg, wu, wd, None, None, None)),
        ("x must be a 2-D", (x[None], wg, wu, wd, None, None, None)),
        ("unit column stride", (torch.randn(64, 3, device=DEVICE, dtype=torch.bfloat16).t(), wg, wu, wd, None, None,
                                None)),
        ("w_up must have shape", (x, wg, wu[:90], wd, None, None, None)),
        ("w_down must have shape", (x, wg, wu, wd.t().contiguous(), None, None, None)),
        ("w_gate must be a contiguous", (x, wg.t().contiguous().t(), wu, wd, None, None, None)),
        ("has dtype torch.float32", (x, wg, wu.float(), wd, None, None, None)),
        ("both be given", (x, wg, wu, wd, torch.zeros(96, device=DEVICE, dtype=torch.bfloat16), None, None)),
        ("b_down must be a contiguous", (x, wg, wu, wd, None, None, torch.zeros(96, device=DEVICE,
                                                                                 dtype=torch.bfloat16))),
    ]
    for message, args in cases:
        with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
            mlp_ops.mlp_decode(*args, "tanh")
    with pytest.raises(ValueError, match="approximate must be"):
        mlp_ops.gate_up_geglu(x, wg, wu, None, None, "sigmoid")


def test_out_of_memory_in_the_fused_path_is_raised_not_hidden(kernel, mlp_ops, fused_on, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(mlp_ops, "run_mlp_decode", no_memory)
    monkeypatch.setattr(mlp_ops, "FUSED_OFF", False)
    mlp = _MLP().to(DEVICE, torch.bfloat16)
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
        kernel.layers.GeGLUMLP.forward(mlp, torch.randn(2, 64, device=DEVICE, dtype=torch.bfloat16))
    assert not mlp_ops.FUSED_OFF, "a transient out-of-memory must not turn the fused path off"


def test_an_inference_call_enters_no_more_python_functions_than_eager(kernel, mlp_ops, fused_on):
    """A plain call inside a host-bound model pays every Python function it enters
    (benchmarks/NOTES.md, sessions 15-17): at one token (the fused path) and past every table's fused
    token counts (F.linear on the projections' weights around the pointwise kernel), the layer's inference call
    enters no more than the module's own eager forward (5 module calls, 3 Linear forwards and the
    activation's, 10 attribute lookups through nn.Module.__getattr__)."""
    layers = kernel.layers
    mlp = _MLP().to(DEVICE, torch.bfloat16)
    for n_rows in (1, mlp_ops.MAX_FUSED_TOKENS + 1):  # a prefill's path: past every table's fused counts
        x = torch.randn(n_rows, 64, device=DEVICE, dtype=torch.bfloat16)
        with torch.no_grad():
            layers.GeGLUMLP.forward(mlp, x), mlp(x)  # warm: plans, compiled kernels
            eager = python_calls(lambda: mlp(x))
            ours = python_calls(lambda: layers.GeGLUMLP.forward(mlp, x))
        # eager's count has the module call around its forward (2 functions), ours the bare forward
        assert len(ours) <= len(eager) - 2, (n_rows, ours, eager)


def test_inference_under_a_dispatch_mode_shows_the_mode_the_ops(kernel, mlp_ops, fused_on):
    """A dispatch mode (a FLOP counter, a tracer) sees the layer's work as ops under no_grad too: the
    inference shortcuts past the op's checks leave the mode the registered op, and the fused path
    is not taken under a mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    mlp = _MLP().to(DEVICE, torch.bfloat16)
    for n_rows in (1, 200):
        x = torch.randn(n_rows, 64, device=DEVICE, dtype=torch.bfloat16)
        seen.clear()
        with torch.no_grad():
            expected = mlp(x)
            with Record():
                got = kernel.layers.GeGLUMLP.forward(mlp, x)
        assert any("geglu_forward" in op for op in seen), (n_rows, seen)
        assert not any("mlp_decode" in op or "gate_up_geglu" in op for op in seen), (n_rows, seen)
        rtol, atol = TOLERANCES[torch.bfloat16]
        torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


def test_inference_mode_then_plain_calls_then_training(kernel, mlp_ops, fused_on):
    """Under torch.inference_mode (what pipelines use), at one token (the fused kernels) and past the
    fused token counts (the pointwise kernel), then the same layer without it and in training: state
    first made under inference mode (plans, workspaces) must not turn later calls into inference-tensor
    errors, and every call matches eager's."""
    layers = kernel.layers
    mlp = _MLP(bias=True).to(DEVICE, torch.bfloat16)
    rtol, atol = TOLERANCES[torch.bfloat16]
    for n_rows in (1, 200):
        x = torch.randn(n_rows, 64, device=DEVICE, dtype=torch.bfloat16)
        with torch.inference_mode():
            got, expected = layers.GeGLUMLP.forward(mlp, x), mlp(x)
        torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
        with torch.no_grad():
            got, expected = layers.GeGLUMLP.forward(mlp, x), mlp(x)
        torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
        xg = x.clone().requires_grad_()
        layers.GeGLUMLP.forward(mlp, xg).float().square().sum().backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all()
        mlp.zero_grad()


def test_middle_token_counts_take_the_gate_up_kernel_where_the_table_says(kernel, mlp_ops, mlp_kernels, fused_on,
                                                                          monkeypatch):
    """Above `max_rows` and up to `gate_up_max_rows` tokens: gate/up fused (several row tiles), then
    the down projection (F.linear on a plain one's weights, a hooked one called as its module, the
    hook seeing h); above that, the unfused path."""
    name = mlp_kernels.measured_table(_device_index()) or "default"  # the table this device reads
    table = dict(mlp_kernels.MLP_LAUNCH_TABLES[name], max_rows=16, gate_up_max_rows=96)
    monkeypatch.setitem(mlp_kernels.MLP_LAUNCH_TABLES, name, table)
    calls = _count_fused(mlp_ops, monkeypatch, "gate_up_geglu_impl")
    downs = _count_fused(mlp_ops, monkeypatch, "run_mlp_decode")
    mlp = _MLP().to(DEVICE, torch.bfloat16)
    seen = []
    mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    for t, fused in ((12, "both"), (70, "gate_up"), (97, None)):
        x = torch.randn(t, 64, device=DEVICE, dtype=torch.bfloat16)
        before = (len(calls), len(downs))
        with torch.no_grad():
            got = kernel.layers.GeGLUMLP.forward(mlp, x)
            expected = mlp(x)
        # The hook on down_proj keeps the split-K kernel off: gate/up alone at 12 tokens too.
        assert len(calls) - before[0] == (fused is not None), f"T={t}"
        assert len(downs) == before[1] == 0
        rtol, atol = TOLERANCES[torch.bfloat16]
        torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())
    assert seen == [12, 12, 70, 70, 97, 97], "the down projection's hook sees every call"
    plain = _MLP(bias=True).to(DEVICE, torch.bfloat16)
    x = torch.randn(70, 64, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = plain(x)
        called = []
        with monkeypatch.context() as patch:
            linear_forward = nn.Linear.forward
            # On the class: the down projection stays plain, so F.linear on its weights replaces the call.
            patch.setattr(nn.Linear, "forward", lambda m, i: called.append(i.shape) or linear_forward(m, i))
            got = kernel.layers.GeGLUMLP.forward(plain, x)
    assert called == [], "a plain down projection after the gate/up kernel should not be called as a module"
    torch.testing.assert_close(got, expected, rtol=4 * rtol, atol=4 * atol * expected.abs().max().item())


@pytest.mark.warms_up
@pytest.mark.skipif(not HAS_CUDA, reason="the interpreter compiles nothing: no handle to keep")
def test_plans_after_a_shapes_first_call_launch_directly(mlp_kernels):
    """A new token count after the shape's first call gets plans holding the compiled kernels of
    the warm-up, so even its first launch skips Triton's JIT call (the first-call bar)."""
    device_index = torch.cuda.current_device()
    hidden, inter = 256, 640
    # fp16 first: its kernels share the bf16 ones' launch arguments (a plan holds no pointer), and
    # a bf16 plan must not get them (an fp32 kernel once did: garbage out).
    for dtype in (torch.float16, torch.bfloat16):
        mlp_kernels.decode_plans(1, hidden, inter, hidden, False, False, True, dtype, device_index)
    x = torch.randn(40, hidden, device="cuda", dtype=torch.bfloat16)
    w = [(torch.randn(*s, device="cuda") / s[1] ** 0.5).to(torch.bfloat16) for s in
         ((inter, hidden), (inter, hidden), (hidden, inter))]
    y = mlp_kernels.run_mlp_decode(x, hidden, *w, None, None, None, True, device_index)
    ref = F.linear(F.gelu(F.linear(x, w[0]), approximate="tanh") * F.linear(x, w[1]), w[2])
    torch.testing.assert_close(y, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
    both_rows, gate_up_rows = mlp_kernels.max_rows(device_index)  # what the warm-up covers on this GPU
    for n_rows in (3, 17, 40, 100):
        if n_rows <= both_rows:
            gate_up, down, _ = mlp_kernels.decode_plans(n_rows, hidden, inter, hidden, False, False, True,
                                                        torch.bfloat16, device_index)
            assert gate_up.handles[1] is not None and down.handles[1] is not None
        if n_rows <= gate_up_rows:
            assert mlp_kernels.table_gate_up_plan(n_rows, hidden, inter, hidden, inter, False, True, torch.bfloat16,
                                                  device_index).handles[1] is not None


@pytest.mark.warms_up
@pytest.mark.skipif(not HAS_CUDA, reason="the interpreter compiles nothing")
def test_a_new_shape_of_the_same_launch_rules_compiles_nothing(mlp_kernels):
    """The widths H and I are runtime arguments: after one shape's first call, shapes whose launch
    rules pick the same configs (on the H200 table: H below 3072, I above 10240, multiples of
    512) run the binaries already compiled at every token count, fused and gate/up alone."""
    pointwise = importlib.import_module(mlp_kernels.__name__.rsplit(".", 1)[0] + ".pointwise")
    kernels = (mlp_kernels._gate_up_geglu_kernel, mlp_kernels._down_split_k_kernel, pointwise._geglu_forward_kernel)
    device_index = torch.cuda.current_device()
    both_rows, gate_up_rows = mlp_kernels.max_rows(device_index)

    def check(hidden, inter, n_rows):
        x = torch.randn(n_rows, hidden, device="cuda", dtype=torch.bfloat16)
        w = [(torch.randn(*s, device="cuda") / s[1] ** 0.5).to(torch.bfloat16) for s in
             ((inter, hidden), (inter, hidden), (hidden, inter))]
        h = F.gelu(F.linear(x, w[0]), approximate="tanh") * F.linear(x, w[1])
        if n_rows <= both_rows:
            got, ref = mlp_kernels.run_mlp_decode(x, hidden, *w, None, None, None, True, device_index), F.linear(h, w[2])
        else:
            got, ref = torch.empty_like(h), h
            mlp_kernels.launch_gate_up_geglu(x, w[0], w[1], None, None, got, True)
        torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())

    check(256, 10752, 1)
    before = compiled_binaries(*kernels)
    for hidden, inter in ((512, 12288), (384, 16384)):
        for n_rows in (1, 20, 50, gate_up_rows):
            check(hidden, inter, n_rows)
    assert compiled_binaries(*kernels) == before


def test_warmed_kernels_are_found_by_dtype(mlp_kernels, monkeypatch):
    """The cache of warmed kernels answers a plan only with a kernel compiled for its dtype: a
    plan's launch arguments hold no pointer, so fp16 and bf16 plans of one shape look alike (a bf16
    plan once got the fp32 kernel of its shape on the GPU, and computed garbage)."""
    launch = importlib.import_module(mlp_kernels.__name__.rsplit(".", 1)[0] + ".launch")
    plan_ = mlp_kernels.gate_up_launch(16, 64, 96, 64, 96, 0, False, True, (16, 32, 32, 4, 3), torch.bfloat16)
    monkeypatch.setattr(launch, "_warm_handles",
                        {mlp_kernels.specialisation(plan_, torch.float16, 0): "fp16 kernel"})
    assert mlp_kernels._warm_handle(plan_, torch.bfloat16, 0).handles == [None, None]
    launch._warm_handles[mlp_kernels.specialisation(plan_, torch.bfloat16, 0)] = "bf16 kernel"
    assert mlp_kernels._warm_handle(plan_, torch.bfloat16, 0).handles[1][:2] == ("bf16 kernel", 0)


# Shared memory per SM a block may take: Hopper (the measured H200 table) and, for the tables of
# unmeasured GPUs, the smallest of recent data-center and consumer parts (sm_86 / sm_89).
_SMEM_LIMIT = {"H200": 232448, "default": 101376}


@pytest.mark.parametrize("name", sorted(_SMEM_LIMIT))
def test_launch_rules_fit_in_shared_memory(mlp_kernels, monkeypatch, name):
    """Each rule's pipeline buffers (num_stages copies of its operand tiles) fit the GPU it is for,
    at every token count it serves (a 64-row tile with a 16-row config once asked for 240 KB and
    failed to launch). An estimate: Triton may add a little for layouts, which the limits leave."""
    monkeypatch.setattr(mlp_kernels, "measured_table", lambda device_index: None if name == "default" else name)
    limit = _SMEM_LIMIT[name]
    for rows in (1, 16, 17, 32, 33, 64, 65, 128):
        for hidden, inter in ((768, 3072), (2048, 16384), (2560, 10240), (3584, 14336), (8192, 28672)):
            bucket = mlp_kernels._rows_bucket(rows)
            block_t, block_i, block_k, _, stages = mlp_kernels._rule(0, "gate_up", hidden, inter, bucket)
            gate_up_bytes = stages * (block_t + 2 * block_i) * block_k * 2
            assert gate_up_bytes <= limit, (name, rows, hidden, inter, "gate_up", gate_up_bytes)
            if rows <= mlp_kernels.MAX_ROWS:
                block_n, block_kd, _, _, stages_d = mlp_kernels._rule(0, "down", hidden, inter, bucket)
                down_bytes = stages_d * (mlp_kernels.row_tile(rows) + block_n) * block_kd * 2
                assert down_bytes <= limit, (name, rows, hidden, inter, "down", down_bytes)

