//! Builds operation contexts by hand for the registry's tests.

use crate::ir::{DType, Literal, Named, Span, TensorData, Type};

use super::{InputArg, InputValue, OpContext, OpError, OpKind, infer};

/// One input of a test op: a variable of some type, a constant, or a tuple.
pub enum Arg {
    Var(Type),
    Const(Literal),
    Tuple(Vec<Arg>),
}

/// An operation under test that owns everything its context borrows.
pub struct TestOp {
    pub kind: OpKind,
    pub inputs: Vec<(String, Arg)>,
    pub attributes: Vec<Named<Literal>>,
}

pub fn op(kind: OpKind) -> TestOp {
    TestOp { kind, inputs: Vec::new(), attributes: vec![Named::new("name", Literal::string("t"))] }
}

pub fn t(dtype: DType, shape: &[usize]) -> Type {
    Type::tensor(dtype, shape)
}

pub fn f16(shape: &[usize]) -> Type {
    t(DType::Fp16, shape)
}

pub fn ints(v: &[i64]) -> Literal {
    Literal::tensor(Type::tensor(DType::Int32, [v.len()]), TensorData::Int(v.to_vec()))
}

pub fn bools(v: &[bool]) -> Literal {
    Literal::tensor(Type::tensor(DType::Bool, [v.len()]), TensorData::Bool(v.to_vec()))
}

impl TestOp {
    pub fn var(mut self, name: &str, ty: Type) -> TestOp {
        self.inputs.push((name.to_string(), Arg::Var(ty)));
        self
    }

    pub fn lit(mut self, name: &str, lit: Literal) -> TestOp {
        self.inputs.push((name.to_string(), Arg::Const(lit)));
        self
    }

    pub fn ints(self, name: &str, v: &[i64]) -> TestOp {
        self.lit(name, ints(v))
    }

    pub fn int(self, name: &str, v: i32) -> TestOp {
        self.lit(name, Literal::int32(v))
    }

    pub fn bool(self, name: &str, v: bool) -> TestOp {
        self.lit(name, Literal::bool(v))
    }

    pub fn string(self, name: &str, v: &str) -> TestOp {
        self.lit(name, Literal::string(v))
    }

    pub fn tuple(mut self, name: &str, values: Vec<Arg>) -> TestOp {
        self.inputs.push((name.to_string(), Arg::Tuple(values)));
        self
    }

    pub fn attr(mut self, name: &str, lit: Literal) -> TestOp {
        self.attributes.push(Named::new(name, lit));
        self
    }

    pub fn ctx(&self) -> OpContext<'_> {
        fn value(arg: &Arg) -> InputValue<'_> {
            match arg {
                Arg::Var(ty) => InputValue { ty: ty.clone(), constant: None, span: Span::NONE },
                Arg::Const(lit) => {
                    InputValue { ty: lit.ty.clone(), constant: Some(lit), span: Span::NONE }
                }
                Arg::Tuple(_) => panic!("nested tuples are not MIL"),
            }
        }
        let inputs = self
            .inputs
            .iter()
            .map(|(name, arg)| {
                let bound = match arg {
                    Arg::Tuple(values) => {
                        InputArg::Tuple(values.iter().map(value).collect(), Span::NONE)
                    }
                    other => InputArg::One(value(other)),
                };
                (name.as_str(), bound)
            })
            .collect();
        OpContext { kind: self.kind, inputs, attributes: &self.attributes, span: Span::NONE }
    }

    pub fn infer(&self) -> Result<Vec<Type>, OpError> {
        infer(&self.ctx())
    }

    /// The single result type; panics with the error otherwise.
    pub fn infer_one(&self) -> Type {
        match self.infer() {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(v) => panic!("expected one result, got {v:?}"),
            Err(e) => panic!("inference failed: {e:?}"),
        }
    }

    /// The error; panics if inference succeeds.
    pub fn error(&self) -> OpError {
        match self.infer() {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }
}

/// Asserts an error's subject and that its message contains `needle`.
#[track_caller]
pub fn assert_error(e: &OpError, subject: &str, needle: &str) {
    assert_eq!(e.subject.as_deref(), Some(subject), "subject of {e:?}");
    assert!(e.message.contains(needle), "message {:?} lacks {needle:?}", e.message);
}
