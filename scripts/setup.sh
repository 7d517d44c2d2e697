#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtual environment in .venv with every pinned
# dependency (CPU torch), plus Debian's nix-bin for the flake.nix syntax check.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q >/dev/null && apt-get install -y -q nix-bin >/dev/null
  else
    echo "warning: nix-instantiate not found and cannot apt-get install nix-bin; the flake test will fail" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
