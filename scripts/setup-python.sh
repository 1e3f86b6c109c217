#!/usr/bin/env bash
# Creates .venv with the Python reference implementation (ZODB, ZEO, BTrees,
# numpy from PyPI) that the tests use as the oracle. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r scripts/python-requirements.txt
.venv/bin/python -c 'import ZODB, ZEO, BTrees, numpy, zodbpickle; print("python oracle ready:", ZODB.__file__)'
