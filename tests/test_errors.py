"""Bad input gets a clear ValueError/TypeError that names the problem."""

import pytest
import torch


def test_mismatched_shapes(kernel):
    with pytest.raises(ValueError, match=r"same shape.*\(3, 4\).*\(3, 5\)"):
        kernel.geglu(torch.randn(3, 4), torch.randn(3, 5))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.float64])
def test_unsupported_dtypes(kernel, dtype):
    with pytest.raises(TypeError, match=f"gate has dtype {dtype}"):
        kernel.geglu(torch.ones(3, 4, dtype=dtype), torch.ones(3, 4, dtype=dtype))
    with pytest.raises(TypeError, match=f"x has dtype {dtype}"):
        kernel.gelu_and_mul(torch.empty(3, 2), torch.ones(3, 4, dtype=dtype))


def test_mixed_dtypes(kernel):
    with pytest.raises(TypeError, match="gate has dtype torch.float32 but up has dtype torch.bfloat16"):
        kernel.geglu(torch.randn(3, 4), torch.randn(3, 4, dtype=torch.bfloat16))


def test_mixed_devices(kernel):
    meta = torch.randn(3, 4, device="meta")
    with pytest.raises(ValueError, match="gate is on cpu but up is on meta"):
        kernel.geglu(torch.randn(3, 4), meta)


def test_not_a_tensor(kernel):
    with pytest.raises(TypeError, match="up must be a torch.Tensor, got list"):
        kernel.geglu(torch.randn(2), [1.0, 2.0])


def test_zero_dim(kernel):
    with pytest.raises(ValueError, match="0-d"):
        kernel.geglu(torch.tensor(1.0), torch.tensor(2.0))


def test_bad_approximate(kernel):
    with pytest.raises(ValueError, match="approximate must be 'tanh' or 'none'.*'erf'"):
        kernel.geglu(torch.randn(2, 4), torch.randn(2, 4), approximate="erf")


def test_odd_packed_width(kernel):
    with pytest.raises(ValueError, match=r"must be even.*\(3, 7\)"):
        kernel.gelu_tanh_and_mul(torch.empty(3, 3), torch.randn(3, 7))
    with pytest.raises(ValueError, match="must be even"):
        kernel.layers.GeluAndMul()(torch.randn(3, 7))


def test_out_wrong_shape(kernel):
    with pytest.raises(ValueError, match=r"out must have shape \(3, 4\).*got \(3, 8\)"):
        kernel.gelu_and_mul(torch.empty(3, 8), torch.randn(3, 8))


def test_out_wrong_dtype(kernel):
    with pytest.raises(TypeError, match="out has dtype torch.float16 but x has dtype torch.float32"):
        kernel.gelu_tanh_and_mul(torch.empty(3, 4, dtype=torch.float16), torch.randn(3, 8))


def test_out_wrong_layout(kernel):
    with pytest.raises(ValueError, match="unit stride"):
        kernel.gelu_tanh_and_mul(torch.empty(4, 3).t(), torch.randn(3, 8))


def test_out_overlapping_input(kernel):
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="must not overlap"):
        kernel.gelu_tanh_and_mul(x[:, :4], x)


def test_unknown_activation_in_layer(kernel):
    class SiluMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = torch.nn.Linear(4, 8)
            self.up_proj = torch.nn.Linear(4, 8)
            self.down_proj = torch.nn.Linear(8, 4)
            self.act_fn = torch.nn.SiLU()

    module = SiluMLP()
    with pytest.raises(ValueError, match="activation SiLU is not a GELU"):
        kernel.layers.GeGLUMLP.forward(module, torch.randn(2, 4))
