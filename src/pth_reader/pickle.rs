//! A pickle interpreter that builds values and never runs code: the opcodes of Python's
//! `pickle` protocols 2 to 4 that `torch.save` writes for a state dict (`pickletools`'
//! names), with classes kept as names (`GLOBAL`), calls kept as unevaluated records (`REDUCE`,
//! `NEWOBJ`, `BUILD`) and storages as their persistent ids (`BINPERSID`), as PyTorch's own
//! `weights_only` unpickler restricts them.
//!
//! Hardened against hostile input: values are shared (`Rc`), so the memo and the stack never
//! copy one (no exponential "billion laughs" growth); a budget proportional to the input's
//! length bounds every allocation and copy; nesting is capped, so neither building nor
//! dropping a value can overflow the stack; every length is checked against the bytes left.

use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of containers accepted: a state dict is 4 or 5 deep.
const MAX_DEPTH: u32 = 100;

/// A pickled value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    /// A class or function by name (`module`, `name`): never imported or called.
    Global(Rc<(String, String)>),
    /// Tuples, lists, dicts, calls, persistent ids.
    Obj(Rc<Obj>),
}

/// A compound value with its nesting depth.
#[derive(Debug, Clone)]
pub(crate) struct Obj {
    depth: u32,
    pub(crate) kind: ObjKind,
}

#[derive(Debug, Clone)]
pub(crate) enum ObjKind {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `callable(*args)`, not evaluated (`REDUCE`, `NEWOBJ`).
    Call {
        callable: Value,
        args: Value,
    },
    /// `obj.__setstate__(state)`, not evaluated (`BUILD` on anything but a dict); the state
    /// is never read, so it is not kept.
    Build(Value),
    /// A reference to data outside the pickle (`BINPERSID`): a tensor storage.
    PersistentId(Value),
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Obj(o) => o.depth,
            _ => 0,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub(crate) fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Obj(o) => match &o.kind {
                ObjKind::Tuple(items) | ObjKind::List(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// The entries of a dict.
    pub(crate) fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Obj(o) => match &o.kind {
                ObjKind::Dict(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether this is the global `module.name`.
    pub(crate) fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global(g) if g.0 == module && g.1 == name)
    }

    /// `(callable, args)` of an unevaluated call.
    pub(crate) fn as_call(&self) -> Option<(&Value, &Value)> {
        match self {
            Value::Obj(o) => match &o.kind {
                ObjKind::Call { callable, args } => Some((callable, args)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The id of a persistent reference.
    pub(crate) fn as_persistent_id(&self) -> Option<&Value> {
        match self {
            Value::Obj(o) => match &o.kind {
                ObjKind::PersistentId(id) => Some(id),
                _ => None,
            },
            _ => None,
        }
    }

    /// Calls `visit` on this value and every value inside it, depth first.
    pub(crate) fn walk(&self, visit: &mut dyn FnMut(&Value)) {
        visit(self);
        let Value::Obj(o) = self else {
            return;
        };
        match &o.kind {
            ObjKind::Tuple(items) | ObjKind::List(items) => {
                items.iter().for_each(|v| v.walk(visit));
            }
            ObjKind::Dict(items) => items.iter().for_each(|(k, v)| {
                k.walk(visit);
                v.walk(visit);
            }),
            ObjKind::Call { callable, args } => {
                callable.walk(visit);
                args.walk(visit);
            }
            ObjKind::Build(v) | ObjKind::PersistentId(v) => v.walk(visit),
        }
    }

    /// A short description for messages: the type, and the value of scalars.
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str {:?}", s.chars().take(40).collect::<String>()),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Obj(o) => match &o.kind {
                ObjKind::Tuple(v) => format!("a tuple of {}", v.len()),
                ObjKind::List(v) => format!("a list of {}", v.len()),
                ObjKind::Dict(v) => format!("a dict of {}", v.len()),
                ObjKind::Call { callable, .. } => format!("a call of {}", callable.describe()),
                ObjKind::Build(obj) => format!("{} with state", obj.describe()),
                ObjKind::PersistentId(_) => "a persistent id".into(),
            },
        }
    }
}

/// The interpreter's state over one pickle.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each `MARK`, innermost last.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Values and copies it may still make; proportional to the input's length.
    budget: usize,
}

/// Interprets `data` (a whole pickle) and returns the value it builds; the error says what is
/// malformed and at which byte.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, String> {
    unpickle_prefix(data).map(|(value, _)| value)
}

/// Interprets the pickle at the start of `data` and returns its value and its length in bytes
/// (legacy `torch.save` files are several pickles in a row).
pub(crate) fn unpickle_prefix(data: &[u8]) -> Result<(Value, usize), String> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        // Real state dicts make about one value per 10 bytes; copies on shared containers
        // (memo snapshots being mutated) are what the slack is for.
        budget: data.len().saturating_mul(8).saturating_add(4096),
    };
    loop {
        let at = m.pos;
        let op = m.u8()?;
        match m.step(op) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("pickle opcode 0x{op:02x} at byte {at}: {e}")),
        }
    }
    let value = m.pop()?;
    Ok((value, m.pos))
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes but the pickle ends {} bytes later",
                    self.data.len() - self.pos
                )
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a GLOBAL name has no end of line")?;
        let line = self.take(n + 1)?;
        let line = line[..n].strip_suffix(b"\r").unwrap_or(&line[..n]);
        String::from_utf8(line.to_vec()).map_err(|_| "a GLOBAL name is not UTF-8".into())
    }

    fn string(&mut self, n: u64) -> Result<Value, String> {
        let n = usize::try_from(n).map_err(|_| "string length overflows".to_string())?;
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_string())?;
        self.spend(1)?;
        Ok(Value::Str(s.into()))
    }

    fn spend(&mut self, n: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or("the pickle builds more values than its size accounts for (a pickle bomb?)")?;
        Ok(())
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pops an empty stack".into());
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("needs a value on an empty stack".into());
        }
        Ok(self.stack.last_mut().expect("checked non-empty"))
    }

    /// The values pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("has no MARK to pop to")?;
        Ok(self.stack.split_off(mark))
    }

    /// A new compound value holding `kind`, whose children have depth < `child_depth` + 1.
    fn obj(&mut self, kind: ObjKind, child_depth: u32, items: usize) -> Result<Value, String> {
        self.spend(items.saturating_add(1))?;
        let depth = child_depth + 1;
        if depth > MAX_DEPTH {
            return Err(format!("nests values more than {MAX_DEPTH} deep"));
        }
        Ok(Value::Obj(Rc::new(Obj { depth, kind })))
    }

    fn tuple(&mut self, items: Vec<Value>) -> Result<Value, String> {
        let depth = items.iter().map(Value::depth).max().unwrap_or(0);
        let n = items.len();
        self.obj(ObjKind::Tuple(items), depth, n)
    }

    /// Adds `items` to the list or dict on top of the stack, in place (copied first when the
    /// memo shares it, as a snapshot: the budget pays for the copy).
    fn extend_top(&mut self, items: Vec<Value>, pairs: bool) -> Result<(), String> {
        let added = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
        if added > MAX_DEPTH {
            return Err(format!("nests values more than {MAX_DEPTH} deep"));
        }
        let n = items.len();
        let top = self.top()?;
        let Value::Obj(rc) = top else {
            return Err(format!("adds items to {}", top.describe()));
        };
        let copy = if Rc::strong_count(rc) > 1 {
            match &rc.kind {
                ObjKind::List(v) => v.len(),
                ObjKind::Dict(v) => v.len(),
                _ => 0,
            }
        } else {
            0
        };
        self.spend(n.saturating_add(copy))?;
        let Value::Obj(rc) = self.top()? else {
            unreachable!("checked above")
        };
        let obj = Rc::make_mut(rc);
        obj.depth = obj.depth.max(added);
        match (&mut obj.kind, pairs) {
            (ObjKind::List(list), false) => list.extend(items),
            (ObjKind::Dict(dict), true) => {
                if n % 2 != 0 {
                    return Err("sets a dict item without a value".into());
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.push((k, v));
                }
            }
            (_, false) => return Err("appends to something that is not a list".into()),
            (_, true) => return Err("sets items on something that is not a dict".into()),
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("memo entry {id} was never stored"))?;
        self.spend(1)?;
        self.push(v);
        Ok(())
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.spend(1)?;
        self.memo.insert(id, v);
        Ok(())
    }

    /// Runs one opcode; `true` at `STOP`.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            // PROTO
            0x80 => {
                let version = self.u8()?;
                if version > 5 {
                    return Err(format!("protocol {version} is unknown"));
                }
            }
            // FRAME: a length hint only.
            0x95 => {
                self.le::<8>()?;
            }
            b'.' => return Ok(true),
            b'(' => {
                self.spend(1)?;
                self.marks.push(self.stack.len());
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'K' => {
                let v = self.u8()?;
                self.spend(1)?;
                self.push(Value::Int(v.into()));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.spend(1)?;
                self.push(Value::Int(v.into()));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.spend(1)?;
                self.push(Value::Int(v.into()));
            }
            // LONG1: a little-endian two's complement integer of n bytes.
            0x8a => {
                let n = self.u8()? as usize;
                if n > 8 {
                    return Err(format!("an integer of {n} bytes is too large"));
                }
                let bytes = self.take(n)?;
                let mut v: i64 = 0;
                for (i, &b) in bytes.iter().enumerate() {
                    v |= (b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                self.spend(1)?;
                self.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.le()?);
                self.spend(1)?;
                self.push(Value::Float(v));
            }
            b'X' => {
                let n = u32::from_le_bytes(self.le()?);
                let v = self.string(n.into())?;
                self.push(v);
            }
            0x8c => {
                let n = self.u8()?;
                let v = self.string(n.into())?;
                self.push(v);
            }
            0x8d => {
                let n = u64::from_le_bytes(self.le()?);
                let v = self.string(n)?;
                self.push(v);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.spend(1)?;
                self.push(Value::Global(Rc::new((module, name))));
            }
            // STACK_GLOBAL
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (module.as_str(), name.as_str()) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let g = Value::Global(Rc::new((module.to_string(), name.to_string())));
                self.spend(1)?;
                self.push(g);
            }
            b')' => {
                let v = self.tuple(Vec::new())?;
                self.push(v);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                let v = self.tuple(items)?;
                self.push(v);
            }
            b't' => {
                let items = self.pop_mark()?;
                let v = self.tuple(items)?;
                self.push(v);
            }
            b']' => {
                let v = self.obj(ObjKind::List(Vec::new()), 0, 0)?;
                self.push(v);
            }
            b'l' => {
                let items = self.pop_mark()?;
                let depth = items.iter().map(Value::depth).max().unwrap_or(0);
                let n = items.len();
                let v = self.obj(ObjKind::List(items), depth, n)?;
                self.push(v);
            }
            b'}' => {
                let v = self.obj(ObjKind::Dict(Vec::new()), 0, 0)?;
                self.push(v);
            }
            b'd' => {
                let items = self.pop_mark()?;
                let v = self.obj(ObjKind::Dict(Vec::new()), 0, 0)?;
                self.push(v);
                self.extend_top(items, true)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_top(vec![v], false)?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_top(items, false)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_top(vec![k, v], true)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_top(items, true)?;
            }
            b'q' => {
                let id = self.u8()?;
                self.memo_put(id.into())?;
            }
            b'r' => {
                let id = u32::from_le_bytes(self.le()?);
                self.memo_put(id)?;
            }
            // MEMOIZE: the next free index.
            0x94 => {
                let id = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                self.memo_put(id)?;
            }
            b'h' => {
                let id = self.u8()?;
                self.memo_get(id.into())?;
            }
            b'j' => {
                let id = u32::from_le_bytes(self.le()?);
                self.memo_get(id)?;
            }
            b'Q' => {
                let id = self.pop()?;
                let depth = id.depth();
                let v = self.obj(ObjKind::PersistentId(id), depth, 1)?;
                self.push(v);
            }
            // REDUCE and NEWOBJ: a call, kept unevaluated. `OrderedDict()` is a dict.
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = if callable.is_global("collections", "OrderedDict")
                    || callable.is_global("collections", "defaultdict")
                {
                    self.obj(ObjKind::Dict(Vec::new()), 0, 0)?
                } else {
                    let depth = callable.depth().max(args.depth());
                    self.obj(ObjKind::Call { callable, args }, depth, 2)?
                };
                self.push(v);
            }
            b'b' => {
                let state = self.pop()?;
                let obj = self.pop()?;
                // A dict's state is its attributes (a state dict's `_metadata`), not items.
                let v = if obj.as_dict().is_some() {
                    obj
                } else {
                    drop(state);
                    let depth = obj.depth();
                    self.obj(ObjKind::Build(obj), depth, 1)?
                };
                self.push(v);
            }
            _ => return Err("is not an opcode of the pickles torch.save writes".into()),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_state_dict_shape() {
        // {"a": (1, -2, "x")} as protocol 2 writes it.
        let p = [
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'K', 1, 0x8a, 1, 0xfe, b'X', 1,
            0, 0, 0, b'x', 0x87, b'u', b'.',
        ];
        let v = unpickle(&p).unwrap();
        let dict = v.as_dict().unwrap();
        assert_eq!(dict.len(), 1);
        assert_eq!(dict[0].0.as_str(), Some("a"));
        let t = dict[0].1.as_seq().unwrap();
        assert_eq!(t[0].as_int(), Some(1));
        assert_eq!(t[1].as_int(), Some(-2));
        assert_eq!(t[2].as_str(), Some("x"));
    }

    #[test]
    fn hostile_pickles_fail_cleanly() {
        // A billion laughs: a list memoised, then tuples of two copies of the last, 60 times.
        let mut bomb = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..60 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        // Sharing keeps it small: it is built, and bounded.
        assert!(unpickle(&bomb).is_ok());
        // Deep nesting.
        let mut deep = vec![0x80, 2, b']'];
        deep.extend(std::iter::repeat_n(0x85, 10_000));
        deep.push(b'.');
        assert!(unpickle(&deep).unwrap_err().contains("deep"));
        // A string longer than the data.
        let long = [b'X', 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(unpickle(&long).unwrap_err().contains("ends"));
        // Popping past a mark, an unknown opcode, no STOP.
        assert!(unpickle(&[b'N', b'(', 0x85]).unwrap_err().contains("empty"));
        assert!(unpickle(b"N\xff").unwrap_err().contains("not an opcode"));
        assert!(unpickle(b"N").unwrap_err().contains("ends"));
        // Appending to a list many times while the memo shares it: each copy is paid for.
        let mut quad = vec![b']'];
        for i in 0..20_000u32 {
            quad.push(b'r');
            quad.extend(i.to_le_bytes());
            quad.extend([b'N', b'a']);
        }
        quad.push(b'.');
        assert!(unpickle(&quad).unwrap_err().contains("bomb"));
    }
}
