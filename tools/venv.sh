#!/usr/bin/env bash
# Make sure the project's virtual environment exists and is the locked one.
# Sourced by main.sh and test.sh (and so by .ci/run).
#
# - Creates .venv when missing and installs exactly tools/requirements.lock into it
#   (pip install --require-hashes: every version and file hash fixed), then asr-kd itself
#   (editable, no dependencies, no build isolation: the build backend comes from the lock too).
# - Reinstalls when the lock or pyproject.toml changed since the last install.
# - Every time: checks that the installed versions equal the lock (tools/check_env.py versions).
#   A venv that differs (a package upgraded or downgraded by hand, a stale venv) is made anew,
#   and the reason is printed. With ASR_KD_STRICT_ENV=1 (set by .ci/run) a package installed by
#   hand that is not in the lock counts as a difference too.
# - After an install: imports torch, torchaudio (its compiled extension), speechbrain,
#   sentencepiece and flashlight-text, and stops naming the package and versions if one fails.
# Choose the interpreter with PYTHON=python3.12 (default python3; Python >= 3.10 is required).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.asr-kd-installed"
LOCK="$ROOT/tools/requirements.lock"
PY="${PYTHON:-python3}"
STRICT=()
[ "${ASR_KD_STRICT_ENV:-0}" = 1 ] && STRICT=(--strict)

_asr_kd_install() {
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "asr-kd needs Python >= 3.10; '$PY' is missing or older. Set PYTHON=/path/to/python3.x" >&2
    exit 1
  fi
  echo "Setting up $VENV from tools/requirements.lock (first run: downloads torch/torchaudio, ~5 GB, a few min) ..." >&2
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || {
      rm -rf "$VENV"
      echo "Could not create a virtual environment with '$PY' (on Debian/Ubuntu: apt-get install python3-venv)." >&2
      exit 1
    }
  fi
  rm -f "$STAMP"
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"; then
    echo "Installing tools/requirements.lock failed (see pip's message above). A hash mismatch means a" >&2
    echo "download was corrupted or the lock was edited by hand; a missing version means the registry" >&2
    echo "does not serve it to this Python/platform. Rerun to retry; the lock is remade by bash tools/lock.sh." >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  "$VENV/bin/python" "$ROOT/tools/check_env.py" imports >&2 || exit 1
  touch "$STAMP"
}

# A venv whose pip does not run (e.g. a first setup that died half-way) is made anew.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "The environment in $VENV is broken (no working pip); recreating it." >&2
  rm -rf "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$LOCK" -nt "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  _asr_kd_install
fi
if ! "$VENV/bin/python" "$ROOT/tools/check_env.py" versions "${STRICT[@]}"; then
  echo "Making $VENV anew from tools/requirements.lock (the environment above differs from it)." >&2
  rm -rf "$VENV"
  _asr_kd_install
  "$VENV/bin/python" "$ROOT/tools/check_env.py" versions "${STRICT[@]}" || {
    echo "The fresh environment still differs from tools/requirements.lock: remake the lock (bash tools/lock.sh)." >&2
    exit 1
  }
fi
