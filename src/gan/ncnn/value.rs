//! Values of ncnn `.param` layer parameters, read by the rules of ncnn's `ParamDict`: a value
//! is a float when it looks like one (`.`, `e`, `inf`, `nan`), an integer otherwise; a key
//! `-233xx` holds an array for param id `xx`, written `count,v1,v2,...`.

use super::clip;

/// ncnn stores params in a fixed table of this many slots (`NCNN_MAX_PARAM_COUNT`); larger ids
/// are rejected by ncnn too.
const MAX_PARAM_ID: i64 = 32;
/// Keys at or below this mark arrays: key `-23300 - id`.
const ARRAY_KEY: i64 = -23300;

/// One `id=value` parameter of a layer.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i32),
    Float(f32),
    IntArray(Vec<i32>),
    FloatArray(Vec<f32>),
}

/// One `id=value` token.
pub fn parse_param(token: &str) -> std::result::Result<(u32, ParamValue), String> {
    let (key, value) = token.split_once('=').ok_or("is not of the form id=value")?;
    let key: i64 = key
        .parse()
        .map_err(|_| "has a non-numeric id".to_string())?;
    let is_array = key <= ARRAY_KEY;
    let id = if is_array { ARRAY_KEY - key } else { key };
    if !(0..MAX_PARAM_ID).contains(&id) {
        return Err(format!(
            "has id {id}, expected 0..{MAX_PARAM_ID} (or -23300-id for arrays)"
        ));
    }
    let value = if is_array {
        parse_array(value)?
    } else {
        parse_scalar(value)?
    };
    Ok((id as u32, value))
}

/// `count,v1,...,vcount`; the array is float when any item is.
fn parse_array(value: &str) -> std::result::Result<ParamValue, String> {
    let mut items = value.split(',');
    let declared = items.next().unwrap_or("");
    let declared: usize = declared
        .parse()
        .map_err(|_| format!("has array count `{}`, expected an integer", clip(declared)))?;
    let items: Vec<&str> = items.collect();
    if items.len() != declared {
        return Err(format!(
            "declares {declared} array items but has {}",
            items.len()
        ));
    }
    if items.iter().any(|v| looks_float(v)) {
        let floats = items
            .iter()
            .map(|v| parse_float(v))
            .collect::<std::result::Result<_, _>>()?;
        Ok(ParamValue::FloatArray(floats))
    } else {
        let ints = items
            .iter()
            .map(|v| parse_int(v))
            .collect::<std::result::Result<_, _>>()?;
        Ok(ParamValue::IntArray(ints))
    }
}

fn parse_scalar(value: &str) -> std::result::Result<ParamValue, String> {
    if looks_float(value) {
        parse_float(value).map(ParamValue::Float)
    } else {
        parse_int(value).map(ParamValue::Int)
    }
}

/// ncnn's rule (`vstr_is_float`): a decimal point or exponent makes a float.
fn looks_float(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.contains(['.', 'e']) || lower.contains("inf") || lower.contains("nan")
}

fn parse_float(value: &str) -> std::result::Result<f32, String> {
    value
        .parse()
        .map_err(|_| format!("has value `{}`, expected a float", clip(value)))
}

fn parse_int(value: &str) -> std::result::Result<i32, String> {
    value
        .parse()
        .map_err(|_| format!("has value `{}`, expected a 32-bit integer", clip(value)))
}
