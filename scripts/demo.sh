#!/usr/bin/env bash
# The main demo: set up if needed, then build Shapes data, train bridges between the packaged DINOv2-S
# and SmolLM2-135M, evaluate, compare, and answer questions about real photos.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VLBRIDGE_VENV:-.venv}/bin/vlbridge" demo "$@"
