"""anemone: run MIL programs and Core ML models on Apple's Neural Engine, or on a CPU
simulator that follows the ANE's rules and fp16 numerics on any machine.

    import anemone, numpy as np
    m = anemone.load("model.mlpackage")              # or a MIL model directory / .mil file
    print(m.inputs)                                  # [TensorInfo(name='x', shape=..., ...)]
    out = m.predict({"x": np.ones((1, 8, 1, 32), np.float32)})   # {'y': ndarray}

``check`` lists what ``anemone check`` reports, ``Builder`` writes small programs, and
``probe_weight_reload`` runs the weight-reload experiment. Every error is an
``AnemoneError``; see the subclasses for which is which.
"""

import warnings as _warnings
from dataclasses import asdict as _asdict
from dataclasses import dataclass as _dataclass
from dataclasses import field as _field
from os import PathLike as _PathLike
from typing import Any as _Any
from typing import Dict as _Dict
from typing import List as _List
from typing import Mapping as _Mapping
from typing import Optional as _Optional
from typing import Sequence as _Sequence
from typing import Tuple as _Tuple
from typing import Union as _Union

import numpy as _np

from . import _anemone
from ._errors import (
    AnemoneError,
    BuildError,
    CompileError,
    DeviceError,
    Diagnostic,
    InputError,
    LoadError,
    ParseError,
    PrecisionWarning,
    ShapeError,
    ValidationError,
)

__version__: str = _anemone.__version__

_Path = _Union[str, "_PathLike[str]"]

# MIL element types as NumPy dtypes: what `predict` returns for an output of that type and
# takes without conversion. bf16 has no NumPy type; it travels as float32.
_NUMPY_DTYPES: _Dict[str, _Any] = {
    "fp16": _np.float16,
    "fp32": _np.float32,
    "fp64": _np.float64,
    "bf16": _np.float32,
    "bool": _np.bool_,
    "int8": _np.int8,
    "int16": _np.int16,
    "int32": _np.int32,
    "int64": _np.int64,
    "uint8": _np.uint8,
    "uint16": _np.uint16,
    "uint32": _np.uint32,
    "uint64": _np.uint64,
}


def _numpy_dtype(mil_dtype: _Optional[str]) -> "_Optional[_np.dtype[_Any]]":
    t = _NUMPY_DTYPES.get(mil_dtype) if mil_dtype is not None else None
    return None if t is None else _np.dtype(t)


def _describe(mil_dtype: _Optional[str], shape: _Tuple[int, ...]) -> str:
    return f"{mil_dtype or '?'}[{', '.join(str(d) for d in shape)}]"


@_dataclass(frozen=True)
class TensorInfo:
    """An input or output of a model: its name, shape, and element type, both as the
    NumPy dtype ``predict`` takes and returns and as the MIL type the program declares
    (``dtype`` is ``None`` for MIL types NumPy has no form of)."""

    name: str
    shape: _Tuple[int, ...]
    dtype: "_Optional[_np.dtype[_Any]]"
    mil_dtype: str

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {_describe(self.mil_dtype, self.shape)}, dtype={self.dtype})"


def _infos(raw: _Sequence[_Tuple[str, _Tuple[int, ...], str]]) -> _List[TensorInfo]:
    return [TensorInfo(name, tuple(shape), _numpy_dtype(d), d) for name, shape, d in raw]


def _as_input(name: str, value: _Any) -> "_np.ndarray[_Any, _Any]":
    """``value`` as a numeric NumPy array in native byte order."""
    array = _np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise InputError(
            f"input `{name}`: arrays of dtype {array.dtype} are not supported: use a float, "
            "integer or bool array"
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


class Model:
    """A program compiled for a device, ready to ``predict``. Made by ``load`` or
    ``Program.compile``."""

    inputs: _List[TensorInfo]
    outputs: _List[TensorInfo]

    def __init__(self, native: "_anemone.Model") -> None:
        self._native = native
        self.inputs = _infos(native.inputs)
        self.outputs = _infos(native.outputs)

    @property
    def device(self) -> str:
        """``"sim"`` (the CPU simulator) or ``"ane"``."""
        return self._native.device

    @property
    def function(self) -> str:
        """The function of the program that runs."""
        return self._native.function

    @property
    def rewrites(self) -> _List[str]:
        """For a Core ML model: the rewrites made where the ANE deviates from MIL."""
        return self._native.rewrites

    @property
    def source(self) -> _Optional[str]:
        """The file the program was read from, as diagnostics name it (``None`` for a
        built program)."""
        return self._native.source_name

    def mil_text(self) -> str:
        """The program as MIL text (for a Core ML model: as imported and rewritten)."""
        return self._native.mil_text()

    def predict(self, inputs: _Mapping[str, _Any]) -> _Dict[str, "_np.ndarray[_Any, _Any]"]:
        """Runs the model on ``inputs`` (name -> array) and returns every output by name,
        in declaration order, as an array of the output's declared type.

        Each input must be given once, with exactly its declared shape. Float inputs take
        any numeric array: values are converted to the declared type (fp16 rounding to
        nearest even), with a ``PrecisionWarning`` when some changed. Integer inputs take
        integers or whole-valued floats that fit; bool inputs take any numbers.

        Raises ``InputError`` for an unknown, missing or repeated name and ``ShapeError``
        for a wrong shape or values that do not fit, with the library's message.
        """
        if not isinstance(inputs, _Mapping):
            raise TypeError(
                f"predict takes a mapping from input name to array, got {type(inputs).__name__}"
            )
        pairs = [(str(name), _as_input(str(name), value)) for name, value in inputs.items()]
        outputs, notes = self._native.predict(pairs)
        for note in notes:
            _warnings.warn(note, PrecisionWarning, stacklevel=2)
        return dict(outputs)

    def __repr__(self) -> str:
        def sig(infos: _List[TensorInfo]) -> str:
            return ", ".join(f"{i.name}: {_describe(i.mil_dtype, i.shape)}" for i in infos)

        where = f"{self.source!r}, " if self.source else ""
        return (
            f"<anemone.Model {where}device={self.device!r}, "
            f"inputs=[{sig(self.inputs)}], outputs=[{sig(self.outputs)}]>"
        )


def load(
    path: _Path,
    device: _Optional[str] = None,
    *,
    function: _Optional[str] = None,
    lenient: bool = False,
) -> Model:
    """Reads, validates and compiles a model.

    ``path`` is a MIL model directory (``model.mil`` and ``weights/``), a ``.mil`` file, or
    a Core ML model (``.mlpackage`` directory or ``.mlmodel`` file), which is imported with
    the rewrites the ANE needs. ``device`` is ``"auto"`` (the ANE when present, else the
    simulator), ``"sim"`` or ``"ane"``; ``None`` follows ``$ANEMONE_DEVICE``, else auto.
    ``function`` picks the function to run (default ``main``, else the first);
    ``lenient`` reads weight files as the ANE compiler does.

    Raises ``LoadError`` (unreadable), ``ParseError``, ``ValidationError`` (the rendered
    diagnostics, ``file:line:col`` included), ``CompileError`` or ``DeviceError``.
    """
    return Model(_anemone.load(str(path), device, function, lenient))


def check(path: _Path, *, lenient: bool = False) -> _List[Diagnostic]:
    """What ``anemone check`` reports for a program: a parse error, or the validation
    errors, weight-file findings and Neural Engine lints, errors first. An empty list
    means a clean program. Raises ``LoadError`` when ``path`` cannot be read at all."""
    return [Diagnostic._from_fields(d) for d in _anemone.check(str(path), lenient)]


@_dataclass(frozen=True)
class ReloadMethod:
    """One way of changing the weights in the weight-reload probe: ``disk-reload``,
    ``recompile`` or ``dynamic``. ``speedup`` (compile+load time over the update time) is
    ``None`` for a method that did not take effect."""

    method: str
    took_effect: bool
    max_error: float
    update_ms: float
    speedup: _Optional[float]


@_dataclass(frozen=True)
class WeightReloadResult:
    """What the weight-reload probe found: its ``verdict`` (``"SUCCESS"``, ``"PARTIAL"`` or
    ``"FAIL"``), the largest output change after the reload, and the timings. ``to_dict``
    gives the fields ``anemone probe weight-reload --json`` prints."""

    device: str
    channels: int
    spatial: int
    sim_reload: _Optional[str]
    verdict: str
    max_change: float
    reload_failed: bool
    compile_load_ms: float
    unload_ms: float
    reload_ms: float
    methods: _List[ReloadMethod] = _field(default_factory=list)

    def to_dict(self) -> _Dict[str, _Any]:
        return _asdict(self)


def probe_weight_reload(
    device: _Optional[str] = None,
    *,
    channels: int = 64,
    spatial: int = 32,
    sim_reload: _Optional[str] = None,
) -> WeightReloadResult:
    """The seed experiment: compile a ``channels`` x ``channels`` 1x1 conv with identity
    weights, overwrite its weight file with 3x identity, unload and load without
    compiling, and see whether the output changed; then the same update by recompiling
    and by dynamic weights, timed. On the simulator ``sim_reload`` picks what a reload
    does: ``"snapshot"`` (the default, as measured on the ANE: the verdict is FAIL) or
    ``"reads-disk"``."""
    raw = dict(_anemone.probe_weight_reload(device, channels, spatial, sim_reload))
    raw["methods"] = [ReloadMethod(**m) for m in raw["methods"]]
    return WeightReloadResult(**raw)


class Var:
    """A value of the function a ``Builder`` is building: an input, a constant or an op's
    result. Use it as an argument of later calls of the same builder."""

    __slots__ = ("_builder", "_handle", "name", "shape", "mil_dtype")
    name: str
    shape: _Tuple[int, ...]
    mil_dtype: _Optional[str]

    def __init__(
        self,
        builder: "Builder",
        handle: _Tuple[int, int],
        name: str,
        shape: _Tuple[int, ...],
        mil_dtype: _Optional[str],
    ) -> None:
        self._builder = builder
        self._handle = handle
        self.name = name
        self.shape = tuple(shape)
        self.mil_dtype = mil_dtype

    @property
    def dtype(self) -> "_Optional[_np.dtype[_Any]]":
        return _numpy_dtype(self.mil_dtype)

    def __repr__(self) -> str:
        return f"Var({self.name!r}, {_describe(self.mil_dtype, self.shape)})"


_FLOAT_MIL = ("fp16", "fp32")


def _literal_dtype(value: _Any, array: "_np.ndarray[_Any, _Any]", float_dtype: str) -> str:
    """The MIL type of a literal given without one. Python floats (and float64 arrays)
    take ``float_dtype``; float16 and float32 arrays keep theirs. Python ints and int64
    arrays become int32, the type of MIL's shapes, axes and perms."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    from_python = not isinstance(value, (_np.ndarray, _np.generic))
    if kind == "b":
        return "bool"
    if kind == "f":
        if from_python or size == 8:
            return float_dtype
        return "fp16" if size == 2 else "fp32"
    if kind in "iu":
        if from_python or (kind == "i" and size == 8):
            return "int32"
        return f"{'int' if kind == 'i' else 'uint'}{size * 8}"
    if kind == "U":
        return "string"
    raise BuildError(f"cannot make a MIL literal of {value!r} (NumPy dtype {array.dtype})")


class Builder:
    """Builds a one-function MIL program, inferring each result's type as it goes (a
    shape error is raised at the call that causes it, as ``BuildError``).

        b = anemone.Builder()
        x = b.input("x", (1, 64, 1, 32), "fp32")
        h = b.relu(b.conv(b.cast(x, "fp16"), b.weight("W1", w1)))
        b.output(b.cast(h, "fp32"), "y")
        model = b.build().compile(device="sim")

    Weights are stored as BLOBFILE constants in ``weights/weight.bin`` (fp16 unless told
    otherwise); ``const`` makes inline constants. ``op`` adds any op by its MIL name.
    """

    def __init__(self, function: str = "main", opset: str = "ios18") -> None:
        self._native = _anemone.Builder(function, opset)

    def _var(self, info: _Tuple[int, int, str, _Tuple[int, ...], _Optional[str]]) -> Var:
        step, index, name, shape, mil_dtype = info
        return Var(self, (step, index), name, shape, mil_dtype)

    def _handle(self, v: _Any, what: str) -> _Tuple[int, int]:
        if not isinstance(v, Var):
            raise TypeError(f"{what}: expected a Var of this builder, got {type(v).__name__}")
        if v._builder is not self:
            raise BuildError(f"{what}: `{v.name}` belongs to another Builder")
        return v._handle

    def _literal(self, value: _Any, dtype: _Optional[str], float_dtype: str) -> _Tuple[_Any, ...]:
        """``value`` as ``("lit", mil_dtype, shape, values)``, of ``dtype`` when given."""
        if isinstance(value, str):
            return ("lit", dtype or "string", (), [value])
        array = _np.asarray(value)
        if dtype is None:
            dtype = _literal_dtype(value, array, float_dtype)
        return ("lit", dtype, tuple(array.shape), array.reshape(-1).tolist())

    def _arg(self, name: str, value: _Any, float_dtype: str) -> _Tuple[_Any, ...]:
        if isinstance(value, Var):
            return ("var",) + self._handle(value, f"input `{name}`")
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Var) for v in value):
            return ("tuple", [self._handle(v, f"input `{name}`") for v in value])
        return self._literal(value, None, float_dtype)

    def _operand(self, value: _Any, like: Var, what: str) -> Var:
        """``value`` as a Var: itself, or a constant of ``like``'s element type."""
        if isinstance(value, Var):
            return value
        return self.const(value, dtype=like.mil_dtype, name=what)

    # Values.

    def input(self, name: str, shape: _Sequence[int], dtype: str = "fp32") -> Var:
        """Declares a function input of MIL type ``dtype`` (``fp32``, ``fp16``, ...)."""
        return self._var(self._native.input(name, [int(d) for d in shape], dtype))

    def weight(self, name: str, values: _Any, dtype: str = "fp16") -> Var:
        """A weight constant in the weight file, shaped as ``values``, stored as ``dtype``
        (``fp16``, ``bf16`` or ``fp32``; fp16 rounds to nearest even)."""
        array = _np.ascontiguousarray(values, dtype=_np.float32)
        return self._var(self._native.weight(name, array, dtype))

    def const(self, value: _Any, dtype: _Optional[str] = None, name: str = "const") -> Var:
        """An inline ``const``: a Python number, bool, string or list, or a NumPy array.
        Without ``dtype``, floats are fp32 (NumPy float16 arrays fp16), ints int32."""
        return self._var(self._native.constant(name, self._literal(value, dtype, "fp32")))

    # Ops.

    def op(self, kind: str, /, **inputs: _Any) -> _Union[Var, _Tuple[Var, ...]]:
        """Any op by its MIL name, inputs by keyword: Vars, lists of Vars (tuple inputs
        such as concat's ``values``), or literals (Python floats take the element type of
        the op's first fp16/fp32 Var input). Returns the result, or a tuple of them for
        ops with several."""
        float_dtype = next(
            (v.mil_dtype for v in inputs.values() if isinstance(v, Var) and v.mil_dtype in _FLOAT_MIL),
            "fp32",
        )
        args = [(name, self._arg(name, value, float_dtype)) for name, value in inputs.items()]
        made = [self._var(i) for i in self._native.op(kind, None, args)]
        return made[0] if len(made) == 1 else tuple(made)

    def cast(self, x: Var, dtype: str) -> Var:
        return self._var(self._native.cast(self._handle(x, "cast x"), dtype))

    def conv(
        self,
        x: Var,
        weight: Var,
        *,
        bias: _Optional[Var] = None,
        strides: _Sequence[int] = (1, 1),
        dilations: _Sequence[int] = (1, 1),
        pad_type: str = "valid",
        pad: _Sequence[int] = (0, 0, 0, 0),
        groups: int = 1,
    ) -> Var:
        """A 2-D convolution of ``x`` ``[N, C_in, H, W]`` with ``weight``
        ``[C_out, C_in / groups, kH, kW]``."""
        return self._var(
            self._native.conv(
                self._handle(x, "conv x"),
                self._handle(weight, "conv weight"),
                list(strides),
                list(dilations),
                pad_type,
                list(pad),
                groups,
                None if bias is None else self._handle(bias, "conv bias"),
            )
        )

    def matmul(self, x: Var, y: Var, *, transpose_x: bool = False, transpose_y: bool = False) -> Var:
        return self._var(
            self._native.matmul(self._handle(x, "matmul x"), self._handle(y, "matmul y"), transpose_x, transpose_y)
        )

    def _binary(self, kind: str, x: Var, y: _Any) -> Var:
        if not isinstance(x, Var) and isinstance(y, Var):
            x = self._operand(x, y, f"{kind}_x")
        y = self._operand(y, x, f"{kind}_y")
        return self._var(self._native.binary(kind, self._handle(x, f"{kind} x"), self._handle(y, f"{kind} y")))

    def add(self, x: Var, y: _Any) -> Var:
        """``x + y``; ``y`` may be a number (a constant of ``x``'s type)."""
        return self._binary("add", x, y)

    def sub(self, x: Var, y: _Any) -> Var:
        return self._binary("sub", x, y)

    def mul(self, x: Var, y: _Any) -> Var:
        return self._binary("mul", x, y)

    def relu(self, x: Var) -> Var:
        return self._var(self._native.unary("relu", self._handle(x, "relu x")))

    def sigmoid(self, x: Var) -> Var:
        return self._var(self._native.unary("sigmoid", self._handle(x, "sigmoid x")))

    def tanh(self, x: Var) -> Var:
        return self._var(self._native.unary("tanh", self._handle(x, "tanh x")))

    def softmax(self, x: Var, axis: int = -1) -> Var:
        return self._var(self._native.softmax(self._handle(x, "softmax x"), axis))

    def reshape(self, x: Var, shape: _Sequence[int]) -> Var:
        return self._var(self._native.reshape(self._handle(x, "reshape x"), [int(d) for d in shape]))

    def transpose(self, x: Var, perm: _Sequence[int]) -> Var:
        return self._var(self._native.transpose(self._handle(x, "transpose x"), [int(d) for d in perm]))

    def concat(self, values: _Sequence[Var], axis: int, *, interleave: bool = False) -> Var:
        handles = [self._handle(v, "concat values") for v in values]
        return self._var(self._native.concat(handles, axis, interleave))

    # The program.

    def output(self, x: Var, name: _Optional[str] = None) -> Var:
        """Marks ``x`` as an output (in call order), renamed to ``name`` when given.
        Returns the output's Var."""
        return self._var(self._native.output(self._handle(x, "output"), name))

    def build(self) -> "Program":
        """Validates the program and packs its weights (``ValidationError`` when it is
        not valid). The builder stays usable."""
        return Program(self._native.build())

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"<anemone.Builder with {len(self)} calls>"


class Program:
    """A built program with its weights: print it, write it as a model directory, or
    compile it."""

    def __init__(self, native: "_anemone.Program") -> None:
        self._native = native

    @property
    def text(self) -> str:
        """The program as MIL text."""
        return self._native.text()

    def write_model_dir(self, path: _Path) -> None:
        """Writes ``model.mil`` and ``weights/`` into ``path`` (created if needed), for
        ``anemone.load``, ``anemone check`` or ``anemone run``."""
        self._native.write_model_dir(str(path))

    def compile(self, device: _Optional[str] = None, *, function: _Optional[str] = None) -> Model:
        """Compiles the program for ``device`` (as ``load`` takes it)."""
        return Model(self._native.compile(device, function))

    def __repr__(self) -> str:
        return f"<anemone.Program ({len(self.text.splitlines())} lines of MIL)>"


__all__ = [
    "AnemoneError",
    "BuildError",
    "Builder",
    "CompileError",
    "DeviceError",
    "Diagnostic",
    "InputError",
    "LoadError",
    "Model",
    "ParseError",
    "PrecisionWarning",
    "Program",
    "ReloadMethod",
    "ShapeError",
    "TensorInfo",
    "ValidationError",
    "Var",
    "WeightReloadResult",
    "__version__",
    "check",
    "load",
    "probe_weight_reload",
]
