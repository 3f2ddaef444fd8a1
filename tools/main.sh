#!/usr/bin/env bash
# The main job: the default recipe end to end. Creates/reuses .venv first.
# Until the ASR recipe lands this runs the distillation core's measured demo (`asr-kd demo`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec "$VENV/bin/asr-kd" demo "$@"
