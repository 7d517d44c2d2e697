"""Publishing revisions and loading them back over HTTP, against the local Hub server.

Each test publishes from a fresh git copy of the working tree (so it can bump versions, add to
the API or ship fixes) and talks to the server only through subprocesses with HF_ENDPOINT set,
the way a kernel author and a user would.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import CONFIG, REPO_ID, ROOT, committed_copy, git
from local_hub import LocalHub

PY = sys.executable
KERNELS_CLI = str(Path(sys.executable).parent / "kernels")
V = CONFIG.version  # the version build.toml publishes
BRANCH = f"v{V}"


@pytest.fixture
def hub(tmp_path):
    with LocalHub() as server:
        server.env = {
            **{k: v for k, v in os.environ.items() if k not in ("LOCAL_KERNELS", "HF_HUB_OFFLINE")},
            "HF_ENDPOINT": server.url,
            "HF_TOKEN": "hf_local_test_token",
            "HF_HOME": str(tmp_path / "hf-home"),
            "TRITON_INTERPRET": "0",
        }
        yield server


@pytest.fixture
def source(tmp_path):
    """A committed git copy of the working tree: the kernel author's checkout."""
    return committed_copy(tmp_path / "src")


def _commit(repo, message):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def _publish(hub, source, *args, check=True):
    result = subprocess.run([PY, str(source / "scripts" / "publish.py"), *args], env=hub.env,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _run(hub, code, env=None):
    result = subprocess.run([PY, "-c", textwrap.dedent(code)], env={**hub.env, **(env or {})},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _ship_fix(source, note):
    """A same-API change to the kernel source, committed."""
    pointwise = source / "torch-ext" / "geglu" / "kernel_src" / "pointwise.py"
    pointwise.write_text(pointwise.read_text() + f"\n# {note}\n")
    _commit(source, note)


def _set_version(source, version):
    toml = source / "build.toml"
    toml.write_text(re.sub(r"(?m)^version = \d+", f"version = {version}", toml.read_text()))


def _add_api_function(source):
    init = source / "torch-ext" / "geglu" / "__init__.py"
    text = init.read_text().replace('__all__ = ["geglu",', '__all__ = ["geglu_exact", "geglu",')
    init.write_text(text + '\n\ndef geglu_exact(gate, up):\n    """gelu(gate) * up, exact erf."""\n'
                           '    return geglu(gate, up, approximate="none")\n')


LOAD = """
import json, sys, torch
from kernels import get_kernel
k = get_kernel({repo!r}, version={version}, trust_remote_code=True)
g, u = torch.randn(4, 6), torch.randn(4, 6)
torch.testing.assert_close(k.geglu(g, u), torch.nn.functional.gelu(g, approximate="tanh") * u)
print(json.dumps({{"all": k.__all__, "file": k.__file__}}))
"""


def _load(hub, version):
    return json.loads(_run(hub, LOAD.format(repo=REPO_ID, version=version)).strip().splitlines()[-1])


def test_publish_then_get_kernel_and_kernelize_over_http(hub, source):
    out = _publish(hub, source).stdout
    assert f"branch {BRANCH} [new]" in out and "repo geglu-kernels/geglu (kernel) [new]" in out
    files = hub.files(REPO_ID, BRANCH)
    assert {f"build/torch-{b}/metadata.json" for b in ("cpu", "cuda", "rocm", "xpu")} <= set(files)
    assert "benchmarks/benchmark_geglu.py" in files
    assert not any(p.startswith(("tests/", "torch-ext/", "build.toml")) for p in files)
    meta = json.loads(files["build/torch-cpu/metadata.json"])
    assert not meta["id"].endswith("_dirty") and meta["provenance"]["kernel"]["dirty"] is False

    loaded = _load(hub, V)
    assert "hf-home" in loaded["file"]  # from the cache that the HTTP download filled
    _run(hub, f"""
        import copy, torch, torch.nn as nn
        from kernels import LayerRepository, Mode, kernelize, replace_kernel_forward_from_hub, use_kernel_mapping

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.gate_proj, self.up_proj, self.down_proj = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 8)
                self.act_fn = nn.GELU(approximate="tanh")
            def forward(self, x):
                return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

        replace_kernel_forward_from_hub(MLP, "GeGLUMLP")
        eager = MLP(); model = copy.deepcopy(eager)
        repo = LayerRepository({REPO_ID!r}, layer_name="GeGLUMLP", version={V}, trust_remote_code=True)
        with use_kernel_mapping({{"GeGLUMLP": {{"cpu": repo}}}}, inherit_mapping=False):
            kernelize(model, mode=Mode.TRAINING, device="cpu")
        assert model.forward.__func__.__qualname__ == "GeGLUMLP.forward"
        x = torch.randn(3, 8)
        torch.testing.assert_close(model(x), eager(x))
    """)

    card = hub.files(REPO_ID, "main")["README.md"].decode()
    assert card.startswith("---\nlibrary_name: kernels\nlicense: apache-2.0")
    for name in ("geglu(gate, up", "gelu_tanh_and_mul", "GeGLUMLP", "T5DenseGatedGeGLU", f'get_kernel("{REPO_ID}", version={V}'):
        assert name in card


def test_api_change_needs_a_version_bump_and_old_versions_stay(hub, source):
    _publish(hub, source)
    before_bump = hub.files(REPO_ID, BRANCH)
    commits_before = {b: oid for b, oid in hub.state.repos[REPO_ID].branches.items()}

    _add_api_function(source)
    _commit(source, "add geglu_exact")
    refused = _publish(hub, source, check=False)
    assert refused.returncode == 1
    assert "added `geglu_exact` to __all__" in refused.stderr and f"bump `version` in build.toml to {V + 1}" in refused.stderr
    assert hub.state.repos[REPO_ID].branches == commits_before  # nothing written

    _set_version(source, V + 1)
    _commit(source, f"v{V + 1}")
    _publish(hub, source)
    assert "geglu_exact" in _load(hub, V + 1)["all"]
    assert "geglu_exact" not in _load(hub, V)["all"]
    assert hub.files(REPO_ID, BRANCH) == before_bump  # byte for byte
    versions = subprocess.run([KERNELS_CLI, "versions", REPO_ID], env=hub.env, capture_output=True, text=True)
    assert versions.returncode == 0, versions.stderr
    assert re.search(rf"\b{V}\b", versions.stdout) and re.search(rf"\b{V + 1}\b", versions.stdout), versions.stdout


def test_fix_on_same_version_replaces_files_and_removes_stale_ones(hub, source):
    helper = source / "torch-ext" / "geglu" / "kernel_src" / "obsolete_helper.py"
    helper.write_text("OLD = 1\n")
    _commit(source, "with a helper")
    _publish(hub, source)
    assert "build/torch-cpu/kernel_src/obsolete_helper.py" in hub.files(REPO_ID, BRANCH)

    helper.unlink()
    _ship_fix(source, "fix: a comment stands in for a bug fix")
    plan = _publish(hub, source, "--dry-run").stdout
    assert "remove build/torch-cpu/kernel_src/obsolete_helper.py" in plan and "dry run: nothing written" in plan
    assert "build/torch-cpu/kernel_src/obsolete_helper.py" in hub.files(REPO_ID, BRANCH)
    _publish(hub, source)
    files = hub.files(REPO_ID, BRANCH)
    assert not any(p.endswith("obsolete_helper.py") for p in files)
    assert files["build/torch-cpu/kernel_src/pointwise.py"].endswith(b"stands in for a bug fix\n")
    loaded = _load(hub, V)
    shipped = Path(loaded["file"]).parent / "kernel_src" / "pointwise.py"
    assert shipped.read_text().endswith("stands in for a bug fix\n")  # users of v1 get the fix


def test_rejected_commit_leaves_the_branch_and_a_retry_succeeds(hub, source):
    _publish(hub, source)
    before = dict(hub.state.repos[REPO_ID].branches)
    _ship_fix(source, "another fix")
    hub.state.fail_next_commits = 1
    failed = _publish(hub, source, check=False)
    assert failed.returncode == 1
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("publish:")]
    assert len(error_lines) == 1 and "HTTP 500" in error_lines[0]
    assert hub.state.repos[REPO_ID].branches == before
    _publish(hub, source)
    assert hub.state.repos[REPO_ID].branches[BRANCH] != before[BRANCH]


def test_dirty_tree_is_refused_unless_allowed(hub, source):
    (source / "torch-ext" / "geglu" / "layers.py").write_text(
        (source / "torch-ext" / "geglu" / "layers.py").read_text() + "\n# uncommitted\n")
    refused = _publish(hub, source, check=False)
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    assert REPO_ID not in hub.state.repos
    _publish(hub, source, "--allow-dirty")
    meta = json.loads(hub.files(REPO_ID, BRANCH)["build/torch-cpu/metadata.json"])
    assert meta["id"].endswith("_dirty") and meta["provenance"]["kernel"]["dirty"] is True


def test_create_pr_leaves_branches_untouched(hub, source):
    _publish(hub, source)
    before = dict(hub.state.repos[REPO_ID].branches)
    _ship_fix(source, "proposed fix")
    out = _publish(hub, source, "--create-pr").stdout
    assert "opened pull request" in out
    assert hub.state.repos[REPO_ID].branches == before and hub.state.repos[REPO_ID].pulls


def test_offline_cache_and_lockfile(hub, source, tmp_path):
    _publish(hub, source)
    # install_kernel fetches the variant for this torch by revision, which records refs/v1.
    # huggingface_hub 2.4 then refuses an offline snapshot with only some of the revision's
    # files (IncompleteSnapshotError), and kernels 0.17.2 reads the cache without patterns: the
    # whole v1 snapshot must be in the cache (`hf download --repo-type kernel <repo> --revision v1`).
    _run(hub, f"""
        from huggingface_hub import snapshot_download
        from kernels import install_kernel
        install_kernel({REPO_ID!r}, revision={BRANCH!r}, trust_remote_code=True)
        snapshot_download({REPO_ID!r}, repo_type="kernel", revision={BRANCH!r})
    """)
    # Offline, with the server unreachable: the cache alone serves v1.
    offline = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    _run(hub, LOAD.format(repo=REPO_ID, version=V), env=offline)

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "consumer"
        version = "0.1.0"

        [tool.kernels.dependencies]
        "{REPO_ID}" = {V}
    """))
    # `kernels lock` only locks kernels of publishers the Hub marks trusted (it has no
    # trust_remote_code switch): mark ours so on the local server.
    hub.state.trusted_publishers.add(REPO_ID.split("/")[0])
    lock = subprocess.run([KERNELS_CLI, "lock", str(consumer)], env=hub.env, capture_output=True, text=True)
    assert lock.returncode == 0, lock.stdout + lock.stderr
    locked = json.loads((consumer / "kernels.lock").read_text())
    assert locked[0]["dependency"]["repo-id"] == REPO_ID and locked[0]["dependency"]["version"] == V
    assert locked[0]["lock"]["commit"] == hub.state.repos[REPO_ID].branches[BRANCH]
    _run(hub, f"""
        from pathlib import Path
        from kernels import load_kernel
        k = load_kernel({REPO_ID!r}, lockfile=Path({str(consumer / "kernels.lock")!r}))
        assert callable(k.geglu) and {locked[0]["lock"]["commit"]!r} in k.__file__
    """, env=offline)


def test_publish_verifies_what_the_hub_serves_and_verify_names_tampered_files(hub, source):
    hub.state.corrupt_on_commit = "torch-cuda/layers.py"
    failed = _publish(hub, source, check=False)
    assert failed.returncode == 1
    assert "does not match its digest" in failed.stderr and "changed: layers.py" in failed.stderr, failed.stderr
    hub.state.corrupt_on_commit = None
    out = _publish(hub, source).stdout  # the same commit again, intact this time
    assert "served files verified: 4 of 4 variants match their digest" in out, out

    # A user's Hub-cache copy, downloaded and then altered: verify.py names the file.
    _run(hub, f"""
        from huggingface_hub import snapshot_download
        snapshot_download({REPO_ID!r}, repo_type="kernel", revision={BRANCH!r})
    """)
    verify_cmd = [PY, str(source / "scripts" / "verify.py"), "--repo-id", REPO_ID, "--version", str(V)]
    ok = subprocess.run(verify_cmd, env={**hub.env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    commit = hub.state.repos[REPO_ID].branches[BRANCH]
    snapshot = Path(hub.env["HF_HOME"]) / "hub" / "kernels--geglu-kernels--geglu" / "snapshots" / commit
    target = snapshot / "build" / "torch-cpu" / "pointwise_ops.py"
    assert target.is_symlink(), sorted(p.name for p in snapshot.parent.iterdir())
    text = target.read_text()
    target.unlink()  # a symlink into blobs/: replace it, as an editor would
    target.write_text(text.replace("return", "return  ", 1))
    bad = subprocess.run(verify_cmd, env={**hub.env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert bad.returncode == 1 and "changed: pointwise_ops.py" in bad.stdout, bad.stdout + bad.stderr
    missing = subprocess.run([PY, str(source / "scripts" / "verify.py"), "--repo-id", REPO_ID, "--version", "99"],
                             env={**hub.env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert missing.returncode == 2 and "not in the local Hub cache" in missing.stdout
