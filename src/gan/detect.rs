//! Which architecture a state dict holds, read from its tensor names and shapes alone (no
//! user flag), the way spandrel detects models: the entries of
//! [`super::arch::registry::REGISTRY`] are asked in order and the first that claims the dict
//! reads its hyper-parameters. Keys are first brought to the registry's names by
//! [`super::keys::normalise_keys`].

use std::path::Path;

use super::arch::{ArchSpec, GanArch, REGISTRY};
use super::StateDict;
use crate::error::{Error, Result};

/// Detects the architecture of `dict` (already normalised); `path` names the file in errors.
pub fn detect_arch(dict: &StateDict, path: &Path) -> Result<GanArch> {
    detect_in(REGISTRY, dict, path)
}

/// [`detect_arch`] over any list of entries.
fn detect_in(registry: &[&dyn ArchSpec], dict: &StateDict, path: &Path) -> Result<GanArch> {
    let bad = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    for spec in registry {
        if let Some(found) = spec.detect(dict) {
            return found.map_err(bad);
        }
    }
    Err(bad(format!(
        "not a known architecture: found {} tensors ({}); diffsr knows {} (`diffsr models \
         architectures` lists the tensors each is recognised by)",
        dict.len(),
        sample_keys(dict),
        known(registry)
    )))
}

/// `A, B or C`: every entry's name (the tensors each expects would make the message too long
/// to read once the registry holds a dozen; `diffsr models architectures` lists them).
fn known(registry: &[&dyn ArchSpec]) -> String {
    let entries: Vec<String> = registry
        .iter()
        .map(|spec| spec.name().to_string())
        .collect();
    match entries.split_last() {
        None => "no architecture (the registry is empty)".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A few keys, to tell the user what the file does hold.
fn sample_keys(dict: &StateDict) -> String {
    let mut keys: Vec<&str> = dict.keys().take(6).map(String::as_str).collect();
    if dict.len() > keys.len() {
        keys.push("...");
    }
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::gan::arch::atd;
    use crate::gan::arch::dat;
    use crate::gan::arch::drct;
    use crate::gan::arch::realcugan;
    use crate::gan::arch::rgt;
    use crate::gan::arch::{
        omnisr, plksr, rrdbnet, safmn, span, srcnn, srresnet, srvgg, CcmType, LkType,
    };
    use crate::gan::arch::{swin, swin2sr, swinir};

    fn detect(dict: &StateDict) -> Result<GanArch> {
        detect_arch(dict, Path::new("model.safetensors"))
    }

    /// One minimal synthetic state dict (shapes only) per registry entry, with the entry's
    /// name. A new architecture adds its own here, or `every_entry_is_detected` fails.
    fn synthetic_dicts() -> Vec<(&'static str, StateDict)> {
        vec![
            ("RRDBNet", rrdbnet::synthetic_rrdbnet(3, 2)),
            ("RRDBNet", rrdbnet::synthetic_rrdbnet(12, 2)),
            ("SRVGGNetCompact", srvgg::synthetic_srvgg(1, 4, true)),
            ("SPAN", span::synthetic_span(3, 3, 4, 2, true)),
            ("SAFMN", safmn::synthetic_safmn(8, 1, 16, 2)),
            (
                "PLKSR",
                plksr::synthetic_plksr(CcmType::Dccm, LkType::Plk, 1, 4),
            ),
            ("RealPLKSR", plksr::synthetic_real_plksr(1, 4, true, true)),
            (
                "OmniSR",
                omnisr::synthetic_omnisr(&omnisr::tiny_params(true, true)),
            ),
            ("SRResNet", srresnet::synthetic_srresnet(2, 4)),
            ("SRResNet", srresnet::synthetic_srresnet(1, 3)),
            ("SRCNN", srcnn::synthetic_srcnn(1, [9, 5, 5])),
            ("SRCNN", srcnn::synthetic_srcnn(3, [9, 1, 5])),
            (
                "Swin2SR",
                swin2sr::synthetic_swin2sr(&swin2sr::tiny_swin2sr(
                    swin2sr::Swin2SrUpsampler::PixelShuffleAux,
                    2,
                )),
            ),
            (
                "SwinIR",
                swinir::synthetic_swinir(&swinir::tiny_params(
                    swin::Upsampler::PixelShuffleDirect,
                    swin::ResiConnection::OneConv,
                    2,
                )),
            ),
            ("DAT", dat::synthetic_dat(&dat::tiny_params()).unwrap()),
            (
                "RealCUGAN",
                realcugan::synthetic_realcugan(&realcugan::RealCuganParams {
                    variant: realcugan::Variant::Up3x,
                    in_channels: 3,
                    out_channels: 3,
                    pro: true,
                    se: true,
                }),
            ),
            (
                "RGT",
                rgt::synthetic_rgt(&rgt::small_params(48, vec![2], 2)),
            ),
            ("DRCT", drct::synthetic_drct(&drct::tiny_params())),
            (
                "ATD",
                atd::synthetic_atd(&atd::tiny_params(
                    swin::Upsampler::PixelShuffle,
                    swin::ResiConnection::OneConv,
                    2,
                )),
            ),
        ]
    }

    /// Which entry's detection claims `dict`.
    fn claimed_by(dict: &StateDict) -> Vec<&'static str> {
        REGISTRY
            .iter()
            .filter(|spec| spec.detect(dict).is_some())
            .map(|spec| spec.name())
            .collect()
    }

    #[test]
    fn every_entry_is_detected() -> Result<()> {
        for (name, dict) in synthetic_dicts() {
            // Exactly one entry claims each dict, so registry order cannot change the result.
            assert_eq!(claimed_by(&dict), [name]);
            let arch = detect(&dict)?;
            assert_eq!(arch.config().scale(), arch.scale());
            match (name, &arch) {
                ("RRDBNet", GanArch::RrdbNet(p)) => assert_eq!(p.num_block, 1),
                ("SRVGGNetCompact", GanArch::Srvgg(p)) => assert_eq!(p.num_conv, 1),
                ("SPAN", GanArch::Span(p)) => assert_eq!(p.feature_channels, 4),
                ("SAFMN", GanArch::Safmn(p)) => assert_eq!(p.n_blocks, 1),
                ("PLKSR", GanArch::Plksr(p)) => assert_eq!(p.n_blocks, 1),
                ("RealPLKSR", GanArch::RealPlksr(p)) => assert_eq!(p.n_blocks, 1),
                ("OmniSR", GanArch::OmniSr(p)) => assert_eq!(p.block_num, 1),
                ("SRResNet", GanArch::SrResNet(p)) => assert!(p.num_block >= 1),
                ("SRCNN", GanArch::Srcnn(p)) => assert_eq!(p.filters, [64, 32]),
                ("SwinIR", GanArch::SwinIr(p)) => assert_eq!(p.depths, [2, 1]),
                ("Swin2SR", GanArch::Swin2Sr(p)) => assert_eq!(p.depths, [1, 2]),
                ("DAT", GanArch::Dat(p)) => assert_eq!(p.depth, [2]),
                ("RealCUGAN", GanArch::RealCugan(p)) => {
                    assert!(p.pro && p.variant == realcugan::Variant::Up3x)
                }
                ("RGT", GanArch::Rgt(p)) => assert_eq!(p.depth, [2]),
                ("DRCT", GanArch::Drct(p)) => assert_eq!(p.num_heads, [3, 2]),
                ("ATD", GanArch::Atd(p)) => assert_eq!(p.depths, [2, 3]),
                _ => panic!("{name} detected as {arch:?}"),
            }
        }
        for spec in REGISTRY {
            assert!(
                synthetic_dicts().iter().any(|(n, _)| *n == spec.name()),
                "no synthetic state dict for {}",
                spec.name()
            );
        }
        Ok(())
    }

    #[test]
    fn detected_configs_answer_through_gan_arch() -> Result<()> {
        let x2 = detect(&rrdbnet::synthetic_rrdbnet(12, 2))?;
        assert_eq!((x2.scale(), x2.input_multiple()), (2, 2));
        assert_eq!(x2.context_radius(), 32);
        assert!(x2.describe().starts_with("RRDBNet x2"), "{}", x2.describe());
        let compact = detect(&srvgg::synthetic_srvgg(3, 2, false))?;
        assert_eq!((compact.scale(), compact.input_multiple()), (2, 1));
        assert_eq!(compact.context_radius(), 5);
        assert_eq!(
            compact.bytes_per_input_pixel(DType::F32),
            4 * (11 * 4 + 2 * 3 * 4)
        );
        Ok(())
    }

    #[test]
    fn an_unknown_dict_is_refused_listing_every_entry() {
        let fc = Tensor::zeros((10, 4), DType::F32, &Device::Cpu).unwrap();
        let dict: StateDict = [("fc.weight".to_string(), fc)].into();
        let err = detect(&dict).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("not a known architecture"), "{err}");
        assert!(err.contains("fc.weight"), "{err}");
        for spec in REGISTRY {
            assert!(
                err.contains(spec.name()),
                "{} missing from: {err}",
                spec.name()
            );
        }
        assert!(err.contains("diffsr models architectures"), "{err}");
    }

    #[test]
    fn a_recognised_but_malformed_dict_names_the_problem() {
        let err = detect(&rrdbnet::synthetic_rrdbnet(3, 0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("conv_up1"),
            "{err}"
        );
    }

    #[test]
    fn the_known_list_reads_as_a_sentence() {
        let rrdb: &dyn ArchSpec = &rrdbnet::RrdbNetSpec;
        let compact: &dyn ArchSpec = &srvgg::SrvggSpec;
        assert_eq!(known(&[rrdb, compact]), "RRDBNet or SRVGGNetCompact");
        assert_eq!(
            known(&[rrdb, compact, rrdb]),
            "RRDBNet, SRVGGNetCompact or RRDBNet"
        );
        assert_eq!(known(&[compact]), "SRVGGNetCompact");
        assert!(detect_in(&[], &StateDict::new(), Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("registry is empty"));
    }
}
