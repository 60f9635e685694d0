//! Recognition of basicsr's `RRDBNet` (`basicsr/archs/rrdbnet_arch.py`, ESRGAN and the
//! Real-ESRGAN x4plus family) in an ncnn graph, naming its tensors as PyTorch does.

use super::convert::{Graph, Reason};
use crate::gan::StateDict;

/// Layer types an RRDBNet export may contain: `Reshape`/`Permute` are the pixel-unshuffle of
/// the x2/x1 models, `ReLU` an unfused leaky ReLU.
const RRDB_KINDS: &[&str] = &[
    "Input",
    "Split",
    "Concat",
    "Eltwise",
    "BinaryOp",
    "Interp",
    "Convolution",
    "ReLU",
    "Reshape",
    "Permute",
];

impl Graph<'_> {
    /// RRDBNet: conv_first, nb x (3 RDBs x 5 convs), conv_body, conv_up per nearest x2 Interp,
    /// conv_hr, conv_last.
    pub(super) fn rrdb(&self) -> std::result::Result<StateDict, Reason> {
        if let Some(odd) = self
            .layers
            .iter()
            .find(|l| !RRDB_KINDS.contains(&l.kind.as_str()))
        {
            return Err(format!("it has a {} layer ({})", odd.kind, odd.name));
        }
        let seq = self.significant();
        let of_kind = |k: &str| {
            seq.iter()
                .copied()
                .filter(|&i| self.layers[i].kind == k)
                .collect::<Vec<_>>()
        };
        let (convs, interps) = (of_kind("Convolution"), of_kind("Interp"));
        let n_up = interps.len();
        if !(2..=3).contains(&n_up) {
            return Err(format!("it has {n_up} Interp layers, expected 2 or 3"));
        }
        let body = convs
            .len()
            .checked_sub(4 + n_up)
            .filter(|&b| b > 0 && b % 15 == 0);
        let Some(nb) = body.map(|b| b / 15) else {
            return Err(format!(
                "it has {} Convolutions, expected conv_first, conv_body, conv_hr, conv_last, \
                 {n_up} conv_up and 15 per RRDB block",
                convs.len()
            ));
        };
        // Per block: 4 Concats in each of 3 RDBs, a scaled residual Eltwise per RDB and one for
        // the block.
        for (kind, per_block) in [("Concat", 12), ("Eltwise", 4)] {
            let n = of_kind(kind).len();
            if n != per_block * nb {
                return Err(format!(
                    "it has {n} {kind} layers, expected {} for {nb} RRDB blocks",
                    per_block * nb
                ));
            }
        }
        if let Some(&first) = convs.first() {
            if let Some(odd) = seq.iter().find(|&&i| {
                i > first && ["Reshape", "Permute"].contains(&self.layers[i].kind.as_str())
            }) {
                return Err(format!(
                    "layer {} comes after conv_first",
                    self.layers[*odd].describe()
                ));
            }
        }
        for (k, &interp) in interps.iter().enumerate() {
            if self.int(interp, 0, 0)? != 1 {
                return Err(format!(
                    "Interp {} is not nearest (param 0 = 1)",
                    self.layers[interp].name
                ));
            }
            let next = seq.iter().find(|&&i| i > interp);
            if next != convs.get(15 * nb + 2 + k) {
                return Err(format!(
                    "Interp {} is not followed by conv_up{}",
                    self.layers[interp].name,
                    k + 1
                ));
            }
        }
        for (j, &conv) in convs[1..=15 * nb].iter().enumerate() {
            let activated = self.int(conv, 9, 0)? != 0
                || self.layers.get(conv + 1).is_some_and(|l| l.kind == "ReLU");
            if activated != (j % 5 != 4) {
                return Err(format!(
                    "Convolution {} is conv{} of an RDB but {} a leaky ReLU",
                    self.layers[conv].name,
                    j % 5 + 1,
                    if activated { "has" } else { "lacks" }
                ));
            }
        }
        let mut names = vec!["conv_first".to_string()];
        for b in 0..nb {
            for r in 1..=3 {
                names.extend((1..=5).map(|c| format!("body.{b}.rdb{r}.conv{c}")));
            }
        }
        names.push("conv_body".into());
        names.extend((1..=n_up).map(|k| format!("conv_up{k}")));
        names.extend(["conv_hr".to_string(), "conv_last".to_string()]);
        let mut dict = StateDict::new();
        for (name, &conv) in names.iter().zip(&convs) {
            self.put_conv(&mut dict, conv, name)?;
        }
        Ok(dict)
    }
}
