//! `probe_weight_reload`: the weight-reload experiment of [`anemone::probe`], with the same
//! device choice and limits as `anemone probe weight-reload`, returning what the command's
//! `--json` prints.

use anemone::probe::{self, WeightReloadReport};
use anemone::sim::{SimOptions, SimReload};
use anemone::{Device, DeviceKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{self, Kind};
use crate::model::select_device;

/// The ANE's limits (REFERENCE.md §2), and a size the probe's packed input (channels x
/// (spatial + channels) values) fits in, as the command enforces them.
fn check_size(channels: usize, spatial: usize) -> PyResult<()> {
    if channels == 0 || spatial == 0 || channels > 16384 || spatial > 65536 {
        return Err(PyValueError::new_err(
            "channels must be in 1..=16384 and spatial in 1..=65536 (the ANE's limits)",
        ));
    }
    let packed = channels.saturating_mul(spatial.saturating_add(channels));
    if packed > 1 << 26 {
        return Err(PyValueError::new_err(format!(
            "{channels} channels at spatial {spatial} make a packed input of {packed} values; \
             the probe takes at most 2^26 (e.g. 4096 channels at spatial 12288)"
        )));
    }
    Ok(())
}

/// The device to probe; for the simulator, with the reload model `sim_reload` names.
fn probe_device(
    py: Python<'_>,
    device: Option<&str>,
    sim_reload: Option<&str>,
) -> PyResult<(Device, Option<SimReload>)> {
    let Some(name) = sim_reload else {
        let device = select_device(py, device)?;
        let reload = (device.kind() == DeviceKind::Simulator).then(SimReload::default);
        return Ok((device, reload));
    };
    let reload: SimReload =
        name.parse().map_err(|e: anemone::Error| PyValueError::new_err(e.to_string()))?;
    let refuse = |kind: &str| {
        PyValueError::new_err(format!(
            "sim_reload models what a reload does on the simulator; it cannot be used with the \
             {kind} device (use device=\"sim\")"
        ))
    };
    // Asking for the ANE with a simulator model is refused whether or not there is one.
    let named = device.map(str::to_string).or_else(|| std::env::var("ANEMONE_DEVICE").ok());
    if named.as_deref().map(str::trim) == Some("ane") {
        return Err(refuse("ane"));
    }
    let chosen = select_device(py, device)?;
    if chosen.kind() != DeviceKind::Simulator {
        return Err(refuse(chosen.kind().name()));
    }
    Ok((Device::simulator_with(SimOptions { reload, ..SimOptions::default() }), Some(reload)))
}

fn report_dict<'py>(
    py: Python<'py>,
    r: &WeightReloadReport,
    sim_reload: Option<SimReload>,
) -> PyResult<Bound<'py, PyDict>> {
    let methods = PyList::empty(py);
    for m in &r.methods {
        let d = PyDict::new(py);
        d.set_item("method", m.method)?;
        d.set_item("took_effect", m.took_effect)?;
        d.set_item("max_error", m.max_error)?;
        d.set_item("update_ms", m.update_ms)?;
        // A method that did not change the output has no speed-up to speak of.
        d.set_item("speedup", m.took_effect.then_some(m.speedup))?;
        methods.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("device", r.device)?;
    d.set_item("channels", r.channels)?;
    d.set_item("spatial", r.spatial)?;
    d.set_item("sim_reload", sim_reload.map(SimReload::name))?;
    d.set_item("verdict", r.verdict.as_str())?;
    d.set_item("max_change", r.max_change)?;
    d.set_item("reload_failed", r.reload_failed)?;
    d.set_item("compile_load_ms", r.compile_load_ms)?;
    d.set_item("unload_ms", r.unload_ms)?;
    d.set_item("reload_ms", r.reload_ms)?;
    d.set_item("methods", methods)?;
    Ok(d)
}

/// Runs the probe; returns the report as the command's JSON fields.
#[pyfunction]
#[pyo3(signature = (device=None, channels=64, spatial=32, sim_reload=None))]
pub fn probe_weight_reload<'py>(
    py: Python<'py>,
    device: Option<&str>,
    channels: usize,
    spatial: usize,
    sim_reload: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    check_size(channels, spatial)?;
    let (device, reload) = probe_device(py, device, sim_reload)?;
    let report = py.detach(|| probe::weight_reload(&device, channels, spatial, &mut |_| {}));
    let report = report.map_err(|e| errors::runtime(py, e, Kind::Device, None))?;
    report_dict(py, &report, reload)
}
