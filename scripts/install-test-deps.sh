#!/usr/bin/env bash
# Installs what the optional interop tests need: coremltools, whose MILBlob storage
# library crates/mil/tests/blob_interop.rs compares our weight files against.
#
# Uses the Python the tests use: $ANEMONE_PYTHON, else python3. Does nothing when the
# pinned version is already importable. Set ANEMONE_REQUIRE_COREMLTOOLS=1 when running
# the tests to make a missing coremltools an error instead of a skip.
set -euo pipefail

COREMLTOOLS_VERSION="9.0"
PYTHON="${ANEMONE_PYTHON:-python3}"

installed() {
    "$PYTHON" - "$COREMLTOOLS_VERSION" <<'PY' >/dev/null 2>&1
import os, sys
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # coremltools warns about macOS-only parts
import numpy, coremltools
from coremltools import libmilstoragepython
sys.exit(0 if coremltools.__version__ == sys.argv[1] else 1)
PY
}

if installed; then
    echo "coremltools $COREMLTOOLS_VERSION already importable with $PYTHON"
    exit 0
fi

echo "installing coremltools $COREMLTOOLS_VERSION for $PYTHON"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
    "coremltools==$COREMLTOOLS_VERSION"

if ! installed; then
    echo "error: coremltools $COREMLTOOLS_VERSION installed but its storage library does not import with $PYTHON" >&2
    exit 1
fi
echo "coremltools $COREMLTOOLS_VERSION ready"
