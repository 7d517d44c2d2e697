"""The source layout and the built artifact, checked with the parsers kernels itself uses."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import build_variants  # on sys.path through conftest
from conftest import CONFIG, REPO_ID, ROOT


def test_build_toml_parses_with_the_real_parser():
    from kernels._rust import Backend, Build

    build = Build.open(ROOT)
    assert set(build.general.backends) == {Backend.CPU, Backend.CUDA, Backend.ROCm, Backend.XPU}
    assert CONFIG.name == "geglu" and CONFIG.version >= 1 and CONFIG.license == "Apache-2.0"
    assert "/" in CONFIG.repo_id and set(CONFIG.pyext) == {"py", "json"}


def test_flake_nix_parses():
    nix = shutil.which("nix-instantiate")
    if nix is None:
        pytest.fail("nix-instantiate not found: install Debian's nix-bin (.ci/run does)")
    result = subprocess.run([nix, "--parse", str(ROOT / "flake.nix")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (ROOT / "flake.nix").read_text()
    assert 'kernel-builder.url = "github:huggingface/kernels"' in text
    assert "genKernelFlakeOutputs" in text and "pythonCheckInputs" in text


def test_kernel_src_entry_point_is_the_shipped_package_folder():
    assert (ROOT / "kernel_src").resolve() == (ROOT / "torch-ext" / "geglu" / "kernel_src").resolve()
    assert not (ROOT / "pyproject.toml").exists() and not (ROOT / "setup.py").exists()


def test_no_generated_files_in_source():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if Path(f).name == "_ops.py" or f.startswith("build/")]


def test_every_variant_is_complete(build_dir):
    from kernels._rust import Digest, DigestAlgorithm, Metadata

    variants = sorted(p.name for p in build_dir.iterdir() if p.is_dir())
    assert variants == sorted(f"torch-{b}" for b in CONFIG.backends)
    shipped = sorted(
        str(p.relative_to(CONFIG.package_dir)) for p in CONFIG.package_dir.rglob("*")
        if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    )
    for variant in variants:
        path = build_dir / variant
        meta_raw = json.loads((path / "metadata.json").read_text())
        meta = Metadata.read_from_file(path / "metadata.json")
        backend = variant.removeprefix("torch-")
        assert re.fullmatch(rf"_geglu_{backend}_[0-9a-f]{{7}}(_dirty)?", meta.id)
        assert meta_raw["backend"] == {"type": backend} and meta.version == CONFIG.version
        assert meta_raw["python-depends"] == []
        assert f'torch.ops.{meta.id}' in (path / "_ops.py").read_text()
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        assert files == sorted(shipped + ["_ops.py", "api_manifest.json", "metadata.json"])
        # The recorded digest is what anyone re-hashing the variant gets.
        Digest.hash_variant(DigestAlgorithm.SHA256, path).validate(meta.digest)
        assert set(meta.digest.files) == set(files) - {"metadata.json"}


def test_card(build_dir):
    card = (build_dir / "CARD.md").read_text()
    assert card.startswith("---\nlibrary_name: kernels\nlicense: apache-2.0\n")
    assert f'get_kernel("{REPO_ID}", version={CONFIG.version}, trust_remote_code=True)' in card
    for name in ("geglu", "gelu_tanh_and_mul", "gelu_and_mul", "GeGLUMLP", "GeluTanhAndMul", "GeluAndMul"):
        assert f"`{name}" in card


def test_get_kernel_through_local_kernels(kernel, build_dir):
    variant = "torch-cuda" if torch.cuda.is_available() else "torch-cpu"
    assert Path(kernel.__file__).parent == build_dir / variant
    assert kernel.__all__ == ["geglu", "gelu_tanh_and_mul", "gelu_and_mul", "layers", "layer_mapping"]


def test_get_local_kernel_accepts_root_and_variant(build_dir):
    from kernels import get_local_kernel

    variant = "torch-cuda" if torch.cuda.is_available() else "torch-cpu"
    for path in (build_dir, build_dir / variant):
        k = get_local_kernel(path)
        assert callable(k.geglu) and hasattr(k.layers, "GeGLUMLP")


def test_dirty_tree_is_marked(tmp_path):
    """A change to a source path makes the id end in _dirty; a clean checkout does not."""
    import build_variants

    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    if not (repo / "build.toml").exists():
        pytest.skip("source not committed yet")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    commit, dirty = build_variants.git_state(repo)
    assert not dirty
    (repo / "torch-ext" / "geglu" / "layers.py").write_text("# changed\n", encoding="utf-8")
    assert build_variants.git_state(repo) == (commit, True)
    cfg = build_variants.read_build_toml(repo)
    assert build_variants.variant_id(cfg, "cuda", commit, True) == f"_geglu_cuda_{commit[:7]}_dirty"
    del env


def test_kernels_benchmark_runs_on_a_local_build(build_dir, tmp_path):
    """`kernels benchmark ./<repo>` finds benchmarks/benchmark*.py and verifies every workload
    against eager (the CLI exits non-zero on a failed verification)."""
    repo = tmp_path / "repo"
    shutil.copytree(build_dir, repo / "build")
    shutil.copytree(ROOT / "benchmarks", repo / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kernels"), "benchmark", "./repo", "--iterations", "3", "--warmup", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for workload in ("forward_tanh", "forward_exact", "packed_gelu_tanh_and_mul", "forward_backward_d_up", "mlp_forward"):
        assert workload in result.stdout + result.stderr


def test_shipped_benchmark_uses_only_the_public_api():
    """benchmarks/benchmark*.py ships with every version but outside the API manifest: every name
    it reaches through the kernel must be in __all__ (or a layer class)."""
    import ast

    names = build_variants.api_manifest(CONFIG.package_dir)
    public = set(names["all"])
    for path in (ROOT / "benchmarks").glob("benchmark*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self.kernel":
                assert node.attr in public, f"{path.name}: self.kernel.{node.attr} is not public"
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self.kernel.layers":
                assert node.attr in names["layers"], f"{path.name}: layers.{node.attr} is not a shipped layer"
