#!/usr/bin/env bash
# Create .venv and install fer-edge with host, device and test extras. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# -c: the versions the tests passed with (constraints.txt), so a fresh install matches them.
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
