"""Which formula does eager's exact GELU follow in 16-bit on this GPU? Fractions of fp16/bf16
outputs that differ from F.gelu(x) for candidate fp32/fp64 evaluations."""
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from common import load_local_build  # noqa: E402

k = load_local_build()
for dtype in (torch.float16, torch.bfloat16):
    x = (2 * torch.randn(1 << 22, device="cuda")).to(dtype)
    ref = F.gelu(x)
    xf, xd = x.float(), x.double()
    cands = {
        "F.gelu(fp32) rounded": F.gelu(xf),
        "fp32 x*0.5*(1+erf)": xf * 0.5 * (1 + torch.erf(xf * 0.70710677)),
        "fp32 0.5*x*erfc(-x/sqrt2)": 0.5 * xf * torch.erfc(-xf * 0.70710677),
        "fp64 exact": xd * 0.5 * (1 + torch.erf(xd / math.sqrt(2))),
        "kernel": k.geglu(x, torch.ones_like(x), approximate="none"),
        "kernel tanh vs F.gelu tanh": None,
    }
    for name, val in cands.items():
        if val is None:
            val, r = k.geglu(x, torch.ones_like(x), approximate="tanh"), F.gelu(x, approximate="tanh")
        else:
            r = ref
        print(f"{str(dtype):15s} {name:30s} mismatch {(val.to(dtype) != r).float().mean().item():.2e}")
