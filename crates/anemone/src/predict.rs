//! [`Model::predict`]: one call from named arrays to named arrays, for callers that do not
//! need to manage surfaces themselves. Built only on `Model`'s public surface API.

use std::collections::BTreeMap;

use anemone_mil::DType;

use crate::npy::{Array, Data, integers_as};
use crate::{Error, Model, Result, Surface};

impl Model {
    /// Writes every input from `inputs` (by name), evaluates, and returns every output by
    /// name, each in its declared element type (an fp16 output comes back as
    /// [`Data::F16`]; [`Data::to_f32`] widens it).
    ///
    /// Every input of the model must be given exactly once, with exactly its declared shape.
    /// Float inputs take any numeric array (converted to the input's dtype, fp16 rounding to
    /// nearest even); integer inputs take integers or whole-valued floats that fit; bool
    /// inputs take any numbers (non-zero is true).
    ///
    /// ```
    /// use anemone::prelude::*;
    ///
    /// let mut b = Builder::new();
    /// let mut f = b.function("main");
    /// let x = f.input("x", TensorType::new(DType::Fp32, [1, 4]));
    /// let y = f.add(&x, &x)?;
    /// f.output_named(&y, "y")?;
    /// f.finish();
    /// let built = b.build()?;
    ///
    /// let mut model = Device::simulator().compile(&built.program, &built.weights)?;
    /// let x = Array::from_f32(vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])?;
    /// let outputs = model.predict(&[("x", &x)])?;
    /// assert_eq!(outputs["y"].data.to_f32(), [2.0, 4.0, 6.0, 8.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn predict(&mut self, inputs: &[(&str, &Array)]) -> Result<BTreeMap<String, Array>> {
        let names: Vec<String> = self.input_names().iter().map(|s| s.to_string()).collect();
        for (i, (name, _)) in inputs.iter().enumerate() {
            if !names.iter().any(|n| n == name) {
                return Err(Error::UnknownName(format!(
                    "`{name}` is not an input of this model (inputs: {})",
                    names.join(", ")
                )));
            }
            if inputs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::UnknownName(format!("input `{name}` is given twice")));
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !inputs.iter().any(|(given, _)| given == n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::UnknownName(format!(
                "missing input(s): {} (this model takes {})",
                missing.join(", "),
                names.join(", ")
            )));
        }
        for (name, array) in inputs {
            write_input(self.input(name)?, array)?;
        }
        self.evaluate()?;
        self.outputs()
            .iter()
            .map(|s| {
                let raw = s.try_read_bytes()?;
                let array = Array::from_le_bytes(s.shape().to_vec(), s.dtype(), &raw)
                    .map_err(|e| Error::Unsupported(format!("output `{}`: {e}", s.name())))?;
                Ok((s.name().to_string(), array))
            })
            .collect()
    }
}

/// Writes `array` into `surface`, converting it to the surface's dtype.
fn write_input(surface: &mut Surface, array: &Array) -> Result<()> {
    let name = surface.name().to_string();
    if array.shape != surface.shape() {
        return Err(Error::Shape(format!(
            "input `{name}` is {}, the array given is shaped {:?}",
            surface.tensor_type(),
            array.shape
        )));
    }
    let dtype = surface.dtype();
    let bad = |e: crate::npy::NpyError| Error::Shape(format!("input `{name}` ({dtype}): {e}"));
    match (&array.data, dtype) {
        // Already in the surface's encoding: copied bit for bit.
        (Data::F16(v), DType::Fp16) => surface.write_f16(v),
        (data, d) if d.is_float() => surface.write_f32(&data.to_f32()),
        (data, DType::Bool) => {
            let bytes: Vec<u8> = (0..data.len())
                .map(|i| u8::from(data.get_f64(i).is_some_and(|v| v != 0.0)))
                .collect();
            surface.write_bytes(&bytes)
        }
        (data, d) => surface.write_bytes(&integers_as(data, d).map_err(bad)?),
    }
}
