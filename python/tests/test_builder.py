"""Builder: programs built from Python run and match NumPy, are written as model directories
that load and check, and refuse wrong calls at the call."""

import numpy as np
import pytest

import anemone


def fp16(a):
    """What the weights become when stored as fp16."""
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float64)


def assert_fp16_close(got, want):
    """Each op rounds its result to fp16 (2^-11 relative): a few ops stay within 1% of
    the value plus 1% of the largest."""
    got = np.asarray(got, np.float64)
    bound = 1e-2 * np.abs(want) + 1e-2 * np.abs(want).max()
    assert np.all(np.abs(got - want) <= bound), np.abs(got - want).max()


def conv_mlp(rng):
    """Two 1x1 conv layers with biases and a relu between, on the ANE's [1, C, 1, S] layout."""
    w1 = rng.standard_normal((32, 16, 1, 1)) * 0.3
    b1 = rng.standard_normal(32) * 0.1
    w2 = rng.standard_normal((8, 32, 1, 1)) * 0.3
    b2 = rng.standard_normal(8) * 0.1
    b = anemone.Builder()
    x = b.input("x", (1, 16, 1, 32), "fp32")
    h = b.conv(b.cast(x, "fp16"), b.weight("W1", w1), bias=b.weight("b1", b1))
    h = b.relu(h)
    y = b.conv(h, b.weight("W2", w2), bias=b.weight("b2", b2))
    out = b.output(b.cast(y, "fp32"), "y")
    assert (out.name, out.shape, out.mil_dtype, out.dtype) == ("y", (1, 8, 1, 32), "fp32", np.dtype(np.float32))

    def reference(xv):
        cols = fp16(xv)[0, :, 0, :]  # [16, S]
        hid = np.maximum(fp16(w1)[:, :, 0, 0] @ cols + fp16(b1)[:, None], 0)
        return (fp16(w2)[:, :, 0, 0] @ hid + fp16(b2)[:, None])[None, :, None, :]

    return b, reference


def test_a_two_layer_conv_mlp_matches_numpy():
    rng = np.random.default_rng(7)
    b, reference = conv_mlp(rng)
    model = b.build().compile(device="sim")
    assert [(i.name, i.shape) for i in model.inputs] == [("x", (1, 16, 1, 32))]
    x = rng.standard_normal((1, 16, 1, 32)).astype(np.float32)
    y = model.predict({"x": x})["y"]
    assert y.dtype == np.float32
    assert_fp16_close(y, reference(x))


def test_a_two_layer_matmul_mlp_with_softmax_matches_numpy():
    rng = np.random.default_rng(11)
    w1, b1 = rng.standard_normal((16, 32)) * 0.3, rng.standard_normal(32) * 0.1
    w2 = rng.standard_normal((32, 8)) * 0.3
    b = anemone.Builder()
    x = b.input("x", (4, 16), "fp16")
    h = b.relu(b.add(b.matmul(x, b.weight("W1", w1)), b.weight("b1", b1)))
    logits = b.matmul(h, b.weight("W2", w2))
    b.output(b.softmax(logits, axis=-1), "probs")
    model = b.build().compile(device="sim")

    xv = rng.standard_normal((4, 16)).astype(np.float16)
    probs = model.predict({"x": xv})["probs"]
    assert probs.dtype == np.float16 and probs.shape == (4, 8)
    z = np.maximum(xv.astype(np.float64) @ fp16(w1) + fp16(b1), 0) @ fp16(w2)
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert_fp16_close(probs, want)


def test_generic_op_takes_literals_of_the_inputs_type():
    b = anemone.Builder()
    x = b.input("x", (2, 8), "fp16")
    half = b.op("mul", x=x, y=0.5)
    mean = b.op("reduce_mean", x=half, axes=[1], keep_dims=True)
    assert (mean.shape, mean.mil_dtype) == ((2, 1), "fp16")
    # `y = 0.5` became an fp16 scalar constant, as `mul` on fp16 needs.
    b.output(mean, "m")
    program = b.build()
    assert "fp16 mul_y = const()" in program.text
    xv = np.arange(16, dtype=np.float16).reshape(2, 8)
    m = program.compile(device="sim").predict({"x": xv})["m"]
    np.testing.assert_allclose(m, (xv.astype(np.float64) * 0.5).mean(axis=1, keepdims=True), rtol=1e-3)


def test_data_movement_reports_result_shapes():
    b = anemone.Builder()
    x = b.input("x", (1, 4, 1, 6), "fp16")
    t = b.transpose(x, (0, 3, 2, 1))
    r = b.reshape(t, (6, 4))
    c = b.concat([r, r], axis=0)
    k = b.const(np.ones((12, 4), np.float16))
    s = b.add(c, k)
    assert (t.shape, r.shape, c.shape, k.shape, s.shape) == ((1, 6, 1, 4), (6, 4), (12, 4), (12, 4), (12, 4))
    assert repr(s) == "Var('add', fp16[12, 4])"
    b.output(s, "y")
    xv = np.arange(24, dtype=np.float16).reshape(1, 4, 1, 6)
    y = b.build().compile(device="sim").predict({"x": xv})["y"]
    moved = xv.transpose(0, 3, 2, 1).reshape(6, 4)
    np.testing.assert_array_equal(y, np.concatenate([moved, moved]) + 1)


def test_written_model_dir_loads_checks_and_gives_the_same_outputs(tmp_path):
    rng = np.random.default_rng(3)
    b, _ = conv_mlp(rng)
    program = b.build()
    program.write_model_dir(tmp_path / "mlp")
    assert (tmp_path / "mlp" / "model.mil").read_text() == program.text
    assert (tmp_path / "mlp" / "weights" / "weight.bin").is_file()
    assert not any(d.is_error for d in anemone.check(tmp_path / "mlp"))
    x = rng.standard_normal((1, 16, 1, 32)).astype(np.float32)
    loaded = anemone.load(tmp_path / "mlp", device="sim").predict({"x": x})["y"]
    built = program.compile(device="sim").predict({"x": x})["y"]
    np.testing.assert_array_equal(loaded, built)


def test_a_shape_error_is_raised_at_the_call_and_leaves_the_builder_usable():
    b = anemone.Builder()
    x = b.input("x", (4, 16), "fp16")
    w = b.weight("W", np.zeros((16, 8)))
    calls = len(b)
    with pytest.raises(anemone.BuildError, match=r"cannot broadcast x \[4, 16\] and y \[16, 8\]"):
        b.add(x, w)
    with pytest.raises(anemone.BuildError, match=r"weight `V`: .*can be fp16, bf16 or fp32, not int8"):
        b.weight("V", np.zeros(3), dtype="int8")
    assert len(b) == calls
    b.output(b.matmul(x, w), "y")
    assert b.build().compile(device="sim").outputs[0].shape == (4, 8)


def test_wrong_values_are_refused():
    b = anemone.Builder()
    x = b.input("x", (2, 2), "fp16")
    with pytest.raises(ValueError, match=r"unknown op `nope`"):
        b.op("nope", x=x)
    with pytest.raises(ValueError, match=r"unknown MIL dtype `float`"):
        b.cast(x, "float")
    with pytest.raises(anemone.BuildError, match=r"belongs to another Builder"):
        anemone.Builder().relu(x)
    with pytest.raises(TypeError, match=r"expected a Var"):
        b.relu("x")
    with pytest.raises(ValueError, match=r"does not fit int8"):
        b.const([1, 300], dtype="int8")


def test_a_program_without_outputs_is_not_valid():
    b = anemone.Builder()
    b.input("x", (1, 4), "fp16")
    with pytest.raises(anemone.ValidationError) as e:
        b.build()
    assert str(e.value) == "error[validate::no-output]: function `main` returns nothing"
    assert [d.code for d in e.value.diagnostics] == ["validate::no-output"]
