"""GeGLU workloads in the `kernels benchmark` format (shipped with each release on the Hub).

    kernels benchmark geglu-kernels/geglu --version 2     # the published kernel
    kernels benchmark ./                                   # a local checkout after scripts/build_variants.py

Each workload writes its result to self.out; verify_* returns the eager PyTorch reference. Only
the public API is used: this file ships with each version, outside the versioning guard's view.
On a GPU: bf16, T=2048 tokens, I=16384 (a 2B-class model's MLP), and one decode token through the
MLP layer (the fused decode kernels on a GPU with a measured launch table); on a CPU a small fp32 case.
"""

import torch
import torch.nn.functional as F
from kernels.benchmark import Benchmark


class GeGLUBenchmark(Benchmark):
    seed = 0

    def setup(self):
        on_gpu = self.device != "cpu"
        self.dtype = torch.bfloat16 if on_gpu else torch.float32
        tokens, inter, hidden = (2048, 16384, 2048) if on_gpu else (64, 1024, 256)
        opts = dict(device=self.device, dtype=self.dtype)
        self.gate = torch.randn(tokens, inter, **opts)
        self.up = torch.randn(tokens, inter, **opts)
        self.gate_leaf = self.gate.clone().requires_grad_()
        self.up_leaf = self.up.clone().requires_grad_()
        self.x = torch.randn(tokens, 2 * inter, **opts)
        self.grad = torch.randn(tokens, inter, **opts)
        self.hidden = torch.randn(tokens, hidden, **opts)
        self.mlp = _GemmaLikeMLP(hidden, inter).to(**opts)
        self.token = torch.randn(1, hidden, **opts)
        with torch.no_grad():
            # Outputs below 1 in magnitude: one bf16 ulp (the fused path sums in another order than
            # cuBLAS) stays under the harness's fixed absolute tolerance of 1e-2.
            self.mlp.down_proj.weight.mul_(0.25)
        self.out = torch.empty(tokens, inter, **opts)

    def benchmark_forward_tanh(self):
        self.out = self.kernel.geglu(self.gate, self.up, approximate="tanh")

    def verify_forward_tanh(self):
        return F.gelu(self.gate, approximate="tanh") * self.up

    def benchmark_forward_exact(self):
        self.out = self.kernel.geglu(self.gate, self.up, approximate="none")

    def verify_forward_exact(self):
        return F.gelu(self.gate) * self.up

    def benchmark_packed_gelu_tanh_and_mul(self):
        self.kernel.gelu_tanh_and_mul(self.out, self.x)

    def verify_packed_gelu_tanh_and_mul(self):
        d = self.x.shape[-1] // 2
        return F.gelu(self.x[:, :d], approximate="tanh") * self.x[:, d:]

    def benchmark_forward_backward_d_up(self):
        # Forward and backward through autograd; d up = dh * gelu(gate), d gate comes alongside.
        h = self.kernel.geglu(self.gate_leaf, self.up_leaf, approximate="tanh")
        _, self.out = torch.autograd.grad(h, (self.gate_leaf, self.up_leaf), self.grad)

    def verify_forward_backward_d_up(self):
        return self.grad * F.gelu(self.gate, approximate="tanh")

    def benchmark_mlp_forward(self):
        with torch.no_grad():
            self.out = self.kernel.layers.GeGLUMLP.forward(self.mlp, self.hidden)

    def verify_mlp_forward(self):
        with torch.no_grad():
            return self.mlp(self.hidden)

    def benchmark_mlp_decode(self):
        with torch.no_grad():
            self.out = self.kernel.layers.GeGLUMLP.forward(self.mlp, self.token)

    def verify_mlp_decode(self):
        with torch.no_grad():
            return self.mlp(self.token)


class _GemmaLikeMLP(torch.nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.up_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, hidden, bias=False)
        self.act_fn = torch.nn.GELU(approximate="tanh")
        for lin in (self.gate_proj, self.up_proj, self.down_proj):
            torch.nn.init.normal_(lin.weight, std=lin.in_features**-0.5)

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
