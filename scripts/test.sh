#!/usr/bin/env bash
# The project's test command: installs, then runs the whole suite (fast tests and the
# small-size `slow` end-to-end runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest -m "slow or not slow" "$@"
