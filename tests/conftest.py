"""Shared fixtures: the kernel is built like kernel-builder builds it and loaded the way
users load it, `kernels.get_kernel(<repo-id>, version=N)` with LOCAL_KERNELS pointing at
the build. Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before triton.jit runs, i.e. before the kernel is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

sys.path.insert(0, str(ROOT / "scripts"))
import build_variants  # noqa: E402

CONFIG = build_variants.read_build_toml(ROOT)
REPO_ID = CONFIG.repo_id

# One tolerance table for every numerics test: (rtol, atol) against a float64 reference.
# fp32: a few fp32 operations of rounding (torch's own fp32 defaults), 40x below the largest
# tanh-vs-erf difference. 16-bit: two roundings to the storage dtype (eager's rounding
# points) cost up to about 1 ulp; the interpreter truncates instead of rounding, one more.
_EPS16 = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
TOLERANCES = {torch.float32: (1e-5, 1e-5)} | {
    dtype: ((2.0 if INTERPRETED else 1.0) * eps, eps) for dtype, eps in _EPS16.items()
}

def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def committed_copy(dest: Path) -> Path:
    """The working tree's files (tracked and untracked-not-ignored, symlinks kept) copied to `dest`
    and committed in a fresh git repository: a kernel author's clean checkout."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if not (src.is_file() or src.is_symlink()):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "import")
    return dest


gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run on the GPU machine)")


def compiled_binaries(*kernels) -> int:
    """How many binaries Triton holds for these JIT kernels over all devices (the first entry of
    each per-device cache: the compiled kernels by specialisation, in Triton 3.6 to 3.9)."""
    return sum(len(caches[0]) for kernel in kernels for caches in kernel.device_caches.values())


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    """A fresh noarch build of the working tree: build/torch-<backend>/ for every backend."""
    out = tmp_path_factory.mktemp("kernel") / "build"
    build_variants.build(out)
    return out


@pytest.fixture(scope="session")
def kernel(build_dir):
    """The kernel as users get it: get_kernel(repo_id, version=N) resolved through LOCAL_KERNELS."""
    from kernels import get_kernel

    previous = os.environ.get("LOCAL_KERNELS")
    os.environ["LOCAL_KERNELS"] = f"{REPO_ID}={build_dir}"
    try:
        yield get_kernel(REPO_ID, version=CONFIG.version)
    finally:
        if previous is None:
            os.environ.pop("LOCAL_KERNELS", None)
        else:
            os.environ["LOCAL_KERNELS"] = previous


@pytest.fixture(params=["triton", "torch"])
def device(request, monkeypatch) -> str:
    """'triton': the Triton kernels (GPU, or the interpreter on CPU). 'torch': the PyTorch
    implementation that plain CPU tensors run."""
    if request.param == "triton":
        return "cuda" if HAS_CUDA else "cpu"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return "cpu"


def assert_close_to_reference(
    actual: torch.Tensor, reference: torch.Tensor, what: str = "", scale: torch.Tensor | None = None
) -> None:
    """actual (in its dtype) against a float64 reference, at the dtype's tolerance.

    scale: the magnitude of the factor a result was multiplied by, where that result can be
    far smaller than the factor (d gate = (dh * u) * gelu'(g), with gelu' crossing zero near
    g = -0.75). The absolute tolerance grows with |scale| (at least 1x): a rounding of gelu'(g)
    costs |dh * u| ulps of it however small the product is.
    """
    rtol, atol = TOLERANCES[actual.dtype]
    reference = reference.double().to(actual.device)
    if scale is None:
        torch.testing.assert_close(actual.double(), reference, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
        return
    allowed = atol * scale.double().abs().clamp_min(1).to(actual.device) + rtol * reference.abs()
    excess = (actual.double() - reference).abs() - allowed
    excess = torch.where(excess.isnan(), torch.inf, excess)
    if excess.numel() and excess.max() > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f"{what}: {(excess > 0).sum()} of {excess.numel()} elements beyond tolerance; worst at flat index "
            f"{i}: {actual.reshape(-1)[i].item()} vs {reference.reshape(-1)[i].item()} (scale {scale.reshape(-1)[i].item()})"
        )


@pytest.fixture(scope="session")
def pointwise(kernel):
    """The loaded kernel's Triton module (launch functions, tile shapes, the kernels themselves)."""
    import importlib

    return importlib.import_module(kernel.__name__ + ".kernel_src.pointwise")
