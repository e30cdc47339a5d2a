#!/usr/bin/env bash
# Installs hairtryon and everything it needs into ./.venv, fetches the face-parser weights and
# runs the demo (the try-on on two public-domain portraits), printing where its results are.
# Re-running it is safe. Environment:
#   PYTHON           interpreter that creates the venv (default: python3, 3.10 or newer)
#   HAIRTRYON_TORCH  pip requirement for torch (default: torch==2.13.0, the CPU build here;
#                    on a CUDA machine use e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126")
#   HAIRTRYON_SKIP_DEMO=1  install only
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python
$VPY -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
$VPY -m pip install --quiet ${HAIRTRYON_TORCH:-torch==2.13.0}
$VPY -m pip install --quiet -e ".[test,web,ray]"
.venv/bin/hairtryon weights fetch bisenet
echo "hairtryon is installed in .venv (activate with: source .venv/bin/activate)"
if [ -z "${HAIRTRYON_SKIP_DEMO:-}" ]; then
    echo "running the demo: .venv/bin/hairtryon demo -o demo/"
    .venv/bin/hairtryon demo -o demo/
fi
