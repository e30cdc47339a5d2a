#!/usr/bin/env bash
# Runs the test suite in the venv made by scripts/setup.sh (set up first when it is missing).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import hairtryon, pytest, hypothesis" 2>/dev/null; then
    echo "test.sh: no complete environment in .venv yet: running ./scripts/setup.sh first" >&2
    ./scripts/setup.sh
fi
exec .venv/bin/python -m pytest -q "$@"
