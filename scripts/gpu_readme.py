#!/usr/bin/env python3
"""Run README.md's GPU-marked blocks (`<!-- readme-test: gpu ... -->`) on a GPU machine, as
written, offline: the kernel comes from a Hub-cache snapshot of a fresh build (refs/main and
refs/v<version>, symlinked files as the cache holds them) and the model name the block loads
from a tiny random Gemma saved into the cache under that name. Prints each block's output;
exit status 0 only if every block ran."""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import build_variants  # noqa: E402
from test_readme import blocks  # noqa: E402


def cache_repo(hub: Path, kind: str, repo_id: str, files: dict[str, Path], refs: list[str]) -> None:
    """A Hub-cache entry: blobs/ with the contents, snapshots/<commit>/ of symlinks, refs/."""
    base = hub / f"{kind}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for rel, src in files.items():
        data = src.read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (base / "refs" / ref).write_text(commit)


def main() -> int:
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    found = [b for b in blocks((ROOT / "README.md").read_text(encoding="utf-8")) if b["mark"].startswith("gpu")]
    cfg = build_variants.read_build_toml(ROOT)
    work = Path(tempfile.mkdtemp(prefix="geglu-readme-gpu-"))
    hub = work / "hf-home" / "hub"
    build = work / "build"
    build_variants.build(build)
    cache_repo(hub, "kernel", cfg.repo_id, {f"build/{p.relative_to(build)}": p for p in build.rglob("*") if p.is_file()},
               ["main", f"v{cfg.version}"])
    names = sorted({n for b in found for n in re.findall(r'from_pretrained\("([^"]+)"', b["body"])})
    for name in names:
        torch.manual_seed(0)
        model_dir = work / "models" / name
        GemmaForCausalLM(GemmaConfig(vocab_size=256, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=64)).save_pretrained(model_dir)
        cache_repo(hub, "model", name, {p.name: p for p in model_dir.iterdir() if p.is_file()}, ["main"])
    env = {**os.environ, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_KERNELS", None)
    status = 0
    for b in found:
        print(f"--- README.md block at line {b['line']} ({b['mark']})", flush=True)
        run = subprocess.run([sys.executable, "-c", b["body"]] if b["lang"] == "python" else ["bash", "-c", b["body"]],
                             env=env, cwd=ROOT, capture_output=True, text=True)
        print(run.stdout[-3000:] + run.stderr[-3000:])
        print(f"--- exit status {run.returncode}")
        status |= run.returncode != 0
    return status


if __name__ == "__main__":
    sys.exit(main())
