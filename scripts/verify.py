#!/usr/bin/env python3
"""Check a kernel build against the digest in each variant's metadata.json.

    python scripts/verify.py PATH                      # a build folder (build/), or one variant
    python scripts/verify.py --repo-id ORG/NAME --version N   # the v<N> snapshot in the Hub cache

Re-hashes every file of each variant with kernels' own `Digest` (the hash kernel-builder and
build_variants.py write) and names each file that is changed, missing or not in the digest.
Exit status 0 only when every variant matches; 1 on any mismatch or a variant with no digest;
2 when there is nothing to check (no such folder, not in the cache). Loading a kernel never
checks the digest (kernels 0.17.2): run this on what you download or publish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def variants_under(path: Path) -> list[Path]:
    """The variant folders at `path`: itself, its build/ children, or its children."""
    if (path / "metadata.json").is_file():
        return [path]
    base = path / "build" if (path / "build").is_dir() else path
    return sorted(p for p in base.iterdir() if (p / "metadata.json").is_file()) if base.is_dir() else []


def check_variant(variant: Path) -> list[str]:
    """Problems with one variant, one line each (empty: it matches its digest)."""
    from kernels._rust import Digest, DigestValidationError, DigestViolation, Metadata

    try:
        metadata = Metadata.read_from_file(variant / "metadata.json")
    except (OSError, ValueError) as e:
        return [f"metadata.json cannot be read: {e}"]
    if metadata.digest is None:
        return ["metadata.json has no digest: nothing to check the files against"]
    actual = Digest.hash_variant(metadata.digest.algorithm, variant)
    try:
        metadata.digest.validate(actual)
    except DigestValidationError as e:
        lines = []
        for v in e.violations:
            if isinstance(v, DigestViolation.HashMismatch):
                lines.append(f"changed: {v.path}")
            elif isinstance(v, DigestViolation.MissingFile):
                lines.append(f"missing: {v.path}")
            elif isinstance(v, DigestViolation.UnknownFile):
                lines.append(f"extra (not in the digest): {v.path}")
            else:
                lines.append(str(v))
        return sorted(lines)
    return []


def verify(path: Path, out=print) -> int:
    variants = variants_under(path)
    if not variants:
        out(f"verify: no build variant (a folder with metadata.json) at {path}")
        return 2
    bad = 0
    for variant in variants:
        problems = check_variant(variant)
        bad += bool(problems)
        out(f"{variant.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for line in problems:
            out(f"  {line}")
    out(f"{len(variants) - bad} of {len(variants)} variants match their digest")
    return 1 if bad else 0


def cached_snapshot(repo_id: str, version: int) -> Path | None:
    """The v<version> snapshot of `repo_id` in the local Hub cache, downloading nothing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="kernel", revision=f"v{version}", local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, help="a build folder or one variant folder")
    parser.add_argument("--repo-id", help="a kernel repository whose snapshot is in the local Hub cache")
    parser.add_argument("--version", type=int, help="with --repo-id: the major version (branch v<N>)")
    args = parser.parse_args(argv)
    if (args.path is None) == (args.repo_id is None) or (args.repo_id and args.version is None):
        parser.error("give either PATH or --repo-id with --version")
    if args.repo_id:
        snapshot = cached_snapshot(args.repo_id, args.version)
        if snapshot is None:
            print(f"verify: {args.repo_id} v{args.version} is not in the local Hub cache "
                  f"(hf download --repo-type kernel {args.repo_id} --revision v{args.version})")
            return 2
        return verify(snapshot)
    return verify(args.path)


if __name__ == "__main__":
    sys.exit(main())
