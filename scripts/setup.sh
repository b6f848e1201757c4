#!/usr/bin/env bash
# Set up palimpsest on a fresh machine: a virtual environment in .venv, torch (CPU build) first,
# then the package (with dev tools when called with --dev), then the Fashion-MNIST files from
# Debian when apt is available and the files are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# torch first, pinned to the local CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  $PIP install --disable-pip-version-check -q "torch==${TORCH_VERSION:-2.13.0}"
fi
$PIP install --disable-pip-version-check -q numpy
if [ "${1:-}" = "--dev" ]; then
  $PIP install --disable-pip-version-check -q -e ".[dev]"
else
  $PIP install --disable-pip-version-check -q -e .
fi

# Debian packages: Fashion-MNIST (the default data), and with --dev the fortunes text files and
# Chromium (the browser test of the HTML report). Each is installed only when missing.
FMNIST=${PALIMPSEST_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
PACKAGES=()
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
  PACKAGES+=(dataset-fashion-mnist)
fi
if [ "${1:-}" = "--dev" ]; then
  [ -d /usr/share/games/fortunes ] || PACKAGES+=(fortunes fortunes-min)
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || PACKAGES+=(chromium)
fi
if [ ${#PACKAGES[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    echo "Installing Debian packages: ${PACKAGES[*]}..."
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null \
      || echo "warning: could not install ${PACKAGES[*]}; without dataset-fashion-mnist set PALIMPSEST_FASHION_MNIST" \
              "to a folder with the IDX files; without chromium the browser test skips" >&2
  else
    echo "warning: apt-get is unavailable, so ${PACKAGES[*]} are not installed; set PALIMPSEST_FASHION_MNIST to a" \
         "folder with the Fashion-MNIST IDX files; without chromium the browser test skips" >&2
  fi
fi
