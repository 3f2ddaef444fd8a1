#!/usr/bin/env bash
# Make sure the project's virtual environment exists and is up to date.
# Creates .venv and installs asr-kd (editable, with the test extra) when it is missing or when
# pyproject.toml changed since the last install; otherwise reuses it. Sourced by main.sh and test.sh.
# Choose the interpreter with PYTHON=python3.12 (default python3; Python >= 3.10 is required).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.asr-kd-installed"
PY="${PYTHON:-python3}"

# A venv whose pip does not run (e.g. a first setup that died half-way) is made anew.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "The environment in $VENV is broken (no working pip); recreating it." >&2
  rm -rf "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "asr-kd needs Python >= 3.10; '$PY' is missing or older. Set PYTHON=/path/to/python3.x" >&2
    exit 1
  fi
  echo "Setting up $VENV (first run: downloads torch/torchaudio, a few GB, ~2-5 min) ..." >&2
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || {
      rm -rf "$VENV"
      echo "Could not create a virtual environment with '$PY' (on Debian/Ubuntu: apt-get install python3-venv)." >&2
      exit 1
    }
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
  touch "$STAMP"
fi
