//! The Apple backend's real Objective-C layer (`src/apple/objc.rs`, unchanged) against a
//! real Objective-C runtime: GNUstep Base and GCC's libobjc on Linux, with a fake of the
//! private AppleNeuralEngine framework, IOSurface and CFRelease written in Objective-C
//! (`tests/objc/fake_ane.m`) and a shim that gives GCC's libobjc Apple's `objc_msgSend` and
//! autorelease-pool functions (`tests/objc/objc_shim.m`, `msgsend_x86_64.S`).
//!
//! `scripts/install-test-deps.sh` installs GNUstep and builds those into
//! `target/objc-fake/`; this test builds nothing. Without them it prints "skipped: ..."
//! and passes, unless `ANEMONE_REQUIRE_GNUSTEP=1`, which makes it fail instead.
//!
//! The loader is pointed at the fake with `ANEMONE_OBJC_LIBS`, which must be set before the
//! runtime is first loaded, and `NSTemporaryDirectory()` on GNUstep reads `$TEMP` and wants
//! a directory of mode 0700. Both are environment of the process, so the test runs the
//! sequence in a child process of this same test binary with that environment (the
//! Objective-C runtime cannot be loaded twice in one process anyway). The child's clean
//! exit is part of the check: the libraries stay loaded until the process ends, and a
//! runtime torn down too early crashes at thread or process exit.
//!
//! What this proves and what it cannot: see "Testing the Objective-C layer" in the README.

use std::ffi::{CString, c_char, c_int, c_long};
use std::path::{Path, PathBuf};
use std::process::Command;

use anemone::{Device, DeviceKind, Error, Weights};
use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::{DType, Program, TensorType};

/// Makes a missing GNUstep or fake a failure instead of a skip (set in CI).
const REQUIRE_VAR: &str = "ANEMONE_REQUIRE_GNUSTEP";
/// Set in the child process, which runs the sequence.
const CHILD_VAR: &str = "ANEMONE_OBJC_GNUSTEP_CHILD";
/// The loader's override (`anemone::apple` loader, `OVERRIDE_VAR`).
const OVERRIDE_VAR: &str = "ANEMONE_OBJC_LIBS";
const TEST_NAME: &str = "the_objc_layer_runs_the_seeds_sequence_on_gnustep";

/// Where scripts/install-test-deps.sh builds the fake and the shim.
fn fake_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).unwrap_or(crate_dir).join("target/objc-fake")
}

#[test]
fn the_objc_layer_runs_the_seeds_sequence_on_gnustep() {
    if std::env::var_os(CHILD_VAR).is_some() {
        run_sequence();
        return;
    }
    let libs = match prerequisites() {
        Ok(libs) => libs,
        Err(why) => {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                panic!("{REQUIRE_VAR}=1 but {why}");
            }
            println!("skipped: {why}");
            return;
        }
    };
    let temp = tempfile::tempdir().unwrap();
    set_private(temp.path());
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, "1")
        .env(OVERRIDE_VAR, &libs)
        .env("TEMP", temp.path())
        .env("TMPDIR", temp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("--- child stdout\n{stdout}\n--- child stderr\n{stderr}");
    assert!(output.status.success(), "the child failed ({}):\n{report}", output.status);
    assert!(stdout.contains("test result: ok. 1 passed"), "the child ran no test:\n{report}");
    // The backend removed every model directory it made under NSTemporaryDirectory().
    let left: Vec<_> =
        std::fs::read_dir(temp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left in $TEMP: {left:?}\n{report}");
    println!("{report}");
}

/// The override value the build wrote, or why the test cannot run here.
fn prerequisites() -> Result<String, String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("the GNUstep fake is built for x86-64 Linux only".into());
    }
    let file = fake_dir().join("objc_libs");
    let libs = std::fs::read_to_string(&file).map_err(|_| {
        format!(
            "GNUstep and the fake AppleNeuralEngine are not built ({} is missing; run \
             scripts/install-test-deps.sh)",
            file.display()
        )
    })?;
    let libs = libs.trim().to_string();
    // The build names GNUstep Base as Foundation; it is gone if GNUstep was removed since.
    let foundation = libs.split(':').find_map(|e| e.strip_prefix("Foundation="));
    match foundation {
        Some(path) if Path::new(path).exists() => Ok(libs),
        _ => Err(format!("GNUstep Base is not installed (Foundation in {})", file.display())),
    }
}

/// GNUstep's NSTemporaryDirectory() refuses a directory others can read or write.
fn set_private(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The fake framework's counters and switches (exported C functions of libfake_ane.so).
struct Fake {
    live_objects: extern "C" fn() -> c_long,
    live_surfaces: extern "C" fn() -> c_long,
    loaded_models: extern "C" fn() -> c_long,
    compiles: extern "C" fn() -> c_long,
    evaluates: extern "C" fn() -> c_long,
    complaints: extern "C" fn() -> c_long,
    last_complaint: extern "C" fn(*mut c_char, usize),
    fail_next: extern "C" fn(*const c_char, *const c_char) -> c_int,
}

impl Fake {
    /// Opens the fake the loader opened (the same file, so the same counters).
    fn open(path: &str) -> Fake {
        // SAFETY: the file is the fake framework built from tests/objc, already loaded by
        // the backend; opening it again only takes another reference.
        let lib = unsafe { libloading::Library::new(path) }.unwrap();
        // Never closed: the Objective-C runtime keeps pointers into it (see the loader).
        let lib = std::mem::ManuallyDrop::new(lib);
        macro_rules! get {
            ($name:literal) => {
                // SAFETY: the function is declared in fake_ane.m with exactly this signature,
                // and the library stays loaded for the rest of the process.
                *unsafe { lib.get($name) }.unwrap()
            };
        }
        Fake {
            live_objects: get!(b"fake_ane_live_objects\0"),
            live_surfaces: get!(b"fake_ane_live_surfaces\0"),
            loaded_models: get!(b"fake_ane_loaded_models\0"),
            compiles: get!(b"fake_ane_compiles\0"),
            evaluates: get!(b"fake_ane_evaluates\0"),
            complaints: get!(b"fake_ane_complaints\0"),
            last_complaint: get!(b"fake_ane_last_complaint\0"),
            fail_next: get!(b"fake_ane_fail_next\0"),
        }
    }

    /// Arms a failure of the next `which` ("compile", "load", "evaluate") with `message`.
    fn fail_next(&self, which: &str, message: &str) {
        let (which, message) = (CString::new(which).unwrap(), CString::new(message).unwrap());
        assert_eq!((self.fail_next)(which.as_ptr(), message.as_ptr()), 0);
    }

    /// No complaint so far, or the last one.
    fn assert_no_complaints(&self) {
        let mut buffer = vec![0u8; 512];
        (self.last_complaint)(buffer.as_mut_ptr().cast(), buffer.len());
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        let last = String::from_utf8_lossy(&buffer[..end]);
        assert_eq!((self.complaints)(), 0, "the fake framework complained; last: {last}");
    }
}

const CH: usize = 64;
const SP: usize = 32;

/// fp32 x -> fp16 -> 1x1 conv with `scale` times the identity -> fp32, as in the seed.
fn seed_program(scale: f32) -> (Program, Weights) {
    let w: Vec<f32> = (0..CH * CH).map(|i| if i / CH == i % CH { scale } else { 0.0 }).collect();
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, CH, 1, SP]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w = f.weight("W", TensorType::new(DType::Fp16, [CH, CH, 1, 1]), &w).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output_named(&y, "y").unwrap();
    f.finish();
    let built = b.build().unwrap();
    (built.program, built.weights)
}

/// Inputs declared `b` then `a`: the ANE binds them alphabetically, `a` first.
fn two_input_program() -> Program {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let ty = TensorType::new(DType::Fp16, [1, 8, 1, 32]);
    let second = f.input("b", ty.clone());
    let first = f.input("a", ty);
    let sum = f.add(&second, &first).unwrap();
    f.output_named(&sum, "sum").unwrap();
    f.finish();
    b.build().unwrap().program
}

fn ramp(n: usize, step: f32) -> Vec<f32> {
    (0..n).map(|i| (i + 1) as f32 * step).collect()
}

/// The whole sequence, in the child process. The fake evaluates as a copy: output slot j
/// receives input slot j mod (number of inputs), cut or zero-padded to the output's size.
fn run_sequence() {
    let libs = std::env::var(OVERRIDE_VAR).expect("the parent sets the override");
    let device = Device::ane().unwrap_or_else(|e| panic!("opening the ANE on GNUstep: {e}"));
    assert_eq!(device.kind(), DeviceKind::Ane);
    let fake_path = libs
        .split(':')
        .find_map(|e| e.strip_prefix("AppleNeuralEngine="))
        .expect("the override names the framework");
    let fake = Fake::open(fake_path);
    assert_eq!(((fake.live_objects)(), (fake.live_surfaces)()), (0, 0));

    // Compile and load: descriptor, model, the files on disk (the fake's compile reads them
    // back from NSTemporaryDirectory()/<hex>/ and compares), compile, load.
    let (program, weights_a) = seed_program(1.0);
    let mut model = device.compile(&program, &weights_a).unwrap();
    assert!(model.is_loaded());
    assert_eq!(((fake.compiles)(), (fake.loaded_models)()), (1, 1));
    // Surfaces start zeroed although the fake fills new ones with 0xA5.
    assert!(model.input("x").unwrap().read_bytes().iter().all(|&b| b == 0));

    // Evaluate: the bytes go in through one IOSurface and come out of the other.
    let x = ramp(CH * SP, 0.01);
    model.input("x").unwrap().write_f32(&x).unwrap();
    model.evaluate().unwrap();
    assert_eq!(model.output("y").unwrap().read_f32().unwrap(), x);
    assert_eq!((fake.evaluates)(), 1);

    // The seed's reload: rewrite the file, unload, load; no compile.
    let (_, weights_b) = seed_program(3.0);
    let update = model.reload_from_disk(&weights_b).unwrap();
    assert!(!update.compiled);
    assert_eq!(((fake.compiles)(), (fake.loaded_models)()), (1, 1));
    model.evaluate().unwrap();

    // A recompile with other weights is another program (another hex identifier): a real
    // compile, the old model unloaded, the input kept.
    let update = model.recompile_with(&weights_b).unwrap();
    assert!(update.compiled);
    assert_eq!(((fake.compiles)(), (fake.loaded_models)()), (2, 1));
    model.evaluate().unwrap();
    assert_eq!(model.output("y").unwrap().read_f32().unwrap(), x);

    // A second device finds the program compiled (compiledModelExists) and only loads it.
    let other = Device::ane().unwrap();
    let cached = other.compile(&program, &weights_b).unwrap();
    assert!(!cached.stats().cache_hit);
    assert_eq!(((fake.compiles)(), (fake.loaded_models)()), (2, 2));
    drop(cached);
    assert_eq!((fake.loaded_models)(), 1);

    // Binding order: the request lists `a` at index 0 although `b` was declared first.
    let mut two = device.compile(&two_input_program(), &Weights::new()).unwrap();
    let a = ramp(256, 0.5);
    two.input("a").unwrap().write_f32(&a).unwrap();
    two.input("b").unwrap().write_f32(&[-1.0; 256]).unwrap();
    two.evaluate().unwrap();
    assert_eq!(two.output("sum").unwrap().read_f32().unwrap(), a);

    // Dynamic weights: set_weight writes the packed input, which reaches the framework
    // through its IOSurface with no compile.
    let mut b = Builder::new();
    let mut f = b.function("main");
    let (acts, ws, layout) =
        f.packed_input("x", DType::Fp16, 4, 16, &[("A", 3), ("B", 5)]).unwrap();
    let y = f.dynamic_linear(&acts, &ws[0]).unwrap();
    f.output_named(&y, "ya").unwrap();
    f.finish();
    let packed = b.build().unwrap();
    let mut dynamic = device.compile(&packed.program, &packed.weights).unwrap();
    let compiles = (fake.compiles)();
    dynamic.use_packed_layout(layout).unwrap();
    dynamic.set_weight("activations", &[1.0; 64]).unwrap();
    dynamic
        .set_weight("A", &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0])
        .unwrap();
    dynamic.set_weight("B", &[0.5; 20]).unwrap();
    dynamic.evaluate().unwrap();
    // ya is [1, 3, 1, 16]: the copy holds the packed input's first 48 values, rows 0 and 1
    // of [activations (16) | A (3) | B (5)].
    let ya = dynamic.output("ya").unwrap().read_f32().unwrap();
    let mut expected = Vec::new();
    for row in [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]] {
        expected.extend([1.0; 16]);
        expected.extend(row);
        expected.extend([0.5; 5]);
    }
    assert_eq!(ya, expected);
    assert_eq!((fake.compiles)(), compiles, "set_weight compiles nothing");

    // Errors carry the framework's NSError text, and leave nothing behind.
    let live = (fake.live_objects)();
    let message = "InvalidMILProgram: the fake compiler refused this program";
    fake.fail_next("compile", message);
    let e = device.compile(&seed_program(5.0).0, &seed_program(5.0).1).unwrap_err();
    assert!(matches!(e, Error::Device { op: "compile", .. }), "{e:?}");
    assert!(e.to_string().starts_with("compile failed: "), "{e}");
    assert!(e.to_string().contains(message), "{e}");
    assert_eq!((fake.live_objects)(), live, "the failed compile released its objects");

    fake.fail_next("evaluate", "Program Inference error (0x1d)");
    let e = two.evaluate().unwrap_err();
    assert!(e.to_string().contains("Program Inference error (0x1d)"), "{e}");
    assert_eq!((fake.live_objects)(), live, "the failed evaluate released its request");
    two.evaluate().unwrap();

    // A load that fails once is retried and succeeds.
    fake.fail_next("load", "the daemon is busy");
    let retried = device.compile(&seed_program(7.0).0, &seed_program(7.0).1).unwrap();
    assert!(retried.is_loaded());

    // Unload, then evaluate is refused before reaching the framework.
    let loaded = (fake.loaded_models)();
    model.unload().unwrap();
    assert_eq!((fake.loaded_models)(), loaded - 1);
    assert!(matches!(model.evaluate().unwrap_err(), Error::State(_)));
    model.load().unwrap();
    model.evaluate().unwrap();

    // Dropping everything unloads, releases every object and surface.
    drop((model, two, dynamic, retried));
    drop((device, other));
    assert_eq!((fake.loaded_models)(), 0);
    assert_eq!((fake.live_objects)(), 0, "Objective-C objects leaked");
    assert_eq!((fake.live_surfaces)(), 0, "IOSurfaces leaked");
    fake.assert_no_complaints();
}
