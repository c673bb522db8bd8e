//! The three on-disk layouts of PyTorch weights, and turning their tensors into bytes.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::pickle::{unpickle, Arena, Node, TensorRef, Value};
use super::{CheckpointFormat, ImportError, ImportedTensor};

/// What one file's pickle gives: the object graph and where the storages' bytes are.
pub(crate) struct Parsed {
    pub format: CheckpointFormat,
    pub arena: Arena,
    pub root: Value,
    pub storages: HashMap<String, Vec<u8>>,
}

/// Little-endian bytes of the legacy magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

pub(crate) fn parse(data: &[u8]) -> Result<Parsed, ImportError> {
    match data {
        [b'P', b'K', 3, 4, ..] => parse_zip(data),
        [0x80, p, ..] if *p >= 2 => parse_legacy(data),
        [] => Err(ImportError::NotACheckpoint("the file is empty".into())),
        _ => Err(ImportError::NotACheckpoint(
            "neither a zip archive nor a pickle (a legacy tar checkpoint is not supported)".into(),
        )),
    }
}

fn parse_legacy(data: &[u8]) -> Result<Parsed, ImportError> {
    let mut arena = Arena::default();
    let mut pos = 0usize;
    let next = |arena: &mut Arena, pos: &mut usize| -> Result<Value, ImportError> {
        let rest = data.get(*pos..).unwrap_or(&[]);
        let (v, used) = unpickle(rest, *pos, arena)?;
        *pos += used;
        Ok(v)
    };
    match next(&mut arena, &mut pos)? {
        Value::BigInt(b) if *b == LEGACY_MAGIC => {}
        _ => {
            return Err(ImportError::NotACheckpoint(
                "a pickle, but not torch.save's legacy format (magic number missing)".into(),
            ))
        }
    }
    match next(&mut arena, &mut pos)? {
        Value::Int(LEGACY_PROTOCOL) => {}
        other => {
            return Err(ImportError::Unsupported(format!(
                "legacy protocol version {other:?} (expected {LEGACY_PROTOCOL})"
            )))
        }
    }
    let sys_info = next(&mut arena, &mut pos)?;
    check_little_endian(&arena, &sys_info)?;
    let root = next(&mut arena, &mut pos)?;
    let keys_v = next(&mut arena, &mut pos)?;
    let keys: Vec<String> = match arena.get(&keys_v) {
        Some(Node::List(l)) | Some(Node::Tuple(l)) => l
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.to_string()),
                _ => Err(ImportError::Corrupt("storage key list holds a non-string".into())),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ImportError::Corrupt("storage key list missing".into())),
    };
    // Element sizes come from the storages the data pickle referenced.
    let mut elem_size: HashMap<&str, usize> = HashMap::new();
    for n in &arena.nodes {
        if let Node::Storage(s) = n {
            elem_size.insert(s.key.as_str(), s.dtype.size());
        }
    }
    let mut storages = HashMap::new();
    for key in &keys {
        let header = data
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| ImportError::Truncated(format!("storage {key}'s size at byte {pos}")))?;
        let mut h = [0u8; 8];
        h.copy_from_slice(header);
        pos += 8;
        let count = u64::from_le_bytes(h);
        let es = elem_size.get(key.as_str()).copied().ok_or_else(|| {
            ImportError::Corrupt(format!("storage {key} is listed but no tensor uses it"))
        })?;
        let nbytes = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(es))
            .filter(|&n| n <= data.len().saturating_sub(pos))
            .ok_or_else(|| {
                ImportError::Truncated(format!(
                    "storage {key} claims {count} elements of {es} bytes at byte {pos}, {} bytes left",
                    data.len().saturating_sub(pos)
                ))
            })?;
        let bytes = data.get(pos..pos + nbytes).unwrap_or(&[]).to_vec();
        pos += nbytes;
        storages.insert(key.clone(), bytes);
    }
    Ok(Parsed { format: CheckpointFormat::Legacy, arena, root, storages })
}

fn check_little_endian(arena: &Arena, sys_info: &Value) -> Result<(), ImportError> {
    if let Some(Node::Dict(d)) = arena.get(sys_info) {
        for (k, v) in d {
            if matches!(k, Value::Str(s) if &**s == "little_endian")
                && matches!(v, Value::Bool(false))
            {
                return Err(ImportError::Unsupported("big-endian checkpoint".into()));
            }
        }
    }
    Ok(())
}

fn parse_zip(data: &[u8]) -> Result<Parsed, ImportError> {
    let zerr = |e: zip::result::ZipError| ImportError::Zip(e.to_string());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(zerr)?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(zerr)?;
    // torch writes everything under one top-level folder whose name varies ("archive", the
    // file stem, ...); data.pkl sits directly in it.
    let prefix = names
        .iter()
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .find(|p| p.matches('/').count() == 1 && p.ends_with('/'))
        .map(str::to_string);
    let Some(prefix) = prefix else {
        if names.iter().any(|n| n.ends_with("model.json")) {
            return Err(ImportError::Unsupported(
                "pre-1.4 TorchScript archive (model.json)".into(),
            ));
        }
        return Err(ImportError::NotACheckpoint("a zip archive without <folder>/data.pkl".into()));
    };
    let has = |suffix: &str| names.iter().any(|n| n == &format!("{prefix}{suffix}"));
    let format =
        if has("constants.pkl") || names.iter().any(|n| n.starts_with(&format!("{prefix}code/"))) {
            CheckpointFormat::TorchScript
        } else {
            CheckpointFormat::Zip
        };
    // Stored entries cannot be longer than the archive; a corrupt directory claiming more is cut.
    let limit = data.len() as u64;
    let read = |zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str| {
        let entry = zip.by_name(name).map_err(zerr)?;
        let mut buf = Vec::new();
        entry
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| ImportError::Zip(format!("{name}: {e}")))?;
        Ok::<_, ImportError>(buf)
    };
    if has("byteorder") {
        let order = read(&mut zip, &format!("{prefix}byteorder"))?;
        if order.trim_ascii() != b"little" {
            return Err(ImportError::Unsupported("big-endian checkpoint".into()));
        }
    }
    let pkl = read(&mut zip, &format!("{prefix}data.pkl"))?;
    let mut arena = Arena::default();
    let (root, _) = unpickle(&pkl, 0, &mut arena)?;
    let keys: HashSet<String> = arena
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Storage(s) => Some(s.key.clone()),
            _ => None,
        })
        .collect();
    let mut storages = HashMap::new();
    for key in keys {
        let name = format!("{prefix}data/{key}");
        if !names.contains(&name) {
            return Err(ImportError::Corrupt(format!(
                "storage {name} is missing from the archive"
            )));
        }
        let bytes = read(&mut zip, &name)?;
        storages.insert(key, bytes);
    }
    Ok(Parsed { format, arena, root, storages })
}

/// Copies a (possibly strided) tensor out of its storage into contiguous little-endian bytes.
pub(crate) fn materialise(
    name: &str,
    t: &TensorRef,
    storages: &HashMap<String, Vec<u8>>,
    budget: &mut u64,
) -> Result<ImportedTensor, ImportError> {
    let bad = |why: String| ImportError::Corrupt(format!("tensor {name}: {why}"));
    let dtype = t.storage.dtype;
    let es = dtype.size();
    let bytes = storages
        .get(&t.storage.key)
        .ok_or_else(|| bad(format!("storage {} has no data", t.storage.key)))?;
    let avail = (bytes.len() / es).saturating_sub(t.storage.offset);
    // A legacy view, or a storage shorter than declared, bounds the indices we may touch.
    let storage_numel = avail.min(t.storage.numel);
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("element count overflows".into()))?;
    let out_bytes = numel.checked_mul(es).ok_or_else(|| bad("byte count overflows".into()))?;
    if out_bytes as u64 > *budget {
        return Err(ImportError::TooLarge(format!(
            "tensor {name} would take {out_bytes} bytes, more than the input could describe"
        )));
    }
    *budget -= out_bytes as u64;
    let mut out = Vec::with_capacity(out_bytes);
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
            .ok_or_else(|| bad("index overflows".into()))?;
        if last >= storage_numel {
            return Err(bad(format!(
                "reaches element {last} of a storage of {storage_numel} (size {:?}, stride {:?}, offset {})",
                t.size, t.stride, t.offset
            )));
        }
        // Cannot overflow: `last` (>= t.offset) is below the elements left after storage.offset.
        let base = t.storage.offset.saturating_add(t.offset);
        let contiguous = {
            let mut expect = 1usize;
            let mut ok = true;
            for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
                if d != 1 && s != expect {
                    ok = false;
                }
                expect = expect.saturating_mul(d);
            }
            ok
        };
        if contiguous {
            let s = bytes
                .get(base * es..(base + numel) * es)
                .ok_or_else(|| bad("data out of range".into()))?;
            out.extend_from_slice(s);
        } else {
            let mut idx = vec![0usize; t.size.len()];
            for _ in 0..numel {
                let e = base + idx.iter().zip(&t.stride).map(|(&i, &s)| i * s).sum::<usize>();
                let s = bytes
                    .get(e * es..(e + 1) * es)
                    .ok_or_else(|| bad("data out of range".into()))?;
                out.extend_from_slice(s);
                // Odometer over the indices, last dimension fastest.
                for (i, &d) in idx.iter_mut().zip(&t.size).rev() {
                    *i += 1;
                    if *i < d {
                        break;
                    }
                    *i = 0;
                }
            }
        }
    }
    Ok(ImportedTensor { name: name.to_string(), dtype, shape: t.size.clone(), data: out })
}
