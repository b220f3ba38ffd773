#!/usr/bin/env bash
# The Python package (python/): installs it into a fresh virtual environment under target/
# with the install command python/README.md gives, runs its pytest suite, then lints its
# Rust bindings. python/ is a cargo workspace of its own, outside the root workspace, so
# `cargo fmt --all` and `cargo clippy --workspace` at the root do not reach it: they run
# here.
#
# Needs python3 (3.9 or later, with venv and pip) and PyPI for the build backend (maturin),
# NumPy and pytest. The extension builds into python/target/ in cargo's dev profile: the
# tests check the bindings, not the optimizer, and the dev build takes half the time of the
# release build `pip install ./python` makes for users (measured on two cores: about 2.5
# minutes against 5 from nothing). Set MATURIN_PEP517_ARGS= (empty) to test the release
# build instead, ANEMONE_PYTHON to use another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${ANEMONE_PYTHON:-python3}"
VENV=target/python-venv

(cd python && cargo fmt --check)

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
# The install command of python/README.md, with the test runner.
MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS---profile dev}" "${pip[@]}" install ./python pytest

# From the repository root, so that the tests import the installed package, not python/.
"$VENV/bin/python" -m pytest -p no:cacheprovider python/tests

(cd python && cargo clippy --all-targets -- -D warnings)
