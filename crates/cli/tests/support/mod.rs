//! Helpers the command tests share: reading a command's output, and safetensors
//! files written by hand from the format's description (an independent writer, so the
//! reader under test is not checked against itself).

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::Output;

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Little-endian bytes of f32 values, as a safetensors F32 tensor holds them.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file: header length (u64 little-endian), the JSON header (with a
/// `__metadata__` entry when given) with consecutive `data_offsets`, padded with spaces to a
/// multiple of 8, then the data. Tensors are (name, dtype, shape, bytes).
pub fn safetensors(
    path: &Path,
    metadata: Option<&str>,
    tensors: &[(&str, &str, &[usize], Vec<u8>)],
) {
    let mut entries: Vec<String> =
        metadata.map(|m| format!("\"__metadata__\":{m}")).into_iter().collect();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}
