"""The layers' training path: F.linear for gate and up, then the GeGLU and the down projection as
one autograd node (`mlp_ops._GeGLUDown`), taken only where it computes what the modules would; its
gradients against float64 and against the modules' own autograd, and what it saves for the backward
against the modules' path."""

import importlib
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import HAS_CUDA, TOLERANCES
from ddp_check import autograd_node_names  # scripts/, on the path through conftest
from tiny_models import GatedGeluMLP

DEVICE = "cuda" if HAS_CUDA else "cpu"  # CPU: the pointwise kernels run in the Triton interpreter


@pytest.fixture(scope="module")
def mlp_ops(kernel):
    return importlib.import_module(kernel.__name__ + ".mlp_ops")


def _fresh(hidden, inter, dtype, bias=False, approximate="tanh"):
    mlp = GatedGeluMLP(hidden, inter, approximate, bias).to(DEVICE)
    with torch.no_grad():  # biases of the size of the products' terms, not nn.Linear's tiny default
        for p in mlp.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.25)
    return mlp.to(dtype)


def _float64_grads(mlp, x, dy, approximate):
    xd = x.detach().double().requires_grad_(True)
    params = {n: p.detach().double().requires_grad_(True) for n, p in mlp.named_parameters()}
    g = F.linear(xd, params["gate_proj.weight"], params.get("gate_proj.bias"))
    u = F.linear(xd, params["up_proj.weight"], params.get("up_proj.bias"))
    y = F.linear(F.gelu(g, approximate=approximate) * u, params["down_proj.weight"], params.get("down_proj.bias"))
    grads = torch.autograd.grad(y, [xd, *params.values()], dy.double())
    return y, dict(zip(["x", *params], grads))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [((2, 3), 40, 72), ((37,), 64, 200), ((1, 130), 24, 56)], ids=str)
def test_layer_trains_as_one_node_matching_float64(kernel, mlp_ops, dtype, shape):
    lead, hidden, inter = shape
    for approximate, bias in itertools.product(("tanh", "none"), (False, True)):
        mlp = _fresh(hidden, inter, dtype, bias, approximate)
        x = torch.randn(*lead, hidden, device=DEVICE).to(dtype).requires_grad_(True)
        y = kernel.layers.GeGLUMLP.forward(mlp, x)
        assert "_GeGLUDownBackward" in autograd_node_names(y), "training should take the GeGLU+down node"
        dy = torch.randn_like(y)
        y.backward(dy)
        ref_y, ref = _float64_grads(mlp, x, dy, approximate)
        what = f"{approximate} bias={bias}"
        # As a whole (a gradient sums T or I terms whose signs cancel, so single elements can sit
        # far below the terms' sizes): the rounding of g, u, h and dh to the dtype, as eager's.
        bound = 4 * TOLERANCES[dtype][0]
        leaves = [("x", x), *mlp.named_parameters()]
        for name, got, want in [("y", y, ref_y), *[(n, p.grad, ref[n]) for n, p in leaves]]:
            assert got is not None, f"{name}: no gradient"
            rel = ((got.double() - want).norm() / want.norm()).item()
            assert rel < bound, f"{name} {what}: relative error {rel:.2e} (bound {bound:.2e})"


def test_training_node_matches_the_modules_autograd(kernel, mlp_ops):
    """Same products as nn.Linear's forward and backward, same GeGLU kernels: the one-node path and
    the modules' path agree to rounding, for x and every parameter, with some frozen."""
    dtype = torch.bfloat16
    for frozen in ((), ("up_proj.weight",), ("gate_proj.weight", "down_proj.bias")):
        mlp = _fresh(48, 136, dtype, bias=True)
        for name, p in mlp.named_parameters():
            p.requires_grad_(name not in frozen)
        x = torch.randn(5, 7, 48, device=DEVICE, dtype=dtype, requires_grad=True)
        y = kernel.layers.GeGLUMLP.forward(mlp, x)
        assert "_GeGLUDownBackward" in autograd_node_names(y)
        dy = torch.randn_like(y)
        y.backward(dy)
        got = {n: (None if p.grad is None else p.grad.clone()) for n, p in [("x", x), *mlp.named_parameters()]}
        x.grad = None
        mlp.zero_grad(set_to_none=True)
        expected_y = mlp(x)
        expected_y.backward(dy)
        rtol, atol = TOLERANCES[dtype]
        torch.testing.assert_close(y, expected_y, rtol=rtol, atol=atol * expected_y.abs().max().item())
        for name, p in [("x", x), *mlp.named_parameters()]:
            if name in frozen:
                assert got[name] is None and p.grad is None, f"{name} is frozen: no gradient"
                continue
            torch.testing.assert_close(got[name], p.grad, rtol=4 * rtol, atol=4 * atol * p.grad.abs().max().item(),
                                       msg=lambda m, n=name: f"{n}: {m}")


def test_frozen_weights_and_an_input_without_grad(kernel, mlp_ops):
    """Only what requires grad gets a gradient: frozen weights (adapters train beside them) with an
    input requiring grad, and trained weights with an input that does not."""
    mlp = _fresh(32, 80, torch.float32)
    mlp.requires_grad_(False)
    x = torch.randn(6, 32, device=DEVICE, requires_grad=True)
    y = kernel.layers.GeGLUMLP.forward(mlp, x)
    assert "_GeGLUDownBackward" in autograd_node_names(y)
    y.sum().backward()  # an expanded gradient (stride 0)
    assert x.grad is not None and all(p.grad is None for p in mlp.parameters())
    expected = torch.autograd.grad(mlp(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-5)
    mlp.requires_grad_(True)
    x = torch.randn(6, 32, device=DEVICE)
    kernel.layers.GeGLUMLP.forward(mlp, x).sum().backward()
    assert all(p.grad is not None for p in mlp.parameters())


def test_a_second_backward_raises_and_a_double_backward_matches_eager(kernel, mlp_ops):
    """The backward writes the gradients over its saved g and u: a second backward through the same
    graph must fail loudly (autograd's version check), not compute with gradients as activations.
    A double backward (create_graph: a gradient penalty) goes through eager's ops and matches the
    modules' second derivatives."""
    mlp = _fresh(32, 64, torch.float32, bias=True)
    x = torch.randn(4, 32, device=DEVICE, requires_grad=True)
    y = kernel.layers.GeGLUMLP.forward(mlp, x)
    assert "_GeGLUDownBackward" in autograd_node_names(y)
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    grads = {}
    for name, forward in (("ours", lambda: kernel.layers.GeGLUMLP.forward(mlp, x)), ("eager", lambda: mlp(x))):
        x.grad = None
        mlp.zero_grad(set_to_none=True)
        y = forward()
        (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        (gx * gx).sum().backward()
        grads[name] = [x.grad.clone(), *(p.grad.clone() for p in mlp.parameters())]
    for got, want in zip(grads["ours"], grads["eager"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_training_node_saves_less_than_the_modules_path(kernel, mlp_ops, monkeypatch):
    """Saved for backward: x, g and u (h is recomputed), against the layer's modules path (x, g, u
    and h) and eager's (x, g, gelu(g), u and h)."""
    hidden, inter, t = 64, 256, 96
    mlp = _fresh(hidden, inter, torch.float32)

    def saved_bytes(fn):
        total = []

        def pack(tensor):
            if tensor.data_ptr() not in {p.data_ptr() for p in mlp.parameters()}:  # weights are not activations
                total.append((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = fn()
        return sum(dict(total).values()), y

    x = torch.randn(t, hidden, device=DEVICE, requires_grad=True)
    ours, y = saved_bytes(lambda: kernel.layers.GeGLUMLP.forward(mlp, x))
    assert "_GeGLUDownBackward" in autograd_node_names(y)
    eager, _ = saved_bytes(lambda: mlp(x))
    monkeypatch.setattr(mlp_ops, "_mlp_training", lambda *args: None)
    modules, y = saved_bytes(lambda: kernel.layers.GeGLUMLP.forward(mlp, x))
    assert "_GeGLUDownBackward" not in autograd_node_names(y)
    activation = t * inter * 4
    assert ours == t * hidden * 4 + 2 * activation, ours
    assert (modules, eager) == (ours + activation, ours + 2 * activation), (ours, modules, eager)


def test_training_keeps_the_modules_path_wherever_the_node_would_skip_something(kernel, mlp_ops):
    """Anything on a projection the node would not run (hooks of every kind, a subclass, an active
    dropout, autocast, the packed layout) keeps the modules' path, and what is there runs."""
    def fresh():
        return _fresh(32, 64, torch.float32)

    seen = []
    cases = {
        "backward hook on a projection": lambda m: m.up_proj.register_full_backward_hook(
            lambda mod, gi, go: seen.append("backward")),
        "backward pre-hook on a projection": lambda m: m.down_proj.register_full_backward_pre_hook(
            lambda mod, go: seen.append("backward pre")),
        "forward hook": lambda m: m.gate_proj.register_forward_hook(lambda mod, i, o: seen.append("forward")),
        "active dropout": lambda m: setattr(m, "dropout", nn.Dropout(0.3).train()),
        "weight of another dtype": lambda m: setattr(m.down_proj, "weight", nn.Parameter(
            m.down_proj.weight.detach().double())),
    }
    x = torch.randn(5, 32, device=DEVICE, requires_grad=True)
    for name, prepare in cases.items():
        mlp = fresh()
        prepare(mlp)
        y = kernel.layers.GeGLUMLP.forward(mlp, x) if name != "weight of another dtype" else None
        if y is not None:
            assert "_GeGLUDownBackward" not in autograd_node_names(y), f"{name}: the training node ran"
            y.sum().backward()
        else:  # mixed dtypes: the node declines, the modules raise as nn.Linear does
            with pytest.raises(RuntimeError):
                kernel.layers.GeGLUMLP.forward(mlp, x)
    assert sorted(seen) == ["backward", "backward pre", "forward"], "every hook must have run"
    handle = nn.modules.module.register_module_full_backward_hook(lambda mod, gi, go: None)
    try:
        assert "_GeGLUDownBackward" not in autograd_node_names(kernel.layers.GeGLUMLP.forward(fresh(), x))
    finally:
        handle.remove()
    if HAS_CUDA:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert "_GeGLUDownBackward" not in autograd_node_names(kernel.layers.GeGLUMLP.forward(fresh(), x))


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_gives_the_modules_gradients(kernel, mlp_ops, reentrant, monkeypatch):
    """torch.utils.checkpoint around the layer (transformers' gradient checkpointing): the node's
    saved tensors are recomputed (non-reentrant: through saved-tensor hooks; reentrant: a forward
    without grad, then one with) and the gradients equal the modules' path's."""
    from torch.utils.checkpoint import checkpoint

    taken = []
    original = mlp_ops._mlp_training
    monkeypatch.setattr(mlp_ops, "_mlp_training", lambda *a: (lambda y: taken.append(y is not None) or y)(original(*a)))
    mlp = _fresh(32, 72, torch.float32, bias=True)
    x = torch.randn(2, 5, 32, device=DEVICE, requires_grad=True)
    grads = {}
    for name, forward in (("ours", lambda h: kernel.layers.GeGLUMLP.forward(mlp, h)), ("modules", mlp)):
        x.grad = None
        mlp.zero_grad(set_to_none=True)
        checkpoint(forward, x, use_reentrant=reentrant).square().sum().backward()
        grads[name] = [x.grad.clone(), *(p.grad.clone() for p in mlp.parameters())]
    assert any(taken), "the recomputed forward should take the training node"
    for got, want in zip(grads["ours"], grads["modules"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
