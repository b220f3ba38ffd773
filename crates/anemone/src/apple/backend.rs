//! The ANE backend: the seed's call sequence (REFERENCE.md §1, `../shared/seed`) written
//! once over [`AneRuntime`], and the `Backend`/`Compiled`/`Executable` traits on top of it.
//!
//! - compile: descriptor from the MIL text and the weights dictionary, in-memory model,
//!   `hexStringIdentifier`, `model.mil` and `weights/*` written to
//!   `NSTemporaryDirectory()/<hex>/`, then `compileWithQoS:` unless `compiledModelExists`.
//! - load: `loadWithQoS:`, retried once after 100 ms as maderix does.
//! - evaluate: one `_ANEIOSurfaceObject` per surface, one `_ANERequest`, `evaluateWithQoS:`.
//! - unload: `unloadWithQoS:`; dropping unloads what is loaded, releases every object and
//!   removes the temporary directory, on error paths too.
//!
//! Executables of one compiled program share its `_ANEInMemoryModel` and load count: the
//! device's compile cache hands the same compiled program to identical models, and the model
//! object is loaded once for all of them and unloaded when the last one unloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anemone_mil::TensorType;
use anemone_mil::blob::write_file_atomic;
use anemone_mil::package::blob_relative_path;

use super::iosurface::IoSurfaceMemory;
use super::runtime::{AneRuntime, WeightFile};
use crate::device::{Backend, BindingOrder, CompileJob, Compiled, DeviceKind, Executable};
use crate::error::{Error, Result};
use crate::surface::Surface;

/// The QoS every working project passes (every value 0..63 measured the same: maderix
/// test_qos_sweep, REFERENCE.md §1).
pub const DEFAULT_QOS: u32 = 21;

/// How long to wait before the one retry of a failed load (maderix).
pub const LOAD_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Options of the ANE backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AneOptions {
    /// The QoS passed to compile, load, evaluate and unload.
    pub qos: u32,
    /// The wait before retrying a failed load once.
    pub load_retry_delay: Duration,
}

impl Default for AneOptions {
    fn default() -> AneOptions {
        AneOptions { qos: DEFAULT_QOS, load_retry_delay: LOAD_RETRY_DELAY }
    }
}

/// The ANE backend over an Objective-C layer: [`super::ObjcRuntime`] on a Mac,
/// [`super::RecordingRuntime`] in tests.
pub struct AneBackend<R: AneRuntime> {
    runtime: Arc<R>,
    options: AneOptions,
}

impl<R: AneRuntime> std::fmt::Debug for AneBackend<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AneBackend").field("options", &self.options).finish()
    }
}

/// An object that is released when dropped, so that no early return leaks one.
struct Retained<R: AneRuntime> {
    runtime: Arc<R>,
    /// Present until drop.
    object: Option<R::Object>,
}

impl<R: AneRuntime> Retained<R> {
    fn new(runtime: &Arc<R>, object: R::Object) -> Retained<R> {
        Retained { runtime: runtime.clone(), object: Some(object) }
    }

    fn get(&self) -> &R::Object {
        self.object.as_ref().expect("a Retained holds its object until dropped")
    }
}

impl<R: AneRuntime> Drop for Retained<R> {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            self.runtime.release(object);
        }
    }
}

/// Directories in use, with the number of compiled programs using each: two compiles of the
/// same program get the same hex identifier, hence the same directory, which must stay
/// until the last of them is dropped.
static LIVE_DIRS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

fn live_dirs() -> MutexGuard<'static, BTreeMap<PathBuf, usize>> {
    // Each critical section is one map update plus file-system calls: a panic cannot leave
    // the map half-changed.
    LIVE_DIRS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A model's directory under `NSTemporaryDirectory()`, removed when its last holder drops.
struct ModelTempDir {
    path: PathBuf,
}

impl ModelTempDir {
    fn create(path: PathBuf) -> Result<ModelTempDir> {
        let mut live = live_dirs();
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            context: format!("creating the model directory {}", path.display()),
            source,
        })?;
        *live.entry(path.clone()).or_insert(0) += 1;
        Ok(ModelTempDir { path })
    }

    /// Writes `rel` (relative to the directory), creating its parent directories.
    fn write(&self, rel: &Path, bytes: &[u8]) -> Result<()> {
        let path = self.path.join(rel);
        let io = |source| Error::Io { context: format!("writing {}", path.display()), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, bytes).map_err(io)
    }
}

impl Drop for ModelTempDir {
    fn drop(&mut self) {
        let mut live = live_dirs();
        match live.get_mut(&self.path) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                live.remove(&self.path);
                // Nothing to report to: a directory someone else removed is fine, and a
                // leftover one is harmless (the next compile of the program overwrites it).
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

fn device_error(op: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Device { op, message }
}

/// The hex identifier becomes a path component: refuse anything that could leave the
/// temporary directory.
fn check_dir_name(hex: &str) -> Result<()> {
    let plain = !hex.is_empty()
        && hex != "."
        && hex != ".."
        && !hex.contains(['/', '\\', '\0'])
        && !Path::new(hex).is_absolute();
    if plain {
        Ok(())
    } else {
        Err(Error::Device {
            op: "compile",
            message: format!("hexStringIdentifier returned `{hex}`, which is not a directory name"),
        })
    }
}

impl<R: AneRuntime> AneBackend<R> {
    /// A backend that sends every call through `runtime`. It has no budget of its own: wrap it
    /// in a device with [`super::device_with_runtime`] to count compiles.
    pub fn new(runtime: Arc<R>, options: AneOptions) -> AneBackend<R> {
        AneBackend { runtime, options }
    }

    /// The Objective-C layer the backend calls (e.g. the [`super::RecordingRuntime`] whose log
    /// a test reads).
    pub fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }

    /// The QoS and load-retry delay this backend uses.
    pub fn options(&self) -> AneOptions {
        self.options
    }

    /// [`Backend::compile`] with the concrete result, for callers that want to look at it.
    pub fn compile_program(&self, job: &CompileJob) -> Result<AneCompiled<R>> {
        let rt = &self.runtime;
        let compile_error = device_error("compile");
        let procedure_index = procedure_index(job)?;
        // Every path is checked before the framework is called: a bad one costs nothing.
        let files = job
            .weights
            .iter()
            .map(|(blob_path, file)| {
                let rel =
                    blob_relative_path(blob_path).map_err(|e| Error::Weights(e.to_string()))?;
                Ok((blob_path, rel, file.bytes()))
            })
            .collect::<Result<Vec<_>>>()?;
        let weights: Vec<WeightFile> =
            files.iter().map(|&(blob_path, _, bytes)| WeightFile { blob_path, bytes }).collect();
        let mil = job.text.as_bytes();

        // The seed's step 3, in its order.
        let descriptor =
            Retained::new(rt, rt.create_descriptor(mil, &weights).map_err(&compile_error)?);
        let model =
            Retained::new(rt, rt.in_memory_model(descriptor.get()).map_err(&compile_error)?);
        let hex = rt.hex_identifier(model.get()).map_err(&compile_error)?;
        check_dir_name(&hex)?;
        // Every working project writes the program where the compiler may look for it.
        let dir = ModelTempDir::create(rt.temp_dir().join(&hex))?;
        dir.write(Path::new("model.mil"), mil)?;
        for (_, rel, bytes) in &files {
            dir.write(rel, bytes)?;
        }
        // A program the framework has compiled before loads without compiling (ANE-LM).
        let cached = rt.compiled_model_exists(model.get()).map_err(&compile_error)?;
        if !cached {
            rt.compile(model.get(), self.options.qos).map_err(&compile_error)?;
        }
        Ok(AneCompiled {
            runtime: rt.clone(),
            options: self.options,
            state: Mutex::new(ModelState { model, _descriptor: descriptor, loads: 0 }),
            dir,
            hex,
            procedure_index,
            blob_paths: files.iter().map(|(p, _, _)| p.to_string()).collect(),
            inputs: job.inputs.len(),
            outputs: job.outputs.len(),
            compiled_on_device: !cached,
        })
    }
}

/// The request's procedureIndex: the function's position in the program, which the ANE
/// compiles whole.
fn procedure_index(job: &CompileJob) -> Result<u32> {
    let index = job.program.functions.iter().position(|f| f.name.name == job.function).ok_or_else(
        || Error::UnknownName(format!("the program has no function `{}`", job.function)),
    )?;
    u32::try_from(index).map_err(|_| Error::Unsupported(format!("function index {index}")))
}

impl<R: AneRuntime> Backend for AneBackend<R> {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Ane
    }

    /// Inputs and outputs bind in alphabetical order of their MIL names (REFERENCE.md §2).
    fn binding_order(&self) -> BindingOrder {
        BindingOrder::Alphabetical
    }

    /// The device has charged the compile budget before this call. When
    /// `compiledModelExists` answers YES no compile happens on the ANE and no slot is used,
    /// but the charge stands: the budget errs on the side of refusing early, never late.
    /// [`AneCompiled::compiled_on_device`] tells which happened.
    fn compile(&self, job: &CompileJob) -> Result<Arc<dyn Compiled>> {
        Ok(Arc::new(self.compile_program(job)?))
    }
}

/// The `_ANEInMemoryModel` and how many executables have it loaded.
struct ModelState<R: AneRuntime> {
    // Declared before the descriptor so that it is released first.
    model: Retained<R>,
    _descriptor: Retained<R>,
    loads: usize,
}

/// A compiled program: the retained model and descriptor, and the directory holding
/// `model.mil` and the weights.
pub struct AneCompiled<R: AneRuntime> {
    runtime: Arc<R>,
    options: AneOptions,
    /// Every message to the model goes through this lock, one at a time.
    state: Mutex<ModelState<R>>,
    /// Declared after `state`: the directory goes once the objects are released.
    dir: ModelTempDir,
    hex: String,
    procedure_index: u32,
    blob_paths: Vec<String>,
    inputs: usize,
    outputs: usize,
    compiled_on_device: bool,
}

impl<R: AneRuntime> std::fmt::Debug for AneCompiled<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AneCompiled")
            .field("hex", &self.hex)
            .field("dir", &self.dir.path)
            .field("compiled_on_device", &self.compiled_on_device)
            .finish()
    }
}

impl<R: AneRuntime> AneCompiled<R> {
    /// The model's `hexStringIdentifier`.
    pub fn hex_identifier(&self) -> &str {
        &self.hex
    }

    /// `NSTemporaryDirectory()/<hex>`, holding `model.mil` and `weights/*`.
    pub fn temp_dir(&self) -> &Path {
        &self.dir.path
    }

    /// False when `compiledModelExists` said the framework had the program compiled already,
    /// so `compileWithQoS:` was not sent and no compile slot was used on the ANE.
    pub fn compiled_on_device(&self) -> bool {
        self.compiled_on_device
    }

    /// The request's procedureIndex.
    pub fn procedure_index(&self) -> u32 {
        self.procedure_index
    }

    fn lock(&self) -> MutexGuard<'_, ModelState<R>> {
        // The state is a load count next to the objects; a panic between the call and the
        // count update leaves at worst a count one off, which drop tolerates.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the model for one more executable (the first one really loads it).
    fn acquire(&self) -> Result<()> {
        let mut st = self.lock();
        if st.loads == 0 {
            self.load_with_retry(st.model.get())?;
        }
        st.loads += 1;
        Ok(())
    }

    /// One executable lets go of the model (the last one really unloads it).
    fn release_load(&self) -> Result<()> {
        let mut st = self.lock();
        st.loads = st.loads.saturating_sub(1);
        if st.loads == 0 {
            self.runtime
                .unload(st.model.get(), self.options.qos)
                .map_err(device_error("unload"))?;
        }
        Ok(())
    }

    /// `loadWithQoS:`, and once more after a pause if it fails (maderix does this; a first
    /// load can fail while the daemon is still settling the compile).
    fn load_with_retry(&self, model: &R::Object) -> Result<()> {
        let qos = self.options.qos;
        let Err(first) = self.runtime.load(model, qos) else { return Ok(()) };
        std::thread::sleep(self.options.load_retry_delay);
        self.runtime.load(model, qos).map_err(|second| {
            let ms = self.options.load_retry_delay.as_millis();
            let message = if second == first {
                format!("{second} (also on a retry {ms} ms later)")
            } else {
                format!("{second} (on a retry {ms} ms after: {first})")
            };
            Error::Device { op: "load", message }
        })
    }
}

impl<R: AneRuntime> Drop for AneCompiled<R> {
    fn drop(&mut self) {
        let qos = self.options.qos;
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.loads > 0 {
            // Executables unload on drop, so this is only reached after a panic; the error
            // has nowhere to go.
            let _ = self.runtime.unload(st.model.get(), qos);
            st.loads = 0;
        }
        // The fields drop next: model, descriptor, then the directory.
    }
}

impl<R: AneRuntime> Compiled for AneCompiled<R> {
    fn used_a_compile(&self) -> bool {
        self.compiled_on_device()
    }

    fn instantiate(self: Arc<Self>) -> Result<Box<dyn Executable>> {
        Ok(Box::new(AneExecutable { compiled: self, loaded: false }))
    }
}

/// One executable of a compiled program: a claim on the shared model's load.
pub struct AneExecutable<R: AneRuntime> {
    compiled: Arc<AneCompiled<R>>,
    loaded: bool,
}

impl<R: AneRuntime> AneExecutable<R> {
    /// The compiled program this executable runs.
    pub fn compiled(&self) -> &Arc<AneCompiled<R>> {
        &self.compiled
    }
}

/// The IOSurface behind a surface this backend allocated.
fn io_surface<R: AneRuntime>(s: &Surface) -> Result<&IoSurfaceMemory<R>> {
    s.memory().as_any().downcast_ref::<IoSurfaceMemory<R>>().ok_or_else(|| {
        Error::Unsupported(format!("surface `{}` was not allocated by the ANE backend", s.name()))
    })
}

/// The ANE fails evaluate with 0x1d on unequal allocation sizes (REFERENCE.md §2); saying
/// so before the call gives names instead of a code.
fn check_equal_sizes(what: &'static str, surfaces: &[&Surface]) -> Result<()> {
    if surfaces.windows(2).any(|w| w[0].alloc_size() != w[1].alloc_size()) {
        let sizes = surfaces
            .iter()
            .map(|s| format!("`{}` {} B", s.name(), s.alloc_size()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::UnequalSurfaces { what, sizes });
    }
    Ok(())
}

fn objects<R: AneRuntime>(list: &[Retained<R>]) -> Vec<&R::Object> {
    list.iter().map(Retained::get).collect()
}

impl<R: AneRuntime> Executable for AneExecutable<R> {
    fn load(&mut self) -> Result<()> {
        if !self.loaded {
            self.compiled.acquire()?;
            self.loaded = true;
        }
        Ok(())
    }

    fn unload(&mut self) -> Result<()> {
        if self.loaded {
            self.loaded = false;
            self.compiled.release_load()?;
        }
        Ok(())
    }

    fn is_loaded(&self) -> bool {
        self.loaded
    }

    fn alloc_surface(&self, name: &str, ty: TensorType, alloc_size: usize) -> Result<Surface> {
        let need = ty.byte_size().and_then(|b| usize::try_from(b).ok()).unwrap_or(0);
        let memory =
            IoSurfaceMemory::new(self.compiled.runtime.clone(), alloc_size.max(need)).map_err(
                |e| Error::Device { op: "IOSurfaceCreate", message: format!("`{name}`: {e}") },
            )?;
        Surface::with_memory(name, ty, Box::new(memory))
    }

    fn evaluate(&mut self, inputs: &[&Surface], outputs: &mut [&mut Surface]) -> Result<()> {
        if !self.loaded {
            return Err(Error::State("evaluate on an unloaded model: call load() first".into()));
        }
        let c = &self.compiled;
        let outputs: Vec<&Surface> = outputs.iter().map(|s| &**s).collect();
        if inputs.len() != c.inputs || outputs.len() != c.outputs {
            return Err(Error::State(format!(
                "evaluate got {} inputs and {} outputs; the program has {} and {}",
                inputs.len(),
                outputs.len(),
                c.inputs,
                c.outputs
            )));
        }
        check_equal_sizes("input", inputs)?;
        check_equal_sizes("output", &outputs)?;
        let rt = &c.runtime;
        let evaluate_error = device_error("evaluate");
        let wrap = |s: &&Surface| -> Result<Retained<R>> {
            let object = rt.wrap_surface(io_surface::<R>(s)?.surface()).map_err(&evaluate_error)?;
            Ok(Retained::new(rt, object))
        };
        // Surfaces arrive in binding order, so their indices are simply 0..n.
        let wrapped_inputs = inputs.iter().map(wrap).collect::<Result<Vec<_>>>()?;
        let wrapped_outputs = outputs.iter().map(wrap).collect::<Result<Vec<_>>>()?;
        let indices = |n: usize| (0..n as u32).collect::<Vec<_>>();
        let request = rt
            .make_request(
                &objects(&wrapped_inputs),
                &indices(inputs.len()),
                &objects(&wrapped_outputs),
                &indices(outputs.len()),
                c.procedure_index,
            )
            .map_err(&evaluate_error)?;
        let request = Retained::new(rt, request);
        let st = c.lock();
        rt.evaluate(st.model.get(), request.get(), c.options.qos).map_err(&evaluate_error)
    }

    /// Rewrites the weight file in the model's temporary directory, atomically, as the seed
    /// does before `unloadWithQoS:` + `loadWithQoS:`. Measured on M3 Pro and M5: the ANE
    /// keeps the weights it compiled, so a reload does not change the outputs (REFERENCE.md
    /// §2). Executables sharing the compiled program share the file.
    fn overwrite_weight_file(&mut self, blob_path: &str, bytes: &[u8]) -> Result<()> {
        let c = &self.compiled;
        if !c.blob_paths.iter().any(|p| p == blob_path) {
            let known =
                if c.blob_paths.is_empty() { "none".into() } else { c.blob_paths.join(", ") };
            return Err(Error::UnknownName(format!(
                "`{blob_path}` is not a weight file of this program (it has: {known})"
            )));
        }
        let rel = blob_relative_path(blob_path).map_err(|e| Error::Weights(e.to_string()))?;
        write_file_atomic(c.dir.path.join(rel), bytes).map_err(|e| Error::Weights(e.to_string()))
    }
}

impl<R: AneRuntime> Drop for AneExecutable<R> {
    fn drop(&mut self) {
        // An unload error has nowhere to go from here.
        let _ = self.unload();
    }
}
