//! `anemone run` and `anemone bench` as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::{DType, TensorType};

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
        .args(args)
        .env_remove("ANEMONE_DEVICE")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A .npy file (format 1.0) of little-endian values with numpy's `descr`.
fn npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape =
        if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    bytes.extend_from_slice(format!("{header:<width$}\n", width = total - 11).as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// The seed's program with 2x identity weights, as a model directory.
fn model(dir: &Path) {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 8, 1, 16]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let eye: Vec<f32> = (0..64).map(|i| if i / 8 == i % 8 { 2.0 } else { 0.0 }).collect();
    let w = f.weight("W", TensorType::new(DType::Fp16, [8, 8, 1, 1]), &eye).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y16 = f.output_named(&y16, "y16").unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output_named(&y, "y").unwrap();
    f.finish();
    b.build().unwrap().write_model_dir(dir).unwrap();
}

fn read_npy_f32(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]).into_owned();
    let data = &bytes[10 + header_len..];
    let values = if header.contains("'<f2'") {
        data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    } else {
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    (header, values)
}

#[test]
fn run_writes_every_output_in_its_declared_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let x: Vec<f32> = (0..128).map(|i| i as f32 * 0.25).collect();
    let input = dir.path().join("x.npy");
    npy(&input, "<f4", &[1, 8, 1, 16], &x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let out = dir.path().join("out");
    let o = anemone(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        &format!("x={}", input.display()),
        "--output-dir",
        out.to_str().unwrap(),
        "--device",
        "sim",
        "--stats",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stats = String::from_utf8_lossy(&o.stdout);
    for line in ["compile", "load", "evaluate", "peak activations"] {
        assert!(stats.contains(line), "{stats}");
    }
    let (header, y) = read_npy_f32(&out.join("y.npy"));
    assert!(header.contains("'<f4'") && header.contains("(1, 8, 1, 16"), "{header}");
    assert_eq!(y, x.iter().map(|v| v * 2.0).collect::<Vec<_>>());
    let (header, y16) = read_npy_f32(&out.join("y16.npy"));
    assert!(header.contains("'<f2'"), "{header}");
    assert_eq!(y16, y);
}

#[test]
fn run_takes_fp16_inputs_and_refuses_wrong_shapes_and_missing_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let halves: Vec<u8> =
        (0..128).flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes()).collect();
    let good = dir.path().join("x16.npy");
    npy(&good, "<f2", &[1, 8, 1, 16], &halves);
    let bad = dir.path().join("bad.npy");
    npy(&bad, "<f2", &[8, 16], &halves);
    let out = dir.path().join("out");
    let run = |input: &str| {
        anemone(&[
            "run",
            m.to_str().unwrap(),
            "-i",
            input,
            "-o",
            out.to_str().unwrap(),
            "--device",
            "sim",
        ])
    };
    assert_eq!(run(&format!("x={}", good.display())).status.code(), Some(0));
    let o = run(&format!("x={}", bad.display()));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("has shape [8, 16] but the program declares tensor<fp32, [1, 8, 1, 16]>"),
        "{}",
        stderr(&o)
    );
    let o = anemone(&["run", m.to_str().unwrap(), "--device", "sim"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing input(s): x"), "{}", stderr(&o));
    let o = run(&format!("nope={}", good.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`nope` is not an input"), "{}", stderr(&o));
}

#[test]
fn asking_for_the_ane_here_says_why_it_is_unavailable() {
    if cfg!(target_os = "macos") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let o = anemone(&["run", m.to_str().unwrap(), "--device", "ane"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "unavailable: needs macOS on Apple Silicon (AppleNeuralEngine.framework not found)"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_json_is_one_document_with_every_field() {
    let o = anemone(&["bench", "--device", "sim", "--json", "--only", "seed", "--seconds", "0.05"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["device"], "sim");
    assert!(doc["peak_gflops"].as_f64().unwrap() > 0.0);
    let case = &doc["cases"][0];
    assert_eq!(case["name"], "seed conv 64x64, spatial 32");
    assert_eq!(case["flops"], 2 * 64 * 64 * 32);
    for field in ["evaluate_us", "gflops", "peak_ratio", "compile_ms", "load_ms", "unload_ms"] {
        assert!(case[field].as_f64().is_some_and(|v| v >= 0.0), "{field}: {case}");
    }
    assert!(stderr(&o).contains("[1/1] seed conv"), "{}", stderr(&o));
}

#[test]
fn probe_weight_reload_reports_the_seeds_verdict_and_the_alternatives() {
    let o = anemone(&["probe", "weight-reload", "--device", "sim", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["device"], "sim");
    assert_eq!((doc["channels"].as_u64(), doc["spatial"].as_u64()), (Some(64), Some(32)));
    assert_eq!(doc["verdict"], "FAIL");
    // The seed's "Max A-B diff": the default reload model (the ANE's, as measured) reads
    // nothing, so nothing changed.
    assert_eq!(doc["max_change"].as_f64(), Some(0.0));
    assert_eq!(doc["sim_reload"], "snapshot");
    assert_eq!(doc["reload_failed"], false);
    for field in ["compile_load_ms", "unload_ms", "reload_ms"] {
        assert!(doc[field].as_f64().is_some_and(|v| v >= 0.0), "{field}: {doc}");
    }
    let methods = doc["methods"].as_array().unwrap();
    let names: Vec<&str> = methods.iter().map(|m| m["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["disk-reload", "recompile", "dynamic"]);
    let effect: Vec<bool> = methods.iter().map(|m| m["took_effect"].as_bool().unwrap()).collect();
    assert_eq!(effect, [false, true, true]);
    for m in methods {
        for field in ["max_error", "update_ms"] {
            assert!(m[field].as_f64().is_some(), "{field}: {m}");
        }
    }
    // A speed-up only for the methods that took effect.
    assert!(methods[0]["speedup"].is_null());
    assert!(
        methods[1]["speedup"].as_f64().unwrap() > 0.0
            && methods[2]["speedup"].as_f64().unwrap() > 0.0
    );
    // The human report says the same.
    let o = anemone(&[
        "probe",
        "weight-reload",
        "--device",
        "sim",
        "--channels",
        "16",
        "--spatial",
        "48",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("FAIL: the output did not change"), "{text}");
    assert!(text.contains("16x16 conv, spatial 48"), "{text}");
    assert!(stderr(&o).contains("step 3: overwrite weights/weight.bin"), "{}", stderr(&o));
}

#[test]
fn probe_weight_reload_on_a_simulator_whose_load_reads_the_disk() {
    let o = anemone(&[
        "probe",
        "weight-reload",
        "--device",
        "sim",
        "--sim-reload",
        "reads-disk",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["verdict"], "SUCCESS");
    assert_eq!(doc["sim_reload"], "reads-disk");
    // B - A = 2 x A: up to 2 x 20.48 at the seed's size.
    let change = doc["max_change"].as_f64().unwrap();
    assert!(change > 40.0 && change < 41.0, "{doc}");
    let methods = doc["methods"].as_array().unwrap();
    assert_eq!(methods[0]["took_effect"], true);
    assert!(methods[0]["speedup"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(stderr(&o).contains("device: sim (reload model: reads-disk)"), "{}", stderr(&o));

    // Where 3 x A passes the ANE's 2^15 saturation the reload changes the output, but not
    // to 3 x A.
    let o = anemone(&[
        "probe",
        "weight-reload",
        "--device",
        "sim",
        "--sim-reload",
        "reads-disk",
        "--spatial",
        "20000",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("PARTIAL: the output changed but does not match 3x identity"), "{text}");
    assert!(text.contains("(sim, reload model reads-disk, 64x64 conv, spatial 20000)"), "{text}");
}

#[test]
fn the_reload_model_is_for_the_simulator_only_and_must_be_known() {
    let o = anemone(&["probe", "weight-reload", "--device", "ane", "--sim-reload", "reads-disk"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--sim-reload models what a reload does on the simulator; it cannot be used with the ane device (use --device sim)"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let o = anemone(&["probe", "weight-reload", "--device", "sim", "--sim-reload", "disk"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown reload model `disk`: use `snapshot`")
            && stderr(&o).contains("or `reads-disk`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn probes_that_cannot_run_exit_non_zero() {
    assert_eq!(anemone(&["probe", "weight-reload", "--device", "nope"]).status.code(), Some(2));
    assert_eq!(anemone(&["probe", "weight-reload", "--channels", "0"]).status.code(), Some(2));
    if !cfg!(target_os = "macos") {
        let o = anemone(&["probe", "weight-reload", "--device", "ane"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("unavailable: needs macOS on Apple Silicon"), "{}", stderr(&o));
        let o = anemone(&["probe", "device"]);
        assert_eq!(o.status.code(), Some(0));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("sim  available") && text.contains("ane  unavailable: needs macOS"),
            "{text}"
        );
    }
}

#[test]
fn bench_refuses_a_nonsense_duration() {
    for bad in ["-1", "nan", "1e30", "soon"] {
        let o = anemone(&["bench", "--device", "sim", &format!("--seconds={bad}")]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}

fn run_model(m: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let spec = format!("x={}", input.display());
    let mut args =
        vec!["run", m.to_str().unwrap(), "-i", &spec, "-o", out.to_str().unwrap(), "--device"];
    args.push("sim");
    args.extend_from_slice(extra);
    anemone(&args)
}

#[test]
fn run_converts_float64_and_integer_inputs_and_says_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let out = dir.path().join("out");
    // numpy's default float64: 0.1 rounds in fp32, 1e39 is beyond fp32's range, 1e-50
    // below its smallest subnormal; the rest are exact.
    let mut x: Vec<f64> = (0..128).map(|i| i as f64 * 0.25).collect();
    (x[0], x[1], x[2]) = (0.1, 1e39, 1e-50);
    let input = dir.path().join("x64.npy");
    npy(&input, "<f8", &[1, 8, 1, 16], &x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let o = run_model(&m, &input, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "warning: input `x`: 3 of 128 float64 values were rounded to fp32; 1 became inf \
             (largest |x| 1e39, above the largest finite fp32); 1 became 0 (too small for fp32)"
        ),
        "{}",
        stderr(&o)
    );
    let (_, y) = read_npy_f32(&out.join("y.npy"));
    assert_eq!(y[5], 2.5);
    assert_eq!(y[2], 0.0);

    // Integers that the input type holds exactly: converted without a word.
    let input = dir.path().join("xi.npy");
    let ints: Vec<u8> = (0i64..128).flat_map(|v| v.to_le_bytes()).collect();
    npy(&input, "<i8", &[1, 8, 1, 16], &ints);
    let o = run_model(&m, &input, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("rounded"), "{}", stderr(&o));
    let (_, y) = read_npy_f32(&out.join("y.npy"));
    assert_eq!(y, (0..128).map(|i| 2.0 * i as f32).collect::<Vec<_>>());
}

/// `(min, median, mean)` from `evaluate  min A ms, median B ms, mean C ms (...)`.
fn timing_line(stdout: &str) -> (f64, f64, f64) {
    let line = stdout.lines().find(|l| l.starts_with("evaluate")).expect("an evaluate line");
    let ms: Vec<f64> = line
        .split_whitespace()
        .zip(line.split_whitespace().skip(1))
        .filter(|(_, unit)| unit.trim_end_matches(',') == "ms")
        .map(|(v, _)| v.parse().unwrap())
        .collect();
    assert_eq!(ms.len(), 3, "{line}");
    (ms[0], ms[1], ms[2])
}

#[test]
fn run_repeat_reports_min_median_and_mean_and_writes_outputs_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    model(&m);
    let input = dir.path().join("x.npy");
    let x: Vec<u8> = (0..128).flat_map(|i| (i as f32).to_le_bytes()).collect();
    npy(&input, "<f4", &[1, 8, 1, 16], &x);
    let out = dir.path().join("out");
    let o = run_model(&m, &input, &out, &["--repeat", "5", "--warmup", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(5 timed, 2 warm-up)"), "{stdout}");
    let (min, median, mean) = timing_line(&stdout);
    assert!(min <= median && min <= mean, "{stdout}");
    assert_eq!(stderr(&o).matches("wrote ").count(), 2, "{}", stderr(&o));
    let o = run_model(&m, &input, &out, &["--repeat", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The rows of a `--profile` table as (label, type, ms), and the footer's (sum, total).
fn profile_table(stdout: &str) -> (Vec<(String, String, f64)>, f64, f64) {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("op "));
    let header = lines.next().expect("a profile table");
    assert!(header.contains("share") && header.contains("GFLOP/s"), "{header}");
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if let Some(footer) = line.strip_prefix("sum of ops ") {
            let words: Vec<&str> = footer.split_whitespace().collect();
            // `A ms of evaluate total B ms (...)`
            return (rows, words[0].parse().unwrap(), words[5].parse().unwrap());
        }
        // label, type, time, "ms", share, GFLOP/s: the label may hold spaces.
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = words.len();
        assert_eq!(words[n - 3], "ms", "{line}");
        rows.push((
            words[..n - 5].join(" "),
            words[n - 5].to_string(),
            words[n - 4].parse().unwrap(),
        ));
    }
    panic!("no footer in {stdout}");
}

#[test]
fn profile_of_fixture_08_has_rows_that_add_up_to_the_evaluate_time() {
    let dir_fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mil-maderix");
    let fixture = dir_fixtures.join("08_qwen3_sdpa_fwd_dynamic_rope.mil");
    if !fixture.exists() {
        assert!(
            std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() != Ok("1"),
            "{} is missing",
            fixture.display()
        );
        eprintln!("skipped: shared fixtures not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.npy");
    let n = 1024 * 4352;
    let x: Vec<u8> = (0..n)
        .flat_map(|i| half::f16::from_f32(((i % 97) as f32 - 48.0) / 1024.0).to_le_bytes())
        .collect();
    npy(&input, "<f2", &[1, 1024, 1, 4352], &x);
    let out = dir.path().join("out");
    let o = run_model(
        &fixture,
        &input,
        &out,
        &["--synthetic-weights", "--profile", "--warmup", "1", "--repeat", "2"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (rows, sum, total) = profile_table(&stdout);
    // Every op that computes has a row; the slowest come first. The attention the fixture
    // spells out (matmul, mul, add, softmax, matmul) runs fused, under its last op's name.
    for op in ["qm", "km", "vm", "mm2"] {
        assert!(rows.iter().any(|r| r.0 == op), "no row for {op}:\n{stdout}");
    }
    assert!(rows.iter().any(|r| r.0 == "qm" && r.1 == "matmul"), "{stdout}");
    let fused = rows.iter().any(|r| r.0 == "mm2" && r.1 == "scaled_dot_product_attention");
    assert!(fused && !rows.iter().any(|r| r.0 == "sm"), "{stdout}");
    assert!(stdout.contains("ops run fused under the last one's name"), "{stdout}");
    assert!(rows.windows(2).all(|w| w[0].2 >= w[1].2), "{stdout}");
    // The footer is the sum of the rows (each printed to 0.001 ms), and that sum is the
    // measured evaluate time within 10%.
    let rows_sum: f64 = rows.iter().map(|r| r.2).sum();
    assert!((rows_sum - sum).abs() <= 0.001 * rows.len() as f64, "{rows_sum} vs {sum}");
    assert!((sum - total).abs() <= 0.1 * total, "sum {sum} ms vs total {total} ms:\n{stdout}");
}

#[test]
fn profile_reports_the_casts_around_fp32_arithmetic_under_their_op() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("fp32.mil");
    std::fs::write(
        &m,
        "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [1, 8, 1, 16]> x) {\n        \
         tensor<fp32, [1, 8, 1, 16]> y = mul(x = x, y = x)[name = string(\"sq\")];\n        \
         tensor<fp32, [1, 8, 1, 16]> z = add(x = y, y = x)[name = string(\"plus\")];\n    \
         } -> (z);\n}\n",
    )
    .unwrap();
    let input = dir.path().join("x.npy");
    let x: Vec<u8> = (0..128).flat_map(|i| (i as f32).to_le_bytes()).collect();
    npy(&input, "<f4", &[1, 8, 1, 16], &x);
    let o = run_model(&m, &input, &dir.path().join("out"), &["--profile"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (rows, _, _) = profile_table(&stdout);
    let labels: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    for want in [
        ("sq [cast fp32->fp16]", "mul"),
        ("sq", "mul"),
        ("plus", "add"),
        ("plus [cast fp16->fp32]", "add"),
    ] {
        assert!(labels.contains(&want), "no row {want:?}:\n{stdout}");
    }
    assert_eq!(rows.len(), 4, "{stdout}");
}
