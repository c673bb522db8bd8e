//! A minimal pickle virtual machine: enough of protocols 2 to 5 to read what `torch.save` and
//! TorchScript write, and nothing that executes code.
//!
//! Every container lives in an arena and values refer to it by index. That makes memo sharing
//! and in-place `APPEND`/`SETITEM` after `BINPUT` behave like Python, keeps `Value` cheap to
//! clone (no quadratic blow-up from repeated `BINGET`), and means a hostile, deeply nested or
//! cyclic pickle cannot overflow the stack when it is dropped. Every length is checked against
//! the bytes actually present before anything is allocated, and each opcode creates at most one
//! arena node, so memory stays proportional to the input.

use std::collections::HashMap;
use std::rc::Rc;

use super::{ImportError, TorchDType};

/// Index of a [`Node`] in the [`Arena`].
pub(crate) type NodeId = usize;

/// A value on the pickle stack. Payloads nobody reads yet (floats, bytes, an object's class)
/// are kept so the graph is faithful and shows in `Debug` output.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for `i64`: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Node(NodeId),
}

/// Where a storage's elements come from: `key` names the raw bytes, `offset` (elements) is
/// non-zero only for legacy storage views.
#[derive(Debug, Clone)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: TorchDType,
    pub offset: usize,
    /// Element count the pickle declares for the storage (or view).
    pub numel: usize,
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, unevaluated.
#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A heap object built by the pickle.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Node {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global {
        module: Rc<str>,
        name: Rc<str>,
    },
    /// An instance of a class we do not interpret (a module, a namespace...): its state is kept
    /// so tensors inside can still be found.
    Object {
        class: Value,
        state: Option<Value>,
        items: Vec<(Value, Value)>,
        list: Vec<Value>,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// Every node the pickles of one file built.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    pub nodes: Vec<Node>,
}

impl Arena {
    fn push(&mut self, node: Node) -> Value {
        self.nodes.push(node);
        Value::Node(self.nodes.len() - 1)
    }

    pub fn get(&self, v: &Value) -> Option<&Node> {
        match v {
            Value::Node(i) => self.nodes.get(*i),
            _ => None,
        }
    }
}

/// Tensors deeper than this are certainly not from PyTorch.
const MAX_DIMS: usize = 64;
/// Bounds the `_rebuild_from_type_v2` indirection.
const MAX_REDUCE_DEPTH: usize = 4;

struct Machine<'a, 'b> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    arena: &'b mut Arena,
}

fn err(offset: usize, reason: impl Into<String>) -> ImportError {
    ImportError::Pickle { offset, reason: reason.into() }
}

/// Runs one pickle starting at `data[0]`, returning its value and the number of bytes it used
/// (a legacy checkpoint is several pickles back to back followed by raw storages).
pub(crate) fn unpickle(
    data: &[u8],
    base: usize,
    arena: &mut Arena,
) -> Result<(Value, usize), ImportError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena,
    };
    match m.run() {
        Ok(v) => Ok((v, m.pos)),
        Err(ImportError::Pickle { offset, reason }) => {
            Err(ImportError::Pickle { offset: offset + base, reason })
        }
        Err(e) => Err(e),
    }
}

impl Machine<'_, '_> {
    fn e(&self, reason: impl Into<String>) -> ImportError {
        err(self.op_pos, reason)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ImportError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end.and_then(|e| self.data.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(err(
                self.op_pos,
                format!(
                    "truncated: needs {n} bytes, {} left",
                    self.data.len().saturating_sub(self.pos)
                ),
            )),
        }
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], ImportError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.arr::<1>()?[0])
    }

    fn len_u32(&mut self) -> Result<usize, ImportError> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize, ImportError> {
        let n = u64::from_le_bytes(self.arr()?);
        usize::try_from(n).map_err(|_| self.e(format!("length {n} does not fit in memory")))
    }

    fn line(&mut self) -> Result<String, ImportError> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.e("truncated: unterminated text line"));
        };
        let s = self.take(n + 1)?;
        let s = s.get(..n).unwrap_or(&[]);
        String::from_utf8(s.to_vec()).map_err(|_| self.e("text line is not UTF-8"))
    }

    fn utf8(&mut self, n: usize) -> Result<Value, ImportError> {
        let at = self.op_pos;
        let s = self.take(n)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => Err(err(at, "string is not valid UTF-8")),
        }
    }

    fn latin1(&mut self, n: usize) -> Result<Value, ImportError> {
        let s: String = self.take(n)?.iter().map(|&b| char::from(b)).collect();
        Ok(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> Result<Value, ImportError> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }

    fn pop(&mut self) -> Result<Value, ImportError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.e("stack underflow"));
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => Err(self.e("stack underflow")),
        }
    }

    fn top(&self) -> Result<&Value, ImportError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(v) if self.stack.len() > floor => Ok(v),
            _ => Err(self.e("stack underflow")),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, ImportError> {
        let Some(m) = self.marks.pop() else {
            return Err(self.e("no MARK on the stack"));
        };
        if m > self.stack.len() {
            return Err(self.e("MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn memo_put(&mut self, key: u32) -> Result<(), ImportError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), ImportError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => Err(self.e(format!("memo key {key} was never stored"))),
        }
    }

    fn tuple_items(&self, v: &Value) -> Option<&[Value]> {
        match self.arena.get(v) {
            Some(Node::Tuple(t)) | Some(Node::List(t)) => Some(t),
            _ => None,
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, ImportError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.e("odd number of items for a dict"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), ImportError> {
        let target = self.top()?.clone();
        let at = self.op_pos;
        match &target {
            Value::Node(i) => match self.arena.nodes.get_mut(*i) {
                Some(Node::Dict(d)) => d.extend(pairs),
                Some(Node::Object { items, .. }) => items.extend(pairs),
                _ => return Err(err(at, "SETITEM(S) on something that is not a dict")),
            },
            _ => return Err(err(at, "SETITEM(S) on something that is not a dict")),
        }
        Ok(())
    }

    fn append(&mut self, values: Vec<Value>) -> Result<(), ImportError> {
        let target = self.top()?.clone();
        let at = self.op_pos;
        match &target {
            Value::Node(i) => match self.arena.nodes.get_mut(*i) {
                Some(Node::List(l)) => l.extend(values),
                Some(Node::Object { list, .. }) => list.extend(values),
                _ => return Err(err(at, "APPEND(S) on something that is not a list")),
            },
            _ => return Err(err(at, "APPEND(S) on something that is not a list")),
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, ImportError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.e(format!("pickle protocol {p} is newer than 5")));
                    }
                }
                0x95 => {
                    // FRAME only groups opcodes for buffered readers; the length is advisory.
                    self.len_u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let v = long(self.take(n)?);
                    self.push(v);
                }
                0x8b => {
                    let n = self.len_u32()?;
                    let v = long(self.take(n)?);
                    self.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let v = self.utf8(n)?;
                    self.push(v);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let v = self.utf8(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.utf8(n)?;
                    self.push(v);
                }
                b'T' => {
                    let n = self.len_u32()?;
                    let v = self.latin1(n)?;
                    self.push(v);
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let v = self.latin1(n)?;
                    self.push(v);
                }
                b'B' => {
                    let n = self.len_u32()?;
                    let v = self.bytes(n)?;
                    self.push(v);
                }
                b'C' => {
                    let n = usize::from(self.u8()?);
                    let v = self.bytes(n)?;
                    self.push(v);
                }
                0x8e => {
                    let n = self.len_u64()?;
                    let v = self.bytes(n)?;
                    self.push(v);
                }
                b'}' => {
                    let v = self.arena.push(Node::Dict(Vec::new()));
                    self.push(v);
                }
                b']' => {
                    let v = self.arena.push(Node::List(Vec::new()));
                    self.push(v);
                }
                b')' => {
                    let v = self.arena.push(Node::Tuple(Vec::new()));
                    self.push(v);
                }
                0x8f => {
                    let v = self.arena.push(Node::List(Vec::new()));
                    self.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let v = self.arena.push(Node::Dict(pairs));
                    self.push(v);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.arena.push(Node::List(items));
                    self.push(v);
                }
                b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    let v = self.arena.push(Node::Tuple(items));
                    self.push(v);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.arena.push(Node::Tuple(items));
                    self.push(v);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| self.e("memo too large"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self
                        .arena
                        .push(Node::Global { module: Rc::from(module), name: Rc::from(name) });
                    self.push(v);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.e("STACK_GLOBAL needs two strings"));
                    };
                    let v = self.arena.push(Node::Global { module, name });
                    self.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args, 0)?;
                    self.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.new_object(cls, args)?;
                    self.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.new_object(cls, args)?;
                    self.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    if let Value::Node(i) = target {
                        // Only plain objects keep state; OrderedDict's `_metadata` and a
                        // Parameter's extra state are not part of the weights.
                        if let Some(Node::Object { state: s, .. }) = self.arena.nodes.get_mut(i) {
                            *s = Some(state);
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.push(v);
                }
                _ => {
                    return Err(self.e(format!(
                        "unsupported pickle opcode 0x{op:02x} (not written by torch.save)"
                    )))
                }
            }
        }
    }

    fn global_name(&self, v: &Value) -> Option<(Rc<str>, Rc<str>)> {
        match self.arena.get(v) {
            Some(Node::Global { module, name }) => Some((module.clone(), name.clone())),
            _ => None,
        }
    }

    fn new_object(&mut self, cls: Value, args: Value) -> Result<Value, ImportError> {
        if let Some((m, n)) = self.global_name(&cls) {
            if &*m == "collections" && &*n == "OrderedDict" {
                return Ok(self.arena.push(Node::Dict(Vec::new())));
            }
        }
        let _ = args;
        Ok(self.arena.push(Node::Object {
            class: cls,
            state: None,
            items: Vec::new(),
            list: Vec::new(),
        }))
    }

    fn arg(&self, args: &[Value], i: usize, what: &str) -> Result<Value, ImportError> {
        args.get(i).cloned().ok_or_else(|| self.e(format!("{what}: missing argument {i}")))
    }

    fn reduce(&mut self, func: Value, args: Value, depth: usize) -> Result<Value, ImportError> {
        if depth > MAX_REDUCE_DEPTH {
            return Err(self.e("nested tensor rebuild calls too deep"));
        }
        let Some(args_v) = self.tuple_items(&args).map(<[Value]>::to_vec) else {
            return Err(self.e("REDUCE arguments are not a tuple"));
        };
        let Some((module, name)) = self.global_name(&func) else {
            return Ok(self.arena.push(Node::Object {
                class: func,
                state: None,
                items: Vec::new(),
                list: Vec::new(),
            }));
        };
        match (&*module, &*name) {
            ("collections", "OrderedDict") => {
                let mut pairs = Vec::new();
                if let Some(items) = args_v.first().and_then(|v| self.tuple_items(v)) {
                    for it in items {
                        if let Some([k, v]) = self.tuple_items(it) {
                            pairs.push((k.clone(), v.clone()));
                        }
                    }
                }
                Ok(self.arena.push(Node::Dict(pairs)))
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let t = self.rebuild_tensor(&args_v)?;
                Ok(self.arena.push(Node::Tensor(t)))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => self.arg(&args_v, 0, &name),
            ("torch._tensor", "_rebuild_from_type_v2")
            | ("torch._utils", "_rebuild_from_type_v2") => {
                let f = self.arg(&args_v, 0, &name)?;
                let inner = self.arg(&args_v, 2, &name)?;
                self.reduce(f, inner, depth + 1)
            }
            ("torch.jit._pickle", n) if n == "restore_type_tag" || n.starts_with("build_") => {
                self.arg(&args_v, 0, &name)
            }
            (m, n) if m.starts_with("torch") && n.starts_with("_rebuild") => Err(
                ImportError::Unsupported(format!("tensor kind {m}.{n} (quantized, sparse, ...)")),
            ),
            _ => Ok(self.arena.push(Node::Object {
                class: func,
                state: None,
                items: Vec::new(),
                list: Vec::new(),
            })),
        }
    }

    fn usize_of(&self, v: &Value, what: &str) -> Result<usize, ImportError> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| self.e(format!("{what} is negative"))),
            _ => Err(self.e(format!("{what} is not an integer"))),
        }
    }

    fn usizes(&self, v: &Value, what: &str) -> Result<Vec<usize>, ImportError> {
        let Some(items) = self.tuple_items(v) else {
            return Err(self.e(format!("{what} is not a tuple")));
        };
        if items.len() > MAX_DIMS {
            return Err(self.e(format!("{what} has {} dimensions", items.len())));
        }
        items.iter().map(|x| self.usize_of(x, what)).collect()
    }

    fn rebuild_tensor(&self, args: &[Value]) -> Result<TensorRef, ImportError> {
        let storage = match args.first().and_then(|v| self.arena.get(v)) {
            Some(Node::Storage(s)) => s.clone(),
            _ => return Err(self.e("tensor rebuild's first argument is not a storage")),
        };
        let offset = self.usize_of(&self.arg(args, 1, "tensor")?, "storage offset")?;
        let size = self.usizes(&self.arg(args, 2, "tensor")?, "size")?;
        let stride = self.usizes(&self.arg(args, 3, "tensor")?, "stride")?;
        if size.len() != stride.len() {
            return Err(self.e(format!("size {size:?} and stride {stride:?} differ in length")));
        }
        Ok(TensorRef { storage, offset, size, stride })
    }

    fn persistent_load(&mut self, pid: &Value) -> Result<Value, ImportError> {
        let Some(t) = self.tuple_items(pid).map(<[Value]>::to_vec) else {
            return Err(self.e("persistent id is not a tuple"));
        };
        match t.first() {
            Some(Value::Str(s)) if &**s == "storage" => {}
            _ => return Err(self.e("persistent id is not a ('storage', ...) tuple")),
        }
        let Some((_, type_name)) = t.get(1).and_then(|v| self.global_name(v)) else {
            return Err(self.e("storage type is not a class"));
        };
        let dtype = TorchDType::from_storage(&type_name)
            .ok_or_else(|| ImportError::Unsupported(format!("storage type {type_name}")))?;
        let key = match t.get(2) {
            Some(Value::Str(s)) => s.to_string(),
            Some(Value::Int(i)) => i.to_string(),
            _ => return Err(self.e("storage key is not a string")),
        };
        let numel = self.usize_of(&self.arg(&t, 4, "storage")?, "storage size")?;
        let (offset, numel) = match t.get(5) {
            None | Some(Value::None) => (0, numel),
            Some(v) => {
                let view = self.tuple_items(v).map(<[Value]>::to_vec).unwrap_or_default();
                let off = self.usize_of(&self.arg(&view, 1, "storage view")?, "view offset")?;
                let n = self.usize_of(&self.arg(&view, 2, "storage view")?, "view size")?;
                (off, n)
            }
        };
        Ok(self.arena.push(Node::Storage(StorageRef { key, dtype, offset, numel })))
    }
}

/// Decodes a little-endian two's complement integer (`LONG1`/`LONG4`).
fn long(bytes: &[u8]) -> Value {
    if bytes.len() <= 8 {
        let neg = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        for (d, s) in buf.iter_mut().zip(bytes) {
            *d = *s;
        }
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(Rc::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<(Value, Arena), ImportError> {
        let mut a = Arena::default();
        let (v, _) = unpickle(bytes, 0, &mut a)?;
        Ok((v, a))
    }

    #[test]
    fn small_ints_and_longs() {
        // pickle.dumps(-2, 2) and pickle.dumps(2**70, 2)
        let (v, _) = run(b"\x80\x02J\xfe\xff\xff\xff.").ok().unwrap_or_default_none();
        assert!(matches!(v, Value::Int(-2)));
        let (v, _) = run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40.")
            .ok()
            .unwrap_or_default_none();
        assert!(matches!(v, Value::BigInt(ref b) if b.len() == 9));
        assert!(matches!(long(&[0xff]), Value::Int(-1)));
        assert!(matches!(long(&[]), Value::Int(0)));
    }

    #[test]
    fn memo_shares_mutated_list() {
        // x = []; pickle.dumps([x, x]) after appending 1 to x via the memo:
        // PROTO 2, EMPTY_LIST, BINPUT 0, MARK, EMPTY_LIST, BINPUT 1, K 1, APPEND,
        // BINGET 1, APPENDS, STOP
        let (v, a) = run(b"\x80\x02]q\x00(]q\x01K\x01ah\x01e.").ok().unwrap_or_default_none();
        let Some(Node::List(items)) = a.get(&v) else { unreachable!("not a list") };
        assert_eq!(items.len(), 2);
        for it in items {
            assert!(matches!(a.get(it), Some(Node::List(l)) if l.len() == 1));
        }
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(run(b"\x80\x02"), Err(ImportError::Pickle { .. })));
        assert!(matches!(run(b"\x80\x02X\xff\x00\x00\x00ab."), Err(ImportError::Pickle { .. })));
        assert!(matches!(run(b"\x80\x02h\x05."), Err(ImportError::Pickle { .. })));
        assert!(matches!(run(b"\x80\x02a."), Err(ImportError::Pickle { .. })));
        assert!(matches!(run(b"\x80\x02(."), Err(ImportError::Pickle { .. })));
        assert!(matches!(run(b"S'x'\n."), Err(ImportError::Pickle { .. })));
    }

    trait OrNone {
        fn unwrap_or_default_none(self) -> (Value, Arena);
    }
    impl OrNone for Option<(Value, Arena)> {
        fn unwrap_or_default_none(self) -> (Value, Arena) {
            self.unwrap_or((Value::None, Arena::default()))
        }
    }
}
