//! Batch inputs: the JSONL manifest (read, then planned into jobs, which parses each line's
//! target size, colour fix and scheduler and checks its options), and `--name` templates.

use diffsr::batch::{
    plan, JobOptions, Manifest, OutputTemplate, PlanOptions, Source, TemplateVars, DEFAULT_TEMPLATE,
};
use proptest::prelude::*;
use proptest::sample::Index;

use super::message;
use crate::fuzz_support::harness::{Memory, Target};
use crate::fuzz_support::json::{json_plan, mutate_json, JsonPlan};
use crate::fuzz_support::mutate::{apply_all, byte_ops, ByteOp};

const MANIFESTS: [&str; 3] = [
    r#"# jobs
{"input": "a.png", "output": "out/a.png", "prompt": "a cat", "negative_prompt": "blurry", "seed": 1, "steps": 20, "guidance": 9.0, "noise_level": 20, "scheduler": "ddim", "eta": 0.0}

{"input": "b.jpg", "scale": 2.5, "color_fix": "wavelet"}
{"input": "c.webp", "target": "640x480", "scheduler": "dpmpp-2m-karras"}
{"input": "sub/d.png", "long_side": 1024, "color_fix": "adain"}
"#,
    "{\"input\": \"x.png\", \"output\": \"/tmp/diffsr-fuzz-never-written.png\"}\n",
    "{\"input\": \"e.tif\", \"target\": \"1x1\", \"steps\": 1, \"scheduler\": \"euler-a\", \"eta\": 1.0}\n{\"input\": \"e.tif\", \"scale\": 1}\n",
];

/// One manifest mutation: a line's JSON, the lines themselves, or the bytes.
#[derive(Debug, Clone)]
enum ManifestOp {
    Line { line: Index, plan: JsonPlan },
    Remove { line: Index },
    Duplicate { line: Index, to: Index },
    Bytes(Vec<ByteOp>),
}

fn manifest_op() -> impl Strategy<Value = ManifestOp> {
    prop_oneof![
        6 => (any::<Index>(), json_plan()).prop_map(|(line, plan)| ManifestOp::Line { line, plan }),
        1 => any::<Index>().prop_map(|line| ManifestOp::Remove { line }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(line, to)| ManifestOp::Duplicate { line, to }),
        1 => byte_ops(3).prop_map(ManifestOp::Bytes),
    ]
}

fn mutate_manifest(text: &str, ops: &[ManifestOp]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let mut raw = Vec::new();
    for op in ops {
        let n = lines.len();
        match op {
            _ if n == 0 => {}
            ManifestOp::Line { line, plan } => {
                let i = line.index(n);
                // Compact: a pretty-printed object would span several lines.
                let plan = JsonPlan {
                    pretty: false,
                    ..plan.clone()
                };
                lines[i] = mutate_json(&lines[i], &plan);
            }
            ManifestOp::Remove { line } => {
                lines.remove(line.index(n));
            }
            ManifestOp::Duplicate { line, to } => {
                let l = lines[line.index(n)].clone();
                lines.insert(to.index(n + 1), l);
            }
            ManifestOp::Bytes(ops) => raw.extend(ops.iter().cloned()),
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    apply_all(&mut out, &raw, &[]);
    out
}

pub fn manifest() -> Target {
    let inputs = (
        any::<Index>(),
        proptest::collection::vec(manifest_op(), 1..=3),
    )
        .prop_map(|(seed, ops)| mutate_manifest(MANIFESTS[seed.index(MANIFESTS.len())], &ops))
        .boxed();
    Target {
        name: "manifest",
        cases: 1000,
        memory: Memory::Input,
        inputs,
        run: Box::new(|input, dir| {
            let path = dir.join("jobs.jsonl");
            std::fs::write(&path, input).map_err(message)?;
            // The seeds' explicit outputs go to `out/`, which exists.
            std::fs::create_dir(dir.join("out")).map_err(message)?;
            let manifest = Manifest::read(&path).map_err(message)?;
            let template = OutputTemplate::parse(DEFAULT_TEMPLATE).map_err(message)?;
            let defaults = JobOptions::default();
            let out_dir = dir.join("named");
            let options = PlanOptions {
                defaults: &defaults,
                output: None,
                out_dir: Some(&out_dir),
                template: &template,
                scale: 4,
                shard: None,
                skip_existing: false,
            };
            let planned = plan(&Source::Manifest(manifest), &options).map_err(message)?;
            assert!(planned.jobs.len() <= planned.total);
            Ok(())
        }),
    }
}

/// Pieces templates are made of: placeholders, braces, path separators, odd characters.
const PIECES: [&str; 20] = [
    "{stem}",
    "{ext}",
    "{scale}",
    "{seed}",
    "{index}",
    "{scheduler}",
    "{steps}",
    "{dir}",
    "{",
    "}",
    "{{",
    "}}",
    "..",
    "/",
    ".",
    "x",
    "{index:04}",
    "\u{1b}[2J",
    "é",
    "{}",
];

/// Templates: seeds mutated as text (pieces inserted or replaced) and as bytes, read back as
/// UTF-8 (a command-line argument that is not UTF-8 never reaches the parser).
fn template_inputs(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let pieces = proptest::collection::vec((any::<Index>(), any::<Index>(), any::<bool>()), 0..4);
    (
        any::<Index>(),
        pieces,
        prop_oneof![2 => Just(Vec::new()), 1 => byte_ops(2)],
    )
        .prop_map(move |(seed, pieces, ops)| {
            let mut text = String::from_utf8_lossy(&seeds[seed.index(seeds.len())]).into_owned();
            for (at, piece, replace) in pieces {
                let boundaries: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([text.len()])
                    .collect();
                let at = boundaries[at.index(boundaries.len())];
                let piece = PIECES[piece.index(PIECES.len())];
                let end = if replace {
                    boundaries.iter().copied().find(|&b| b > at).unwrap_or(at)
                } else {
                    at
                };
                text.replace_range(at..end, piece);
            }
            let mut bytes = text.into_bytes();
            apply_all(&mut bytes, &ops, &[]);
            String::from_utf8_lossy(&bytes).into_owned().into_bytes()
        })
        .boxed()
}

pub fn name_template() -> Target {
    let seeds: Vec<Vec<u8>> = [
        DEFAULT_TEMPLATE,
        "{dir}/{stem}-{index}-s{seed}.{ext}",
        "{{literal}}_{scheduler}_{steps}steps_x{scale}.webp",
        "out/{stem}.jpg",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    Target {
        name: "name_template",
        cases: 3000,
        memory: Memory::Input,
        inputs: template_inputs(seeds),
        run: Box::new(|input, _dir| {
            let text = std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"))?;
            let template = OutputTemplate::parse(text).map_err(message)?;
            let vars = TemplateVars {
                stem: "photo",
                ext: "png",
                scale: 2.5,
                seed: u64::MAX,
                index: usize::MAX,
                scheduler: "ddim",
                steps: 20,
                dir: "a/b",
            };
            let _ = template.render(&vars);
            Ok(())
        }),
    }
}
