use super::*;
use crate::ir::{DType, Literal, TensorData};
use crate::ops::testing::{Arg, TestOp, assert_error, bools, f16, op, t};

fn reshape(x: &[usize], shape: &[i64]) -> TestOp {
    op(OpKind::Reshape).ints("shape", shape).var("x", f16(x))
}

#[test]
fn reshape_fixture_forms() {
    assert_eq!(reshape(&[1, 768, 1, 256], &[1, 12, 64, 256]).infer_one(), f16(&[1, 12, 64, 256]));
    // 07: rank 4 -> 3 -> 4.
    assert_eq!(reshape(&[1, 32000, 1, 256], &[1, 32000, 256]).infer_one(), f16(&[1, 32000, 256]));
    // 08: RoPE pairs.
    assert_eq!(
        reshape(&[1, 16, 256, 128], &[1, 16, 16384, 2]).infer_one(),
        f16(&[1, 16, 16384, 2])
    );
}

#[test]
fn reshape_infers_minus_one_and_copies_zero() {
    assert_eq!(reshape(&[2, 3, 4], &[-1, 4]).infer_one(), f16(&[6, 4]));
    assert_eq!(reshape(&[2, 3, 4], &[0, -1, 2]).infer_one(), f16(&[2, 6, 2]));
    assert_eq!(reshape(&[2, 3, 4], &[0, 0, 0]).infer_one(), f16(&[2, 3, 4]));
    assert_eq!(reshape(&[2, 3, 4], &[-1]).infer_one(), f16(&[24]));
    assert_eq!(reshape(&[1, 1], &[]).infer_one(), Type::Scalar(DType::Fp16));
    assert_eq!(
        op(OpKind::Reshape).ints("shape", &[1, 1]).var("x", Type::Scalar(DType::Fp16)).infer_one(),
        f16(&[1, 1])
    );
    let p = ReshapeParams::resolve(&reshape(&[4, 6], &[2, -1, 3]).ctx()).unwrap();
    assert_eq!(p.shape, vec![2, 4, 3]);
}

#[test]
fn reshape_errors() {
    let e = reshape(&[1, 12, 64, 256], &[1, 12, 64, 256]).infer();
    assert!(e.is_ok());
    let e = op(OpKind::Reshape).ints("shape", &[1, 12, 64, 256]).var("x", f16(&[196609])).error();
    assert_error(
        &e,
        "shape",
        "reshape: shape [1, 12, 64, 256] has 196608 elements but x has 196609",
    );
    let e = reshape(&[2, 3], &[-1, -1]).error();
    assert_error(&e, "shape", "shape [-1, -1] has more than one -1 (at 0 and 1)");
    let e = reshape(&[2, 3], &[4, -1]).error();
    assert_error(
        &e,
        "shape",
        "cannot infer the -1 in shape [4, -1]: x has 6 elements, not a multiple of 4",
    );
    let e = reshape(&[2, 3], &[0, 3, 1]).error();
    assert_error(&e, "shape", "has 3 entries and x has rank 2");
    let e = reshape(&[2, 3], &[-2, -3]).error();
    assert_error(&e, "shape", "shape [-2, -3] has -2; dims are positive");
    let e = op(OpKind::Reshape).var("shape", t(DType::Int32, &[2])).var("x", f16(&[2, 3])).error();
    assert_error(&e, "shape", "shape must be a compile-time constant");
    let e = op(OpKind::Reshape).lit("shape", Literal::int32(6)).var("x", f16(&[2, 3])).error();
    assert_error(&e, "shape", "shape is a scalar (int32) but must be a rank-1 tensor");
    let e = reshape(&[2, 3], &[i64::MAX, i64::MAX]).error();
    assert_error(&e, "shape", "more elements than fit in memory");
}

#[test]
fn transpose_permutes_dims() {
    let tr = |x: &[usize], perm: &[i64]| op(OpKind::Transpose).ints("perm", perm).var("x", f16(x));
    assert_eq!(tr(&[1, 12, 64, 256], &[0, 1, 3, 2]).infer_one(), f16(&[1, 12, 256, 64]));
    assert_eq!(tr(&[2, 3, 4], &[2, 0, 1]).infer_one(), f16(&[4, 2, 3]));
    assert_eq!(tr(&[2, 3, 4], &[-1, 0, -2]).infer_one(), f16(&[4, 2, 3]));
    let p = TransposeParams::resolve(&tr(&[2, 3, 4], &[-1, 0, -2]).ctx()).unwrap();
    assert_eq!(p.perm, vec![2, 0, 1]);
    assert_eq!(
        op(OpKind::Transpose).ints("perm", &[]).var("x", Type::Scalar(DType::Fp16)).infer_one(),
        Type::Scalar(DType::Fp16)
    );
    let e = tr(&[2, 3, 4], &[0, 1]).error();
    assert_error(&e, "perm", "perm [0, 1] has 2 entries but x has rank 3");
    let e = tr(&[2, 3, 4], &[0, 1, 1]).error();
    assert_error(&e, "perm", "perm [0, 1, 1] is not a permutation: axis 1 appears twice");
    let e = tr(&[2, 3, 4], &[0, 1, -1]).infer();
    assert!(e.is_ok());
    let e = tr(&[2, 3, 4], &[0, 3, 1]).error();
    assert_error(&e, "perm", "perm [0, 3, 1] has 3, out of range for rank 3");
}

fn by_size(x: &[usize], begin: &[i64], size: &[i64]) -> TestOp {
    op(OpKind::SliceBySize).var("x", f16(x)).ints("begin", begin).ints("size", size)
}

#[test]
fn slice_by_size_fixture_forms() {
    // 05: channel slices.
    assert_eq!(
        by_size(&[1, 4864, 1, 256], &[0, 768, 0, 0], &[1, 2048, 1, 256]).infer_one(),
        f16(&[1, 2048, 1, 256])
    );
    // 08: spatial slices of the packed input, and the odd element of RoPE pairs.
    assert_eq!(
        by_size(&[1, 1024, 1, 4352], &[0, 0, 0, 3328], &[1, 1024, 1, 1024]).infer_one(),
        f16(&[1, 1024, 1, 1024])
    );
    let odd = by_size(&[1, 16, 16384, 2], &[0, 0, 0, 1], &[1, 16, 16384, 1]);
    assert_eq!(odd.infer_one(), f16(&[1, 16, 16384, 1]));
    let p = SliceParams::resolve(&odd.ctx()).unwrap();
    assert_eq!(p.begin, vec![0, 0, 0, 1]);
    assert_eq!(p.end, vec![1, 16, 16384, 2]);
    assert_eq!(p.stride, vec![1; 4]);
    assert_eq!(p.squeeze, vec![false; 4]);
}

#[test]
fn slice_by_size_minus_one_and_negative_begin() {
    let s = by_size(&[4, 10], &[1, 3], &[-1, 2]);
    assert_eq!(s.infer_one(), f16(&[3, 2]));
    let s = by_size(&[4, 10], &[-2, -4], &[2, -1]);
    assert_eq!(s.infer_one(), f16(&[2, 4]));
    let p = SliceParams::resolve(&s.ctx()).unwrap();
    assert_eq!(p.begin, vec![2, 6]);
    assert_eq!(p.size, vec![2, 4]);
}

#[test]
fn slice_by_size_errors() {
    let e = by_size(&[1, 4, 256], &[0, 0, 300], &[1, 4, 10]).error();
    assert_error(&e, "size", "slice_by_size: begin 300 + size 10 exceeds dim 2 of size 256");
    let e = by_size(&[1, 4, 256], &[0, 0, 250], &[1, 4, 10]).error();
    assert_error(&e, "size", "begin 250 + size 10 exceeds dim 2 of size 256");
    let e = by_size(&[4], &[-5], &[1]).error();
    assert_error(&e, "begin", "begin -5 is out of range for dim 0 of size 4");
    let e = by_size(&[4], &[4], &[-1]).error();
    assert_error(&e, "begin", "begin 4 leaves nothing of dim 0 of size 4 for size -1");
    let e = by_size(&[4], &[0], &[0]).error();
    assert_error(&e, "size", "size[0] is 0; sizes are positive, or -1");
    let e = by_size(&[4, 4], &[0], &[1, 1]).error();
    assert_error(&e, "begin", "begin has 1 entries but x has rank 2");
    let e = op(OpKind::SliceBySize)
        .var("x", f16(&[4]))
        .var("begin", t(DType::Int32, &[1]))
        .ints("size", &[1])
        .error();
    assert_error(&e, "begin", "begin must be a compile-time constant");
}

fn by_index(x: &[usize], begin: &[i64], end: &[i64]) -> TestOp {
    op(OpKind::SliceByIndex).var("x", f16(x)).ints("begin", begin).ints("end", end)
}

#[test]
fn slice_by_index_basic_and_strided() {
    assert_eq!(by_index(&[4, 10], &[1, 2], &[3, 8]).infer_one(), f16(&[2, 6]));
    let s = by_index(&[10], &[1], &[10]).ints("stride", &[3]);
    assert_eq!(s.infer_one(), f16(&[3]));
    let p = SliceParams::resolve(&s.ctx()).unwrap();
    assert_eq!((p.begin, p.stride, p.size, p.end), (vec![1], vec![3], vec![3], vec![10]));
    // Ends clamp to the dim; negative indices count from the end.
    assert_eq!(by_index(&[10], &[2], &[100]).infer_one(), f16(&[8]));
    assert_eq!(by_index(&[10], &[-3], &[-1]).infer_one(), f16(&[2]));
    assert_eq!(by_index(&[10], &[-30], &[2]).infer_one(), f16(&[2]));
}

#[test]
fn slice_by_index_reverses_with_negative_stride() {
    // x[8:2:-2] = 8, 6, 4.
    let s = by_index(&[10], &[8], &[2]).ints("stride", &[-2]);
    assert_eq!(s.infer_one(), f16(&[3]));
    let p = SliceParams::resolve(&s.ctx()).unwrap();
    assert_eq!((p.begin, p.end, p.size), (vec![8], vec![2], vec![3]));
    // x[::-1] through both masks: starts at the last element, ends before 0.
    let s = by_index(&[5], &[0], &[0])
        .ints("stride", &[-1])
        .lit("begin_mask", bools(&[true]))
        .lit("end_mask", bools(&[true]));
    let p = SliceParams::resolve(&s.ctx()).unwrap();
    assert_eq!((p.begin, p.end, p.size), (vec![4], vec![-1], vec![5]));
    // A begin past the end clamps to the last element.
    assert_eq!(by_index(&[5], &[99], &[1]).ints("stride", &[-1]).infer_one(), f16(&[3]));
}

#[test]
fn slice_by_index_masks() {
    // x[:, 2:] and x[1:, :3].
    let s = by_index(&[4, 6], &[7, 2], &[0, 0])
        .lit("begin_mask", bools(&[true, false]))
        .lit("end_mask", bools(&[true, true]));
    assert_eq!(s.infer_one(), f16(&[4, 4]));
    let s = by_index(&[4, 6], &[1, 0], &[0, 3])
        .lit("begin_mask", bools(&[false, true]))
        .lit("end_mask", bools(&[true, false]));
    assert_eq!(s.infer_one(), f16(&[3, 3]));
    // Both masks with a stride: ceil(dim / stride).
    let s = by_index(&[7], &[0], &[0])
        .ints("stride", &[2])
        .lit("begin_mask", bools(&[true]))
        .lit("end_mask", bools(&[true]));
    assert_eq!(s.infer_one(), f16(&[4]));
}

#[test]
fn slice_by_index_squeezes() {
    // x[:, 3] on [4, 6] -> [4]; x[-1, -1] -> scalar.
    let s = by_index(&[4, 6], &[0, 3], &[4, 4]).lit("squeeze_mask", bools(&[false, true]));
    assert_eq!(s.infer_one(), f16(&[4]));
    let p = SliceParams::resolve(&s.ctx()).unwrap();
    assert_eq!(p.begin, vec![0, 3]);
    assert_eq!(p.size, vec![4, 1]);
    assert_eq!(p.squeeze, vec![false, true]);
    let s = by_index(&[4, 6], &[-1, -1], &[0, 0]).lit("squeeze_mask", bools(&[true, true]));
    assert_eq!(s.infer_one(), Type::Scalar(DType::Fp16));
    assert_eq!(SliceParams::resolve(&s.ctx()).unwrap().begin, vec![3, 5]);
    let e = by_index(&[4, 6], &[0, 6], &[4, 7]).lit("squeeze_mask", bools(&[false, true])).error();
    assert_error(&e, "begin", "squeeze_mask takes index 6 of dim 1, which has size 6");
}

#[test]
fn slice_by_index_errors() {
    let e = by_index(&[10], &[5], &[3]).error();
    assert_error(&e, "end", "takes no elements of dim 0 (size 10): begin 5, end 3, stride 1");
    let e = by_index(&[10], &[0], &[3]).ints("stride", &[0]).error();
    assert_error(&e, "stride", "stride [0] has 0 at dim 0");
    let e = by_index(&[4, 4], &[0, 0], &[1]).error();
    assert_error(&e, "end", "end has 1 entries but x has rank 2");
    let e = by_index(&[4, 4], &[0, 0], &[1, 1]).lit("end_mask", bools(&[true])).error();
    assert_error(&e, "end_mask", "end_mask has 1 entries but x has rank 2");
    let e = by_index(&[4], &[0], &[1]).ints("begin_mask", &[1]).error();
    assert_error(&e, "begin_mask", "begin_mask is int32 but must be bool");
}

fn values(shapes: &[&[usize]]) -> Vec<Arg> {
    shapes.iter().map(|s| Arg::Var(f16(s))).collect()
}

fn concat(shapes: &[&[usize]], axis: i32, interleave: bool) -> TestOp {
    op(OpKind::Concat)
        .int("axis", axis)
        .bool("interleave", interleave)
        .tuple("values", values(shapes))
}

#[test]
fn concat_fixture_forms() {
    let big: &[usize] = &[1, 768, 1, 256];
    assert_eq!(concat(&[big; 6], 1, false).infer_one(), f16(&[1, 4608, 1, 256]));
    let c = concat(&[&[1, 768, 1, 256], &[1, 2048, 1, 256], &[1, 2048, 1, 256]], 1, false);
    assert_eq!(c.infer_one(), f16(&[1, 4864, 1, 256]));
    // 08: RoPE pairs on axis 3, and GQA tiling on axis 1.
    let rope: &[usize] = &[1, 16, 16384, 1];
    assert_eq!(concat(&[rope, rope], 3, false).infer_one(), f16(&[1, 16, 16384, 2]));
    let kv: &[usize] = &[1, 8, 256, 128];
    assert_eq!(concat(&[kv, kv], 1, false).infer_one(), f16(&[1, 16, 256, 128]));
}

#[test]
fn concat_axes_and_interleave() {
    let c = concat(&[&[2, 3], &[2, 5]], -1, false);
    assert_eq!(c.infer_one(), f16(&[2, 8]));
    let p = ConcatParams::resolve(&c.ctx()).unwrap();
    assert_eq!((p.axis, p.interleave, p.sizes), (1, false, vec![3, 5]));
    let c = concat(&[&[3, 2], &[3, 2], &[3, 2]], 0, true);
    assert_eq!(c.infer_one(), f16(&[9, 2]));
    assert!(ConcatParams::resolve(&c.ctx()).unwrap().interleave);
    let one = op(OpKind::Concat).int("axis", 0).tuple("values", values(&[&[3]]));
    assert_eq!(one.infer_one(), f16(&[3]));
}

#[test]
fn concat_errors() {
    let e = concat(&[&[3, 2], &[3, 4]], 0, true).error();
    assert_error(
        &e,
        "values",
        "values[1] has shape [3, 4] but values[0] has [3, 2] (dim 1 differs); interleave needs equal shapes",
    );
    let e = concat(&[&[3, 2], &[4, 4]], 1, false).error();
    assert_error(&e, "values", "(dim 0 differs); they must agree except on axis 1");
    let e = concat(&[&[3, 2], &[3, 2, 1]], 0, false).error();
    assert_error(&e, "values", "values[1] has rank 3 but values[0] has rank 2");
    let e = concat(&[&[3, 2], &[3, 2]], 2, false).error();
    assert_error(&e, "axis", "axis 2 is out of range for rank 2");
    let e = op(OpKind::Concat)
        .int("axis", 0)
        .tuple("values", vec![Arg::Var(f16(&[2])), Arg::Var(t(DType::Fp32, &[2]))])
        .error();
    assert_error(&e, "values", "values[1] is fp32 but values[0] is fp16");
    let e = op(OpKind::Concat).int("axis", 0).var("values", f16(&[2])).error();
    assert_error(&e, "values", "values takes a tuple of values");
    let e = op(OpKind::Concat).int("axis", 0).tuple("values", vec![]).error();
    assert_error(&e, "values", "values is an empty tuple");
    let e = op(OpKind::Concat).tuple("values", values(&[&[2]])).error();
    assert_error(&e, "axis", "missing required input axis");
    let e = op(OpKind::Concat)
        .int("axis", 0)
        .tuple("values", vec![Arg::Var(Type::Scalar(DType::Fp16))])
        .error();
    assert_error(
        &e,
        "values",
        "values[0] is a scalar (fp16) but must be a tensor of rank 1 or more",
    );
}

#[test]
fn concat_takes_constants_among_values() {
    let lit = Literal::tensor(
        Type::tensor(DType::Fp16, [1, 2]),
        TensorData::F16(vec![half::f16::ONE; 2]),
    );
    let c = op(OpKind::Concat)
        .int("axis", 0)
        .tuple("values", vec![Arg::Var(f16(&[3, 2])), Arg::Const(lit)]);
    assert_eq!(c.infer_one(), f16(&[4, 2]));
}

fn split(x: &[usize], axis: i32) -> TestOp {
    op(OpKind::Split).var("x", f16(x)).int("axis", axis)
}

#[test]
fn split_evenly_or_by_sizes() {
    let s = split(&[1, 12, 4], 1).int("num_splits", 3);
    assert_eq!(s.infer().unwrap(), vec![f16(&[1, 4, 4]); 3]);
    let s = split(&[1, 12, 4], -2).ints("split_sizes", &[2, 7, 3]);
    assert_eq!(s.infer().unwrap(), vec![f16(&[1, 2, 4]), f16(&[1, 7, 4]), f16(&[1, 3, 4])]);
    let p = SplitParams::resolve(&s.ctx()).unwrap();
    assert_eq!((p.axis, p.sizes), (1, vec![2, 7, 3]));
    let s = split(&[10], 0).int("num_splits", 2).ints("split_sizes", &[3, 7]);
    assert_eq!(s.infer().unwrap(), vec![f16(&[3]), f16(&[7])]);
    assert_eq!(split(&[5], 0).int("num_splits", 1).infer().unwrap(), vec![f16(&[5])]);
}

#[test]
fn split_errors() {
    let e = split(&[10], 0).int("num_splits", 4).error();
    assert_error(&e, "num_splits", "num_splits 4 does not divide dim 0 of size 10");
    let e = split(&[10], 0).ints("split_sizes", &[3, 3]).error();
    assert_error(&e, "split_sizes", "split_sizes [3, 3] sum to 6 but dim 0 has size 10");
    let e = split(&[10], 0).ints("split_sizes", &[11, -1]).error();
    assert_error(&e, "split_sizes", "split_sizes [11, -1] must all be positive");
    let e = split(&[10], 0).int("num_splits", 3).ints("split_sizes", &[3, 7]).error();
    assert_error(&e, "num_splits", "num_splits is 3 but split_sizes [3, 7] has 2 entries");
    let e = split(&[10], 0).error();
    assert_error(&e, "num_splits", "needs num_splits or split_sizes");
    let e = split(&[10], 0).int("num_splits", 0).error();
    assert_error(&e, "num_splits", "num_splits must be positive, not 0");
    let e = split(&[10], 1).int("num_splits", 2).error();
    assert_error(&e, "axis", "axis 1 is out of range for rank 1");
}
