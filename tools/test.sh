#!/usr/bin/env bash
# The test suite. Creates/reuses .venv first; extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q "$@"
