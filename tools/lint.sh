#!/usr/bin/env bash
# Lint, format check and type check (config in pyproject.toml); .ci/run calls this before the tests.
#   bash tools/lint.sh          # check
#   bash tools/lint.sh --fix    # apply ruff's safe fixes and its formatter first
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
if [[ "${1:-}" == "--fix" ]]; then
  "$VENV/bin/ruff" check --fix
  "$VENV/bin/ruff" format
fi
"$VENV/bin/ruff" check
"$VENV/bin/ruff" format --check
"$VENV/bin/mypy"
