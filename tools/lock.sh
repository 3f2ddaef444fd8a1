#!/usr/bin/env bash
# Regenerate tools/requirements.lock, the exact, hashed set of packages that tools/venv.sh installs.
#
# Run this only when a dependency in pyproject.toml changes, then run `bash tools/test.sh` on a
# fresh clone with no .venv and no pip cache before committing the new lock.
#
# The lock is made by uv's `pip compile --universal`: one file whose environment markers cover
# every Python >= 3.10 and platform, with the sha256 of every file of every pinned release
# (pip-tools' pip-compile would lock only the interpreter and platform it runs on). uv is needed
# only here; installing from the lock is plain pip (`pip install --require-hashes`).
#
#   bash tools/lock.sh            # needs uv (pip install uv); UV=/path/to/uv to choose one
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV="${UV:-uv}"
cd "$ROOT"
BUILD="$(mktemp)"
trap 'rm -f "$BUILD" tools/requirements.lock.tmp' EXIT
# The build backend is locked too: the project itself is installed with --no-build-isolation,
# so a new setuptools release cannot change an install.
printf 'setuptools>=77\nwheel\n' >"$BUILD"
# The old lock as uv's output file: uv keeps its pins where they still fit (new packages only).
cp tools/requirements.lock tools/requirements.lock.tmp
"$UV" pip compile pyproject.toml "$BUILD" --extra test --universal --python-version 3.10 \
  --generate-hashes --no-header --no-annotate -o tools/requirements.lock.tmp
{
  echo "# The exact environment of asr-kd (every package, exact version, sha256 of each file)."
  echo "# Made by tools/lock.sh (uv pip compile --universal) from pyproject.toml; do not edit by hand."
  echo "# Installed by tools/venv.sh: pip install --require-hashes --no-deps -r tools/requirements.lock"
  cat tools/requirements.lock.tmp
} >tools/requirements.lock.new
mv tools/requirements.lock.new tools/requirements.lock
echo "wrote tools/requirements.lock ($(grep -c '^[a-z]' tools/requirements.lock) pinned lines)"
