"""The type stub editors read (anemone/__init__.pyi) says what the module has: the same
public names, the same members on each class, the same parameters on each function."""

import ast
import inspect
from pathlib import Path

import pytest

import anemone

STUB = Path(anemone.__file__).with_name("__init__.pyi")


def public(name):
    return not name.startswith("_") or name == "__version__"


def stub_tree():
    return ast.parse(STUB.read_text())


def stub_top_level():
    """Top-level classes, functions and annotated names of the stub (imports and private
    aliases left out)."""
    found = {}
    for node in stub_tree().body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
    return {k: v for k, v in found.items() if public(k) and k != "__all__"}


def class_members(node):
    """Members a stub class declares: methods, properties and annotated attributes."""
    members = {}
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            members[item.name] = item
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members[item.target.id] = item
    return members


def runtime_members(cls):
    """Members a class defines itself: functions, properties, class-level annotations
    (dataclass fields and instance attributes)."""
    names = set(vars(cls)) | set(getattr(cls, "__annotations__", {}))
    names -= {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__slots__",
              "__annotations__", "__dataclass_fields__", "__dataclass_params__", "__match_args__",
              "__hash__", "__eq__", "__setattr__", "__delattr__", "__firstlineno__", "__static_attributes__",
              "__annotate_func__", "__annotations_cache__", "__repr__", "__str__"}
    return {n for n in names if not n.startswith("_") or n == "__len__"}


def test_the_stub_and_the_module_have_the_same_public_names():
    stub = set(stub_top_level())
    assert stub == set(anemone.__all__)
    for name in anemone.__all__:
        assert hasattr(anemone, name), f"{name} is in __all__ but not in the module"
    runtime = {n for n in dir(anemone) if public(n)}
    assert runtime == set(anemone.__all__), "public names outside __all__"


@pytest.mark.parametrize("name", sorted(n for n, node in stub_top_level().items() if isinstance(node, ast.ClassDef)))
def test_each_class_has_the_members_its_stub_declares(name):
    node = stub_top_level()[name]
    cls = getattr(anemone, name)
    assert inspect.isclass(cls)
    stub_bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
    assert [b.__name__ for b in cls.__bases__] == (stub_bases or ["object"])
    members = class_members(node)
    # Constructors users call are in the stub; the others (Model, Program, Var) are made
    # by the module itself.
    assert set(members) - {"__init__"} == runtime_members(cls)
    for member, item in members.items():
        if not isinstance(item, ast.FunctionDef):
            continue
        value = getattr(cls, member)
        is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
        assert isinstance(inspect.getattr_static(cls, member), property) == is_property, f"{name}.{member}"
        if not is_property:
            assert_same_parameters(item, value, f"{name}.{member}")


@pytest.mark.parametrize("name", sorted(n for n, node in stub_top_level().items() if isinstance(node, ast.FunctionDef)))
def test_each_function_takes_the_parameters_its_stub_declares(name):
    assert_same_parameters(stub_top_level()[name], getattr(anemone, name), name)


def assert_same_parameters(node, function, what):
    """Names, kinds and which have defaults, in order."""
    a = node.args
    stub = []
    defaults_from = len(a.posonlyargs) + len(a.args) - len(a.defaults)
    for i, arg in enumerate(a.posonlyargs + a.args):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        stub.append((arg.arg, kind, i >= defaults_from))
    if a.vararg:
        stub.append((a.vararg.arg, "VAR_POSITIONAL", False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        stub.append((arg.arg, "KEYWORD_ONLY", default is not None))
    if a.kwarg:
        stub.append((a.kwarg.arg, "VAR_KEYWORD", False))
    runtime = [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in inspect.signature(function).parameters.values()
    ]
    assert stub == runtime, what


def test_the_package_is_marked_as_typed():
    assert STUB.with_name("py.typed").is_file()
