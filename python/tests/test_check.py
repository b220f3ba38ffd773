"""check(): the findings `anemone check` reports, placed at file:line:col; and the errors
load() raises for the same programs, with the same rendered text."""

import numpy as np
import pytest

import anemone

VALID = """program(1.3)
{
    func main<ios18>(tensor<fp32, [1, 4, 1, 32]> x) {
        tensor<fp32, [1, 4, 1, 32]> y = add(x = x, y = x)[name = string("y")];
    } -> (y);
}
"""


def model_dir(tmp_path, text, name="m"):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.mil").write_text(text)
    return directory


def test_a_parse_error_is_placed_at_its_line_and_column(tmp_path):
    directory = model_dir(tmp_path, VALID.replace("add(x = x, y = x)", "add(x = x y = x)"))
    found = anemone.check(directory)
    assert len(found) == 1
    d = found[0]
    mil = str(directory / "model.mil")
    assert (d.severity, d.code, d.file, d.line, d.col) == ("error", "parse::unexpected-token", mil, 4, 51)
    assert d.is_error and d.location == f"{mil}:4:51"
    assert str(d).startswith(f"{mil}:4:51: error[parse::unexpected-token]: expected `,` or `)`")
    # The source line and the caret under the column follow the heading.
    lines = str(d).splitlines()
    assert lines[1] == "  4 |         tensor<fp32, [1, 4, 1, 32]> y = add(x = x y = x)[name = string(\"y\")];"
    assert lines[2].index("^") == lines[1].index("y = x)")

    with pytest.raises(anemone.ParseError) as e:
        anemone.load(directory, device="sim")
    assert str(e.value) == d.rendered
    assert [x.code for x in e.value.diagnostics] == ["parse::unexpected-token"]


def test_validation_errors_come_first_then_the_lints(tmp_path):
    directory = model_dir(tmp_path, VALID.replace("add(x = x, y = x)", "add(x = x, y = z)"))
    found = anemone.check(directory)
    assert [(d.severity, d.code, d.line, d.col) for d in found] == [
        ("error", "validate::undefined", 4, 56),
        ("warning", "ane::fp32-arithmetic", 4, 41),
    ]
    assert found[0].message == "`z` is not defined"
    assert found[1].help and "fp16" in found[1].help


def test_load_raises_validation_error_with_the_rendered_diagnostics(tmp_path):
    directory = model_dir(tmp_path, VALID.replace("add(x = x, y = x)", "add(x = x, y = z)"))
    with pytest.raises(anemone.ValidationError) as e:
        anemone.load(directory, device="sim")
    errors = [d for d in anemone.check(directory) if d.is_error]
    # The message is the Rust `Diagnostics` display: each error rendered against its source.
    assert str(e.value) == "\n\n".join(d.rendered for d in errors)
    assert str(e.value).startswith(f"{directory / 'model.mil'}:4:56: error[validate::undefined]: `z` is not defined")
    assert [d.code for d in e.value.diagnostics] == ["validate::undefined"]


def test_a_valid_program_gives_only_its_lints_and_runs(tmp_path):
    directory = model_dir(tmp_path, VALID)
    assert [d.code for d in anemone.check(directory)] == ["ane::fp32-arithmetic"]
    model = anemone.load(directory / "model.mil", device="sim")
    x = np.arange(128, dtype=np.float32).reshape(1, 4, 1, 32)
    np.testing.assert_array_equal(model.predict({"x": x})["y"], 2 * x)


def test_missing_weight_files_are_one_warning_per_file(tmp_path):
    text = VALID.replace(
        "tensor<fp32, [1, 4, 1, 32]> y = add(x = x, y = x)",
        'tensor<fp32, [1, 4, 1, 32]> w = const()[name = string("w"), val = tensor<fp32, [1, 4, 1, 32]>'
        '(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))];\n'
        '        tensor<fp32, [1, 4, 1, 32]> v = const()[name = string("v"), val = tensor<fp32, [1, 4, 1, 32]>'
        '(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(640)))];\n'
        "        tensor<fp32, [1, 4, 1, 32]> y = add(x = w, y = v)",
    )
    found = anemone.check(model_dir(tmp_path, text))
    missing = [d for d in found if d.code == "blob::missing-file"]
    assert len(missing) == 1 and missing[0].severity == "warning"
    assert missing[0].message.endswith("(named by 2 BLOBFILEs)")
    assert not any(d.is_error for d in found)


def test_a_coreml_package_checks_clean(mlp_dir):
    found = anemone.check(mlp_dir / "model.mlpackage")
    assert not any(d.is_error for d in found)
    assert all(d.file.endswith("model.mlpackage (as MIL)") for d in found)


def test_unreadable_paths_raise_load_error(tmp_path):
    with pytest.raises(anemone.LoadError) as e:
        anemone.check(tmp_path / "absent")
    assert "absent" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(anemone.LoadError):
        anemone.check(tmp_path / "empty")
