#!/usr/bin/env bash
# The main job: the default ASR distillation recipe (synth_en, demo preset) end to end.
# Creates/reuses .venv first. Extra arguments go to `asr-kd run`, e.g. --set device=cuda.
# Interrupted, it resumes where it stopped; finished stages are skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "$VENV/bin/asr-kd" run recipes/synth_en/config.yaml --preset demo "$@"
