#!/usr/bin/env bash
# Creates .venv with the Python reference implementation (ZODB, ZEO, BTrees,
# numpy, zodbtools from PyPI) that the tests use as the oracle. Idempotent.
#
# Two pip steps, both driven by scripts/python-requirements.txt: pygolang 0.1
# (a zodbtools dependency) has no wheel and must be compiled against the
# Cython and setuptools_dso of step 1, hence `--no-build-isolation` for the
# lines marked `build:no-isolation`. A fresh install takes about two minutes
# (most of it compiling pygolang); later runs are no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."
req=scripts/python-requirements.txt
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
pip=(.venv/bin/pip install -q --disable-pip-version-check)
"${pip[@]}" -r <(grep -v 'build:no-isolation' "$req")
"${pip[@]}" --no-build-isolation -r <(grep 'build:no-isolation' "$req" | sed 's/#.*//')
.venv/bin/python - <<'PY'
import ZODB, ZEO, BTrees, numpy, zodbpickle, io
import ZODB._compat
ZODB._compat.BytesIO = io.BytesIO  # zodbtools' dump module needs it on ZODB 6
import zodbtools.zodbdump
print("python oracle ready:", ZODB.__file__)
PY
