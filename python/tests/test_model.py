"""Loading models and running them: Core ML packages against torch's outputs, input and
output descriptions, input conversion with its warnings, and the errors for wrong inputs."""

import sys
import warnings

import numpy as np
import pytest

import anemone
from conftest import assert_close_to_reference, fixture_dirs, load_case


@pytest.mark.parametrize("directory", fixture_dirs(), ids=lambda p: p.name)
def test_every_coreml_fixture_matches_torch(directory):
    case = load_case(directory)
    model = anemone.load(directory / "model.mlpackage", device="sim")
    inputs = {name: np.load(directory / f"{name}.npy") for name in case["inputs"]}
    with warnings.catch_warnings():
        # float32 data into fp16 inputs is rounded: expected here.
        warnings.simplefilter("ignore", anemone.PrecisionWarning)
        outputs = model.predict(inputs)
    assert list(outputs) == [o.name for o in model.outputs]
    assert set(outputs) == set(case["outputs"])
    for name in case["outputs"]:
        assert_close_to_reference(outputs[name], np.load(directory / f"{name}.npy"), case, f"{directory.name} {name}")


def test_inputs_and_outputs_describe_the_model(mlp_dir):
    model = anemone.load(str(mlp_dir / "model.mlpackage"), device="sim")
    assert model.device == "sim"
    assert model.function == "main"
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    x, y = model.inputs[0], model.outputs[0]
    assert (x.name, x.shape, x.dtype, x.mil_dtype) == ("x", (4, 16), np.dtype(np.float16), "fp16")
    assert (y.name, y.shape, y.dtype, y.mil_dtype) == ("y", (4, 8), np.dtype(np.float16), "fp16")
    assert "x: fp16[4, 16]" in repr(model) and "y: fp16[4, 8]" in repr(model)
    assert model.source.endswith("model.mlpackage (as MIL)")
    assert "func main<ios18>" in model.mil_text()
    out = model.predict({"x": np.zeros(x.shape, x.dtype)})
    assert out["y"].dtype == y.dtype and out["y"].shape == y.shape


def test_float64_input_is_rounded_once_with_a_warning(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    x = np.load(mlp_dir / "x.npy").astype(np.float64) + 1e-7
    with pytest.warns(anemone.PrecisionWarning, match=r"input `x`: 64 of 64 float64 values were rounded to fp16"):
        from_f64 = model.predict({"x": x})
    # The same numbers as giving the fp16 values directly: one correct rounding, and no
    # warning when nothing is converted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_f16 = model.predict({"x": x.astype(np.float16)})
    np.testing.assert_array_equal(from_f64["y"], from_f16["y"])


def test_values_beyond_fp16_are_reported_as_infinite(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    x = np.zeros((4, 16), np.float32)
    x[1, 2] = 1e6
    with pytest.warns(anemone.PrecisionWarning, match=r"1 became inf \(largest \|x\| 1e6"):
        model.predict({"x": x})


def test_exact_conversions_do_not_warn(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Small integers and halves are exact in fp16, whatever type carries them.
        model.predict({"x": np.arange(64, dtype=np.int64).reshape(4, 16)})
        model.predict({"x": np.full((4, 16), 0.5, dtype=np.float32)})
        model.predict({"x": np.full((4, 16), 0.5, dtype=">f8")})  # big-endian too


def test_non_contiguous_inputs_are_read_in_logical_order(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    x = np.load(mlp_dir / "x.npy").astype(np.float16)
    transposed = np.asfortranarray(x)
    strided = np.repeat(x, 2, axis=1)[:, ::2]
    want = model.predict({"x": x})["y"]
    np.testing.assert_array_equal(model.predict({"x": transposed})["y"], want)
    np.testing.assert_array_equal(model.predict({"x": strided})["y"], want)


def test_wrong_input_name_raises_input_error_naming_the_inputs(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    with pytest.raises(anemone.InputError) as e:
        model.predict({"z": np.zeros((4, 16), np.float16)})
    assert str(e.value) == "`z` is not an input of this model (inputs: x)"
    assert isinstance(e.value, ValueError) and isinstance(e.value, anemone.AnemoneError)
    with pytest.raises(anemone.InputError, match=r"^missing input\(s\): x \(this model takes x\)$"):
        model.predict({})


def test_wrong_shape_raises_shape_error_with_both_shapes(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    with pytest.raises(anemone.ShapeError) as e:
        model.predict({"x": np.zeros((4, 15), np.float16)})
    assert str(e.value) == "input `x` is tensor<fp16, [4, 16]>, the array given is shaped [4, 15]"
    assert isinstance(e.value, anemone.InputError)


def test_integer_inputs_refuse_fractions():
    directory = [d for d in fixture_dirs() if d.name == "embedding-ios18"][0]
    model = anemone.load(directory / "model.mlpackage", device="sim")
    ids = model.inputs[0]
    assert ids.mil_dtype == "int32" and ids.dtype == np.dtype(np.int32)
    with pytest.raises(anemone.ShapeError, match=r"element 0 \(0\.5\) is not an integer"):
        model.predict({ids.name: np.full(ids.shape, 0.5)})
    # Whole-valued floats are taken as the integers they are.
    whole = np.load(directory / "ids.npy")
    np.testing.assert_array_equal(
        model.predict({ids.name: whole.astype(np.float64)})["y"], model.predict({ids.name: whole})["y"]
    )


def test_predict_takes_a_mapping_of_numeric_arrays(mlp_dir):
    model = anemone.load(mlp_dir / "model.mlpackage", device="sim")
    with pytest.raises(TypeError, match="mapping"):
        model.predict([np.zeros((4, 16))])
    with pytest.raises(anemone.InputError, match=r"input `x`: arrays of dtype <U1 are not supported"):
        model.predict({"x": np.full((4, 16), "a")})


def test_unknown_device_raises_device_error(mlp_dir):
    with pytest.raises(anemone.DeviceError, match=r"^unknown device `gpu`: use `sim`, `ane` or `auto`$"):
        anemone.load(mlp_dir / "model.mlpackage", device="gpu")


@pytest.mark.skipif(sys.platform == "darwin", reason="a Mac may have a Neural Engine")
def test_ane_is_unavailable_off_a_mac_and_auto_falls_back_to_the_simulator(mlp_dir):
    with pytest.raises(anemone.DeviceError, match=r"^unavailable: "):
        anemone.load(mlp_dir / "model.mlpackage", device="ane")
    assert anemone.load(mlp_dir / "model.mlpackage", device="auto").device == "sim"


def test_unreadable_paths_raise_load_error(tmp_path):
    with pytest.raises(anemone.LoadError):
        anemone.load(tmp_path / "nothing-here")
    not_a_model = tmp_path / "broken.mlpackage"
    not_a_model.mkdir()
    with pytest.raises(anemone.LoadError):
        anemone.load(not_a_model)
