"""Hub layers through kernels.kernelize: outputs and gradients match the eager module."""

import copy

import pytest
import torch
import torch.nn as nn

from conftest import CONFIG, HAS_CUDA, REPO_ID
from tiny_models import GatedGeluMLP

DEVICE = "cuda" if HAS_CUDA else "cpu"


class TinyGeGLUMLP(GatedGeluMLP):
    """A GemmaMLP-shaped module, tagged for kernelize like a transformers class would be (a
    subclass: the tags stay off the shared module)."""


class PackedGeGLU(nn.Module):
    def __init__(self, approximate):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        d = x.shape[-1] // 2
        return nn.functional.gelu(x[..., :d], approximate=self.approximate) * x[..., d:]


@pytest.fixture
def tagged():
    from kernels import replace_kernel_forward_from_hub

    replace_kernel_forward_from_hub(TinyGeGLUMLP, "GeGLUMLP")
    replace_kernel_forward_from_hub(PackedGeGLU, "GeluTanhAndMul")
    yield
    for cls in (TinyGeGLUMLP, PackedGeGLU):
        del cls.kernel_layer_name, cls.kernel_condition


def _repositories(build_dir, monkeypatch):
    from kernels import LayerRepository, LocalLayerRepository

    yield "LocalLayerRepository", lambda name: LocalLayerRepository(repo_path=build_dir, layer_name=name)
    monkeypatch.setenv("LOCAL_KERNELS", f"{REPO_ID}={build_dir}")
    yield "LayerRepository", lambda name: LayerRepository(REPO_ID, layer_name=name, revision=f"v{CONFIG.version}")


def _check_training_step(model, eager, x, rtol=1e-5, atol=1e-5):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = model(x1), eager(x2)
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=rtol, atol=atol)
    for (name, p), p_ref in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("bias", [False, True])
def test_kernelize_geglu_mlp(tagged, kernel, build_dir, monkeypatch, approximate, bias):
    from kernels import Mode, kernelize, use_kernel_mapping

    for how, repository in _repositories(build_dir, monkeypatch):
        eager = nn.Sequential(TinyGeGLUMLP(approximate=approximate, bias=bias), nn.LayerNorm(48)).to(DEVICE)
        model = copy.deepcopy(eager)
        with use_kernel_mapping({"GeGLUMLP": {DEVICE: repository("GeGLUMLP")}}, inherit_mapping=False):
            kernelize(model, mode=Mode.TRAINING, device=DEVICE)
        assert model[0].forward.__func__.__qualname__ == "GeGLUMLP.forward", how
        _check_training_step(model, eager, torch.randn(3, 7, 48, device=DEVICE))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_kernelize_packed_layers(tagged, kernel, build_dir, monkeypatch, approximate):
    from kernels import Mode, kernelize, use_kernel_mapping

    layer = {"tanh": "GeluTanhAndMul", "none": "GeluAndMul"}[approximate]
    for how, repository in _repositories(build_dir, monkeypatch):
        eager = nn.Sequential(nn.Linear(32, 2 * 72), PackedGeGLU(approximate), nn.Linear(72, 32)).to(DEVICE)
        model = copy.deepcopy(eager)
        with use_kernel_mapping({"GeluTanhAndMul": {DEVICE: repository(layer)}}, inherit_mapping=False):
            kernelize(model, mode=Mode.TRAINING, device=DEVICE)
        assert model[1].forward.__func__.__qualname__ == f"{layer}.forward", how
        _check_training_step(model, eager, torch.randn(11, 32, device=DEVICE))


def test_layers_obey_the_kernels_layer_rules(kernel):
    """The validator kernelize runs on every layer it loads."""
    from kernels.layer.layer import _validate_layer

    _validate_layer(check_cls=TinyGeGLUMLP, cls=kernel.layers.GeGLUMLP, repo="geglu")
    _validate_layer(check_cls=PackedGeGLU, cls=kernel.layers.GeluTanhAndMul, repo="geglu")
    _validate_layer(check_cls=PackedGeGLU, cls=kernel.layers.GeluAndMul, repo="geglu")
    for layer in (kernel.layers.GeGLUMLP, kernel.layers.GeluTanhAndMul, kernel.layers.GeluAndMul):
        assert layer.has_backward and layer.can_torch_compile


def test_layer_activation_comes_from_the_module(kernel):
    """Exact-erf modules get the exact kernel: fp32 outputs tell the variants apart."""
    torch.manual_seed(0)
    for approximate in ("tanh", "none"):
        module = TinyGeGLUMLP(approximate=approximate).to(DEVICE)
        x = 3 * torch.randn(64, 48, device=DEVICE)
        torch.testing.assert_close(kernel.layers.GeGLUMLP.forward(module, x), module(x))


def test_a_float64_model_computes_as_before_kernelize(kernel):
    """The kernels take fp32/fp16/bf16; a model run in float64 (gradient checks do this) gets
    eager's math from every layer, forward and backward, instead of an error it never raised."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 48, device=DEVICE, dtype=torch.float64)
    for approximate in ("tanh", "none"):
        module = TinyGeGLUMLP(approximate=approximate, bias=True).to(DEVICE, torch.float64)
        ours = copy.deepcopy(module)
        ours.forward = lambda h, m=ours: kernel.layers.GeGLUMLP.forward(m, h)
        _check_training_step(ours, module, x, rtol=1e-12, atol=1e-12)
        packed = kernel.layers.GeluTanhAndMul if approximate == "tanh" else kernel.layers.GeluAndMul
        xp = x.clone().requires_grad_()
        y = packed.forward(nn.Module(), xp)
        torch.testing.assert_close(y, PackedGeGLU(approximate)(x), rtol=1e-12, atol=1e-12)
        y.sum().backward()
        assert xp.grad is not None and xp.grad.dtype == torch.float64
