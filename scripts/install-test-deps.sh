#!/usr/bin/env bash
# Installs what the optional interop tests need:
# - coremltools, whose MILBlob storage library crates/mil/tests/blob_interop.rs compares
#   our weight files against;
# - JAX for CPU (jax[cpu], which pins the matching jaxlib), which runs
#   scripts/jax_reference.py, the independent f64 model that
#   crates/train/tests/reference_vs_jax.rs checks the Rust reference against.
#
# Uses the Python the tests use: $ANEMONE_PYTHON, else python3. Skips each package when
# its pinned version is already importable. Set ANEMONE_REQUIRE_COREMLTOOLS=1 or
# ANEMONE_REQUIRE_JAX=1 when running the tests to make a missing package an error instead
# of a skip.
set -euo pipefail

COREMLTOOLS_VERSION="9.0"
JAX_VERSION="0.10.2"
PYTHON="${ANEMONE_PYTHON:-python3}"

pip_install() {
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore "$@"
}

coremltools_installed() {
    "$PYTHON" - "$COREMLTOOLS_VERSION" <<'PY' >/dev/null 2>&1
import os, sys
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # coremltools warns about macOS-only parts
import numpy, coremltools
from coremltools import libmilstoragepython
sys.exit(0 if coremltools.__version__ == sys.argv[1] else 1)
PY
}

jax_installed() {
    "$PYTHON" - "$JAX_VERSION" <<'PY' >/dev/null 2>&1
import sys
import numpy, jax, jaxlib
# jax[cpu]==X pins jaxlib==X; both must match or jax refuses to import at run time.
sys.exit(0 if jax.__version__ == sys.argv[1] and jaxlib.__version__ == sys.argv[1] else 1)
PY
}

if coremltools_installed; then
    echo "coremltools $COREMLTOOLS_VERSION already importable with $PYTHON"
else
    echo "installing coremltools $COREMLTOOLS_VERSION for $PYTHON"
    pip_install "coremltools==$COREMLTOOLS_VERSION"
    if ! coremltools_installed; then
        echo "error: coremltools $COREMLTOOLS_VERSION installed but its storage library does not import with $PYTHON" >&2
        exit 1
    fi
    echo "coremltools $COREMLTOOLS_VERSION ready"
fi

if jax_installed; then
    echo "jax $JAX_VERSION already importable with $PYTHON"
else
    echo "installing jax[cpu] $JAX_VERSION for $PYTHON"
    pip_install "jax[cpu]==$JAX_VERSION"
    if ! jax_installed; then
        echo "error: jax $JAX_VERSION installed but does not import with $PYTHON" >&2
        exit 1
    fi
    echo "jax $JAX_VERSION ready"
fi
