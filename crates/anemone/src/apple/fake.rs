//! A recording stand-in for the Objective-C layer: [`RecordingRuntime`] implements
//! [`AneRuntime`] without any framework, writing each call as one readable line
//! (`-[model#2 loadWithQoS:options:error:] qos=21 options={}`), so that the backend's
//! sequence can be checked against the seed on any machine. It can be told to fail a call
//! with an NSError-like description, keeps surfaces in heap memory, and evaluates as the
//! identity (output i gets input i's bytes), which is enough to see data flow through the
//! right surfaces; it does not run programs.
//!
//! For the weight-reload experiment it can also compute the seed's layer
//! ([`FakeEvaluation::Conv1x1`]: the model's one weight file as a `[C, C]` fp16 matrix
//! applied to an fp32 `[C, S]` input), from the weight files the model holds. Which files
//! those are after an unload + load is [`FakeReload`]: the ones the compiler read (what the
//! ANE does, measured), the ones on disk now (what mechramc/Orion reports), or a scripted
//! torn read of the disk.
//!
//! It also tracks every object and surface it hands out, so tests can check that the backend
//! releases all of them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anemone_mil::DType;
use anemone_mil::blob::{BlobFile, ReadMode, fp16_bytes_to_f32};

use super::runtime::{AneRuntime, WeightFile};

/// The calls that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FakeCall {
    /// `+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]`.
    CreateDescriptor,
    /// `+[_ANEInMemoryModel inMemoryModelWithDescriptor:]`.
    InMemoryModel,
    /// `-[_ANEInMemoryModel hexStringIdentifier]`.
    HexIdentifier,
    /// `-[_ANEInMemoryModel compiledModelExists]`.
    CompiledModelExists,
    /// `-[_ANEInMemoryModel compileWithQoS:options:error:]`.
    Compile,
    /// `-[_ANEInMemoryModel loadWithQoS:options:error:]`.
    Load,
    /// `-[_ANEInMemoryModel unloadWithQoS:error:]`.
    Unload,
    /// `-[_ANEInMemoryModel evaluateWithQoS:options:request:error:]`.
    Evaluate,
    /// `IOSurfaceCreate`.
    MakeSurface,
    /// `+[_ANEIOSurfaceObject objectWithIOSurface:]`.
    WrapSurface,
    /// `+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:...]`.
    MakeRequest,
}

/// Which weight files a model computes with after `loadWithQoS:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FakeReload {
    /// The files the compiler read: a load reads nothing (the ANE, measured on M3 Pro and
    /// M5).
    #[default]
    Snapshot,
    /// The files in the model's directory at the time of the load (mechramc/Orion's
    /// report for its delta reload).
    ReadsDisk,
    /// A scripted fault: the load re-reads only the first `n` bytes of each weight file from
    /// disk and keeps the compiled rest, so a rewrite takes effect in part.
    ReadsFirstBytes(usize),
}

/// What `evaluateWithQoS:` computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FakeEvaluation {
    /// Output i receives input i's bytes (zeros where there is no input i).
    #[default]
    Identity,
    /// The seed's 1x1 conv: when the model holds one weight file whose first record is
    /// `C * C` fp16 values, output 0 = W x input 0, both fp32 `[C, S]`; otherwise the
    /// identity.
    Conv1x1,
}

/// An object handed out by the fake (no framework object behind it).
#[derive(Debug)]
pub struct FakeObject(u32);

/// A surface handed out by the fake, backed by heap memory.
#[derive(Debug)]
pub struct FakeSurface(u32);

#[derive(Debug)]
enum Held {
    Descriptor {
        hex: String,
    },
    /// `weights`: the weight files the model computes with, by path relative to its
    /// directory, set by each load.
    Model {
        hex: String,
        loaded: bool,
        weights: BTreeMap<String, Vec<u8>>,
    },
    SurfaceObject {
        surface: u32,
    },
    Request {
        inputs: Vec<u32>,
        outputs: Vec<u32>,
    },
}

impl Held {
    fn kind(&self) -> &'static str {
        match self {
            Held::Descriptor { .. } => "descriptor",
            Held::Model { .. } => "model",
            Held::SurfaceObject { .. } => "surfaceObject",
            Held::Request { .. } => "request",
        }
    }
}

#[derive(Default)]
struct State {
    log: Vec<String>,
    next_id: u32,
    objects: BTreeMap<u32, Held>,
    surfaces: BTreeMap<u32, Vec<u8>>,
    /// Outcomes still to give, per call, in order: a failure, or None for a call that
    /// succeeds before a later failure.
    failures: BTreeMap<FakeCall, VecDeque<Option<String>>>,
    /// Hex identifiers compiled so far: `compiledModelExists` answers YES for them, as the
    /// framework's cache would.
    compiled: BTreeSet<String>,
    exists_override: Option<bool>,
    hex_override: Option<String>,
    /// What the model's temporary directory held at each compile: relative path -> bytes.
    files_at_compile: Vec<BTreeMap<String, Vec<u8>>>,
    /// The weight files each hex identifier was compiled from.
    compiled_weights: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    reload: FakeReload,
    evaluation: FakeEvaluation,
}

/// A fake of the Objective-C layer that records each call. See the module docs.
pub struct RecordingRuntime {
    temp_root: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for RecordingRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingRuntime").field("temp_root", &self.temp_root).finish()
    }
}

impl RecordingRuntime {
    /// A fake whose `NSTemporaryDirectory()` is `temp_root`.
    pub fn new(temp_root: impl Into<PathBuf>) -> RecordingRuntime {
        RecordingRuntime { temp_root: temp_root.into(), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread cannot leave the log inconsistent in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far, one line each.
    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// The calls so far, clearing the log.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state().log)
    }

    /// Makes the next `times` calls of `call` fail with `description` (as the NSError's
    /// description, or as the framework's nil result).
    pub fn fail(&self, call: FakeCall, times: usize, description: &str) {
        self.fail_after(call, 0, times, description);
    }

    /// Lets the next `after` calls of `call` succeed, then makes `times` of them fail with
    /// `description`.
    pub fn fail_after(&self, call: FakeCall, after: usize, times: usize, description: &str) {
        let mut st = self.state();
        let queue = st.failures.entry(call).or_default();
        queue.extend(std::iter::repeat_n(None, after));
        queue.extend(std::iter::repeat_n(Some(description.to_string()), times));
    }

    /// Fixes the answer of `compiledModelExists` (by default: YES once the same hex
    /// identifier has been compiled by this fake).
    pub fn set_compiled_model_exists(&self, exists: Option<bool>) {
        self.state().exists_override = exists;
    }

    /// Fixes the answer of `hexStringIdentifier` (by default a hash of the MIL and weights).
    pub fn set_hex_identifier(&self, hex: Option<&str>) {
        self.state().hex_override = hex.map(str::to_string);
    }

    /// Chooses which weight files a load leaves the model computing with.
    pub fn set_reload(&self, reload: FakeReload) {
        self.state().reload = reload;
    }

    /// Chooses what evaluate computes.
    pub fn set_evaluation(&self, evaluation: FakeEvaluation) {
        self.state().evaluation = evaluation;
    }

    /// Objects handed out and not yet released, as `kind#id`.
    pub fn live_objects(&self) -> Vec<String> {
        self.state().objects.iter().map(|(id, o)| format!("{}#{id}", o.kind())).collect()
    }

    /// Surfaces created and not yet released, as `surface#id`.
    pub fn live_surfaces(&self) -> Vec<String> {
        self.state().surfaces.keys().map(|id| format!("surface#{id}")).collect()
    }

    /// For each compile, the files of the model's temporary directory at that moment.
    pub fn files_at_compile(&self) -> Vec<BTreeMap<String, Vec<u8>>> {
        self.state().files_at_compile.clone()
    }

    /// The bytes of a surface (for tests looking behind the backend).
    pub fn surface_bytes(&self, surface: &FakeSurface) -> Vec<u8> {
        self.state().surfaces.get(&surface.0).cloned().unwrap_or_default()
    }
}

impl State {
    fn record(&mut self, line: String) {
        self.log.push(line);
    }

    /// The scripted failure for `call`, if one is due.
    fn failure(&mut self, call: FakeCall) -> Option<String> {
        self.failures.get_mut(&call).and_then(VecDeque::pop_front).flatten()
    }

    fn add(&mut self, object: Held) -> FakeObject {
        self.next_id += 1;
        self.objects.insert(self.next_id, object);
        FakeObject(self.next_id)
    }

    fn name(&self, object: &FakeObject) -> String {
        match self.objects.get(&object.0) {
            Some(o) => format!("{}#{}", o.kind(), object.0),
            None => format!("released#{}", object.0),
        }
    }

    fn model(&mut self, object: &FakeObject) -> Result<(&mut String, &mut bool), String> {
        match self.objects.get_mut(&object.0) {
            Some(Held::Model { hex, loaded, .. }) => Ok((hex, loaded)),
            Some(other) => Err(format!("expected a model, got a {}", other.kind())),
            None => Err(format!("object #{} was released", object.0)),
        }
    }
}

/// A stand-in for the framework's identifier: a hash of what the descriptor was made from.
fn content_hex(mil: &[u8], weights: &[WeightFile<'_>]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(mil.len() as u64).to_le_bytes());
    h.update(mil);
    for w in weights {
        h.update(&(w.blob_path.len() as u64).to_le_bytes());
        h.update(w.blob_path.as_bytes());
        h.update(&(w.bytes.len() as u64).to_le_bytes());
        h.update(w.bytes);
    }
    h.finalize().as_bytes()[..16].iter().map(|b| format!("{b:02X}")).collect()
}

/// The weight files among a directory's files (everything but the program text).
fn weight_files(files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.into_iter().filter(|(path, _)| path.starts_with("weights/")).collect()
}

/// The weight files a load leaves the model with: `compiled` are those the compiler read,
/// `disk` those in the directory now.
fn weights_after_load(
    reload: FakeReload,
    compiled: &BTreeMap<String, Vec<u8>>,
    disk: BTreeMap<String, Vec<u8>>,
) -> BTreeMap<String, Vec<u8>> {
    match reload {
        FakeReload::Snapshot => compiled.clone(),
        FakeReload::ReadsDisk => disk,
        FakeReload::ReadsFirstBytes(n) => compiled
            .iter()
            .map(|(path, old)| {
                let mut bytes = old.clone();
                if let Some(new) = disk.get(path) {
                    let k = n.min(new.len()).min(bytes.len());
                    bytes[..k].copy_from_slice(&new[..k]);
                }
                (path.clone(), bytes)
            })
            .collect(),
    }
}

/// The seed's weight matrix from a model's weight files: the first record of its only file,
/// when that holds `C * C` fp16 values. Returns `C` and the values, row-major `[out, in]`.
fn conv_weights(weights: &BTreeMap<String, Vec<u8>>) -> Option<(usize, Vec<f32>)> {
    let [(_, bytes)] = weights.iter().collect::<Vec<_>>()[..] else { return None };
    let file = BlobFile::new(bytes.clone());
    let record = *file.records(ReadMode::Lenient).ok()?.first()?;
    if record.dtype() != Some(DType::Fp16) {
        return None;
    }
    let count = usize::try_from(record.element_count()?).ok()?;
    let channels = count.isqrt();
    let start = usize::try_from(record.data_offset).ok()?;
    let data = file.bytes().get(start..start.checked_add(count * 2)?)?;
    if channels == 0 || channels * channels != count {
        return None;
    }
    let mut w = vec![0f32; count];
    fp16_bytes_to_f32(data, &mut w);
    Some((channels, w))
}

/// `y = W x` over fp32 `[C, S]` bytes (S from the input's length); None when the input is
/// not a whole number of `C`-channel columns.
fn conv1x1(channels: usize, w: &[f32], input: &[u8]) -> Option<Vec<u8>> {
    let x: Vec<f32> =
        input.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if x.is_empty() || !x.len().is_multiple_of(channels) {
        return None;
    }
    let spatial = x.len() / channels;
    let mut y = vec![0f32; x.len()];
    for o in 0..channels {
        for i in 0..channels {
            let wi = w[o * channels + i];
            if wi == 0.0 {
                continue;
            }
            for s in 0..spatial {
                y[o * spatial + s] += wi * x[i * spatial + s];
            }
        }
    }
    Some(y.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Every regular file under `dir`, by path relative to it.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let (Ok(rel), Ok(bytes)) = (path.strip_prefix(root), std::fs::read(&path)) {
                out.insert(rel.to_string_lossy().replace('\\', "/"), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "YES" } else { "NO" }
}

impl AneRuntime for RecordingRuntime {
    type Object = FakeObject;
    type Surface = FakeSurface;

    fn create_descriptor(
        &self,
        mil: &[u8],
        weights: &[WeightFile<'_>],
    ) -> Result<FakeObject, String> {
        let mut st = self.state();
        let dict: Vec<String> = weights
            .iter()
            .map(|w| format!("{}: {{offset: @0, data: <{} bytes>}}", w.blob_path, w.bytes.len()))
            .collect();
        let call = format!(
            "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:] \
             mil=<{} bytes> weights={{{}}} optionsPlist=nil",
            mil.len(),
            dict.join(", ")
        );
        if let Some(e) = st.failure(FakeCall::CreateDescriptor) {
            st.record(format!("{call} -> nil ({e})"));
            return Err(e);
        }
        let hex = st.hex_override.clone().unwrap_or_else(|| content_hex(mil, weights));
        let object = st.add(Held::Descriptor { hex });
        let line = format!("{call} -> {}", st.name(&object));
        st.record(line);
        Ok(object)
    }

    fn in_memory_model(&self, descriptor: &FakeObject) -> Result<FakeObject, String> {
        let mut st = self.state();
        let call =
            format!("+[_ANEInMemoryModel inMemoryModelWithDescriptor:] {}", st.name(descriptor));
        let hex = match st.objects.get(&descriptor.0) {
            Some(Held::Descriptor { hex }) => hex.clone(),
            _ => return Err(format!("{call}: not a live descriptor")),
        };
        if let Some(e) = st.failure(FakeCall::InMemoryModel) {
            st.record(format!("{call} -> nil ({e})"));
            return Err(e);
        }
        let object = st.add(Held::Model { hex, loaded: false, weights: BTreeMap::new() });
        let line = format!("{call} -> {}", st.name(&object));
        st.record(line);
        Ok(object)
    }

    fn hex_identifier(&self, model: &FakeObject) -> Result<String, String> {
        let mut st = self.state();
        let call = format!("-[{} hexStringIdentifier]", st.name(model));
        let hex = st.model(model)?.0.clone();
        if let Some(e) = st.failure(FakeCall::HexIdentifier) {
            st.record(format!("{call} -> nil ({e})"));
            return Err(e);
        }
        st.record(format!("{call} -> {hex}"));
        Ok(hex)
    }

    fn temp_dir(&self) -> PathBuf {
        let mut st = self.state();
        st.record(format!("NSTemporaryDirectory() -> {}", self.temp_root.display()));
        self.temp_root.clone()
    }

    fn compiled_model_exists(&self, model: &FakeObject) -> Result<bool, String> {
        let mut st = self.state();
        let call = format!("-[{} compiledModelExists]", st.name(model));
        let hex = st.model(model)?.0.clone();
        if let Some(e) = st.failure(FakeCall::CompiledModelExists) {
            st.record(format!("{call} -> ({e})"));
            return Err(e);
        }
        let exists = st.exists_override.unwrap_or_else(|| st.compiled.contains(&hex));
        st.record(format!("{call} -> {}", yes_no(exists)));
        Ok(exists)
    }

    fn compile(&self, model: &FakeObject, qos: u32) -> Result<(), String> {
        let mut st = self.state();
        let call =
            format!("-[{} compileWithQoS:options:error:] qos={qos} options={{}}", st.name(model));
        let hex = st.model(model)?.0.clone();
        let files = snapshot(&self.temp_root.join(&hex));
        st.files_at_compile.push(files.clone());
        if let Some(e) = st.failure(FakeCall::Compile) {
            st.record(format!("{call} -> NO error={e}"));
            return Err(e);
        }
        st.compiled_weights.insert(hex.clone(), weight_files(files));
        st.compiled.insert(hex);
        st.record(format!("{call} -> YES"));
        Ok(())
    }

    fn load(&self, model: &FakeObject, qos: u32) -> Result<(), String> {
        let mut st = self.state();
        let call =
            format!("-[{} loadWithQoS:options:error:] qos={qos} options={{}}", st.name(model));
        let hex = st.model(model)?.0.clone();
        if let Some(e) = st.failure(FakeCall::Load) {
            st.record(format!("{call} -> NO error={e}"));
            return Err(e);
        }
        let disk = weight_files(snapshot(&self.temp_root.join(&hex)));
        // A program this fake never compiled (compiledModelExists forced to YES) was compiled
        // from whatever its directory holds.
        let compiled = st.compiled_weights.get(&hex).cloned().unwrap_or_else(|| disk.clone());
        let now = weights_after_load(st.reload, &compiled, disk);
        if let Some(Held::Model { loaded, weights, .. }) = st.objects.get_mut(&model.0) {
            *loaded = true;
            *weights = now;
        }
        st.record(format!("{call} -> YES"));
        Ok(())
    }

    fn unload(&self, model: &FakeObject, qos: u32) -> Result<(), String> {
        let mut st = self.state();
        let call = format!("-[{} unloadWithQoS:error:] qos={qos}", st.name(model));
        st.model(model)?;
        if let Some(e) = st.failure(FakeCall::Unload) {
            st.record(format!("{call} -> NO error={e}"));
            return Err(e);
        }
        *st.model(model)?.1 = false;
        st.record(format!("{call} -> YES"));
        Ok(())
    }

    fn evaluate(&self, model: &FakeObject, request: &FakeObject, qos: u32) -> Result<(), String> {
        let mut st = self.state();
        let call = format!(
            "-[{} evaluateWithQoS:options:request:error:] qos={qos} options={{}} request={}",
            st.name(model),
            st.name(request)
        );
        let loaded = *st.model(model)?.1;
        let (inputs, outputs) = match st.objects.get(&request.0) {
            Some(Held::Request { inputs, outputs }) => (inputs.clone(), outputs.clone()),
            _ => return Err(format!("{call}: not a live request")),
        };
        let failure = if loaded {
            st.failure(FakeCall::Evaluate)
        } else {
            Some("the model is not loaded".to_string())
        };
        if let Some(e) = failure {
            st.record(format!("{call} -> NO error={e}"));
            return Err(e);
        }
        if st.evaluation == FakeEvaluation::Conv1x1 {
            let computed = match st.objects.get(&model.0) {
                Some(Held::Model { weights, .. }) => conv_weights(weights).and_then(|(c, w)| {
                    let x = st.surfaces.get(inputs.first()?)?;
                    conv1x1(c, &w, x)
                }),
                _ => None,
            };
            if let (Some(y), Some(dst)) =
                (computed, outputs.first().and_then(|o| st.surfaces.get_mut(o)))
            {
                let n = y.len().min(dst.len());
                dst[..n].copy_from_slice(&y[..n]);
                dst[n..].fill(0);
                st.record(format!("{call} -> YES"));
                return Ok(());
            }
        }
        // Identity: output i receives input i (zeros where there is no input i).
        for (i, out) in outputs.iter().enumerate() {
            let src = inputs.get(i).and_then(|s| st.surfaces.get(s)).cloned().unwrap_or_default();
            if let Some(dst) = st.surfaces.get_mut(out) {
                let n = src.len().min(dst.len());
                dst[..n].copy_from_slice(&src[..n]);
                dst[n..].fill(0);
            }
        }
        st.record(format!("{call} -> YES"));
        Ok(())
    }

    fn make_surface(&self, bytes: usize) -> Result<FakeSurface, String> {
        let mut st = self.state();
        let call = format!(
            "IOSurfaceCreate({{width: {bytes}, height: 1, bytesPerElement: 1, bytesPerRow: \
             {bytes}, allocSize: {bytes}, pixelFormat: 0}})"
        );
        if let Some(e) = st.failure(FakeCall::MakeSurface) {
            st.record(format!("{call} -> NULL ({e})"));
            return Err(e);
        }
        st.next_id += 1;
        let id = st.next_id;
        st.surfaces.insert(id, vec![0xA5; bytes]);
        st.record(format!("{call} -> surface#{id}"));
        Ok(FakeSurface(id))
    }

    fn surface_alloc_size(&self, surface: &FakeSurface) -> usize {
        self.state().surfaces.get(&surface.0).map_or(0, Vec::len)
    }

    fn read_surface(&self, surface: &FakeSurface, f: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let mut st = self.state();
        let id = surface.0;
        st.record(format!("IOSurfaceLock(surface#{id}, kIOSurfaceLockReadOnly)"));
        let bytes = st.surfaces.get(&id).ok_or_else(|| format!("surface#{id} was released"))?;
        f(bytes);
        st.record(format!("IOSurfaceUnlock(surface#{id}, kIOSurfaceLockReadOnly)"));
        Ok(())
    }

    fn write_surface(
        &self,
        surface: &FakeSurface,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), String> {
        let mut st = self.state();
        let id = surface.0;
        st.record(format!("IOSurfaceLock(surface#{id}, 0)"));
        let bytes = st.surfaces.get_mut(&id).ok_or_else(|| format!("surface#{id} was released"))?;
        f(bytes);
        st.record(format!("IOSurfaceUnlock(surface#{id}, 0)"));
        Ok(())
    }

    fn wrap_surface(&self, surface: &FakeSurface) -> Result<FakeObject, String> {
        let mut st = self.state();
        let call = format!("+[_ANEIOSurfaceObject objectWithIOSurface:] surface#{}", surface.0);
        if let Some(e) = st.failure(FakeCall::WrapSurface) {
            st.record(format!("{call} -> nil ({e})"));
            return Err(e);
        }
        let object = st.add(Held::SurfaceObject { surface: surface.0 });
        let line = format!("{call} -> {}", st.name(&object));
        st.record(line);
        Ok(object)
    }

    fn make_request(
        &self,
        inputs: &[&FakeObject],
        input_indices: &[u32],
        outputs: &[&FakeObject],
        output_indices: &[u32],
        procedure_index: u32,
    ) -> Result<FakeObject, String> {
        let mut st = self.state();
        let names = |st: &State, list: &[&FakeObject]| {
            list.iter().map(|o| st.name(o)).collect::<Vec<_>>().join(", ")
        };
        let numbers =
            |list: &[u32]| list.iter().map(|i| format!("@{i}")).collect::<Vec<_>>().join(", ");
        let call = format!(
            "+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:\
             perfStats:procedureIndex:] inputs=[{}] inputIndices=[{}] outputs=[{}] \
             outputIndices=[{}] weightsBuffer=nil perfStats=nil procedureIndex=@{procedure_index}",
            names(&st, inputs),
            numbers(input_indices),
            names(&st, outputs),
            numbers(output_indices),
        );
        let surfaces = |st: &State, list: &[&FakeObject]| {
            list.iter()
                .map(|o| match st.objects.get(&o.0) {
                    Some(Held::SurfaceObject { surface }) => Ok(*surface),
                    _ => Err(format!("{call}: #{} is not a live surface object", o.0)),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let inputs = surfaces(&st, inputs)?;
        let outputs = surfaces(&st, outputs)?;
        if let Some(e) = st.failure(FakeCall::MakeRequest) {
            st.record(format!("{call} -> nil ({e})"));
            return Err(e);
        }
        let object = st.add(Held::Request { inputs, outputs });
        let line = format!("{call} -> {}", st.name(&object));
        st.record(line);
        Ok(object)
    }

    fn release(&self, object: FakeObject) {
        let mut st = self.state();
        let line = format!("-[{} release]", st.name(&object));
        st.objects.remove(&object.0);
        st.record(line);
    }

    fn release_surface(&self, surface: FakeSurface) {
        let mut st = self.state();
        st.surfaces.remove(&surface.0);
        st.record(format!("CFRelease(surface#{})", surface.0));
    }
}
