#!/usr/bin/env python3
"""Publish a kernel revision to the Hub the way `kernel-builder upload` does.

    python scripts/publish.py [--repo-id ORG/NAME] [--dry-run] [--create-pr] [--allow-dirty]

1. Builds every variant (scripts/build_variants.py) and refuses to go on if the kernel does not
   load and run from that build, or if the working tree is dirty (--allow-dirty: publish anyway,
   the metadata then says dirty).
2. Versioning guard: compares the build's api_manifest.json with the one the branch v<version>
   already serves. Any difference (added, removed or changed names, signatures, layers, flags,
   layer mapping) needs a bump of `version` in build.toml; a fix with the same API may replace
   the variants on the same branch.
3. Creates the kernel repo and the branch v<version> if missing, then ONE commit on that branch
   with build/<variant>/** and benchmarks/benchmark*.py that also deletes stale files under the
   uploaded variants, and one commit of the card as README.md on main.

The repo id and version come from build.toml. The token comes from huggingface_hub's usual
places (HF_TOKEN, `hf auth login`). Errors from the Hub are reported in one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_variants  # noqa: E402

REPO_TYPE = "kernel"

LOAD_CHECK = """
import sys, torch
from pathlib import Path
from kernels import get_local_kernel
k = get_local_kernel(Path(sys.argv[1]))
g, u = torch.randn(3, 10), torch.randn(3, 10)
ref = torch.nn.functional.gelu(g, approximate="tanh") * u
assert torch.allclose(k.geglu(g, u), ref, atol=1e-5), "wrong result"
assert set(k.__all__) >= {"geglu", "layers"}
print("loaded", k.__name__)
"""


class PublishError(Exception):
    """A refusal or a failure, reported as one line."""


@dataclass
class Plan:
    repo_id: str
    branch: str
    message: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    create_repo: bool = False
    create_branch: bool = False

    def describe(self) -> str:
        lines = [f"repo {self.repo_id} (kernel){' [new]' if self.create_repo else ''}",
                 f"branch {self.branch}{' [new]' if self.create_branch else ''}",
                 f"commit message: {self.message}"]
        for what, paths in (("add", self.added), ("change", self.changed), ("remove", self.removed)):
            lines += [f"  {what:6s} {p}" for p in paths]
        lines.append(f"  ({len(self.unchanged)} files unchanged)")
        lines.append("main: README.md <- build/CARD.md")
        return "\n".join(lines)


def check_loads(build_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(build_dir)], capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "0"})
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PublishError(f"the kernel does not load from {build_dir}: {last}")


def blob_id(path: Path) -> str:
    """The git blob id of a file, as the Hub reports it for files in a tree."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def manifest_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two API manifests."""
    diffs = []
    for name in sorted(set(old["all"]) | set(new["all"])):
        if name not in new["all"]:
            diffs.append(f"removed `{name}` from __all__")
        elif name not in old["all"]:
            diffs.append(f"added `{name}` to __all__")
    for kind in ("functions", "layers"):
        for name in sorted(set(old[kind]) | set(new[kind])):
            if name not in new[kind]:
                diffs.append(f"removed {kind[:-1]} `{name}`")
            elif name not in old[kind]:
                diffs.append(f"added {kind[:-1]} `{name}`")
            elif old[kind][name] != new[kind][name]:
                diffs.append(f"changed {kind[:-1]} `{name}`: {old[kind][name]} -> {new[kind][name]}")
    if old["layer_mapping"] != new["layer_mapping"]:
        diffs.append("changed the layer-mapping metadata (layer_mapping.json)")
    return diffs


def _hub_error(exc: Exception) -> PublishError:
    response = getattr(exc, "response", None)
    status = f"HTTP {response.status_code}: " if response is not None else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PublishError(f"the Hub refused: {status}{message}")


def publish(repo_id: str | None = None, dry_run: bool = False, create_pr: bool = False,
            allow_dirty: bool = False, out=print) -> Plan:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    cfg = build_variants.read_build_toml()
    if repo_id:  # the card's loading snippet must name the repo actually published to
        cfg = dataclasses.replace(cfg, repo_id=repo_id)
    repo_id = cfg.repo_id
    branch = f"v{cfg.version}"
    commit, dirty = build_variants.git_state()
    if dirty and not allow_dirty:
        raise PublishError("the working tree has uncommitted changes to the kernel sources; commit them "
                           "or pass --allow-dirty (the build's metadata will then say dirty)")

    build_dir = Path(tempfile.mkdtemp(prefix="geglu-publish-")) / "build"
    variants = build_variants.build(build_dir, cfg=cfg)
    check_loads(build_dir)
    new_manifest = json.loads((variants[0] / build_variants.MANIFEST).read_text())

    api = HfApi()
    try:
        try:
            refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
            create_repo, branches = False, {b.name for b in refs.branches}
        except RepositoryNotFoundError:
            create_repo, branches = True, set()
        create_branch = branch not in branches

        remote: dict[str, str] = {}
        if not create_branch:
            remote = {f.path: f.blob_id for f in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=branch,
                                                                       recursive=True) if hasattr(f, "blob_id")}
            served = next((p for p in sorted(remote) if p.endswith("/" + build_variants.MANIFEST)), None)
            if served is None:
                raise PublishError(f"{branch} on {repo_id} serves no {build_variants.MANIFEST}; cannot check its API")
            from huggingface_hub import hf_hub_download

            old_manifest = json.loads(Path(hf_hub_download(repo_id, served, repo_type=REPO_TYPE, revision=branch))
                                      .read_text())
            diffs = manifest_diff(old_manifest, new_manifest)
            if diffs:
                raise PublishError(
                    f"the public API differs from what {branch} serves ({'; '.join(diffs)}). Users pinned to "
                    f"version={cfg.version} would get it: bump `version` in build.toml to {cfg.version + 1} "
                    "(any addition counts) and publish again")
    except HfHubHTTPError as exc:
        if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)):
            raise PublishError(f"{repo_id}@{branch}: {str(exc).splitlines()[0]}") from None
        raise _hub_error(exc) from None

    local = {}
    for variant in variants:
        for path in sorted(variant.rglob("*")):
            if path.is_file():
                local[f"build/{variant.name}/{path.relative_to(variant)}"] = path
    for path in sorted((ROOT / "benchmarks").glob("benchmark*.py")):
        local[f"benchmarks/{path.name}"] = path

    uploaded_variants = tuple(f"build/{v.name}/" for v in variants)
    plan = Plan(repo_id=repo_id, branch=branch, create_repo=create_repo, create_branch=create_branch,
                message=f"{cfg.name} v{cfg.version} from {commit[:7]}{' (dirty)' if dirty else ''}")
    for path, file in local.items():
        if path not in remote:
            plan.added.append(path)
        elif remote[path] != blob_id(file):
            plan.changed.append(path)
        else:
            plan.unchanged.append(path)
    plan.removed = sorted(p for p in remote if p.startswith(uploaded_variants) and p not in local)

    out(plan.describe())
    if dry_run:
        out("dry run: nothing written")
        return plan
    if not (plan.added or plan.changed or plan.removed):
        out(f"{branch} already serves this build; nothing to commit")
    try:
        if create_repo:
            api.create_repo(repo_id, repo_type=REPO_TYPE, exist_ok=True)
        if create_branch:
            api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        if plan.added or plan.changed or plan.removed:
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local[p]))
                          for p in plan.added + plan.changed]
            operations += [CommitOperationDelete(path_in_repo=p) for p in plan.removed]
            total = sum(local[p].stat().st_size for p in plan.added + plan.changed)
            out(f"uploading {len(plan.added) + len(plan.changed)} files ({total / 1024:.0f} KiB), "
                f"deleting {len(plan.removed)}, in one commit to {branch}")
            info = api.create_commit(repo_id, operations, commit_message=plan.message, repo_type=REPO_TYPE,
                                     revision=branch, create_pr=create_pr)
            out(f"{'opened pull request ' + info.pr_url if create_pr else 'committed ' + info.oid} on {branch}")
            check_served(api, repo_id, info.oid, out)
        card = (build_dir / "CARD.md").read_bytes()
        info = api.create_commit(repo_id, [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card)],
                                 commit_message=f"Card for {cfg.name} v{cfg.version}", repo_type=REPO_TYPE,
                                 revision="main", create_pr=create_pr)
        out(f"card {'pull request ' + info.pr_url if create_pr else 'committed ' + info.oid} on main")
    except HfHubHTTPError as exc:
        raise _hub_error(exc) from None
    return plan


def check_served(api, repo_id: str, commit: str, out=print) -> None:
    """Download what the Hub now serves at `commit` into a scratch cache and check every variant
    against its digest (scripts/verify.py): a transfer that changed a byte fails the publish."""
    import verify

    with tempfile.TemporaryDirectory(prefix="geglu-served-") as scratch:
        snapshot = Path(api.snapshot_download(repo_id, repo_type=REPO_TYPE, revision=commit, cache_dir=scratch,
                                              allow_patterns=["build/**"]))
        lines: list[str] = []
        status = verify.verify(snapshot, out=lines.append)
        if status != 0:
            raise PublishError(f"what {repo_id} serves at {commit[:7]} does not match its digest: "
                               + "; ".join(line.strip() for line in lines if line.startswith("  ")))
        out(f"served files verified: {lines[-1]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", help="override [general.hub] repo-id of build.toml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.add_argument("--create-pr", action="store_true", help="open pull requests instead of committing")
    parser.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes")
    args = parser.parse_args(argv)
    try:
        publish(args.repo_id, args.dry_run, args.create_pr, args.allow_dirty)
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
