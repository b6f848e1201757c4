#!/usr/bin/env bash
# Set up and run the built-in quickstart (or any arguments given to `palimpsest run`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/palimpsest run "$@"
