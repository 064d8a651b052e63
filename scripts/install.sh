#!/usr/bin/env bash
# Installs Mouse-FaceLift and everything it needs on a fresh machine.
# torch is pinned to the local CPU build first: an unpinned torch would pull GB of CUDA wheels.
# Set MFL_TORCH to choose another build (e.g. on GPU nodes: MFL_TORCH="torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
"$py" -m pip install -q --disable-pip-version-check "${MFL_TORCH:-torch==2.13.0}"
"$py" -m pip install -q --disable-pip-version-check -e ".[render,train,dev]"
