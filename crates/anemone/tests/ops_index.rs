//! gather, gather_along_axis, expand_dims, squeeze, stack, tile, pad and band_part end to end:
//! MIL text -> validation -> simulator compile -> evaluate. Each result is compared with a
//! reference computed here from the op's definition in coremltools 9.0
//! (`ops/defs/iOS15/scatter_gather.py`, `iOS16/` and `iOS17/scatter_gather.py` for
//! `batch_dims` and `validate_indices`, `iOS15/tensor_transformation.py`,
//! `iOS15/tensor_operation.py`), on f64 values, never with the simulator's kernels.
//!
//! These ops move elements without computing with them, so every comparison is exact, bit for
//! bit and sign of zero included, in fp16, fp32 and integer tensors alike: fp32 values that
//! fp16 cannot hold come through unchanged (the ops are not narrowed to fp16 as arithmetic is).
//!
//! The programs include the converter's own forms from its printouts of small PyTorch models
//! (an embedding with int32 ids cast to int16 indices, split/squeeze/stack/expand_dims).

// References index several arrays with one multi-index; index loops read clearer.
#![allow(clippy::needless_range_loop)]

use anemone::{Device, Weights};
use anemone_mil::{DType, text};
use half::f16;

// ---------------------------------------------------------------------------------------------
// Tensors, programs and runs.

/// A tensor's type and raw little-endian bytes: fed to an input or read from an output.
#[derive(Clone, Debug, PartialEq)]
struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Encodes `values`, each of which must be exactly a value of `dtype`.
    fn new(dtype: DType, shape: &[usize], values: &[f64]) -> Tensor {
        assert_eq!(values.len(), numel(shape), "{shape:?}");
        let mut bytes = Vec::new();
        for &v in values {
            let exact = match dtype {
                DType::Fp16 => {
                    let h = f16::from_f64(v);
                    bytes.extend(h.to_le_bytes());
                    v.is_nan() || h.to_f64() == v
                }
                DType::Fp32 => {
                    bytes.extend((v as f32).to_le_bytes());
                    v.is_nan() || f64::from(v as f32) == v
                }
                DType::Int32 => {
                    bytes.extend((v as i32).to_le_bytes());
                    f64::from(v as i32) == v
                }
                DType::Int16 => {
                    bytes.extend((v as i16).to_le_bytes());
                    f64::from(v as i16) == v
                }
                DType::UInt16 => {
                    bytes.extend((v as u16).to_le_bytes());
                    f64::from(v as u16) == v
                }
                DType::Int8 => {
                    bytes.push(v as i8 as u8);
                    f64::from(v as i8) == v
                }
                DType::UInt8 => {
                    bytes.push(v as u8);
                    f64::from(v as u8) == v
                }
                DType::Bool => {
                    bytes.push(u8::from(v != 0.0));
                    v == 0.0 || v == 1.0
                }
                other => panic!("no encoder for {other}"),
            };
            assert!(exact, "{v} is not a {dtype} value");
        }
        Tensor { dtype, shape: shape.to_vec(), bytes }
    }

    /// The elements as f64 (exact for every type here).
    fn values(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.dtype {
            DType::Fp16 => {
                b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect()
            }
            DType::Fp32 => b
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::Int32 => b
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::Int16 => {
                b.chunks_exact(2).map(|c| f64::from(i16::from_le_bytes([c[0], c[1]]))).collect()
            }
            DType::UInt16 => {
                b.chunks_exact(2).map(|c| f64::from(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
            DType::Int8 => b.iter().map(|&v| f64::from(v as i8)).collect(),
            DType::UInt8 | DType::Bool => b.iter().map(|&v| f64::from(v)).collect(),
            other => panic!("no decoder for {other}"),
        }
    }

    /// `tensor<fp16, [2, 3]>`.
    fn mil_type(&self) -> String {
        mil_type(self.dtype, &self.shape)
    }

    /// `tensor<fp16, [2, 3]>([1, -0.5, ...])`: decimal forms that parse back to the same
    /// values.
    fn mil_literal(&self) -> String {
        let items: Vec<String> = self
            .values()
            .iter()
            .map(|&v| match self.dtype {
                DType::Bool => (v != 0.0).to_string(),
                _ => format!("{v:?}"),
            })
            .collect();
        format!("{}([{}])", self.mil_type(), items.join(", "))
    }
}

fn mil_type(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{}, [{}]>", dtype.name(), dims.join(", "))
}

/// Compiles `func main<ios18>(inputs) { body } -> (outputs)` on a fresh simulator, writes the
/// inputs, evaluates, and reads the outputs; a compile or evaluate error comes back as text.
fn try_run(
    inputs: &[(&str, &Tensor)],
    body: &str,
    outputs: &[&str],
) -> Result<Vec<Tensor>, String> {
    let params: Vec<String> =
        inputs.iter().map(|(name, t)| format!("{} {name}", t.mil_type())).collect();
    let mil = format!(
        "program(1.3)\n{{\n    func main<ios18>({}) {{\n{body}\n    }} -> ({});\n}}\n",
        params.join(", "),
        outputs.join(", ")
    );
    let program = text::parse(&mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    let mut model =
        Device::simulator().compile(&program, &Weights::new()).map_err(|e| e.to_string())?;
    for (name, t) in inputs {
        model.input(name).unwrap().write_bytes(&t.bytes).unwrap();
    }
    model.evaluate().map_err(|e| e.to_string())?;
    Ok(outputs
        .iter()
        .map(|name| {
            let s = model.output(name).unwrap();
            Tensor { dtype: s.dtype(), shape: s.shape().to_vec(), bytes: s.read_bytes() }
        })
        .collect())
}

fn run(inputs: &[(&str, &Tensor)], body: &str, outputs: &[&str]) -> Vec<Tensor> {
    try_run(inputs, body, outputs).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Asserts type, shape and every bit of the elements.
#[track_caller]
fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{what}: type");
    if got.bytes != want.bytes {
        let (g, w) = (got.values(), want.values());
        let i = (0..g.len()).find(|&i| g[i].to_bits() != w[i].to_bits()).unwrap_or(0);
        panic!("{what}: element {i} is {:e}, want {:e}", g[i], w[i]);
    }
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// `n` fp16 values in [-8, 8).
    fn fp16s(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| f16::from_f64(self.uniform(-8.0, 8.0)).to_f64()).collect()
    }

    /// `n` fp32 values that fp16 does not hold exactly (or at all: 1e-30, 70000).
    fn fp32s(&mut self, n: usize) -> Vec<f64> {
        let special = [1.0001, 70000.0, -1e-30, 3.0e38, 0.1];
        (0..n)
            .map(|i| {
                let v = if i % 3 == 0 {
                    special[(i / 3) % special.len()]
                } else {
                    self.uniform(-100.0, 100.0)
                };
                f64::from(v as f32)
            })
            .collect()
    }

    /// `n` integers in [lo, hi].
    fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<f64> {
        let span = (hi - lo + 1) as u64;
        (0..n).map(|_| (lo + (self.next() % span) as i64) as f64).collect()
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// An index in [-dim, dim) read as numpy does (negative counts from the end).
fn wrap(v: f64, dim: usize) -> usize {
    let v = v as i64;
    if v < 0 { (v + dim as i64) as usize } else { v as usize }
}

// ---------------------------------------------------------------------------------------------
// References, from the ops' definitions.

/// gather: out = x[:axis] + indices[batch_dims:] + x[axis + 1:], reading
/// x[b.., p.., indices[b.., i..], q..].
fn gather_ref(x: &Tensor, ind: &[f64], is: &[usize], axis: usize, bd: usize) -> Tensor {
    let (xs, xv) = (&x.shape, x.values());
    let mut os = xs[..axis].to_vec();
    os.extend_from_slice(&is[bd..]);
    os.extend_from_slice(&xs[axis + 1..]);
    let k = is.len() - bd;
    let out: Vec<f64> = (0..numel(&os))
        .map(|o| {
            let oi = unravel(o, &os);
            let mut ii = oi[..bd].to_vec();
            ii.extend_from_slice(&oi[axis..axis + k]);
            let mut xi = oi[..axis].to_vec();
            xi.push(wrap(ind[ravel(&ii, is)], xs[axis]));
            xi.extend_from_slice(&oi[axis + k..]);
            xv[ravel(&xi, xs)]
        })
        .collect();
    Tensor::new(x.dtype, &os, &out)
}

/// gather_along_axis: out[.., i, ..] = x[.., indices[.., i, ..], ..], shaped as indices.
fn gather_along_axis_ref(x: &Tensor, ind: &Tensor, axis: usize) -> Tensor {
    let (xv, iv) = (x.values(), ind.values());
    let out: Vec<f64> = (0..iv.len())
        .map(|o| {
            let mut idx = unravel(o, &ind.shape);
            idx[axis] = wrap(iv[o], x.shape[axis]);
            xv[ravel(&idx, &x.shape)]
        })
        .collect();
    Tensor::new(x.dtype, &ind.shape, &out)
}

/// stack: a new dim at `axis` (of the output) indexing the values.
fn stack_ref(values: &[&Tensor], axis: usize) -> Tensor {
    let shape = &values[0].shape;
    let mut os = shape.clone();
    os.insert(axis, values.len());
    let vals: Vec<Vec<f64>> = values.iter().map(|t| t.values()).collect();
    let out: Vec<f64> = (0..numel(&os))
        .map(|o| {
            let mut idx = unravel(o, &os);
            let k = idx.remove(axis);
            vals[k][ravel(&idx, shape)]
        })
        .collect();
    Tensor::new(values[0].dtype, &os, &out)
}

/// tile: out[o] = x[o mod shape] per dim.
fn tile_ref(x: &Tensor, reps: &[usize]) -> Tensor {
    let os: Vec<usize> = x.shape.iter().zip(reps).map(|(d, r)| d * r).collect();
    let xv = x.values();
    let out: Vec<f64> = (0..numel(&os))
        .map(|o| {
            let idx: Vec<usize> =
                unravel(o, &os).iter().zip(&x.shape).map(|(i, d)| i % d).collect();
            xv[ravel(&idx, &x.shape)]
        })
        .collect();
    Tensor::new(x.dtype, &os, &out)
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Constant(f64),
    Reflect,
    Replicate,
}

/// pad of the last `pad.len() / 2` dims, as numpy's constant, reflect and edge modes.
fn pad_ref(x: &Tensor, pad: &[usize], mode: Mode) -> Tensor {
    let rank = x.shape.len();
    let first = rank - pad.len() / 2;
    let before = |d: usize| if d >= first { pad[2 * (d - first)] } else { 0 };
    let after = |d: usize| if d >= first { pad[2 * (d - first) + 1] } else { 0 };
    let os: Vec<usize> = (0..rank).map(|d| x.shape[d] + before(d) + after(d)).collect();
    let xv = x.values();
    let out: Vec<f64> = (0..numel(&os))
        .map(|o| {
            let oi = unravel(o, &os);
            let mut xi = Vec::with_capacity(rank);
            for d in 0..rank {
                let n = x.shape[d] as i64;
                let i = oi[d] as i64 - before(d) as i64;
                let i = if (0..n).contains(&i) {
                    i
                } else {
                    match mode {
                        Mode::Constant(c) => return c,
                        Mode::Reflect if i < 0 => -i,
                        Mode::Reflect => 2 * (n - 1) - i,
                        Mode::Replicate => i.clamp(0, n - 1),
                    }
                };
                xi.push(i as usize);
            }
            xv[ravel(&xi, &x.shape)]
        })
        .collect();
    Tensor::new(x.dtype, &os, &out)
}

/// band_part: x[.., i, j] where (lower < 0 or i - j <= lower) and (upper < 0 or
/// j - i <= upper), else 0.
fn band_part_ref(x: &Tensor, lower: i64, upper: i64) -> Tensor {
    let r = x.shape.len();
    let xv = x.values();
    let out: Vec<f64> = (0..xv.len())
        .map(|o| {
            let idx = unravel(o, &x.shape);
            let (i, j) = (idx[r - 2] as i64, idx[r - 1] as i64);
            let keep = (lower < 0 || i - j <= lower) && (upper < 0 || j - i <= upper);
            if keep { xv[o] } else { 0.0 }
        })
        .collect();
    Tensor::new(x.dtype, &x.shape, &out)
}

// ---------------------------------------------------------------------------------------------
// gather

/// The embedding model as coremltools 9.0 writes it for iOS18: int32 ids cast to int16 and
/// back, negative ids made positive by `select(ids >= 0, ids, ids + vocab)`, cast to int16
/// indices, then gather with batch_dims and validate_indices spelled out.
#[test]
fn gather_embedding_as_the_ios18_converter_writes_it() {
    let mut rng = Rng(1);
    let emb = Tensor::new(DType::Fp16, &[100, 16], &rng.fp16s(1600));
    let mut id_values = rng.ints(16, -100, 99);
    id_values[..4].copy_from_slice(&[0.0, 99.0, -1.0, -100.0]);
    let ids = Tensor::new(DType::Int32, &[2, 8], &id_values);
    let body = format!(
        r#"        tensor<fp16, [100, 16]> emb = const()[name = string("emb"), val = {}];
        tensor<int16, [2, 8]> ids_to_int16 = cast(x = ids, dtype = string("int16"))[name = string("cast_5")];
        tensor<int32, [2, 8]> cast_2 = cast(x = ids_to_int16, dtype = string("int32"))[name = string("cast_4")];
        tensor<bool, [2, 8]> greater_equal_0 = greater_equal(x = cast_2, y = int32(0))[name = string("greater_equal_0")];
        tensor<int32, [2, 8]> add_0 = add(x = cast_2, y = int32(100))[name = string("add_0")];
        tensor<int32, [2, 8]> select_0 = select(cond = greater_equal_0, a = cast_2, b = add_0)[name = string("select_0")];
        tensor<int16, [2, 8]> select_0_to_int16 = cast(x = select_0, dtype = string("int16"))[name = string("cast_3")];
        tensor<fp16, [2, 8, 16]> y = gather(x = emb, indices = select_0_to_int16, axis = int32(0), batch_dims = int32(0), validate_indices = bool(false))[name = string("op_7_cast_fp16_cast_uint16_cast_uint16")];"#,
        emb.mil_literal()
    );
    let out = run(&[("ids", &ids)], &body, &["y"]);
    assert_same("embedding ios18", &out[0], &gather_ref(&emb, &id_values, &[2, 8], 0, 0));
}

/// The same model for iOS15: gather straight on the int32 ids, negative ones counting from the
/// end of the table (iOS15 scatter_gather.py allows -D <= v < D).
#[test]
fn gather_embedding_as_the_ios15_converter_writes_it() {
    let mut rng = Rng(2);
    let emb = Tensor::new(DType::Fp16, &[100, 16], &rng.fp16s(1600));
    let mut id_values = rng.ints(16, -100, 99);
    id_values[..3].copy_from_slice(&[-1.0, -100.0, 99.0]);
    let ids = Tensor::new(DType::Int32, &[2, 8], &id_values);
    let body = format!(
        r#"        tensor<fp16, [100, 16]> emb = const()[name = string("emb"), val = {}];
        tensor<fp16, [2, 8, 16]> y = gather(x = emb, indices = ids, axis = int32(0))[name = string("op_7_cast_fp16")];"#,
        emb.mil_literal()
    );
    let out = run(&[("ids", &ids)], &body, &["y"]);
    assert_same("embedding ios15", &out[0], &gather_ref(&emb, &id_values, &[2, 8], 0, 0));
}

/// int32 ids cast to int16 and to uint16 (the converter's index types) drive gather directly.
#[test]
fn gather_reads_int16_and_uint16_indices_from_a_cast() {
    let mut rng = Rng(3);
    let x = Tensor::new(DType::Fp16, &[3, 40, 2], &rng.fp16s(240));
    let id_values = rng.ints(6, 0, 39);
    let ids = Tensor::new(DType::Int32, &[6], &id_values);
    let body = r#"        tensor<int16, [6]> i16 = cast(x = ids, dtype = string("int16"))[name = string("c16")];
        tensor<uint16, [6]> u16 = cast(x = ids, dtype = string("uint16"))[name = string("cu16")];
        tensor<fp16, [3, 6, 2]> a = gather(x = x, indices = i16, axis = int32(1))[name = string("a")];
        tensor<fp16, [3, 6, 2]> b = gather(x = x, indices = u16, axis = int32(-2))[name = string("b")];"#;
    let out = run(&[("ids", &ids), ("x", &x)], body, &["a", "b"]);
    let want = gather_ref(&x, &id_values, &[6], 1, 0);
    assert_same("int16 indices", &out[0], &want);
    assert_same("uint16 indices", &out[1], &want);
}

/// fp32 data is moved, not computed: values fp16 cannot hold (1.0001, 70000, 1e-30, 3e38)
/// arrive unchanged. With batch_dims 1 each batch row picks from its own slice of x.
#[test]
fn gather_fp32_with_batch_dims_keeps_fp32_values() {
    let mut rng = Rng(4);
    let x = Tensor::new(DType::Fp32, &[2, 3, 5, 2], &rng.fp32s(60));
    let ind_values = rng.ints(8, -5, 4);
    let ind = Tensor::new(DType::Int32, &[2, 4], &ind_values);
    let body = r#"        tensor<fp32, [2, 3, 4, 2]> y = gather(x = x, indices = ind, axis = int32(2), batch_dims = int32(1))[name = string("g")];"#;
    let out = run(&[("ind", &ind), ("x", &x)], body, &["y"]);
    assert_same("fp32 batch_dims", &out[0], &gather_ref(&x, &ind_values, &[2, 4], 2, 1));
}

/// Integer and bool data with int8/uint8 indices, a constant table, and a scalar index.
#[test]
fn gather_moves_integer_and_bool_elements() {
    let mut rng = Rng(5);
    let table = Tensor::new(DType::Int32, &[6, 3], &rng.ints(18, -2_000_000_000, 2_000_000_000));
    let flags = Tensor::new(DType::Bool, &[4, 2], &rng.ints(8, 0, 1));
    let picks = Tensor::new(DType::UInt8, &[5], &[5.0, 0.0, 3.0, 3.0, 1.0]);
    let back = Tensor::new(DType::Int8, &[3], &[-1.0, 0.0, -4.0]);
    let body = format!(
        r#"        tensor<bool, [4, 2]> flags = const()[name = string("flags"), val = {}];
        tensor<int32, [5, 3]> a = gather(x = table, indices = picks)[name = string("a")];
        tensor<bool, [3, 2]> b = gather(x = flags, indices = back, axis = int32(0))[name = string("b")];
        tensor<int32, [6]> c = gather(x = table, indices = int32(2), axis = int32(1))[name = string("c")];"#,
        flags.mil_literal()
    );
    let out =
        run(&[("back", &back), ("picks", &picks), ("table", &table)], &body, &["a", "b", "c"]);
    assert_same("int32 by uint8", &out[0], &gather_ref(&table, &picks.values(), &[5], 0, 0));
    assert_same("bool by int8", &out[1], &gather_ref(&flags, &back.values(), &[3], 0, 0));
    assert_same("scalar index", &out[2], &gather_ref(&table, &[2.0], &[], 1, 0));
}

/// NaN payloads, -0, infinities and subnormals of fp16 move bit for bit.
#[test]
fn gather_copies_fp16_bits_exactly() {
    let bits: [u16; 6] = [0x7e01, 0x8000, 0xfc00, 0x0001, 0x7c00, 0xfe55];
    let x = Tensor {
        dtype: DType::Fp16,
        shape: vec![6],
        bytes: bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
    };
    let ind = Tensor::new(DType::Int32, &[6], &[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
    let body = r#"        tensor<fp16, [6]> y = gather(x = x, indices = ind)[name = string("g")];"#;
    let out = run(&[("ind", &ind), ("x", &x)], body, &["y"]);
    let want: Vec<u8> = bits.iter().rev().flat_map(|b| b.to_le_bytes()).collect();
    assert_eq!(out[0].bytes, want);
}

/// An index out of range at run time fails the evaluate with the op, the index, where it was
/// and the axis size; with validate_indices (iOS17) a negative index is out of range too.
#[test]
fn gather_index_out_of_range_is_a_clear_error() {
    let x = Tensor::new(DType::Fp16, &[5, 2], &[0.5; 10]);
    let body = r#"        tensor<fp16, [2, 3, 2]> y = gather(x = x, indices = ind, axis = int32(0))[name = string("lookup")];"#;
    for (v, needle) in [
        (5.0, "index 5 at indices[1, 0] is out of range for axis 0 of size 5"),
        (-6.0, "index -6 at indices[1, 0] is out of range for axis 0 of size 5"),
    ] {
        let ind = Tensor::new(DType::Int32, &[2, 3], &[0.0, 1.0, 2.0, v, 4.0, -1.0]);
        let e = try_run(&[("ind", &ind), ("x", &x)], body, &["y"]).unwrap_err();
        assert!(e.contains("gather `lookup`") && e.contains(needle), "{e}");
    }
    let ind = Tensor::new(DType::Int32, &[2, 3], &[0.0, 1.0, 2.0, -1.0, 4.0, 3.0]);
    let strict =
        body.replace("axis = int32(0))", "axis = int32(0), validate_indices = bool(true))");
    let e = try_run(&[("ind", &ind), ("x", &x)], &strict, &["y"]).unwrap_err();
    assert!(e.contains("index -1 at indices[1, 0] is out of range for axis 0 of size 5"), "{e}");
    // gather_along_axis too.
    let ind =
        Tensor::new(DType::Int16, &[5, 2], &[0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0]);
    let body = r#"        tensor<fp16, [5, 2]> y = gather_along_axis(x = x, indices = ind, axis = int32(1))[name = string("along")];"#;
    let e = try_run(&[("ind", &ind), ("x", &x)], body, &["y"]).unwrap_err();
    assert!(
        e.contains("gather_along_axis `along`")
            && e.contains("index 2 at indices[2, 1] is out of range for axis 1 of size 2"),
        "{e}"
    );
    // Constant indices are checked at compile time.
    let body = r#"        tensor<fp16, [2, 2]> y = gather(x = x, indices = tensor<int32, [2]>([1, 9]))[name = string("k")];"#;
    let e = try_run(&[("x", &x)], body, &["y"]).unwrap_err();
    assert!(e.contains("index 9 at indices[1] is out of range for axis 0 of size 5"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// gather_along_axis

#[test]
fn gather_along_axis_fp16_fp32_and_int32() {
    let mut rng = Rng(6);
    let x16 = Tensor::new(DType::Fp16, &[2, 5, 3], &rng.fp16s(30));
    let x32 = Tensor::new(DType::Fp32, &[2, 5, 3], &rng.fp32s(30));
    let xi = Tensor::new(DType::Int32, &[4, 3], &rng.ints(12, -1000, 1000));
    let i1 = Tensor::new(DType::Int32, &[2, 7, 3], &rng.ints(42, -5, 4));
    let i2 = Tensor::new(DType::UInt8, &[4, 6], &rng.ints(24, 0, 2));
    let body = r#"        tensor<fp16, [2, 7, 3]> a = gather_along_axis(x = x16, indices = i1, axis = int32(1))[name = string("a")];
        tensor<fp32, [2, 7, 3]> b = gather_along_axis(x = x32, indices = i1, axis = int32(-2), validate_indices = bool(false))[name = string("b")];
        tensor<int32, [4, 6]> c = gather_along_axis(x = xi, indices = i2, axis = int32(1))[name = string("c")];"#;
    let out = run(
        &[("i1", &i1), ("i2", &i2), ("x16", &x16), ("x32", &x32), ("xi", &xi)],
        body,
        &["a", "b", "c"],
    );
    assert_same("fp16", &out[0], &gather_along_axis_ref(&x16, &i1, 1));
    assert_same("fp32", &out[1], &gather_along_axis_ref(&x32, &i1, 1));
    assert_same("int32", &out[2], &gather_along_axis_ref(&xi, &i2, 1));
}

// ---------------------------------------------------------------------------------------------
// expand_dims, squeeze, stack: the split_concat model as the converter writes it

/// From the split_concat printout for iOS18: split, squeeze with `axes = (2,)`, stack along
/// axis 1, expand_dims with `axes = [1]`, transpose and reshape; the arithmetic in between is
/// left out so that every step is exact.
#[test]
fn split_squeeze_stack_expand_dims_as_the_converter_writes_them() {
    let mut rng = Rng(7);
    let x = Tensor::new(DType::Fp16, &[2, 12, 1, 8], &rng.fp16s(192));
    let body = r#"        tensor<fp16, [2, 4, 1, 8]> s0, tensor<fp16, [2, 8, 1, 8]> s1 = split(x = x, split_sizes = tensor<int32, [2]>([4, 8]), axis = int32(1))[name = string("op_6_cast_fp16")];
        tensor<int32, [1]> sq_axes = const()[name = string("sq_axes"), val = tensor<int32, [1]>([2])];
        tensor<fp16, [2, 4, 8]> a = squeeze(x = s0, axes = sq_axes)[name = string("a_cast_fp16")];
        tensor<fp16, [2, 8, 8]> b = squeeze(x = s1, axes = tensor<int32, [1]>([2]))[name = string("b_cast_fp16")];
        tensor<fp16, [2, 8]> a0 = slice_by_index(x = a, begin = tensor<int32, [3]>([0, 0, 0]), end = tensor<int32, [3]>([2, 1, 8]), squeeze_mask = tensor<bool, [3]>([false, true, false]))[name = string("a0")];
        tensor<fp16, [2, 8]> b3 = slice_by_index(x = b, begin = tensor<int32, [3]>([0, 3, 0]), end = tensor<int32, [3]>([2, 4, 8]), squeeze_mask = tensor<bool, [3]>([false, true, false]))[name = string("b3")];
        tensor<fp16, [2, 2, 8]> stats = stack(values = (a0, b3), axis = int32(1))[name = string("op_25_cast_fp16")];
        tensor<fp16, [2, 12, 8]> y_cat = concat(values = (a, b), axis = int32(1), interleave = bool(false))[name = string("y_cast_fp16")];
        tensor<fp16, [2, 1, 12, 8]> e = expand_dims(x = y_cat, axes = tensor<int32, [1]>([1]))[name = string("op_46_cast_fp16")];
        tensor<fp16, [2, 12, 1, 8]> t = transpose(x = e, perm = tensor<int32, [4]>([0, 2, 1, 3]))[name = string("transpose_0")];
        tensor<fp16, [2, 96]> y = reshape(x = t, shape = tensor<int32, [2]>([2, 96]))[name = string("op_55_cast_fp16")];"#;
    let out = run(&[("x", &x)], body, &["y", "stats", "e", "a"]);
    let xv = x.values();
    let at = |n: usize, c: usize, w: usize| xv[ravel(&[n, c, 0, w], &x.shape)];
    // Squeezing the unit dim and putting it back elsewhere keeps the element order.
    assert_same("y", &out[0], &Tensor::new(DType::Fp16, &[2, 96], &xv));
    assert_same("expand_dims", &out[2], &Tensor::new(DType::Fp16, &[2, 1, 12, 8], &xv));
    let a: Vec<f64> = (0..64).map(|i| at(i / 32, (i / 8) % 4, i % 8)).collect();
    assert_same("squeeze", &out[3], &Tensor::new(DType::Fp16, &[2, 4, 8], &a));
    let a0: Vec<f64> = (0..16).map(|i| at(i / 8, 0, i % 8)).collect();
    let b3: Vec<f64> = (0..16).map(|i| at(i / 8, 7, i % 8)).collect();
    let (a0, b3) = (Tensor::new(DType::Fp16, &[2, 8], &a0), Tensor::new(DType::Fp16, &[2, 8], &b3));
    assert_same("stack", &out[1], &stack_ref(&[&a0, &b3], 1));
}

#[test]
fn expand_dims_and_squeeze_on_fp32_and_integers() {
    let mut rng = Rng(8);
    let x = Tensor::new(DType::Fp32, &[3, 1, 4], &rng.fp32s(12));
    let n = Tensor::new(DType::Int16, &[1, 5, 1], &rng.ints(5, -30000, 30000));
    let body = r#"        tensor<fp32, [1, 3, 1, 4, 1]> a = expand_dims(x = x, axes = tensor<int32, [2]>([-1, 0]))[name = string("a")];
        tensor<fp32, [3, 4]> b = squeeze(x = x)[name = string("b")];
        tensor<int16, [5]> c = squeeze(x = n)[name = string("c")];
        tensor<int16, [1, 5]> d = squeeze(x = n, axes = tensor<int32, [2]>([1, 2]))[name = string("d")];"#;
    let out = run(&[("n", &n), ("x", &x)], body, &["a", "b", "c", "d"]);
    let xv = x.values();
    let nv = n.values();
    assert_same("expand_dims fp32", &out[0], &Tensor::new(DType::Fp32, &[1, 3, 1, 4, 1], &xv));
    assert_same("squeeze all fp32", &out[1], &Tensor::new(DType::Fp32, &[3, 4], &xv));
    assert_same("squeeze all int16", &out[2], &Tensor::new(DType::Int16, &[5], &nv));
    // Axis 1 has size 5 and stays (PyTorch's rule); axis 2 goes.
    assert_same("squeeze named", &out[3], &Tensor::new(DType::Int16, &[1, 5], &nv));
}

#[test]
fn stack_fp32_and_int32_on_every_axis() {
    let mut rng = Rng(9);
    let p = Tensor::new(DType::Fp32, &[2, 3], &rng.fp32s(6));
    let q = Tensor::new(DType::Fp32, &[2, 3], &rng.fp32s(6));
    let r = Tensor::new(DType::Fp32, &[2, 3], &rng.fp32s(6));
    let i = Tensor::new(DType::Int32, &[3], &rng.ints(3, -9, 9));
    let body = r#"        tensor<fp32, [3, 2, 3]> s0 = stack(values = (p, q, r), axis = int32(0))[name = string("s0")];
        tensor<fp32, [2, 3, 3]> s1 = stack(values = (p, q, r), axis = int32(-2))[name = string("s1")];
        tensor<fp32, [2, 3, 2]> s2 = stack(values = (p, r), axis = int32(2))[name = string("s2")];
        tensor<int32, [3, 2]> s3 = stack(values = (i, i), axis = int32(-1))[name = string("s3")];"#;
    let out = run(&[("i", &i), ("p", &p), ("q", &q), ("r", &r)], body, &["s0", "s1", "s2", "s3"]);
    assert_same("axis 0", &out[0], &stack_ref(&[&p, &q, &r], 0));
    assert_same("axis -2", &out[1], &stack_ref(&[&p, &q, &r], 1));
    assert_same("axis 2", &out[2], &stack_ref(&[&p, &r], 2));
    assert_same("int32", &out[3], &stack_ref(&[&i, &i], 1));
}

// ---------------------------------------------------------------------------------------------
// tile

#[test]
fn tile_fp16_fp32_and_int32() {
    let mut rng = Rng(10);
    let h = Tensor::new(DType::Fp16, &[2, 3, 1], &rng.fp16s(6));
    let f = Tensor::new(DType::Fp32, &[1, 4], &rng.fp32s(4));
    let n = Tensor::new(DType::Int32, &[3], &rng.ints(3, -100, 100));
    let body = r#"        tensor<fp16, [4, 3, 5]> a = tile(x = h, reps = tensor<int32, [3]>([2, 1, 5]))[name = string("a")];
        tensor<fp32, [3, 8]> b = tile(x = f, reps = tensor<int32, [2]>([3, 2]))[name = string("b")];
        tensor<int32, [12]> c = tile(x = n, reps = tensor<int32, [1]>([4]))[name = string("c")];"#;
    let out = run(&[("f", &f), ("h", &h), ("n", &n)], body, &["a", "b", "c"]);
    assert_same("fp16", &out[0], &tile_ref(&h, &[2, 1, 5]));
    assert_same("fp32", &out[1], &tile_ref(&f, &[3, 2]));
    assert_same("int32", &out[2], &tile_ref(&n, &[4]));
}

// ---------------------------------------------------------------------------------------------
// pad

#[test]
fn pad_constant_reflect_and_replicate_in_fp16() {
    let mut rng = Rng(11);
    let x = Tensor::new(DType::Fp16, &[2, 3, 4], &rng.fp16s(24));
    let body = r#"        tensor<fp16, [2, 3, 9]> a = pad(x = x, pad = tensor<int32, [2]>([2, 3]))[name = string("a")];
        tensor<fp16, [2, 6, 7]> b = pad(x = x, pad = tensor<int32, [4]>([1, 2, 3, 0]), mode = string("constant"), constant_val = fp16(-2.5))[name = string("b")];
        tensor<fp16, [2, 7, 7]> c = pad(x = x, pad = tensor<int32, [4]>([2, 2, 3, 0]), mode = string("reflect"))[name = string("c")];
        tensor<fp16, [4, 6, 8]> d = pad(x = x, pad = tensor<int32, [6]>([1, 1, 0, 3, 4, 0]), mode = string("replicate"))[name = string("d")];"#;
    let out = run(&[("x", &x)], body, &["a", "b", "c", "d"]);
    assert_same("default constant 0", &out[0], &pad_ref(&x, &[2, 3], Mode::Constant(0.0)));
    assert_same("constant -2.5", &out[1], &pad_ref(&x, &[1, 2, 3, 0], Mode::Constant(-2.5)));
    assert_same("reflect", &out[2], &pad_ref(&x, &[2, 2, 3, 0], Mode::Reflect));
    assert_same("replicate", &out[3], &pad_ref(&x, &[1, 1, 0, 3, 4, 0], Mode::Replicate));
}

#[test]
fn pad_fp32_and_int32_keep_their_values() {
    let mut rng = Rng(12);
    let x = Tensor::new(DType::Fp32, &[3, 5], &rng.fp32s(15));
    let n = Tensor::new(DType::Int32, &[4], &rng.ints(4, -1_000_000, 1_000_000));
    let body = r#"        tensor<fp32, [5, 7]> a = pad(x = x, pad = tensor<int32, [4]>([1, 1, 2, 0]), constant_val = fp32(70000.5))[name = string("a")];
        tensor<fp32, [3, 11]> b = pad(x = x, pad = tensor<int32, [2]>([4, 2]), mode = string("reflect"))[name = string("b")];
        tensor<int32, [9]> c = pad(x = n, pad = tensor<int32, [2]>([2, 3]), constant_val = int32(-123456))[name = string("c")];
        tensor<int32, [12]> d = pad(x = n, pad = tensor<int32, [2]>([4, 4]), mode = string("replicate"))[name = string("d")];"#;
    let out = run(&[("n", &n), ("x", &x)], body, &["a", "b", "c", "d"]);
    assert_same("fp32 constant", &out[0], &pad_ref(&x, &[1, 1, 2, 0], Mode::Constant(70000.5)));
    assert_same("fp32 reflect", &out[1], &pad_ref(&x, &[4, 2], Mode::Reflect));
    assert_same("int32 constant", &out[2], &pad_ref(&n, &[2, 3], Mode::Constant(-123456.0)));
    assert_same("int32 replicate", &out[3], &pad_ref(&n, &[4, 4], Mode::Replicate));
}

#[test]
fn pad_rejects_what_coremltools_rejects() {
    let x = Tensor::new(DType::Fp16, &[2, 3], &[0.0; 6]);
    let cases = [
        (
            "pad = tensor<int32, [2]>([3, 0]), mode = string(\"reflect\")",
            "[2, 6]",
            "reflect pads dim 1 of size 3 by 3; it pads at most 2 there",
        ),
        ("pad = tensor<int32, [3]>([1, 1, 1])", "[2, 6]", "pad [1, 1, 1] has 3 entries"),
        (
            "pad = tensor<int32, [2]>([1, 1]), constant_val = fp32(0.1)",
            "[2, 5]",
            "constant_val 0.10000000149011612 is not a value of fp16",
        ),
        (
            "pad = tensor<int32, [2]>([1, 1]), mode = string(\"wrap\")",
            "[2, 5]",
            "unknown mode \"wrap\"",
        ),
    ];
    for (args, shape, needle) in cases {
        let body =
            format!("        tensor<fp16, {shape}> y = pad(x = x, {args})[name = string(\"p\")];");
        let e = try_run(&[("x", &x)], &body, &["y"]).unwrap_err();
        assert!(e.contains(needle), "{args}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// band_part

#[test]
fn band_part_fp16_fp32_and_int32() {
    let mut rng = Rng(13);
    let h = Tensor::new(DType::Fp16, &[1, 2, 5, 6], &rng.fp16s(60));
    let f = Tensor::new(DType::Fp32, &[4, 4], &rng.fp32s(16));
    let n = Tensor::new(DType::Int32, &[3, 5], &rng.ints(15, -50, 50));
    let body = r#"        tensor<fp16, [1, 2, 5, 6]> causal = band_part(x = h, lower = int32(-1), upper = int32(0))[name = string("causal")];
        tensor<fp16, [1, 2, 5, 6]> band = band_part(x = h, lower = int32(1), upper = int32(2))[name = string("band")];
        tensor<fp16, [1, 2, 5, 6]> all = band_part(x = h)[name = string("all")];
        tensor<fp32, [4, 4]> upper = band_part(x = f, lower = int32(0))[name = string("upper")];
        tensor<int32, [3, 5]> diag = band_part(x = n, lower = int32(0), upper = int32(0))[name = string("diag")];"#;
    let out =
        run(&[("f", &f), ("h", &h), ("n", &n)], body, &["causal", "band", "all", "upper", "diag"]);
    assert_same("causal", &out[0], &band_part_ref(&h, -1, 0));
    assert_same("band", &out[1], &band_part_ref(&h, 1, 2));
    assert_same("all", &out[2], &band_part_ref(&h, -1, -1));
    assert_same("upper fp32", &out[3], &band_part_ref(&f, 0, -1));
    assert_same("diag int32", &out[4], &band_part_ref(&n, 0, 0));
}

#[test]
fn bool_tensors_cast_to_and_from_numbers() {
    // Masks come as bool and are cast to fp16 (0 / 1) by converted programs; a number casts
    // to bool as `x != 0`.
    let m = Tensor::new(DType::Bool, &[4], &[1.0, 0.0, 0.0, 1.0]);
    let x = Tensor::new(DType::Fp16, &[4], &[0.0, -0.5, 3.0, -0.0]);
    let out = run(
        &[("m", &m), ("x", &x)],
        r#"        tensor<fp16, [4]> mf = cast(x = m, dtype = string("fp16"))[name = string("mf")];
        tensor<int32, [4]> mi = cast(x = m, dtype = string("int32"))[name = string("mi")];
        tensor<bool, [4]> xb = cast(x = x, dtype = string("bool"))[name = string("xb")];"#,
        &["mf", "mi", "xb"],
    );
    assert_same("mf", &out[0], &Tensor::new(DType::Fp16, &[4], &[1.0, 0.0, 0.0, 1.0]));
    assert_same("mi", &out[1], &Tensor::new(DType::Int32, &[4], &[1.0, 0.0, 0.0, 1.0]));
    assert_same("xb", &out[2], &Tensor::new(DType::Bool, &[4], &[0.0, 1.0, 1.0, 0.0]));
}
