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
$VPY -m pip install --quiet -e ".[test,web,ray]"   # gradio and playwright (the Python package only)

# The web app's browser test drives Debian's Chromium through Playwright; no browser is ever
# downloaded by Playwright. Installed with apt-get when missing and apt-get can run (root or
# passwordless sudo); otherwise the test skips with the reason (and fails under CI=true).
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no $CHROMIUM and no apt-get: the browser test will skip (install Chromium at $CHROMIUM)"
  else
    if [ "$(id -u)" -eq 0 ]; then SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
    else SUDO="none"
    fi
    if [ "$SUDO" = none ]; then
      echo "note: no $CHROMIUM and apt-get needs root: run 'sudo apt-get install chromium', or the browser test will skip"
    elif ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
             $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }; then
      echo "warning: apt-get could not install chromium: the browser test will skip (or fail under CI)"
    fi
  fi
fi
.venv/bin/hairtryon weights fetch bisenet
echo "hairtryon is installed in .venv (activate with: source .venv/bin/activate)"
if [ -z "${HAIRTRYON_SKIP_DEMO:-}" ]; then
    echo "running the demo: .venv/bin/hairtryon demo -o demo/"
    .venv/bin/hairtryon demo -o demo/
fi
