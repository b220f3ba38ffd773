#!/usr/bin/env bash
# Installs what the optional interop tests need:
# - coremltools, whose MILBlob storage library crates/mil/tests/blob_interop.rs compares
#   our weight files against;
# - JAX for CPU (jax[cpu], which pins the matching jaxlib), which runs
#   scripts/jax_reference.py, the independent f64 model that
#   crates/train/tests/reference_vs_jax.rs checks the Rust reference against;
# - on Debian/Ubuntu x86-64 only, GNUstep (the Debian packages libgnustep-base-dev and
#   gobjc: a real Objective-C runtime and Foundation, ~15 MB), with which it then builds
#   the fake AppleNeuralEngine framework and libobjc shim of crates/anemone/tests/objc/ into
#   target/objc-fake/ (rebuilt on every run, git-ignored with target/), which
#   crates/anemone/tests/objc_gnustep.rs runs the Apple backend's Objective-C layer against.
#   Elsewhere it says so and skips. Installing needs root (or passwordless sudo).
#
# Uses the Python the tests use: $ANEMONE_PYTHON, else python3. Skips each package when
# its pinned version is already importable. Set ANEMONE_REQUIRE_COREMLTOOLS=1 or
# ANEMONE_REQUIRE_JAX=1 when running the tests to make a missing package an error instead
# of a skip; likewise ANEMONE_REQUIRE_GNUSTEP=1 for the GNUstep test.
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

GNUSTEP_PACKAGES=(libgnustep-base-dev gobjc)
OBJC_FAKE_DIR="$(cd "$(dirname "$0")/.." && pwd)/target/objc-fake"

gnustep_installed() {
    local p
    for p in "${GNUSTEP_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
    command -v gnustep-config >/dev/null
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        echo "error: installing ${GNUSTEP_PACKAGES[*]} needs root; install them, then rerun" >&2
        return 1
    fi
}

apt_install_gnustep() {
    local install=(env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq
        --no-install-recommends "${GNUSTEP_PACKAGES[@]}")
    # The package lists may be missing (fresh containers) or stale: update once and retry.
    as_root "${install[@]}" >/dev/null ||
        { as_root apt-get update -qq && as_root "${install[@]}" >/dev/null; }
}

if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]] || ! command -v apt-get >/dev/null ||
    ! command -v dpkg-query >/dev/null; then
    echo "GNUstep: skipped (the Objective-C fake is built on Debian/Ubuntu x86-64 only)"
else
    if gnustep_installed; then
        echo "GNUstep (${GNUSTEP_PACKAGES[*]}) already installed"
    else
        echo "installing GNUstep (${GNUSTEP_PACKAGES[*]})"
        apt_install_gnustep
        if ! gnustep_installed; then
            echo "error: ${GNUSTEP_PACKAGES[*]} installed but gnustep-config is missing" >&2
            exit 1
        fi
    fi
    bash "$(dirname "$0")/../crates/anemone/tests/objc/build.sh" "$OBJC_FAKE_DIR"
fi
