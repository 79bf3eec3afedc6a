#!/usr/bin/env bash
# The project's test command: installs everything the test suite needs, then runs all of it.
# Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install --quiet -e ".[test]"
exec python3 -m pytest "$@"
