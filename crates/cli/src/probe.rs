//! `anemone probe`: questions asked of a device. `weight-reload` reproduces the seed
//! experiment (can rewriting the weight file and reloading skip the compile?) and compares
//! the ways to change weights; `device` says which backends are available here and why not.

use std::process::ExitCode;

use anemone::probe::{self, Verdict, WeightReloadReport};
use anemone::sim::{SimOptions, SimReload};
use anemone::{Device, DeviceKind};

use crate::EXIT_USAGE;

#[derive(clap::Subcommand)]
pub enum ProbeCommand {
    /// The seed experiment: compile a conv with identity weights, overwrite its weight file
    /// with 3x identity, unload + load, and see whether the output changed; then the same
    /// update by recompiling and by dynamic weights, timed.
    WeightReload(WeightReloadArgs),
    /// Which backends are available on this machine, and why not.
    Device,
}

#[derive(clap::Args)]
pub struct WeightReloadArgs {
    /// sim, ane or auto (default: $ANEMONE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Input and output channels of the conv.
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Spatial size.
    #[arg(long, default_value_t = 32)]
    pub spatial: usize,
    /// What an unload + load does on the simulator: `snapshot` (weights fixed at compile, as
    /// measured on the ANE; the default) or `reads-disk` (the load re-reads the weight
    /// files, as mechramc/Orion reports). Only with the simulator.
    #[arg(long, value_name = "MODEL", value_parser = parse_sim_reload)]
    pub sim_reload: Option<SimReload>,
    /// Print one JSON document on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
}

fn parse_sim_reload(s: &str) -> Result<SimReload, String> {
    s.parse::<SimReload>().map_err(|e| e.to_string())
}

pub fn run(cmd: ProbeCommand) -> ExitCode {
    match cmd {
        ProbeCommand::WeightReload(args) => weight_reload(&args),
        ProbeCommand::Device => device(),
    }
}

fn weight_reload(args: &WeightReloadArgs) -> ExitCode {
    // The ANE's limits (REFERENCE.md §2), and a size the probe's tensors fit in: the packed
    // input of the dynamic method holds channels x (spatial + channels) values.
    let packed = args.channels.saturating_mul(args.spatial.saturating_add(args.channels));
    if args.channels == 0 || args.spatial == 0 || args.channels > 16384 || args.spatial > 65536 {
        eprintln!(
            "error: --channels must be in 1..=16384 and --spatial in 1..=65536 (the ANE's limits)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if packed > 1 << 26 {
        eprintln!(
            "error: {} channels at spatial {} make a packed input of {packed} values; the probe \
             takes at most 2^26 (e.g. 4096 channels at spatial 12288)",
            args.channels, args.spatial
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let device = match probe_device(args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The simulator's verdict is the reload model's, not a measurement: say which.
    let sim_reload =
        (device.kind() == DeviceKind::Simulator).then(|| args.sim_reload.unwrap_or_default());
    match sim_reload {
        Some(model) => eprintln!("device: {} (reload model: {model})", device.kind()),
        None => eprintln!("device: {}", device.kind()),
    }
    let report =
        probe::weight_reload(&device, args.channels, args.spatial, &mut |line| eprintln!("{line}"));
    match report {
        Ok(r) if args.json => {
            println!("{}", to_json(&r, sim_reload));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print_report(&r, sim_reload);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the probe could not run: {e}");
            ExitCode::from(1)
        }
    }
}

/// The device to probe: the one `--device` (or `$ANEMONE_DEVICE`) names, and for the
/// simulator, with the reload model `--sim-reload` names.
fn probe_device(args: &WeightReloadArgs) -> Result<Device, String> {
    let Some(reload) = args.sim_reload else {
        return crate::select_device(args.device.as_deref()).map_err(|e| e.to_string());
    };
    let refuse = |kind: &str| {
        format!(
            "--sim-reload models what a reload does on the simulator; it cannot be used with \
             the {kind} device (use --device sim)"
        )
    };
    // Refused before opening the device: asking for the ANE here is a usage error whether
    // or not this machine has one.
    let named = args.device.clone().or_else(|| std::env::var("ANEMONE_DEVICE").ok());
    if named.as_deref().map(str::trim) == Some("ane") {
        return Err(refuse("ane"));
    }
    let device = crate::select_device(args.device.as_deref()).map_err(|e| e.to_string())?;
    if device.kind() != DeviceKind::Simulator {
        return Err(refuse(device.kind().name()));
    }
    Ok(Device::simulator_with(SimOptions { reload, ..SimOptions::default() }))
}

fn to_json(r: &WeightReloadReport, sim_reload: Option<SimReload>) -> serde_json::Value {
    let methods: Vec<_> = r
        .methods
        .iter()
        .map(|m| {
            serde_json::json!({
                "method": m.method,
                "took_effect": m.took_effect,
                "max_error": m.max_error,
                "update_ms": m.update_ms,
                // A method that did not change the output has no speed-up to speak of.
                "speedup": if m.took_effect { serde_json::json!(m.speedup) } else { serde_json::Value::Null },
            })
        })
        .collect();
    serde_json::json!({
        "device": r.device,
        "channels": r.channels,
        "spatial": r.spatial,
        "sim_reload": sim_reload.map(SimReload::name),
        "verdict": r.verdict.as_str(),
        // Largest |B - A| after the reload; null when an output became infinite.
        "max_change": r.max_change,
        "reload_failed": r.reload_failed,
        "compile_load_ms": r.compile_load_ms,
        "unload_ms": r.unload_ms,
        "reload_ms": r.reload_ms,
        "methods": methods,
    })
}

fn print_report(r: &WeightReloadReport, sim_reload: Option<SimReload>) {
    let device = match sim_reload {
        Some(model) => format!("{}, reload model {model}", r.device),
        None => r.device.to_string(),
    };
    println!(
        "=== RESULT ({device}, {}x{} conv, spatial {}) ===",
        r.channels, r.channels, r.spatial
    );
    let reload = &r.methods[0];
    println!("  Max A-B diff: {:.6}", r.max_change);
    println!("  Max 3x error: {:.6}", reload.max_error);
    println!(
        "  Compile+load: {:.3} ms | Unload: {:.3} ms | Reload: {:.3} ms",
        r.compile_load_ms, r.unload_ms, r.reload_ms
    );
    if r.reload_failed {
        println!(
            "  The load after the rewrite failed; the model compiled the program with B and \
             loaded that instead (as the seed does)."
        );
    }
    println!();
    match r.verdict {
        Verdict::Success => {
            println!("SUCCESS: weight reload works: the output matches 3x identity.");
            println!(
                "  Speed-up: compile+load {:.3} ms vs unload+reload {:.3} ms ({:.1}x)",
                r.compile_load_ms,
                r.unload_ms + r.reload_ms,
                r.compile_load_ms / (r.unload_ms + r.reload_ms).max(1e-9)
            );
        }
        Verdict::Partial => println!("PARTIAL: the output changed but does not match 3x identity."),
        Verdict::Fail => {
            println!("FAIL: the output did not change: weights are baked in at compile time.");
            println!("  Change weights by recompiling, or pass them as inputs (dynamic weights):");
        }
    }
    println!();
    println!("{:<12} {:<22} {:>13} {:>10}", "method", "took effect", "update", "speed-up");
    for m in &r.methods {
        let effect =
            format!("{} (max error {:.4})", if m.took_effect { "yes" } else { "no" }, m.max_error);
        let speedup = if m.method == "disk-reload" && !m.took_effect {
            "-".to_string()
        } else {
            format!("{:.1}x", m.speedup)
        };
        println!("{:<12} {:<22} {:>10.3} ms {:>10}", m.method, effect, m.update_ms, speedup);
    }
}

fn device() -> ExitCode {
    println!("sim  available: the CPU simulator runs everywhere");
    match anemone::apple::availability() {
        Ok(()) => println!("ane  available: AppleNeuralEngine.framework loaded"),
        Err(why) => println!("ane  unavailable: {why}"),
    }
    let default = match Device::from_env() {
        Ok(d) => d.kind().name().to_string(),
        Err(e) => format!("none ({e})"),
    };
    println!(
        "default device: {default} (ANEMONE_DEVICE={})",
        std::env::var("ANEMONE_DEVICE").unwrap_or_else(|_| "unset: auto".into())
    );
    ExitCode::SUCCESS
}
