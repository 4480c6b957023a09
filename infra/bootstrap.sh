#!/usr/bin/env bash
# Install everything lmforge needs into .venv (Python 3.11). Idempotent: a second call returns at once
# unless pyproject.toml, the constraints or this script changed. Versions come from infra/constraints.txt,
# a lock of one set seen to install and run together on a 2-core CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

# System packages (Debian): Chromium + ChromeDriver for the browser checks of reports and the MLflow UI, PostgreSQL 15
# for the local production-shaped stack (infra/stack.sh). Installed with apt-get when root (CI) or via `sudo -n`;
# otherwise named, and the tests that need them say so.
sys_pkgs="chromium chromium-driver postgresql"
missing=""
for pkg in $sys_pkgs; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    echo "bootstrap: installing system packages:$missing" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "bootstrap: warning: system packages missing (install them as root):$missing" >&2
  fi
fi

stamp=.venv/.lmforge-installed
want=$(cat pyproject.toml infra/constraints.txt infra/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/lmforge ]; then
  exit 0
fi

echo "bootstrap: installing into .venv (a few minutes on a fresh machine)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  # pip warns about every unused local index entry; keep the log readable
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
# torch first: its CPU build, so nothing later pulls a multi-GB CUDA build
pip_install -c infra/constraints.txt "torch==2.13.0"
pip_install -c infra/constraints.txt -e ".[dev]"
# deepspeed compiles no ops on CPU and must see the installed torch (no build isolation)
DS_BUILD_OPS=0 pip_install --no-build-isolation -c infra/constraints.txt deepspeed
.venv/bin/python -m pip check >/dev/null
echo "$want" > "$stamp"
echo "bootstrap: done" >&2
