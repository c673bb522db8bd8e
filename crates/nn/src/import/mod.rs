//! Loading weights: safetensors (the project's format) and PyTorch checkpoints converted to it
//! without PyTorch.
//!
//! [`convert`] reads the three layouts PyTorch writes:
//! - the zip `.pth`/`.pt` of `torch.save` (PyTorch >= 1.6): `<folder>/data.pkl` plus one
//!   `<folder>/data/<key>` entry per storage;
//! - the legacy `torch.save(..., _use_new_zipfile_serialization=False)` stream: magic number,
//!   protocol version and system-info pickles, the data pickle, the storage key list, then each
//!   storage as an 8-byte little-endian element count followed by its bytes;
//! - TorchScript archives (`torch.jit.save`): the module tree in `data.pkl`, whose parameters and
//!   buffers come out under their attribute paths (`conv1.weight`). Tensors in
//!   `constants.pkl` are code constants, not weights, and are skipped.
//!
//! The pickles are read by a small pickle machine of our own that executes nothing; it
//! understands `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `collections.OrderedDict`
//! and the typed storage classes. Tensors may be non-contiguous (they are materialised) and of
//! dtype f64, f32, f16, bf16, i64, i32, i16, i8, u8 or bool; every dtype is kept as is.
//!
//! Naming: tensors keep their state-dict names exactly. When the pickled object is a dict that
//! holds one of [`STATE_DICT_KEYS`] (checked in that order) with tensors inside, only that entry
//! is converted, so `{"epoch": 3, "state_dict": {...}}` gives the plain state-dict names.
//! Otherwise every tensor reachable through dicts, lists, tuples and object attributes is
//! converted, its name being the path joined with dots (`optimizer.state.0.exp_avg`); a pickled
//! `nn.Module` contributes its `_parameters`, `_buffers` and `_modules` as `state_dict()` would.
//!
//! Failure is all or nothing: the output is written to a temporary file beside it and renamed
//! only once the whole checkpoint has been read, so a truncated or corrupt input never leaves a
//! partial `.safetensors`.
//!
//! ```no_run
//! let summary = deeprecog_nn::import::convert("mobilenet_v2.pth", "mobilenet_v2.safetensors")?;
//! println!("{} tensors, {} parameters", summary.tensors, summary.elements);
//! # Ok::<(), deeprecog_nn::Error>(())
//! ```

mod onnx;
mod pickle;
mod reader;

pub use onnx::read_onnx_bytes;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pickle::{Arena, Node, TensorRef, Value};

use crate::{Error, Result};

/// Top-level keys that hold the state dict inside a training checkpoint, most specific first.
pub const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model_state_dict", "model", "net"];

/// Nested containers deeper than this are not walked for tensors.
const MAX_DEPTH: usize = 128;

/// What was wrong with a weight file (wrapped with its path in [`Error::Import`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not in any format this reader knows.
    #[error("not a PyTorch checkpoint: {0}")]
    NotACheckpoint(String),
    /// The pickle stream is malformed or truncated.
    #[error("malformed pickle at byte {offset}: {reason}")]
    Pickle {
        /// Byte offset of the offending opcode in the pickle.
        offset: usize,
        /// What was unexpected there.
        reason: String,
    },
    /// The file ends before the data it declares.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Parts of the file disagree with each other.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A valid PyTorch feature this converter does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The zip container is unreadable.
    #[error("zip archive: {0}")]
    Zip(String),
    /// A tensor claims more memory than the input could plausibly describe.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The file holds no tensors at all.
    #[error("no tensors found")]
    NoTensors,
    /// Two tensors end up with the same name.
    #[error("two tensors are both named {0:?}")]
    DuplicateName(String),
    /// Writing or reading safetensors failed.
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// Writing the converted file failed (the output is left as it was).
    #[error("writing failed: {0}")]
    Write(#[source] deeprecog_dataset::fsutil::BoxError),
}

/// The element types of PyTorch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TorchDType {
    /// `torch.float64`.
    F64,
    /// `torch.float32`.
    F32,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64`.
    I64,
    /// `torch.int32`.
    I32,
    /// `torch.int16`.
    I16,
    /// `torch.int8`.
    I8,
    /// `torch.uint8`.
    U8,
    /// `torch.bool`.
    Bool,
}

impl TorchDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 => 8,
            TorchDType::F32 | TorchDType::I32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    /// From a storage class name such as `FloatStorage`.
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => TorchDType::F64,
            "FloatStorage" => TorchDType::F32,
            "HalfStorage" => TorchDType::F16,
            "BFloat16Storage" => TorchDType::BF16,
            "LongStorage" => TorchDType::I64,
            "IntStorage" => TorchDType::I32,
            "ShortStorage" => TorchDType::I16,
            "CharStorage" => TorchDType::I8,
            "ByteStorage" | "UntypedStorage" => TorchDType::U8,
            "BoolStorage" => TorchDType::Bool,
            _ => return None,
        })
    }

    fn safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as D;
        match self {
            TorchDType::F64 => D::F64,
            TorchDType::F32 => D::F32,
            TorchDType::F16 => D::F16,
            TorchDType::BF16 => D::BF16,
            TorchDType::I64 => D::I64,
            TorchDType::I32 => D::I32,
            TorchDType::I16 => D::I16,
            TorchDType::I8 => D::I8,
            TorchDType::U8 => D::U8,
            TorchDType::Bool => D::BOOL,
        }
    }
}

/// Which PyTorch layout a checkpoint used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// The zip archive of `torch.save` (PyTorch >= 1.6).
    Zip,
    /// The pre-1.6 stream of pickles followed by raw storages.
    Legacy,
    /// A `torch.jit.save` archive.
    TorchScript,
    /// An ONNX model's initializers (see [`read_onnx_bytes`]).
    Onnx,
}

/// One tensor read out of a checkpoint: contiguous little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTensor {
    /// Its state-dict name.
    pub name: String,
    /// Its element type.
    pub dtype: TorchDType,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Row-major element bytes.
    pub data: Vec<u8>,
}

/// What [`read_pytorch`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The layout of the file.
    pub format: CheckpointFormat,
    /// The top-level key the tensors were taken from (see [`STATE_DICT_KEYS`]), if any.
    pub picked: Option<String>,
    /// The tensors, in the order the checkpoint lists them.
    pub tensors: Vec<ImportedTensor>,
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    /// The layout of the input.
    pub format: CheckpointFormat,
    /// The top-level key the tensors were taken from, if any.
    pub picked: Option<String>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Total elements over all tensors (parameters plus buffers).
    pub elements: u64,
    /// Total tensor bytes.
    pub bytes: u64,
}

fn import_err(path: &Path, source: ImportError) -> Error {
    Error::Import { path: path.to_path_buf(), source }
}

/// Reads every tensor of a PyTorch checkpoint (zip, legacy or TorchScript) into memory.
pub fn read_pytorch(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| import_err(path, e.into()))?;
    read_pytorch_bytes(&data).map_err(|e| import_err(path, e))
}

/// [`read_pytorch`] on bytes already in memory.
pub fn read_pytorch_bytes(data: &[u8]) -> Result<Checkpoint, ImportError> {
    let parsed = reader::parse(data)?;
    let (start, picked) = pick_state_dict(&parsed.arena, &parsed.root);
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    walk(&parsed.arena, &start, String::new(), 0, &mut seen, &mut found);
    if found.is_empty() {
        return Err(ImportError::NoTensors);
    }
    let mut names = HashSet::new();
    // Generous, yet stops a corrupt header from asking for terabytes: zero strides can
    // legitimately expand a tensor, but not by orders of magnitude in a weight file.
    let mut budget = (data.len() as u64).saturating_mul(8).saturating_add(64 << 20);
    let mut tensors = Vec::with_capacity(found.len());
    for (name, t) in found {
        if !names.insert(name.clone()) {
            return Err(ImportError::DuplicateName(name));
        }
        tensors.push(reader::materialise(&name, t, &parsed.storages, &mut budget)?);
    }
    Ok(Checkpoint { format: parsed.format, picked, tensors })
}

fn dict_entries<'a>(arena: &'a Arena, v: &Value) -> Option<&'a [(Value, Value)]> {
    match arena.get(v) {
        Some(Node::Dict(d)) => Some(d),
        _ => None,
    }
}

fn pick_state_dict(arena: &Arena, root: &Value) -> (Value, Option<String>) {
    if let Some(entries) = dict_entries(arena, root) {
        for key in STATE_DICT_KEYS {
            let hit = entries.iter().find(|(k, _)| matches!(k, Value::Str(s) if &**s == key));
            if let Some((_, v)) = hit {
                let mut found = Vec::new();
                walk(arena, v, String::new(), 0, &mut HashSet::new(), &mut found);
                if !found.is_empty() {
                    return (v.clone(), Some(key.to_string()));
                }
            }
        }
    }
    (root.clone(), None)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn key_name(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Collects `(name, tensor)` in pickle order. `seen` keeps shared or cyclic containers from
/// being walked twice; a tensor reachable under two names is reported under both.
fn walk<'a>(
    arena: &'a Arena,
    v: &Value,
    prefix: String,
    depth: usize,
    seen: &mut HashSet<usize>,
    out: &mut Vec<(String, &'a TensorRef)>,
) {
    let Value::Node(id) = v else { return };
    if depth > MAX_DEPTH {
        return;
    }
    let node = arena.nodes.get(*id);
    if let Some(Node::Tensor(t)) = node {
        out.push((prefix, t));
        return;
    }
    if !seen.insert(*id) {
        return;
    }
    match node {
        Some(Node::Dict(d)) => walk_pairs(arena, d, &prefix, depth, seen, out),
        Some(Node::List(l)) | Some(Node::Tuple(l)) => {
            for (i, x) in l.iter().enumerate() {
                walk(arena, x, join(&prefix, &i.to_string()), depth + 1, seen, out);
            }
        }
        Some(Node::Object { state, items, list, .. }) => {
            if let Some(state) = state {
                walk_object_state(arena, state, &prefix, depth, seen, out);
            }
            walk_pairs(arena, items, &prefix, depth, seen, out);
            for (i, x) in list.iter().enumerate() {
                walk(arena, x, join(&prefix, &i.to_string()), depth + 1, seen, out);
            }
        }
        _ => {}
    }
}

fn walk_pairs<'a>(
    arena: &'a Arena,
    pairs: &[(Value, Value)],
    prefix: &str,
    depth: usize,
    seen: &mut HashSet<usize>,
    out: &mut Vec<(String, &'a TensorRef)>,
) {
    for (k, x) in pairs {
        if let Some(k) = key_name(k) {
            walk(arena, x, join(prefix, &k), depth + 1, seen, out);
        }
    }
}

/// An eager `nn.Module`'s `__dict__` keeps weights in `_parameters`, `_buffers` and `_modules`;
/// naming them like `state_dict()` does means skipping those three levels.
fn walk_object_state<'a>(
    arena: &'a Arena,
    state: &Value,
    prefix: &str,
    depth: usize,
    seen: &mut HashSet<usize>,
    out: &mut Vec<(String, &'a TensorRef)>,
) {
    let Some(entries) = dict_entries(arena, state) else {
        walk(arena, state, prefix.to_string(), depth + 1, seen, out);
        return;
    };
    let is_module = entries
        .iter()
        .any(|(k, _)| matches!(k, Value::Str(s) if &**s == "_parameters" || &**s == "_modules"));
    if !is_module {
        walk_pairs(arena, entries, prefix, depth, seen, out);
        return;
    }
    for part in ["_parameters", "_buffers", "_modules"] {
        let hit = entries.iter().find(|(k, _)| matches!(k, Value::Str(s) if &**s == part));
        if let Some((_, v)) = hit {
            if let Some(d) = dict_entries(arena, v) {
                walk_pairs(arena, d, prefix, depth + 1, seen, out);
            }
        }
    }
}

/// Reads the initializers (the weights) of an ONNX model, names kept as the graph spells them.
pub fn read_onnx(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| import_err(path, e.into()))?;
    read_onnx_bytes(&data).map_err(|e| import_err(path, e))
}

/// Converts a PyTorch checkpoint (or, for a `.onnx` file, an ONNX model's initializers) to
/// safetensors, all or nothing (see the module docs).
pub fn convert(input: impl AsRef<Path>, output: impl AsRef<Path>) -> Result<ConvertSummary> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let is_onnx = input.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let ckpt = if is_onnx { read_onnx(input)? } else { read_pytorch(input)? };
    let bytes = to_safetensors_bytes(&ckpt, input).map_err(|e| import_err(output, e))?;
    deeprecog_dataset::fsutil::write_atomically(output, &bytes)
        .map_err(|e| import_err(output, ImportError::Write(e.into_source())))?;
    Ok(ConvertSummary {
        format: ckpt.format,
        picked: ckpt.picked.clone(),
        tensors: ckpt.tensors.len(),
        elements: ckpt.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum(),
        bytes: ckpt.tensors.iter().map(|t| t.data.len() as u64).sum(),
    })
}

fn to_safetensors_bytes(ckpt: &Checkpoint, source: &Path) -> Result<Vec<u8>, ImportError> {
    let mut views = Vec::with_capacity(ckpt.tensors.len());
    for t in &ckpt.tensors {
        let view =
            safetensors::tensor::TensorView::new(t.dtype.safetensors(), t.shape.clone(), &t.data)
                .map_err(|e| ImportError::Safetensors(format!("{}: {e}", t.name)))?;
        views.push((t.name.clone(), view));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    if let Some(name) = source.file_name() {
        meta.insert("source".to_string(), name.to_string_lossy().into_owned());
    }
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| ImportError::Safetensors(e.to_string()))
}

/// Writes tensors (from [`read_pytorch`] or [`read_onnx`], renamed as the caller likes) to a
/// safetensors file, atomically.
pub fn write_safetensors(ckpt: &Checkpoint, source: &Path, output: &Path) -> Result<()> {
    let bytes = to_safetensors_bytes(ckpt, source).map_err(|e| import_err(output, e))?;
    deeprecog_dataset::fsutil::write_atomically(output, &bytes)
        .map_err(|e| import_err(output, ImportError::Write(e.into_source())))
}

/// The tensors of a checkpoint as candle tensors on `device` (dtypes candle lacks fail).
pub fn to_tensors(
    ckpt: &Checkpoint,
    source: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let bytes = to_safetensors_bytes(ckpt, source).map_err(|e| import_err(source, e))?;
    Ok(candle_core::safetensors::load_buffer(&bytes, device)?)
}

/// Reads a PyTorch checkpoint straight into candle tensors (the dtypes candle lacks, such as
/// i32 or bool, make this fail: [`convert`] keeps them).
pub fn load_pytorch(path: impl AsRef<Path>, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let ckpt = read_pytorch(path)?;
    let bytes = to_safetensors_bytes(&ckpt, path).map_err(|e| import_err(path, e))?;
    Ok(candle_core::safetensors::load_buffer(&bytes, device)?)
}

/// Loads every tensor of a safetensors file.
pub fn load_safetensors(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    candle_core::safetensors::load(path, device)
        .map_err(|e| import_err(path, ImportError::Safetensors(e.to_string())))
}

/// A `VarBuilder` over a safetensors file's tensors, converted to `dtype` on `device`.
pub fn var_builder(
    path: impl AsRef<Path>,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let tensors = load_safetensors(path, device)?;
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}
