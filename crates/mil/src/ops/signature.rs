//! Op signatures: the inputs and attributes each op takes, and the checks every op goes
//! through before its own inference (unknown or repeated names, missing inputs, tuples,
//! compile-time constants, element types, ranks).

use std::fmt::Write as _;

use crate::ir::{DType, Type};

use super::{InputArg, InputValue, OpContext, OpError};

/// Whether an input takes one value or a tuple of them (`values = (a, b)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// A single value: `x = x16`.
    One,
    /// A parenthesised, non-empty tuple of values: `values = (a, b)`.
    Tuple,
}

/// The element types an input or attribute accepts. The type domains follow coremltools'
/// op definitions, where "float" means fp16 or fp32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypes {
    /// Every element type, and dictionaries (a `const` may hold one).
    Any,
    /// fp16 or fp32.
    Float,
    /// Any integer type (shapes, axes, indices).
    Int,
    /// fp16, fp32 or any integer type.
    Numeric,
    /// Only `bool`.
    Bool,
    /// Only `string`.
    String,
    /// Exactly these types.
    OneOf(&'static [DType]),
}

impl DTypes {
    /// Whether a value of element type `dtype` is accepted.
    pub fn allows(self, dtype: DType) -> bool {
        let float = matches!(dtype, DType::Fp16 | DType::Fp32);
        match self {
            DTypes::Any => true,
            DTypes::Float => float,
            DTypes::Int => dtype.is_int(),
            DTypes::Numeric => float || dtype.is_int(),
            DTypes::Bool => dtype == DType::Bool,
            DTypes::String => dtype == DType::String,
            DTypes::OneOf(list) => list.contains(&dtype),
        }
    }

    /// For messages: "fp16 or fp32", "an integer type", ...
    pub fn describe(self) -> String {
        match self {
            DTypes::Any => "any type".to_string(),
            DTypes::Float => "fp16 or fp32".to_string(),
            DTypes::Int => "an integer type".to_string(),
            DTypes::Numeric => "fp16, fp32 or an integer type".to_string(),
            DTypes::Bool => "bool".to_string(),
            DTypes::String => "string".to_string(),
            DTypes::OneOf(list) => {
                let names: Vec<&str> = list.iter().map(|d| d.name()).collect();
                match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    Some((last, _)) => last.to_string(),
                    None => "no type".to_string(),
                }
            }
        }
    }
}

/// The ranks an input accepts, inclusive; scalars have rank 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranks {
    /// Smallest accepted rank (0 = scalar).
    pub min: usize,
    /// Largest accepted rank; `usize::MAX` for no limit.
    pub max: usize,
}

impl Ranks {
    /// Any rank, scalars included.
    pub const ANY: Ranks = Ranks { min: 0, max: usize::MAX };
    /// Only scalars (rank 0).
    pub const SCALAR: Ranks = Ranks { min: 0, max: 0 };
    /// Only rank-1 tensors (shapes, axes, perms).
    pub const VECTOR: Ranks = Ranks { min: 1, max: 1 };
    /// A scalar or a vector (quantization scales and zero points).
    pub const SCALAR_OR_VECTOR: Ranks = Ranks { min: 0, max: 1 };

    /// Rank `min` or more.
    pub const fn at_least(min: usize) -> Ranks {
        Ranks { min, max: usize::MAX }
    }

    /// Ranks `min` to `max`, both included.
    pub const fn between(min: usize, max: usize) -> Ranks {
        Ranks { min, max }
    }

    /// Whether a value of rank `rank` is accepted.
    pub fn allows(self, rank: usize) -> bool {
        self.min <= rank && rank <= self.max
    }

    /// For messages: "a scalar", "a rank-1 tensor", "a tensor of rank 3 to 5", ...
    pub fn describe(self) -> String {
        match (self.min, self.max) {
            (0, 0) => "a scalar".to_string(),
            (0, 1) => "a scalar or a rank-1 tensor".to_string(),
            (0, usize::MAX) => "anything".to_string(),
            (min, usize::MAX) => format!("a tensor of rank {min} or more"),
            (min, max) if min == max => format!("a rank-{min} tensor"),
            (min, max) => format!("a tensor of rank {min} to {max}"),
        }
    }
}

/// One input of an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The input's name in MIL text (`x`, `weight`, `values`, ...).
    pub name: &'static str,
    /// Whether the op is malformed without it.
    pub required: bool,
    /// One value or a tuple of values.
    pub arity: Arity,
    /// The value must be known at compile time (a `const` op or an inline literal).
    pub constant: bool,
    /// The element types it accepts.
    pub dtypes: DTypes,
    /// The ranks it accepts.
    pub ranks: Ranks,
    /// May be written as an attribute instead: opset iOS16 and earlier print constexpr ops'
    /// parameters as attributes (REFERENCE.md §4, fixture 09).
    pub or_attribute: bool,
    /// What an absent optional input stands for, in words ("1", "all axes", "zeros"), as the
    /// op's `*Params::resolve` applies it; None when absence means "not used".
    pub default: Option<&'static str>,
}

impl InputSpec {
    /// A required single-valued input of any rank; refine it with the builder methods below.
    pub const fn required(name: &'static str, dtypes: DTypes) -> InputSpec {
        InputSpec {
            name,
            required: true,
            arity: Arity::One,
            constant: false,
            dtypes,
            ranks: Ranks::ANY,
            or_attribute: false,
            default: None,
        }
    }

    /// An optional single-valued input of any rank.
    pub const fn optional(name: &'static str, dtypes: DTypes) -> InputSpec {
        InputSpec { required: false, ..InputSpec::required(name, dtypes) }
    }

    /// Marks the input as one whose value must be known at compile time.
    pub const fn constant(self) -> InputSpec {
        InputSpec { constant: true, ..self }
    }

    /// Restricts the ranks the input accepts.
    pub const fn ranks(self, ranks: Ranks) -> InputSpec {
        InputSpec { ranks, ..self }
    }

    /// Makes the input variadic: it takes a tuple of values.
    pub const fn tuple(self) -> InputSpec {
        InputSpec { arity: Arity::Tuple, ..self }
    }

    /// Lets the input be written as an attribute instead (iOS16-and-earlier constexpr ops).
    pub const fn or_attribute(self) -> InputSpec {
        InputSpec { or_attribute: true, ..self }
    }

    /// Records the value an absent optional input takes (documentation: the op's resolve
    /// code applies it).
    pub const fn default(self, text: &'static str) -> InputSpec {
        InputSpec { default: Some(text), ..self }
    }
}

/// One attribute of an op (the `[...]` after the inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrSpec {
    /// The attribute's name in MIL text (`name`, `val`).
    pub name: &'static str,
    /// Whether the op is malformed without it (`val` of `const`).
    pub required: bool,
    /// The element types its literal may have.
    pub dtypes: DTypes,
}

impl AttrSpec {
    /// `name = string("...")`, which every op may carry.
    pub const NAME: AttrSpec = AttrSpec { name: "name", required: false, dtypes: DTypes::String };
}

/// What an op takes: its inputs and its attributes. Inputs marked
/// [`InputSpec::or_attribute`] may appear among the attributes instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The inputs the op takes (messages listing them keep this order).
    pub inputs: &'static [InputSpec],
    /// The attributes the op takes: `name` for every op, plus `val` for `const`.
    pub attributes: &'static [AttrSpec],
}

/// The attribute list of every op but `const`.
pub(super) const NAME_ONLY: &[AttrSpec] = &[AttrSpec::NAME];

impl Signature {
    /// The spec of input `name`, if the op takes one.
    pub fn input(&self, name: &str) -> Option<&'static InputSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// The spec of attribute `name`, if the op takes one.
    pub fn attribute(&self, name: &str) -> Option<&'static AttrSpec> {
        self.attributes.iter().find(|s| s.name == name)
    }

    fn input_names(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.inputs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}{}", s.name, if s.required { "" } else { " (optional)" });
        }
        if out.is_empty() { "no inputs".to_string() } else { out }
    }
}

/// The signature checks shared by every op.
pub(super) fn check(ctx: &OpContext) -> Result<(), OpError> {
    let sig = ctx.kind.signature();
    let op = ctx.kind.name();

    for (i, (name, _)) in ctx.inputs.iter().enumerate() {
        if sig.input(name).is_none() {
            return Err(ctx
                .error(format_args!("unknown input `{name}`"))
                .with_subject(*name)
                .with_help(format!("{op} takes {}", sig.input_names())));
        }
        if ctx.inputs[..i].iter().any(|(n, _)| n == name) {
            return Err(ctx.error(format_args!("input {name} is given twice")).with_subject(*name));
        }
    }
    for (i, attr) in ctx.attributes.iter().enumerate() {
        let name = attr.name.name.as_str();
        let known =
            sig.attribute(name).is_some() || sig.input(name).is_some_and(|s| s.or_attribute);
        if !known {
            let mut help = String::from("attributes here are ");
            let names: Vec<&str> = sig.attributes.iter().map(|a| a.name).collect();
            help.push_str(&names.join(", "));
            return Err(ctx
                .error(format_args!("unknown attribute `{name}`"))
                .with_subject(name)
                .with_help(help));
        }
        if ctx.attributes[..i].iter().any(|a| a.name.name == name) {
            return Err(ctx
                .error(format_args!("attribute {name} is given twice"))
                .with_subject(name));
        }
    }

    for spec in sig.inputs {
        let arg = ctx.arg(spec.name);
        let attr = if spec.or_attribute { ctx.attribute(spec.name) } else { None };
        match (arg, attr) {
            (Some(_), Some(_)) => {
                return Err(ctx
                    .error(format_args!(
                        "{} is given both as an input and as an attribute",
                        spec.name
                    ))
                    .with_subject(spec.name));
            }
            (None, None) => {
                if spec.required {
                    return Err(ctx
                        .missing(spec.name)
                        .with_help(format!("{op} takes {}", sig.input_names())));
                }
            }
            (Some(InputArg::One(v)), None) => {
                if spec.arity == Arity::Tuple {
                    return Err(ctx
                        .error(format_args!(
                            "{} takes a tuple of values, e.g. {} = (a, b)",
                            spec.name, spec.name
                        ))
                        .with_subject(spec.name));
                }
                check_value(ctx, spec, v, spec.name)?;
            }
            (Some(InputArg::Tuple(values, _)), None) => {
                if spec.arity == Arity::One {
                    return Err(ctx
                        .error(format_args!("{} takes one value, not a tuple", spec.name))
                        .with_subject(spec.name));
                }
                if values.is_empty() {
                    return Err(ctx
                        .error(format_args!("{} is an empty tuple", spec.name))
                        .with_subject(spec.name));
                }
                for (i, v) in values.iter().enumerate() {
                    check_value(ctx, spec, v, &format!("{}[{i}]", spec.name))?;
                }
            }
            (None, Some(lit)) => {
                if spec.arity == Arity::Tuple {
                    return Err(ctx
                        .error(format_args!(
                            "{} takes a tuple of values, not an attribute",
                            spec.name
                        ))
                        .with_subject(spec.name));
                }
                let v = InputValue { ty: lit.ty.clone(), constant: Some(lit), span: lit.span };
                check_value(ctx, spec, &v, spec.name)?;
            }
        }
    }

    for spec in sig.attributes {
        match ctx.attribute(spec.name) {
            None if spec.required => {
                return Err(ctx
                    .error(format_args!("missing required attribute {}", spec.name))
                    .with_subject(spec.name));
            }
            None => {}
            Some(lit) => {
                // `Any` takes dictionaries too (a const may hold one).
                let allowed = spec.dtypes == DTypes::Any
                    || lit.ty.dtype().is_some_and(|d| spec.dtypes.allows(d));
                if !allowed {
                    return Err(ctx
                        .error(format_args!(
                            "attribute {} is {} but must be {}",
                            spec.name,
                            lit.ty,
                            spec.dtypes.describe()
                        ))
                        .with_subject(spec.name));
                }
            }
        }
    }
    Ok(())
}

/// Checks one value against its input's spec; `label` names it in messages
/// (`values[2]` for a tuple element), while the subject stays the input's name.
fn check_value(
    ctx: &OpContext,
    spec: &InputSpec,
    v: &InputValue,
    label: &str,
) -> Result<(), OpError> {
    if spec.constant && v.constant.is_none() {
        return Err(ctx
            .error(format_args!("{label} must be a compile-time constant"))
            .with_subject(spec.name)
            .with_help("give it as a const op or an inline literal"));
    }
    let (dtype, rank) = match &v.ty {
        Type::Dict(..) => {
            return Err(ctx
                .error(format_args!("{label} is a dictionary, not a tensor"))
                .with_subject(spec.name));
        }
        Type::Scalar(d) => (*d, 0),
        Type::Tensor(t) => (t.dtype, t.rank()),
    };
    if !spec.dtypes.allows(dtype) {
        return Err(ctx
            .error(format_args!("{label} is {dtype} but must be {}", spec.dtypes.describe()))
            .with_subject(spec.name));
    }
    if !spec.ranks.allows(rank) {
        let what = if rank == 0 { "a scalar".to_string() } else { format!("a rank-{rank} tensor") };
        return Err(ctx
            .error(format_args!(
                "{label} is {what} ({}) but must be {}",
                v.ty,
                spec.ranks.describe()
            ))
            .with_subject(spec.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Literal, Named};
    use crate::ops::OpKind;
    use crate::ops::testing::{Arg, assert_error, f16, op};

    #[test]
    fn every_op_has_a_consistent_signature() {
        for kind in OpKind::ALL {
            let sig = kind.signature();
            assert_eq!(OpKind::from_name(kind.name()), Some(kind));
            assert!(sig.attribute("name").is_some(), "{kind} takes a name");
            for (i, s) in sig.inputs.iter().enumerate() {
                assert!(
                    sig.inputs[..i].iter().all(|t| t.name != s.name),
                    "{kind}: {} twice",
                    s.name
                );
                assert!(
                    sig.attribute(s.name).is_none(),
                    "{kind}: {} is input and attribute",
                    s.name
                );
                assert!(s.ranks.min <= s.ranks.max);
                if s.or_attribute {
                    assert!(s.constant, "{kind}: attribute-form input {} must be constant", s.name);
                }
            }
        }
        let compile_time: Vec<OpKind> =
            OpKind::ALL.into_iter().filter(|k| k.is_compile_time()).collect();
        assert_eq!(compile_time, [OpKind::Const, OpKind::ConstexprAffineDequantize]);
        assert_eq!(OpKind::Const.signature().attribute("val").map(|a| a.required), Some(true));
        assert!(
            OpKind::Concat.signature().input("values").is_some_and(|s| s.arity == Arity::Tuple)
        );
    }

    #[test]
    fn unknown_and_repeated_names() {
        let e = op(OpKind::Relu).var("x", f16(&[2])).var("y", f16(&[2])).error();
        assert_error(&e, "y", "relu: unknown input `y`");
        assert_eq!(e.help.as_deref(), Some("relu takes x"));
        let e = op(OpKind::Relu).var("x", f16(&[2])).var("x", f16(&[2])).error();
        assert_error(&e, "x", "input x is given twice");
        let e = op(OpKind::Relu).var("x", f16(&[2])).attr("alpha", Literal::fp16(1.0)).error();
        assert_error(&e, "alpha", "unknown attribute `alpha`");
        let e = op(OpKind::Relu).var("x", f16(&[2])).attr("name", Literal::string("again")).error();
        assert_error(&e, "name", "attribute name is given twice");
        let e = op(OpKind::Relu).var("x", f16(&[2])).attr("val", Literal::fp16(1.0)).error();
        assert_error(&e, "val", "unknown attribute `val`");
        // The attribute form is only for inputs that allow it.
        let e = op(OpKind::Softmax).var("x", f16(&[2])).attr("axis", Literal::int32(0)).error();
        assert_error(&e, "axis", "unknown attribute `axis`");
    }

    #[test]
    fn missing_inputs_and_attributes() {
        let e = op(OpKind::Matmul).var("x", f16(&[2, 2])).error();
        assert_error(&e, "y", "matmul: missing required input y");
        assert!(e.help.unwrap().contains("transpose_x (optional)"));
        let e = op(OpKind::Const).error();
        assert_error(&e, "val", "const: missing required attribute val");
        let mut bad_name = op(OpKind::Relu).var("x", f16(&[2]));
        bad_name.attributes = vec![Named::new("name", Literal::int32(3))];
        assert_error(&bad_name.error(), "name", "attribute name is int32 but must be string");
    }

    #[test]
    fn tuples_only_where_variadic() {
        let e = op(OpKind::Relu).tuple("x", vec![Arg::Var(f16(&[2]))]).error();
        assert_error(&e, "x", "relu: x takes one value, not a tuple");
        let e = op(OpKind::Concat).int("axis", 0).var("values", f16(&[2])).error();
        assert_error(&e, "values", "values takes a tuple of values, e.g. values = (a, b)");
        let e = op(OpKind::Concat)
            .int("axis", 0)
            .tuple(
                "values",
                vec![
                    Arg::Var(f16(&[2])),
                    Arg::Var(crate::ir::Type::Dict(
                        Box::new(crate::ir::Type::Scalar(crate::ir::DType::String)),
                        Box::new(crate::ir::Type::Scalar(crate::ir::DType::String)),
                    )),
                ],
            )
            .error();
        assert_error(&e, "values", "values[1] is a dictionary, not a tensor");
    }

    #[test]
    fn descriptions_read_well() {
        assert_eq!(DTypes::Float.describe(), "fp16 or fp32");
        assert_eq!(DTypes::OneOf(&[DType::Int8]).describe(), "int8");
        assert_eq!(
            DTypes::OneOf(&[DType::Bool, DType::Fp16, DType::Fp32]).describe(),
            "bool, fp16 or fp32"
        );
        assert_eq!(Ranks::SCALAR.describe(), "a scalar");
        assert_eq!(Ranks::VECTOR.describe(), "a rank-1 tensor");
        assert_eq!(Ranks::between(3, 5).describe(), "a tensor of rank 3 to 5");
        assert_eq!(Ranks::at_least(1).describe(), "a tensor of rank 1 or more");
        assert!(Ranks::ANY.allows(7) && !Ranks::VECTOR.allows(0));
    }
}
