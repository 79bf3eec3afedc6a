#!/usr/bin/env bash
# The project's test command: installs everything the test suite needs, then runs all of it.
# Usage: bash tests/run.sh [pytest args]
#
# It uses the python3 on PATH. Where that Python refuses system-wide installs (PEP 668, as Debian's
# own python3 does), it makes a virtual environment in .venv first (installing Debian's
# python3-venv when it is missing and we are root) and runs everything from there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY=python3
if [ -z "${VIRTUAL_ENV:-}" ] && python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        fi
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
fi
# Debian tools some tests drive (mbpoll: tests/test_modbus_protocol.py). Installed when missing and
# we are root; if that fails the run goes on and those tests skip.
if ! command -v mbpoll >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mbpoll >/dev/null; } \
        || echo "tests/run.sh: could not install mbpoll; its tests will be skipped" >&2
fi
# Debian prometheus (promtool and the server: tests/test_otel_table.py, tests/test_otel_e2e.py).
if ! command -v prometheus >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
        || echo "tests/run.sh: could not install prometheus; its tests will be skipped" >&2
fi
"$PY" -m pip install --quiet -e ".[test]"
exec "$PY" -m pytest "$@"
