#!/usr/bin/env python3
"""Build build/torch-<backend>/ for every backend in build.toml, as kernel-builder's noarch
build does, plus build/CARD.md.

Each variant is a copy of torch-ext/<package>/ (files whose extension is listed in
[torch-noarch].pyext), a generated _ops.py whose op namespace is the metadata `id`
(_<package>_<backend>_<7 hex of HEAD>[_dirty]), api_manifest.json (the public API it ships,
for publish.py's versioning guard), and metadata.json with a sha256 digest of the variant's
files.

    python scripts/build_variants.py [--out build]
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The paths kernel-builder's Nix source set sees; a change to any of them makes a dirty build.
SOURCE_PATHS = ("build.toml", "flake.nix", "torch-ext", "tests")

OPS_TEMPLATE = '''import torch

ops = torch.ops.{namespace}


def add_op_namespace_prefix(op_name: str) -> str:
    """Prefix op by namespace."""
    return f"{namespace}::{{op_name}}"
'''


@dataclass(frozen=True)
class KernelConfig:
    """What build.toml says, as far as building and publishing need it."""

    name: str
    version: int
    license: str
    backends: tuple[str, ...]
    repo_id: str
    pyext: tuple[str, ...]

    @property
    def python_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def package_dir(self) -> Path:
        return ROOT / "torch-ext" / self.python_name


def read_build_toml(root: Path = ROOT) -> KernelConfig:
    data = tomllib.loads((root / "build.toml").read_text(encoding="utf-8"))
    general = data["general"]
    noarch = data.get("torch-noarch", {})
    return KernelConfig(
        name=general["name"],
        version=int(general["version"]),
        license=general["license"],
        backends=tuple(general["backends"]),
        repo_id=general["hub"]["repo-id"],
        pyext=tuple(noarch.get("pyext", ["py"])),
    )


def git_state(root: Path = ROOT) -> tuple[str, bool]:
    """(HEAD commit, whether the kernel's source paths differ from it)."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        return "0" * 40, True  # no commit yet: nothing identifies the source
    dirty = bool(git("status", "--porcelain", "--", *SOURCE_PATHS))
    return commit, dirty


def variant_id(cfg: KernelConfig, backend: str, commit: str, dirty: bool) -> str:
    return f"_{cfg.python_name}_{backend}_{commit[:7]}" + ("_dirty" if dirty else "")


def _copy_package(cfg: KernelConfig, dest: Path) -> None:
    for src in sorted(cfg.package_dir.rglob("*")):
        rel = src.relative_to(cfg.package_dir)
        if "__pycache__" in rel.parts or not src.is_file() or src.name == "_ops.py":
            continue
        if src.suffix.lstrip(".") not in cfg.pyext:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


MANIFEST = "api_manifest.json"


def api_manifest(package_dir: Path) -> dict:
    """The public API a build ships, read from the source without importing it: names in
    `__all__`, the public functions' signatures, each layer's forward signature and flags, and
    the layer-mapping metadata. Publishing compares it with what a branch already serves."""
    init = ast.parse((package_dir / "__init__.py").read_text(encoding="utf-8"))
    names = next(
        ast.literal_eval(node.value) for node in init.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    )
    functions = {
        node.name: f"({ast.unparse(node.args)})" + (f" -> {ast.unparse(node.returns)}" if node.returns else "")
        for node in init.body if isinstance(node, ast.FunctionDef) and node.name in names
    }
    layers = {}
    for node in ast.parse((package_dir / "layers.py").read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.ClassDef):
            continue
        flags = {"has_backward": True, "can_torch_compile": False}  # kernels' defaults
        forward = None
        for item in node.body:
            if isinstance(item, ast.Assign) and getattr(item.targets[0], "id", None) in flags:
                flags[item.targets[0].id] = ast.literal_eval(item.value)
            if isinstance(item, ast.FunctionDef) and item.name == "forward":
                forward = f"({ast.unparse(item.args)})"
        layers[node.name] = {"forward": forward, **flags}
    mapping = json.loads((package_dir / "layer_mapping.json").read_text(encoding="utf-8"))
    return {"all": names, "functions": functions, "layers": layers, "layer_mapping": mapping}


def build_variant(cfg: KernelConfig, backend: str, out: Path, commit: str, dirty: bool) -> Path:
    from kernels._rust import Digest, DigestAlgorithm  # the digest kernels itself computes

    dest = out / f"torch-{backend}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _copy_package(cfg, dest)
    kid = variant_id(cfg, backend, commit, dirty)
    (dest / "_ops.py").write_text(OPS_TEMPLATE.format(namespace=kid), encoding="utf-8")
    (dest / MANIFEST).write_text(json.dumps(api_manifest(cfg.package_dir), indent=1, sort_keys=True) + "\n",
                                 encoding="utf-8")
    # Taken before metadata.json exists: the digest covers every other file of the variant.
    digest = Digest.hash_variant(DigestAlgorithm.SHA256, dest)
    metadata = {
        "name": cfg.name,
        "id": kid,
        "version": cfg.version,
        "license": cfg.license,
        "python-depends": [],
        "backend": {"type": backend},
        "digest": {"algorithm": "sha256", "files": dict(sorted(digest.files.items()))},
        "provenance": {
            "kernel-builder": {"version": "0.0.0"},  # built by scripts/build_variants.py, not kernel-builder
            "kernel": {"commit": commit, "dirty": dirty},
        },
    }
    (dest / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return dest


def write_card(cfg: KernelConfig, out: Path) -> Path:
    mapping = json.loads((cfg.package_dir / "layer_mapping.json").read_text(encoding="utf-8"))
    text = (ROOT / "scripts" / "card_template.md").read_text(encoding="utf-8")
    layer_rows = "\n".join(
        "| `{}` | `{}` | {} |".format(name, spec["computes"], ", ".join("`{}`".format(c["class"]) for c in spec["classes"]))
        for name, spec in mapping["layers"].items()
    ) + "\n" + "\n".join(
        f"| `{name}` | `{spec['computes']}` | any module with that `forward(x)` |"
        for name, spec in mapping["generic_layers"].items()
    )
    card = text.format(
        license=cfg.license.lower(),
        repo_id=cfg.repo_id,
        name=cfg.name,
        python_name=cfg.python_name,
        version=cfg.version,
        backends=", ".join(f"`torch-{b}`" for b in cfg.backends),
        layer_rows=layer_rows,
    )
    path = out / "CARD.md"
    path.write_text(card, encoding="utf-8")
    return path


def build(out: Path = ROOT / "build", root: Path = ROOT, cfg: KernelConfig | None = None) -> list[Path]:
    cfg = cfg or read_build_toml(root)
    commit, dirty = git_state(root)
    out.mkdir(parents=True, exist_ok=True)
    variants = [build_variant(cfg, b, out, commit, dirty) for b in cfg.backends]
    write_card(cfg, out)
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="output folder (default: build/)")
    args = parser.parse_args(argv)
    for variant in build(args.out):
        meta = json.loads((variant / "metadata.json").read_text())
        print(f"built {variant.relative_to(args.out.parent) if variant.is_relative_to(args.out.parent) else variant}  id={meta['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
