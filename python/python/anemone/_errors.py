"""The exceptions and warnings anemone raises, and the diagnostics some of them carry.

This module imports nothing of the extension: the extension raises these classes by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Tuple


@dataclass(frozen=True, repr=False)
class Diagnostic:
    """One finding about a program: an error or a warning, with where it points.

    ``line`` and ``col`` are 1-based and ``None`` for findings about the whole file (or
    about a built program, which has no text). ``str(d)`` is the rendered form the
    ``anemone check`` command prints: ``file:line:col: severity[code]: message``, then the
    source line with the place underlined, then the hint.
    """

    severity: str
    code: str
    message: str
    file: Optional[str] = None
    line: Optional[int] = None
    col: Optional[int] = None
    label: Optional[str] = None
    help: Optional[str] = None
    rendered: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def location(self) -> str:
        """``file:line:col``, ``file`` alone without a position, or ``""``."""
        if self.file is None:
            return ""
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"<Diagnostic {self.severity}[{self.code}]{where}: {self.message}>"

    def __str__(self) -> str:
        if self.rendered:
            return self.rendered
        head = f"{self.severity}[{self.code}]: {self.message}"
        return f"{self.location}: {head}" if self.location else head

    @classmethod
    def _from_fields(cls, fields: Mapping[str, Any]) -> "Diagnostic":
        return cls(**{k: fields.get(k) for k in _FIELDS if k in fields})


_FIELDS: Tuple[str, ...] = (
    "severity",
    "code",
    "message",
    "file",
    "line",
    "col",
    "label",
    "help",
    "rendered",
)


class AnemoneError(Exception):
    """Base class of every error anemone raises.

    ``str(error)`` is the message the Rust library gives for the same failure (and the
    ``anemone`` command prints). Errors about a program's text also carry the findings as
    ``diagnostics``.
    """

    message: str
    diagnostics: List[Diagnostic]

    def __init__(self, message: str, diagnostics: Iterable[Any] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = [
            d if isinstance(d, Diagnostic) else Diagnostic._from_fields(d) for d in diagnostics
        ]

    def __str__(self) -> str:
        return self.message


class LoadError(AnemoneError):
    """A model could not be read: missing or unreadable files, a Core ML model anemone
    cannot import, weight files that do not match the program."""


class ParseError(AnemoneError):
    """MIL text that does not parse; the message points at ``file:line:col``."""


class ValidationError(AnemoneError):
    """A program that parses but is not valid (types, shapes, unknown names). The message
    is the rendered diagnostics, as ``anemone check`` and the Rust ``Diagnostics`` show
    them."""


class BuildError(AnemoneError, ValueError):
    """A ``Builder`` call that cannot make a valid op (wrong shapes, a missing input...)."""


class CompileError(AnemoneError):
    """The device did not compile the program: an op or type it does not support, weights
    it cannot use, or a spent compile budget."""


class DeviceError(AnemoneError):
    """The device is unknown or unavailable here (``device="ane"`` off a Mac), or it
    reported a failure while loading or evaluating."""


class InputError(AnemoneError, ValueError):
    """``predict`` inputs that do not match the model: an unknown, missing or repeated
    name, or values that do not fit the input's type."""


class ShapeError(InputError):
    """A ``predict`` input whose shape differs from the declared one, or whose values do
    not convert to the declared element type."""


class PrecisionWarning(UserWarning):
    """An input was converted to the model's element type and some values changed
    (rounded, overflowed to infinity, flushed to zero, or were NaN)."""


__all__ = [
    "AnemoneError",
    "BuildError",
    "CompileError",
    "DeviceError",
    "Diagnostic",
    "InputError",
    "LoadError",
    "ParseError",
    "PrecisionWarning",
    "ShapeError",
    "ValidationError",
]
