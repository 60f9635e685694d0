//! Safetensors-aware mutations. The file is read into its tensors (name, dtype, shape, data),
//! which are renamed (to the GAN detector's key names, `conv_upN` with N up to 70 included),
//! reshaped or retyped (with the data resized to fit, up to 4 MiB, so the file stays valid and
//! the damage reaches the model code; or left as is, so the offsets disagree), dropped or
//! duplicated; then written again. Mutations of the written header's JSON (offsets, shapes,
//! dtypes) and of the header length, and raw byte mutations, reach the reader's own checks.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

use super::json::{apply as apply_json, json_op, JsonOp};
use super::mutate::{apply as apply_bytes, byte_op, int_value, write_int, ByteOp, IntValue};

/// Largest data a reshaped tensor is given to fit its new shape.
const MAX_FIT: u64 = 4 << 20;

/// One tensor of a file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// The tensors and metadata of a safetensors file; `None` when it does not parse.
pub fn read(bytes: &[u8]) -> Option<(Vec<Entry>, Option<Value>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: Map<String, Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data = &bytes[8 + n..];
    let mut metadata = None;
    let mut entries = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            metadata = Some(v);
            continue;
        }
        let offsets = v.get("data_offsets")?.as_array()?;
        let (a, b) = (
            offsets.first()?.as_u64()? as usize,
            offsets.get(1)?.as_u64()? as usize,
        );
        entries.push((
            a,
            Entry {
                name,
                dtype: v.get("dtype")?.as_str()?.to_string(),
                shape: v
                    .get("shape")?
                    .as_array()?
                    .iter()
                    .map(|d| d.as_u64())
                    .collect::<Option<_>>()?,
                data: data.get(a..b)?.to_vec(),
            },
        ));
    }
    // In file order, as writers lay them out.
    entries.sort_by_key(|(a, _)| *a);
    Some((entries.into_iter().map(|(_, e)| e).collect(), metadata))
}

/// The header JSON of `entries` laid out one after the other.
fn header(entries: &[Entry], metadata: &Option<Value>) -> Value {
    let mut map = Map::new();
    if let Some(m) = metadata {
        map.insert("__metadata__".into(), m.clone());
    }
    let mut offset = 0;
    for e in entries {
        map.insert(
            e.name.clone(),
            json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.data.len()]}),
        );
        offset += e.data.len();
    }
    Value::Object(map)
}

/// A file of `header` (padded to 8 bytes as writers do) and `entries`' data.
fn write(header: &Value, entries: &[Entry]) -> Vec<u8> {
    let mut text = serde_json::to_string(header)
        .expect("header serialises")
        .into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    for e in entries {
        out.extend(&e.data);
    }
    out
}

fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// `data` resized to `len` bytes by repeating it (zeros when it is empty).
fn fit(data: &[u8], len: usize) -> Vec<u8> {
    if data.is_empty() {
        return vec![0; len];
    }
    data.iter().copied().cycle().take(len).collect()
}

/// Resizes `e`'s data to its shape and dtype when `fit` and the size is at most [`MAX_FIT`].
fn refit(e: &mut Entry, fit: bool) {
    let bytes = e
        .shape
        .iter()
        .try_fold(dtype_size(&e.dtype), |acc, &d| acc.checked_mul(d));
    if let Some(len) = bytes.filter(|&b| fit && b <= MAX_FIT) {
        e.data = self::fit(&e.data, len as usize);
    }
}

/// The key names the GAN detector and key normaliser look for.
fn gan_name() -> impl Strategy<Value = String> {
    let suffix = prop_oneof![Just(".weight"), Just(".bias")];
    prop_oneof![
        (1usize..70, suffix.clone()).prop_map(|(n, s)| format!("conv_up{n}{s}")),
        (0usize..40, suffix.clone()).prop_map(|(n, s)| format!("body.{n}{s}")),
        (0usize..3, 1usize..4, 1usize..6, suffix)
            .prop_map(|(b, r, c, s)| format!("body.{b}.rdb{r}.conv{c}{s}")),
        Just("conv_first.weight".to_string()),
        Just("conv_body.weight".to_string()),
        Just("conv_hr.weight".to_string()),
        Just("conv_last.weight".to_string()),
        Just("params_ema.conv_first.weight".to_string()),
        Just("module.body.0.weight".to_string()),
        Just("model.0.weight".to_string()),
        Just(String::new()),
        Just("__metadata__".to_string()),
        "[a-z_.0-9]{1,20}",
    ]
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..9,
        2 => Just(64u64),
        1 => int_value().prop_map(IntValue::get),
    ]
}

fn dtype() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("F32"),
        Just("F16"),
        Just("BF16"),
        Just("F64"),
        Just("I64"),
        Just("I32"),
        Just("U8"),
        Just("BOOL"),
        Just("F8_E4M3"),
        Just("U64"),
        Just("X"),
    ]
    .prop_map(str::to_string)
}

/// One safetensors mutation.
#[derive(Debug, Clone)]
pub enum StOp {
    /// Changes one dimension of a tensor's shape (the others kept).
    SetDim {
        tensor: Index,
        axis: Index,
        value: u64,
        fit: bool,
    },
    Reshape {
        tensor: Index,
        shape: Vec<u64>,
        fit: bool,
    },
    Retype {
        tensor: Index,
        dtype: String,
        fit: bool,
    },
    Rename {
        tensor: Index,
        name: String,
    },
    /// Adds a copy of a tensor under another name.
    Clone {
        tensor: Index,
        name: String,
    },
    Drop {
        tensor: Index,
    },
    /// Adds copies of a tensor as `conv_up1` .. `conv_up{count}` (weight or bias), the layer
    /// series whose length gives an RRDBNet's scale.
    Series {
        tensor: Index,
        count: usize,
        bias: bool,
    },
    /// A JSON mutation of the header as written (offsets, shapes, dtypes).
    Header(JsonOp),
    /// Writes a wrong header length.
    HeaderLen(IntValue),
    Raw(ByteOp),
}

pub fn st_op() -> impl Strategy<Value = StOp> {
    prop_oneof![
        6 => (any::<Index>(), any::<Index>(), dim(), prop::bool::weighted(0.8))
            .prop_map(|(tensor, axis, value, fit)| StOp::SetDim { tensor, axis, value, fit }),
        3 => (any::<Index>(), vec(dim(), 0..5), any::<bool>())
            .prop_map(|(tensor, shape, fit)| StOp::Reshape { tensor, shape, fit }),
        1 => (any::<Index>(), dtype(), any::<bool>())
            .prop_map(|(tensor, dtype, fit)| StOp::Retype { tensor, dtype, fit }),
        4 => (any::<Index>(), gan_name()).prop_map(|(tensor, name)| StOp::Rename { tensor, name }),
        4 => (any::<Index>(), gan_name()).prop_map(|(tensor, name)| StOp::Clone { tensor, name }),
        1 => any::<Index>().prop_map(|tensor| StOp::Drop { tensor }),
        1 => (any::<Index>(), 1usize..70, any::<bool>())
            .prop_map(|(tensor, count, bias)| StOp::Series { tensor, count, bias }),
        2 => json_op().prop_map(StOp::Header),
        1 => int_value().prop_map(StOp::HeaderLen),
        1 => byte_op().prop_map(StOp::Raw),
    ]
}

/// `file` mutated by `ops` (raw byte ops only where it does not parse).
pub fn mutate(file: &[u8], ops: &[StOp], seeds: &[Vec<u8>]) -> Vec<u8> {
    let Some((mut entries, metadata)) = read(file) else {
        let mut bytes = file.to_vec();
        for op in ops {
            if let StOp::Raw(op) = op {
                apply_bytes(&mut bytes, op, seeds);
            }
        }
        return bytes;
    };
    let mut json_ops = Vec::new();
    let mut late = Vec::new();
    for op in ops {
        let n = entries.len().max(1);
        let slot = |i: &Index| i.index(n);
        match op {
            StOp::SetDim {
                tensor,
                axis,
                value,
                fit: f,
            } => {
                if let Some(e) = entries.get_mut(slot(tensor)) {
                    if !e.shape.is_empty() {
                        let axis = axis.index(e.shape.len());
                        e.shape[axis] = *value;
                        refit(e, *f);
                    }
                }
            }
            StOp::Reshape {
                tensor,
                shape,
                fit: f,
            } => {
                if let Some(e) = entries.get_mut(slot(tensor)) {
                    e.shape = shape.clone();
                    refit(e, *f);
                }
            }
            StOp::Retype {
                tensor,
                dtype,
                fit: f,
            } => {
                if let Some(e) = entries.get_mut(slot(tensor)) {
                    e.dtype = dtype.clone();
                    refit(e, *f);
                }
            }
            StOp::Rename { tensor, name } => {
                if let Some(e) = entries.get_mut(slot(tensor)) {
                    e.name = name.clone();
                }
            }
            StOp::Clone { tensor, name } => {
                if let Some(e) = entries.get(slot(tensor)).cloned() {
                    entries.push(Entry {
                        name: name.clone(),
                        ..e
                    });
                }
            }
            StOp::Drop { tensor } => {
                if !entries.is_empty() {
                    entries.remove(slot(tensor));
                }
            }
            StOp::Series {
                tensor,
                count,
                bias,
            } => {
                if let Some(e) = entries.get(slot(tensor)).cloned() {
                    let suffix = if *bias { "bias" } else { "weight" };
                    for k in 1..=*count {
                        let name = format!("conv_up{k}.{suffix}");
                        entries.retain(|x| x.name != name);
                        entries.push(Entry { name, ..e.clone() });
                    }
                }
            }
            StOp::Header(op) => json_ops.push(op),
            StOp::HeaderLen(_) | StOp::Raw(_) => late.push(op),
        }
    }
    let mut doc = header(&entries, &metadata);
    for op in json_ops {
        apply_json(&mut doc, op);
    }
    let mut out = write(&doc, &entries);
    for op in late {
        match op {
            StOp::HeaderLen(v) => write_int(&mut out, 0, 8, false, v.get()),
            StOp::Raw(op) => apply_bytes(&mut out, op, seeds),
            _ => {}
        }
    }
    out
}

/// Mutations of one of `seeds` (safetensors files).
pub fn mutated_safetensors(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (any::<Index>(), vec(st_op(), 1..=3))
        .prop_map(move |(seed, ops)| mutate(&seeds[seed.index(seeds.len())], &ops, &seeds))
        .boxed()
}

#[test]
fn fixtures_read_and_rewrite() {
    let file = std::fs::read("tests/fixtures/gan/srvgg_x2_relu.safetensors").unwrap();
    let (entries, metadata) = read(&file).expect("a safetensors file");
    assert!(!entries.is_empty());
    let again = write(&header(&entries, &metadata), &entries);
    let (back, _) = read(&again).unwrap();
    assert_eq!(back.len(), entries.len());
    assert!(back
        .iter()
        .zip(&entries)
        .all(|(a, b)| a.data == b.data && a.shape == b.shape));
}
