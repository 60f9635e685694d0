//! JSON-aware mutations: a node of the parsed document (found by its position in a walk of
//! all nodes) is replaced by an awkward value (huge, negative, fractional, non-finite, of the
//! wrong type), removed, or given a sibling; then the document is written back, compact or
//! pretty, and sometimes mutated as bytes too (to reach the syntax errors). Python's bare
//! `NaN` / `Infinity` tokens, which diffusers' configs may hold, are written as such.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

use super::mutate::{apply_all, byte_ops, ByteOp};

/// A string standing for a bare token in the output (replaced after serialising).
const BARE: &str = "\u{1}bare:";

fn bare(token: &str) -> Value {
    Value::String(format!("{BARE}{token}"))
}

/// Values that break assumptions: numbers at and past every range boundary, non-finite
/// tokens, the wrong types, and strings with control characters.
pub fn awkward_value() -> impl Strategy<Value = Value> {
    let numbers = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(3)),
        Just(json!(-0.0)),
        Just(json!(0.5)),
        Just(json!(1e-300)),
        Just(json!(1e9)),
        Just(json!(4e9)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(65536)),
        Just(json!(1_000_000_000u64)),
        Just(json!(4_294_967_296u64)),
        Just(json!(9_007_199_254_740_993u64)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(bare("NaN")),
        Just(bare("Infinity")),
        Just(bare("-Infinity")),
        Just(bare("1e400")),
        any::<i64>().prop_map(|v| json!(v)),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| json!(v)),
    ];
    let others = prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(false)),
        Just(json!("")),
        Just(json!("a")),
        Just(json!("\u{1b}]0;pwned\u{7}\u{1b}[2J\r")),
        Just(json!("../../../etc/passwd")),
        Just(json!("/dev/zero")),
        Just(json!("x".repeat(5000))),
        Just(json!([])),
        Just(json!({})),
        Just(json!([0])),
        Just(json!([1, 2, 3])),
        Just(json!([-1, 0, 1e9])),
        Just(Value::Array(vec![json!(64); 64])),
        Just(json!([[1]])),
        Just(json!({"a": 1})),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    prop_oneof![3 => numbers, 2 => others]
}

/// One JSON-level mutation.
#[derive(Debug, Clone)]
pub enum JsonOp {
    /// Replaces the node at this walk position.
    Replace { node: Index, value: Value },
    /// Removes the node (an object member or an array element).
    Remove { node: Index },
    /// Adds a member (objects: under `key`, or a key the document already uses elsewhere) or
    /// an element (arrays).
    Add {
        node: Index,
        key: Option<String>,
        value: Value,
    },
    /// Copies one node over another.
    Copy { from: Index, to: Index },
}

pub fn json_op() -> impl Strategy<Value = JsonOp> {
    let key = proptest::option::of(prop_oneof!["[a-z_]{1,12}", Just("__proto__".to_string())]);
    prop_oneof![
        5 => (any::<Index>(), awkward_value()).prop_map(|(node, value)| JsonOp::Replace { node, value }),
        2 => any::<Index>().prop_map(|node| JsonOp::Remove { node }),
        1 => (any::<Index>(), key, awkward_value())
            .prop_map(|(node, key, value)| JsonOp::Add { node, key, value }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| JsonOp::Copy { from, to }),
    ]
}

/// JSON pointers of every node, the root first.
fn pointers(value: &Value) -> Vec<String> {
    fn walk(v: &Value, here: String, out: &mut Vec<String>) {
        out.push(here.clone());
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{here}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{here}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Every object key in the document, for adding members under names the reader knows.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Splits a pointer into its parent's pointer and its last key.
fn split(pointer: &str) -> Option<(&str, String)> {
    let at = pointer.rfind('/')?;
    Some((
        &pointer[..at],
        pointer[at + 1..].replace("~1", "/").replace("~0", "~"),
    ))
}

/// Applies `op` to `doc`.
pub fn apply(doc: &mut Value, op: &JsonOp) {
    let ptrs = pointers(doc);
    let pick = |i: &Index| ptrs[i.index(ptrs.len())].clone();
    match op {
        JsonOp::Replace { node, value } => {
            if let Some(slot) = doc.pointer_mut(&pick(node)) {
                *slot = value.clone();
            }
        }
        JsonOp::Remove { node } => {
            let p = pick(node);
            if let Some((parent, key)) = split(&p) {
                match doc.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&key);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = key.parse::<usize>() {
                            if i < items.len() {
                                items.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        JsonOp::Add { node, key, value } => {
            let mut known = Vec::new();
            keys(doc, &mut known);
            let key = key.clone().unwrap_or_else(|| {
                let n = node.index(known.len().max(1));
                known.get(n).cloned().unwrap_or_else(|| "extra".into())
            });
            match doc.pointer_mut(&pick(node)) {
                Some(Value::Object(map)) => {
                    map.insert(key, value.clone());
                }
                Some(Value::Array(items)) => items.push(value.clone()),
                _ => {}
            }
        }
        JsonOp::Copy { from, to } => {
            let value = doc.pointer(&pick(from)).cloned();
            if let (Some(value), Some(slot)) = (value, doc.pointer_mut(&pick(to))) {
                *slot = value;
            }
        }
    }
}

/// Writes `doc` back, with bare tokens unquoted.
pub fn to_text(doc: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(doc)
    } else {
        serde_json::to_string(doc)
    }
    .expect("a JSON value serialises");
    // The marker serialises as "\u0001bare:TOKEN".
    let marker = "\"\\u0001bare:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end]);
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// A mutation plan for one JSON document: JSON ops, layout, and sometimes byte ops after.
#[derive(Debug, Clone)]
pub struct JsonPlan {
    pub ops: Vec<JsonOp>,
    pub pretty: bool,
    pub bytes: Vec<ByteOp>,
}

pub fn json_plan() -> impl Strategy<Value = JsonPlan> {
    (
        vec(json_op(), 1..=4),
        any::<bool>(),
        prop_oneof![4 => Just(Vec::new()), 1 => byte_ops(3)],
    )
        .prop_map(|(ops, pretty, bytes)| JsonPlan { ops, pretty, bytes })
}

/// `seed` (JSON text) mutated by `plan`; a seed that does not parse gets byte ops only.
pub fn mutate_json(seed: &[u8], plan: &JsonPlan) -> Vec<u8> {
    let mut out = match serde_json::from_slice::<Value>(seed) {
        Ok(mut doc) => {
            for op in &plan.ops {
                apply(&mut doc, op);
            }
            to_text(&doc, plan.pretty).into_bytes()
        }
        Err(_) => seed.to_vec(),
    };
    apply_all(&mut out, &plan.bytes, &[]);
    out
}

/// Mutations of one of `seeds` (JSON documents).
pub fn mutated_json(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (any::<Index>(), json_plan())
        .prop_map(move |(seed, plan)| mutate_json(&seeds[seed.index(seeds.len())], &plan))
        .boxed()
}

#[test]
fn bare_tokens_are_unquoted() {
    let doc = json!({"a": bare("NaN"), "b": [bare("-Infinity")]});
    assert_eq!(to_text(&doc, false), r#"{"a":NaN,"b":[-Infinity]}"#);
}
