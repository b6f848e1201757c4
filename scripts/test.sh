#!/usr/bin/env bash
# Set up with dev dependencies and run the whole test suite on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PALIMPSEST_THREADS=1
exec .venv/bin/python -m pytest "$@"
