//! The weights (graph initializers) of an ONNX model, read without onnxruntime or protobuf code
//! generation: a walk over the few protobuf fields that hold them.
//!
//! Field numbers are those of `onnx.proto3`: `ModelProto.graph = 7`, `GraphProto.initializer =
//! 5`, and in `TensorProto` `dims = 1`, `data_type = 2`, `float_data = 4`, `int32_data = 5`,
//! `int64_data = 7`, `name = 8`, `raw_data = 9`, `double_data = 10`, `data_location = 14`.
//! Everything else (nodes, inputs, metadata) is skipped by its wire type, so files from any
//! exporter and opset read the same way.

use super::{Checkpoint, CheckpointFormat, ImportError, ImportedTensor, TorchDType};

/// Tensors larger than this many elements are taken for corruption rather than allocated.
const MAX_ELEMENTS: u64 = 1 << 32;

/// Reads every initializer of an ONNX model held in memory, in file order.
pub fn read_onnx_bytes(data: &[u8]) -> Result<Checkpoint, ImportError> {
    let mut tensors = Vec::new();
    let mut graphs = 0;
    for field in Fields::new(data) {
        let (number, value) = field?;
        if let (7, Value::Bytes(graph)) = (number, value) {
            graphs += 1;
            for field in Fields::new(graph) {
                let (number, value) = field?;
                if let (5, Value::Bytes(tensor)) = (number, value) {
                    tensors.push(tensor_proto(tensor)?);
                }
            }
        }
    }
    if graphs == 0 {
        return Err(ImportError::NotACheckpoint("no ONNX graph in the file".into()));
    }
    if tensors.is_empty() {
        return Err(ImportError::NoTensors);
    }
    let mut names = std::collections::HashSet::new();
    for t in &tensors {
        if !names.insert(t.name.as_str()) {
            return Err(ImportError::DuplicateName(t.name.clone()));
        }
    }
    Ok(Checkpoint { format: CheckpointFormat::Onnx, picked: None, tensors })
}

fn tensor_proto(bytes: &[u8]) -> Result<ImportedTensor, ImportError> {
    let mut dims: Vec<u64> = Vec::new();
    let mut data_type = 0u64;
    let mut name = String::new();
    let mut raw: Option<&[u8]> = None;
    // Typed repeated fields, as little-endian element bytes.
    let mut typed: Vec<u8> = Vec::new();
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match (number, value) {
            (1, Value::Varint(d)) => dims.push(d),
            (1, Value::Bytes(packed)) => dims.extend(varints(packed)?),
            (2, Value::Varint(t)) => data_type = t,
            (4, Value::Bytes(packed)) => typed.extend_from_slice(packed),
            (4, Value::Fixed32(v)) => typed.extend_from_slice(&v.to_le_bytes()),
            (10, Value::Bytes(packed)) => typed.extend_from_slice(packed),
            (10, Value::Fixed64(v)) => typed.extend_from_slice(&v.to_le_bytes()),
            (5 | 7, Value::Bytes(packed)) => {
                for v in varints(packed)? {
                    push_int(&mut typed, number, v);
                }
            }
            (5 | 7, Value::Varint(v)) => push_int(&mut typed, number, v),
            (8, Value::Bytes(s)) => {
                name = String::from_utf8(s.to_vec())
                    .map_err(|_| ImportError::Corrupt("a tensor name is not UTF-8".into()))?;
            }
            (9, Value::Bytes(r)) => raw = Some(r),
            (14, Value::Varint(1)) => {
                return Err(ImportError::Unsupported(format!(
                    "{name:?} keeps its data in an external file"
                )))
            }
            _ => {}
        }
    }
    // ONNX's TensorProto.DataType numbering.
    let dtype = match data_type {
        1 => TorchDType::F32,
        2 => TorchDType::U8,
        3 => TorchDType::I8,
        5 => TorchDType::I16,
        6 => TorchDType::I32,
        7 => TorchDType::I64,
        9 => TorchDType::Bool,
        10 => TorchDType::F16,
        11 => TorchDType::F64,
        16 => TorchDType::BF16,
        other => {
            return Err(ImportError::Unsupported(format!("{name:?} has ONNX data type {other}")))
        }
    };
    let mut elements: u64 = 1;
    for &d in &dims {
        elements = elements
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| ImportError::TooLarge(format!("{name:?} has shape {dims:?}")))?;
    }
    let expected = elements as usize * dtype.size();
    let data = match raw {
        Some(r) => r.to_vec(),
        None => retype(typed, data_type, &name)?,
    };
    if data.len() != expected {
        return Err(ImportError::Corrupt(format!(
            "{name:?} has shape {dims:?} ({expected} bytes) but {} bytes of data",
            data.len()
        )));
    }
    Ok(ImportedTensor { name, dtype, shape: dims.iter().map(|&d| d as usize).collect(), data })
}

/// `int32_data` (field 5) carries every type of 32 bits or less as varints; `int64_data` (7)
/// carries int64. Both are widened here and narrowed by [`retype`].
fn push_int(out: &mut Vec<u8>, field: u64, v: u64) {
    if field == 5 {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Typed fields hold 4-byte values for the small integer types; the tensor wants its own width.
fn retype(typed: Vec<u8>, data_type: u64, name: &str) -> Result<Vec<u8>, ImportError> {
    let width = match data_type {
        2 | 3 | 9 => 1,
        5 | 10 | 16 => 2,
        _ => return Ok(typed),
    };
    if !typed.len().is_multiple_of(4) {
        return Err(ImportError::Corrupt(format!("{name:?}: ragged int32_data")));
    }
    Ok(typed.chunks_exact(4).flat_map(|c| c[..width].to_vec()).collect())
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The top-level fields of one protobuf message.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ImportError> {
        let (v, used) = varint(&self.data[self.pos..])?;
        self.pos += used;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            ImportError::Truncated(format!("a field of {n} bytes at byte {}", self.pos))
        })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => Value::Fixed64(u64::from_le_bytes(fixed(self.take(8)?))),
                2 => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| ImportError::Corrupt("a length past usize".into()))?;
                    Value::Bytes(self.take(len)?)
                }
                5 => Value::Fixed32(u32::from_le_bytes(fixed(self.take(4)?))),
                wire => {
                    return Err(ImportError::Corrupt(format!(
                        "protobuf wire type {wire} at byte {}",
                        self.pos
                    )))
                }
            };
            Ok((key >> 3, value))
        })();
        if item.is_err() {
            // One error ends the walk: the rest of the message has no trustworthy framing.
            self.pos = self.data.len();
        }
        Some(item)
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn varint(bytes: &[u8]) -> Result<(u64, usize), ImportError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(ImportError::Truncated("a protobuf varint".into()))
}

fn varints(mut bytes: &[u8]) -> Result<Vec<u64>, ImportError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (v, used) = varint(bytes)?;
        out.push(v);
        bytes = &bytes[used..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(field: u64, wire: u64, out: &mut Vec<u8>) {
        put_varint((field << 3) | wire, out);
    }

    fn put_varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        key(field, 2, out);
        put_varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// A model with one raw-data f32 initializer, one float_data initializer and one int64
    /// initializer, plus a node and an ir_version that the reader must skip.
    fn model() -> Vec<u8> {
        let mut w = Vec::new();
        key(1, 0, &mut w);
        put_varint(2, &mut w);
        key(1, 0, &mut w);
        put_varint(3, &mut w);
        key(2, 0, &mut w);
        put_varint(1, &mut w);
        bytes_field(8, b"conv.weight", &mut w);
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
        bytes_field(9, &raw, &mut w);

        let mut b = Vec::new();
        bytes_field(1, &[2], &mut b);
        key(2, 0, &mut b);
        put_varint(1, &mut b);
        let packed: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes_field(4, &packed, &mut b);
        bytes_field(8, b"conv.bias", &mut b);

        let mut s = Vec::new();
        bytes_field(1, &[3], &mut s);
        key(2, 0, &mut s);
        put_varint(7, &mut s);
        let mut ints = Vec::new();
        for v in [1u64, 896, u64::MAX] {
            put_varint(v, &mut ints);
        }
        bytes_field(7, &ints, &mut s);
        bytes_field(8, b"shape", &mut s);

        let mut graph = Vec::new();
        bytes_field(1, b"\x0a\x01x\x12\x01y\x22\x04Relu", &mut graph);
        bytes_field(5, &w, &mut graph);
        bytes_field(5, &b, &mut graph);
        bytes_field(5, &s, &mut graph);
        let mut model = Vec::new();
        key(1, 0, &mut model);
        put_varint(8, &mut model);
        bytes_field(7, &graph, &mut model);
        model
    }

    #[test]
    fn reads_raw_packed_and_integer_initializers() {
        let ckpt = read_onnx_bytes(&model()).unwrap();
        assert_eq!(ckpt.format, CheckpointFormat::Onnx);
        let names: Vec<_> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["conv.weight", "conv.bias", "shape"]);
        let w = &ckpt.tensors[0];
        assert_eq!((w.dtype, w.shape.clone()), (TorchDType::F32, vec![2, 3]));
        assert_eq!(&w.data[4..8], &0.5f32.to_le_bytes());
        assert_eq!(&ckpt.tensors[1].data[4..8], &(-2.0f32).to_le_bytes());
        let s = &ckpt.tensors[2];
        assert_eq!(s.dtype, TorchDType::I64);
        assert_eq!(&s.data[8..16], &896u64.to_le_bytes());
        assert_eq!(&s.data[16..24], &u64::MAX.to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let model = model();
        for cut in 0..model.len() {
            // Some prefixes are valid protobuf by accident (a cut between fields); the rest
            // must fail, and none may panic.
            let _ = read_onnx_bytes(&model[..cut]);
        }
        assert!(read_onnx_bytes(&model[..model.len() - 3]).is_err());
        assert!(matches!(read_onnx_bytes(b""), Err(ImportError::NotACheckpoint(_))));
        assert!(read_onnx_bytes(&[0x0b, 0x01]).is_err(), "wire type 3 (groups) is rejected");
    }
}
