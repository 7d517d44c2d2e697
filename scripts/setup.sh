#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtual environment in .venv with every pinned
# dependency (CPU torch), plus Debian's nix-bin for the flake.nix syntax check (SKIP_NIX=1: without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_NIX:-0}" != 1 ] && ! command -v nix-instantiate >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Wait up to 5 minutes for another apt/dpkg run to release its lock instead of failing at once.
    apt_wait=(-o DPkg::Lock::Timeout=300)
    if ! apt-get "${apt_wait[@]}" update -q >/dev/null || \
       ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -q nix-bin >/dev/null; then
      echo "setup.sh: could not install Debian's nix-bin (apt-get failed, see above); it provides" \
           "nix-instantiate for the flake.nix check. Install it, then run setup.sh again." >&2
      exit 1
    fi
  else
    echo "setup.sh: nix-instantiate is missing and apt-get cannot be used here (needs root and Debian);" \
         "install Nix or Debian's nix-bin, then run setup.sh again (tests/test_build.py checks flake.nix with it;" \
         "SKIP_NIX=1 sets up the rest without it)." >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
