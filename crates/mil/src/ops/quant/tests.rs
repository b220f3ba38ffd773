use super::*;
use crate::ir::{BlobRef, Literal, TensorData};
use crate::ops::testing::{TestOp, assert_error, f16, op, t};

fn int8_scalar(v: i64) -> Literal {
    Literal::tensor(Type::Scalar(DType::Int8), TensorData::Int(vec![v]))
}

fn int8_blob(shape: &[usize]) -> Literal {
    Literal::blob(TensorType::new(DType::Int8, shape), "@model_path/weights/weight.bin", 64)
}

fn fp16_vec(v: &[f32]) -> Literal {
    Literal::tensor(
        Type::tensor(DType::Fp16, [v.len()]),
        TensorData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
    )
}

/// 09's weight: `constexpr_affine_dequantize()[axis = int32(0), name = ..., quantized_data =
/// tensor<int8, [256, 256, 1, 1]>(BLOBFILE(...)), scale = fp16(0x1p-3), zero_point = int8(0)]`.
fn fixture_constexpr() -> TestOp {
    op(OpKind::ConstexprAffineDequantize)
        .attr("axis", Literal::int32(0))
        .attr("quantized_data", int8_blob(&[256, 256, 1, 1]))
        .attr("scale", Literal::fp16(0.125))
        .attr("zero_point", int8_scalar(0))
}

#[test]
fn constexpr_attribute_form() {
    let c = fixture_constexpr();
    assert_eq!(c.infer_one(), f16(&[256, 256, 1, 1]));
    let p = QuantParams::resolve(&c.ctx()).unwrap();
    assert_eq!((p.input_dtype, p.output_dtype, p.axis), (DType::Int8, DType::Fp16, Some(0)));
    assert_eq!(p.scale, ConstValues::Inline(vec![0.125]));
    assert_eq!(p.zero_point, ConstValues::Inline(vec![0.0]));
    let blob = BlobRef { path: "@model_path/weights/weight.bin".into(), offset: 64 };
    assert_eq!(p.data, Some(ConstValues::Blob { blob, dtype: DType::Int8, len: 65536 }));
}

#[test]
fn constexpr_input_form_with_per_channel_scale() {
    let data = Literal::tensor(
        Type::tensor(DType::UInt8, [2, 3]),
        TensorData::UInt(vec![1, 2, 3, 4, 5, 6]),
    );
    let c = op(OpKind::ConstexprAffineDequantize)
        .lit("quantized_data", data)
        .lit(
            "zero_point",
            Literal::tensor(Type::tensor(DType::UInt8, [3]), TensorData::UInt(vec![0, 1, 2])),
        )
        .lit(
            "scale",
            Literal::tensor(Type::tensor(DType::Fp32, [3]), TensorData::F32(vec![1.0, 0.5, 0.25])),
        )
        .int("axis", -1);
    assert_eq!(c.infer_one(), t(DType::Fp32, &[2, 3]));
    let p = QuantParams::resolve(&c.ctx()).unwrap();
    assert_eq!(p.axis, Some(1));
    assert_eq!(p.zero_point, ConstValues::Inline(vec![0.0, 1.0, 2.0]));
    assert_eq!(p.data, Some(ConstValues::Inline(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])));
    // A fp32 zero point is allowed (ZeroPointT).
    let c = op(OpKind::ConstexprAffineDequantize)
        .lit("quantized_data", int8_blob(&[4, 2]))
        .lit("zero_point", Literal::fp32(0.5))
        .lit("scale", Literal::fp16(2.0))
        .int("axis", 0);
    assert_eq!(c.infer_one(), f16(&[4, 2]));
}

#[test]
fn constexpr_errors() {
    let e = fixture_constexpr().attr("extra", Literal::int32(1)).error();
    assert_error(&e, "extra", "unknown attribute `extra`");
    let e = op(OpKind::ConstexprAffineDequantize)
        .attr("axis", Literal::int32(0))
        .attr("quantized_data", int8_blob(&[4, 2]))
        .attr("scale", Literal::fp16(0.125))
        .error();
    assert_error(&e, "zero_point", "missing required input zero_point");
    let e = fixture_constexpr().lit("axis", Literal::int32(0)).error();
    assert_error(&e, "axis", "axis is given both as an input and as an attribute");
    let e = op(OpKind::ConstexprAffineDequantize)
        .attr("axis", Literal::int32(1))
        .attr("quantized_data", int8_blob(&[4, 2]))
        .attr("scale", fp16_vec(&[1.0, 2.0, 3.0]))
        .attr("zero_point", int8_scalar(0))
        .error();
    assert_error(&e, "scale", "scale has 3 values but dim 1 of [4, 2] has size 2");
    let e = op(OpKind::ConstexprAffineDequantize)
        .attr("axis", Literal::int32(2))
        .attr("quantized_data", int8_blob(&[4, 2]))
        .attr("scale", Literal::fp16(1.0))
        .attr("zero_point", int8_scalar(0))
        .error();
    assert_error(&e, "axis", "axis 2 is out of range for rank 2");
    let e = op(OpKind::ConstexprAffineDequantize)
        .var("quantized_data", t(DType::Int8, &[4, 2]))
        .lit("scale", Literal::fp16(1.0))
        .lit("zero_point", int8_scalar(0))
        .int("axis", 0)
        .error();
    assert_error(&e, "quantized_data", "quantized_data must be a compile-time constant");
    let e = op(OpKind::ConstexprAffineDequantize)
        .attr("axis", Literal::int32(0))
        .attr("quantized_data", Literal::blob(TensorType::new(DType::Fp16, [4]), "w", 64))
        .attr("scale", Literal::fp16(1.0))
        .attr("zero_point", int8_scalar(0))
        .error();
    assert_error(&e, "quantized_data", "quantized_data is fp16 but must be int8 or uint8");
}

fn quantize(input: Type, scale: Literal) -> TestOp {
    op(OpKind::Quantize).var("input", input).string("output_dtype", "int8").lit("scale", scale)
}

#[test]
fn quantize_and_dequantize_fixture_forms() {
    // 09: quantize(input = c0, output_dtype = "int8", scale = fp16) and
    // dequantize(input = q0, scale = fp16).
    let q = quantize(f16(&[1, 256, 16, 16]), Literal::fp16(0.125));
    assert_eq!(q.infer_one(), t(DType::Int8, &[1, 256, 16, 16]));
    let p = QuantParams::resolve(&q.ctx()).unwrap();
    assert_eq!((p.input_dtype, p.output_dtype, p.axis), (DType::Fp16, DType::Int8, None));
    assert_eq!(p.zero_point, ConstValues::Inline(vec![0.0]));
    let d = op(OpKind::Dequantize)
        .var("input", t(DType::Int8, &[1, 256, 16, 16]))
        .lit("scale", Literal::fp16(0.125));
    assert_eq!(d.infer_one(), f16(&[1, 256, 16, 16]));
    let p = QuantParams::resolve(&d.ctx()).unwrap();
    assert_eq!((p.input_dtype, p.output_dtype), (DType::Int8, DType::Fp16));
}

#[test]
fn per_axis_quantization() {
    let q = op(OpKind::Quantize)
        .var("input", t(DType::Fp32, &[2, 3]))
        .string("output_dtype", "uint8")
        .lit(
            "scale",
            Literal::tensor(Type::tensor(DType::Fp32, [3]), TensorData::F32(vec![1.0, 2.0, 4.0])),
        )
        .lit(
            "zero_point",
            Literal::tensor(Type::tensor(DType::UInt8, [3]), TensorData::UInt(vec![128, 128, 0])),
        )
        .int("axis", 1);
    assert_eq!(q.infer_one(), t(DType::UInt8, &[2, 3]));
    let p = QuantParams::resolve(&q.ctx()).unwrap();
    assert_eq!(p.axis, Some(1));
    assert_eq!(p.scale, ConstValues::Inline(vec![1.0, 2.0, 4.0]));
    assert_eq!(p.zero_point, ConstValues::Inline(vec![128.0, 128.0, 0.0]));
    // A per-channel scale kept in a weight file.
    let scale = Literal::blob(TensorType::new(DType::Fp16, [2]), "s.bin", 64);
    let d = op(OpKind::Dequantize)
        .var("input", t(DType::Int8, &[2, 5]))
        .lit("scale", scale)
        .int("axis", 0);
    assert_eq!(d.infer_one(), f16(&[2, 5]));
    let p = QuantParams::resolve(&d.ctx()).unwrap();
    assert!(matches!(p.scale, ConstValues::Blob { len: 2, dtype: DType::Fp16, .. }));
}

#[test]
fn quantize_errors() {
    let e = op(OpKind::Quantize)
        .var("input", f16(&[4]))
        .string("output_dtype", "int4")
        .lit("scale", Literal::fp16(1.0))
        .error();
    assert_error(&e, "output_dtype", "output_dtype \"int4\" is neither int8 nor uint8");
    let e = quantize(f16(&[4]), Literal::fp32(1.0)).error();
    assert_error(&e, "scale", "scale is fp32 but input is fp16");
    let e = quantize(f16(&[4]), Literal::fp16(0.0)).error();
    assert_error(&e, "scale", "scale holds 0, which quantize divides by");
    let e = quantize(f16(&[4]), Literal::fp16(1.0)).int("axis", 0).error();
    assert_error(&e, "axis", "axis is given but scale is a scalar");
    let e = quantize(f16(&[4, 3]), fp16_vec(&[1.0, 2.0, 3.0])).error();
    assert_error(&e, "axis", "scale is tensor<fp16, [3]> but no axis is given");
    let e = quantize(f16(&[4, 3]), fp16_vec(&[1.0, 2.0, 3.0])).int("axis", 0).error();
    assert_error(&e, "scale", "scale has 3 values but dim 0 of [4, 3] has size 4");
    let zp = Literal::tensor(Type::Scalar(DType::UInt8), TensorData::UInt(vec![3]));
    let e = quantize(f16(&[4]), Literal::fp16(1.0)).lit("zero_point", zp).error();
    assert_error(&e, "zero_point", "zero_point is uint8 but output_dtype is int8");
    let e = quantize(f16(&[4, 3]), fp16_vec(&[1.0, 2.0, 3.0]))
        .int("axis", 1)
        .lit("zero_point", int8_scalar(0))
        .error();
    assert_error(&e, "zero_point", "zero_point is int8 but scale is a vector");
    let e = op(OpKind::Quantize)
        .var("input", f16(&[4]))
        .string("output_dtype", "int8")
        .var("scale", Type::Scalar(DType::Fp16))
        .error();
    assert_error(&e, "scale", "scale must be a compile-time constant");
    let e = quantize(t(DType::Int8, &[4]), Literal::fp16(1.0)).error();
    assert_error(&e, "input", "input is int8 but must be fp16 or fp32");
    let e = quantize(f16(&[4]), Literal::fp16(f32::INFINITY)).error();
    assert_error(&e, "scale", "scale holds inf, which is not finite");
}

#[test]
fn dequantize_errors() {
    let zp = Literal::tensor(Type::Scalar(DType::UInt8), TensorData::UInt(vec![3]));
    let e = op(OpKind::Dequantize)
        .var("input", t(DType::Int8, &[4]))
        .lit("scale", Literal::fp16(1.0))
        .lit("zero_point", zp)
        .error();
    assert_error(&e, "zero_point", "zero_point is uint8 but input is int8");
    let e = op(OpKind::Dequantize).var("input", f16(&[4])).lit("scale", Literal::fp16(1.0)).error();
    assert_error(&e, "input", "input is fp16 but must be int8 or uint8");
    let e = op(OpKind::Dequantize)
        .var("input", t(DType::Int8, &[4]))
        .lit("scale", Literal::fp16(1.0))
        .string("output_dtype", "fp16")
        .error();
    assert_error(&e, "output_dtype", "unknown input `output_dtype`");
}
