"""Shared paths and helpers for the anemone Python tests."""

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
# Core ML packages converted from PyTorch by coremltools 9.0, with torch's fp32 outputs
# (scripts/make-coreml-fixtures.py); the Rust tests compare against the same files.
COREML_FIXTURES = REPO / "crates" / "anemone" / "tests" / "coreml"


def fixture_dirs():
    return sorted(p for p in COREML_FIXTURES.iterdir() if (p / "case.json").is_file())


def load_case(directory: Path) -> dict:
    return json.loads((directory / "case.json").read_text())


def assert_close_to_reference(got: np.ndarray, want: np.ndarray, case: dict, what: str) -> None:
    """The bound crates/cli/tests/coreml_cli.rs uses: |got - want| <= rel * |want| +
    abs_of_max * max|want|, element by element."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    got64 = got.astype(np.float64)
    want64 = want.astype(np.float64)
    tol = case["tolerance"]
    bound = tol["rel"] * np.abs(want64) + tol["abs_of_max"] * np.abs(want64).max()
    worst = np.argmax(np.abs(got64 - want64) - bound)
    assert np.all(np.abs(got64 - want64) <= bound), (
        f"{what}: element {np.unravel_index(worst, got.shape)} is {got64.flat[worst]}, "
        f"reference {want64.flat[worst]} (bound {bound.flat[worst]})"
    )


@pytest.fixture
def mlp_dir() -> Path:
    return COREML_FIXTURES / "mlp-ios18"
