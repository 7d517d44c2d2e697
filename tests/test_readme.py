"""README.md as written, top to bottom, and the card's snippets: every bash and python block
runs in one shell session in a committed copy of the checkout, against the local Hub server the
README starts (nothing through LOCAL_KERNELS but the block that demonstrates it; kernels come
from the Hub cache in HF_HOME). A block preceded by `<!-- readme-test: skip (reason) -->` is not
run (the reason says who runs it); `<!-- readme-test: gpu (...) -->` blocks run only on a GPU
machine (scripts/gpu_session.sh readme)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAS_CUDA, ROOT, committed_copy

BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^\n]*?) -->\n)?```(?P<lang>bash|python)\n(?P<body>.*?)^```",
                   re.S | re.M)


def blocks(text: str) -> list[dict]:
    found = []
    for m in BLOCK.finditer(text):
        mark = (m.group("mark") or "").strip()
        found.append({"lang": m.group("lang"), "body": m.group("body"), "mark": mark,
                      "line": text.count("\n", 0, m.start("body")) + 1})
    return found


def script(named_blocks: list[tuple[str, dict]], gpu: bool) -> str:
    """One bash session: bash blocks verbatim, python blocks through .venv/bin/python."""
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for source, b in named_blocks:
        if b["mark"].startswith("skip") or (b["mark"].startswith("gpu") and not gpu):
            continue
        lines.append(f"echo '::: {source} block at line {b['line']}'")
        if b["lang"] == "bash":
            lines.append(b["body"])
        else:
            lines += [".venv/bin/python - <<'README_PY'", b["body"] + "README_PY"]
    return "\n".join(lines) + "\n"


def _checkout_copy(dest: Path) -> Path:
    """A committed copy of the working tree (publish.py refuses a dirty tree), sharing .venv."""
    committed_copy(dest)
    os.symlink(Path(sys.executable).parent.parent, dest / ".venv")
    return dest


def test_every_readme_block_is_either_run_or_marked_with_a_reason():
    found = blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(found) >= 10
    for b in found:
        if b["mark"]:
            assert re.fullmatch(r"(skip|gpu) \(.{20,}\)", b["mark"]), f"line {b['line']}: a mark needs a reason"
    assert sum(not b["mark"] for b in found) >= 8


def test_ci_runs_the_readme_test_command():
    found = blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    skipped = [b["body"].split("#")[0].strip() for b in found if b["mark"].startswith("skip")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert any(cmd and cmd in ci for cmd in skipped), (skipped, ci)


def test_readme_and_card_run_as_written(tmp_path, build_dir):
    work = _checkout_copy(tmp_path / "checkout")
    readme = [("README.md", b) for b in blocks((work / "README.md").read_text(encoding="utf-8"))]
    card = [("CARD.md", b) for b in blocks((build_dir / "CARD.md").read_text(encoding="utf-8"))]
    assert card, "the card has no snippets"
    (tmp_path / "readme.sh").write_text(script(readme + card, gpu=HAS_CUDA))
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_KERNELS", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "TRITON_INTERPRET")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONUNBUFFERED="1")
    result = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env, capture_output=True,
                            text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # What the blocks claim is what happened.
    assert "geglu: GemmaMLP -> GeGLUMLP x2" in output, output[-3000:]
    assert "No kernel mapping found" not in output, output[-3000:]
    cache = tmp_path / "hf-home" / "hub" / "kernels--geglu-kernels--geglu" / "snapshots"
    assert cache.is_dir() and str(cache) in output  # loaded from the Hub cache, symlinked snapshots
    assert any(p.is_symlink() for p in cache.rglob("__init__.py"))
    branches = {p.name for p in (work / ".local-hub" / "repos").rglob("*.json")}
    assert branches == {"geglu.json"}
