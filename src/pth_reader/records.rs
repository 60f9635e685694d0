//! The tensors of an unpickled `torch.save` state dict, as records: which storage, dtype,
//! offset, size and stride, checked for consistency in checked arithmetic before any data is
//! read. Follows `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`
//! and the wrappers around it (`_rebuild_parameter`, `_rebuild_from_type_v2`); the storage is
//! the persistent id `('storage', torch.<Type>Storage, key, location, numel)`.

use candle_core::DType;

use super::pickle::Value;

/// Most dimensions a tensor may have.
const MAX_RANK: usize = 16;

/// One tensor of a state dict, before its data is read.
#[derive(Debug, Clone)]
pub(crate) struct TensorRecord {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    /// The storage's key: its data is the archive entry `<prefix>/data/<key>`.
    pub(crate) storage: String,
    /// Elements the storage holds, as declared.
    pub(crate) storage_len: usize,
    /// In elements.
    pub(crate) offset: usize,
    pub(crate) size: Vec<usize>,
    pub(crate) stride: Vec<usize>,
    /// Elements of the tensor (the product of `size`).
    pub(crate) numel: usize,
    /// One past the highest storage element the tensor reads (`offset` when it is empty).
    pub(crate) end: usize,
}

impl TensorRecord {
    /// Whether the tensor is the storage's elements `offset..offset + numel` in row-major
    /// order, so that its bytes can be used as they are.
    pub(crate) fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.size.iter().zip(&self.stride).rev() {
            if d > 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }
}

/// The storage class names `torch.save` writes, with their dtypes.
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" => DType::U8,
        _ => return None,
    })
}

/// The dtype of a storage class global (`torch.FloatStorage`, ...).
pub(crate) fn storage_class_dtype(class: &Value) -> Option<DType> {
    match class {
        Value::Global(g) if g.0 == "torch" => storage_dtype(&g.1),
        _ => None,
    }
}

/// A storage's key as the file names its data: a plain name (no path separators).
pub(crate) fn storage_key(key: &Value) -> Result<String, String> {
    let key = match key {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}", other.describe())),
    };
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(format!("storage key {key:?} is not a plain name"));
    }
    Ok(key)
}

/// Whether `value` is a call of one of torch's tensor-rebuilding functions: such an entry of
/// a state dict is a tensor, and a malformed one is an error rather than skipped.
fn is_tensor_call(value: &Value) -> bool {
    let Some((callable, _)) = value.as_call() else {
        return false;
    };
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._tensor", "_rebuild_from_type_v2"),
    ]
    .iter()
    .any(|(m, n)| callable.is_global(m, n))
}

/// The tensor entries of a dict, as records; entries that are not tensors (a `_metadata`
/// dict, numbers) are left out. A malformed tensor entry is an error naming it.
pub(crate) fn tensor_records(dict: &[(Value, Value)]) -> Result<Vec<TensorRecord>, String> {
    let mut records = Vec::new();
    for (key, value) in dict {
        if !is_tensor_call(value) {
            continue;
        }
        let Some(name) = key.as_str() else {
            return Err(format!(
                "a tensor is stored under {}, expected a string name",
                key.describe()
            ));
        };
        let record = record(name, value).map_err(|e| format!("tensor `{name}`: {e}"))?;
        records.push(record);
    }
    Ok(records)
}

/// How many entries of `dict` are tensors.
pub(crate) fn count_tensors(dict: &[(Value, Value)]) -> usize {
    dict.iter().filter(|(_, v)| is_tensor_call(v)).count()
}

/// Unwraps the rebuild calls down to `_rebuild_tensor_v2`'s arguments and reads them.
fn record(name: &str, value: &Value) -> Result<TensorRecord, String> {
    let mut value = value;
    // Each wrapper is one level; a tensor is at most two deep.
    for _ in 0..4 {
        let (callable, args) = value.as_call().ok_or("is not a tensor")?;
        let args = args
            .as_seq()
            .ok_or_else(|| format!("has arguments {}, expected a tuple", args.describe()))?;
        let arg = |i: usize| {
            args.get(i).ok_or_else(|| {
                format!(
                    "{} has {} arguments, expected at least {}",
                    callable.describe(),
                    args.len(),
                    i + 1
                )
            })
        };
        if callable.is_global("torch._utils", "_rebuild_tensor_v2")
            || callable.is_global("torch._utils", "_rebuild_tensor")
        {
            return tensor_v2(name, arg(0)?, arg(1)?, arg(2)?, arg(3)?);
        }
        if callable.is_global("torch._tensor", "_rebuild_from_type_v2") {
            // (func, type, args, state): func(*args).
            let inner = arg(2)?;
            return match arg(0)? {
                f if f.is_global("torch._utils", "_rebuild_tensor_v2") => {
                    let a = inner
                        .as_seq()
                        .ok_or("_rebuild_from_type_v2 args not a tuple")?;
                    if a.len() < 4 {
                        return Err(format!(
                            "_rebuild_tensor_v2 has {} arguments, expected at least 4",
                            a.len()
                        ));
                    }
                    tensor_v2(name, &a[0], &a[1], &a[2], &a[3])
                }
                other => Err(format!(
                    "is rebuilt by {}, expected torch._utils._rebuild_tensor_v2",
                    other.describe()
                )),
            };
        }
        // _rebuild_parameter(data, requires_grad, hooks[, state]): the data is a tensor.
        value = arg(0)?;
    }
    Err("nests tensor wrappers too deep".into())
}

/// A non-negative integer argument.
fn count(value: &Value, what: &str) -> Result<usize, String> {
    value
        .as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            format!(
                "{what} is {}, expected a non-negative integer",
                value.describe()
            )
        })
}

fn counts(value: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = value.as_seq().ok_or_else(|| {
        format!(
            "{what} is {}, expected a tuple of integers",
            value.describe()
        )
    })?;
    if items.len() > MAX_RANK {
        return Err(format!(
            "{what} has {} dimensions, at most {MAX_RANK} are read",
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| count(v, &format!("{what}[{i}]")))
        .collect()
}

fn tensor_v2(
    name: &str,
    storage: &Value,
    offset: &Value,
    size: &Value,
    stride: &Value,
) -> Result<TensorRecord, String> {
    let id = storage
        .as_persistent_id()
        .and_then(Value::as_seq)
        .ok_or_else(|| {
            format!(
                "storage is {}, expected a persistent id ('storage', type, key, location, numel)",
                storage.describe()
            )
        })?;
    if id.len() < 5 || id[0].as_str() != Some("storage") {
        return Err("storage id is not ('storage', type, key, location, numel)".into());
    }
    let Value::Global(class) = &id[1] else {
        return Err(format!(
            "storage type is {}, expected a torch storage class",
            id[1].describe()
        ));
    };
    let dtype = storage_class_dtype(&id[1])
        .ok_or_else(|| format!("storage type {}.{} is not supported", class.0, class.1))?;
    let key = storage_key(&id[2])?;
    let storage_len = count(&id[4], "the storage's element count")?;
    let offset = count(offset, "storage_offset")?;
    let size = counts(size, "size")?;
    let stride = counts(stride, "stride")?;
    if size.len() != stride.len() {
        return Err(format!(
            "size {size:?} has {} dimensions but stride {stride:?} has {}",
            size.len(),
            stride.len()
        ));
    }
    crate::model_file::check_shape(&size)?;
    let numel = size
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("size {size:?} overflows"))?;
    // The highest element read: offset + Σ (size_i - 1) · stride_i.
    let end = if numel == 0 {
        Some(offset)
    } else {
        size.iter()
            .zip(&stride)
            .try_fold(offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .and_then(|last| last.checked_add(1))
    };
    let end = end.filter(|&e| e <= storage_len).ok_or_else(|| {
        format!(
            "size {size:?}, stride {stride:?} and offset {offset} reach beyond its storage of \
             {storage_len} elements"
        )
    })?;
    if numel > storage_len {
        return Err(format!(
            "is a view of {numel} elements over a storage of {storage_len} (overlapping strides \
             {stride:?}): re-save it with .contiguous()"
        ));
    }
    Ok(TensorRecord {
        name: name.to_string(),
        dtype,
        storage: key,
        storage_len,
        offset,
        size,
        stride,
        numel,
        end,
    })
}
