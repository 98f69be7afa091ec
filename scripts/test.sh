#!/usr/bin/env bash
# The test suite: set up if needed, then run every test (tiny random models plus a few end-to-end
# tests with the packaged weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# parity tests against reference implementations must run, never skip, in the suite
export VLBRIDGE_REQUIRE_PARITY=1
exec "${VLBRIDGE_VENV:-.venv}/bin/python" -m pytest "$@"
