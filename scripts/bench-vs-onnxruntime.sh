#!/usr/bin/env bash
# Runs scripts/bench-vs-onnxruntime.py (anemone bench on the simulator against onnxruntime's
# CPU provider, same graphs) in a venv of its own with pinned packages, made on first use.
#
# Usage: bash scripts/bench-vs-onnxruntime.sh [ARGS...]    (ARGS go to the Python script;
#        --help lists them; --ort-fp32 gives the fairest comparison)
# Environment: PYTHON (default python3) makes the venv; VENV (default
#              target/bench-ort-venv, or under $CARGO_TARGET_DIR) is where it goes.
set -euo pipefail

cd "$(dirname "$0")/.."
ONNXRUNTIME_VERSION=1.32.0
ONNX_VERSION=1.23.2
NUMPY_VERSION=2.4.6
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-${CARGO_TARGET_DIR:-target}/bench-ort-venv}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "bench-vs-onnxruntime.sh: making a venv in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when a pinned version is missing: a run needs no network after the first.
if ! "$VENV/bin/python" - "$ONNXRUNTIME_VERSION" "$ONNX_VERSION" "$NUMPY_VERSION" <<'PY' 2>/dev/null
import sys
import numpy, onnx, onnxruntime
want = sys.argv[1:]
have = [onnxruntime.__version__, onnx.__version__, numpy.__version__]
sys.exit(0 if have == want else 1)
PY
then
    echo "bench-vs-onnxruntime.sh: installing onnxruntime $ONNXRUNTIME_VERSION, onnx" \
        "$ONNX_VERSION, numpy $NUMPY_VERSION" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "onnxruntime==$ONNXRUNTIME_VERSION" "onnx==$ONNX_VERSION" "numpy==$NUMPY_VERSION"
fi
exec "$VENV/bin/python" scripts/bench-vs-onnxruntime.py "$@"
