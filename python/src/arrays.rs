//! NumPy arrays to and from the library's [`Array`]: inputs of any numeric dtype in, outputs
//! in the element type the model declares.

use anemone::mil::{DType, f16};
use anemone::npy::{Array, Data};
use numpy::{Element, PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// The elements of `a` in C order, whatever its strides.
fn elements<T: Element + Copy>(a: &Bound<'_, PyArrayDyn<T>>) -> PyResult<Vec<T>> {
    let view = a.try_readonly().map_err(|e| PyTypeError::new_err(e.to_string()))?;
    // A Fortran-ordered array is contiguous too, but its memory is not in C order.
    Ok(match view.as_slice() {
        Ok(slice) if view.is_c_contiguous() => slice.to_vec(),
        _ => view.as_array().iter().copied().collect(),
    })
}

/// A NumPy array (native byte order; the Python layer makes it so) as an [`Array`].
/// `what` names the value in the error for an unsupported dtype.
pub fn from_numpy(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Array> {
    let untyped = value.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!("{what}: expected a numpy array, got {}", type_name(value)))
    })?;
    let shape = untyped.shape().to_vec();
    macro_rules! try_as {
        ($($t:ty => $wrap:expr),* $(,)?) => {
            $(
                if let Ok(a) = value.cast::<PyArrayDyn<$t>>() {
                    let data = $wrap(elements(a)?);
                    return Array::new(shape, data).map_err(|e| PyTypeError::new_err(format!("{what}: {e}")));
                }
            )*
        };
    }
    try_as!(
        f32 => Data::F32,
        f16 => Data::F16,
        f64 => Data::F64,
        bool => Data::Bool,
        i8 => |v: Vec<i8>| Data::Int(v.into_iter().map(i64::from).collect()),
        i16 => |v: Vec<i16>| Data::Int(v.into_iter().map(i64::from).collect()),
        i32 => |v: Vec<i32>| Data::Int(v.into_iter().map(i64::from).collect()),
        i64 => Data::Int,
        u8 => |v: Vec<u8>| Data::UInt(v.into_iter().map(u64::from).collect()),
        u16 => |v: Vec<u16>| Data::UInt(v.into_iter().map(u64::from).collect()),
        u32 => |v: Vec<u32>| Data::UInt(v.into_iter().map(u64::from).collect()),
        u64 => Data::UInt,
    );
    Err(PyTypeError::new_err(format!(
        "{what}: arrays of dtype {} are not supported: use a float, integer or bool array",
        untyped.dtype()
    )))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "an object".into())
}

fn shaped<'py, T: Element>(
    py: Python<'py>,
    v: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, v).reshape(shape.to_vec())?.into_any())
}

/// An output as a NumPy array of the model's declared element type: fp16 as float16, fp32
/// and bf16 as float32, integers at their declared width, bool as bool.
pub fn to_numpy<'py>(py: Python<'py>, array: Array, dtype: DType) -> PyResult<Bound<'py, PyAny>> {
    let shape = array.shape;
    // Integers come back widened to 64 bits; they were read from a tensor of `dtype`, so
    // narrowing them again is exact.
    match array.data {
        Data::F16(v) => shaped(py, v, &shape),
        Data::F32(v) => shaped(py, v, &shape),
        Data::F64(v) => shaped(py, v, &shape),
        Data::Bool(v) => shaped(py, v, &shape),
        Data::Int(v) => match dtype {
            DType::Int8 => shaped(py, v.into_iter().map(|x| x as i8).collect::<Vec<_>>(), &shape),
            DType::Int16 => shaped(py, v.into_iter().map(|x| x as i16).collect::<Vec<_>>(), &shape),
            DType::Int32 => shaped(py, v.into_iter().map(|x| x as i32).collect::<Vec<_>>(), &shape),
            _ => shaped(py, v, &shape),
        },
        Data::UInt(v) => match dtype {
            DType::UInt8 => shaped(py, v.into_iter().map(|x| x as u8).collect::<Vec<_>>(), &shape),
            DType::UInt16 => {
                shaped(py, v.into_iter().map(|x| x as u16).collect::<Vec<_>>(), &shape)
            }
            DType::UInt32 => {
                shaped(py, v.into_iter().map(|x| x as u32).collect::<Vec<_>>(), &shape)
            }
            _ => shaped(py, v, &shape),
        },
    }
}
