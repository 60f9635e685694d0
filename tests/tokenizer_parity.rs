//! `ClipTokenizer` against transformers' `CLIPTokenizer` as `StableDiffusionUpscalePipeline` calls
//! it (tests/fixtures/x4_tokenizer.json, made by scripts/fixtures/x4_tokenizer.py): every prompt's
//! 77 ids must be equal, for the tiny model's folder and for two other folder layouts.

use std::path::{Path, PathBuf};

use diffsr::tokenizer::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    model_max_length: usize,
    cases: Vec<Case>,
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Variant {
    name: String,
    /// File name -> JSON content to write into the variant's folder.
    files: serde_json::Map<String, serde_json::Value>,
    copy_vocab_and_merges: bool,
    cases: Vec<Case>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model_tokenizer_dir() -> PathBuf {
    root().join("tiny-x4-upscaler/tokenizer")
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(root().join("x4_tokenizer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks every case and reports all mismatches at once.
fn check(tokenizer: &ClipTokenizer, cases: &[Case], what: &str) {
    let mut failures = Vec::new();
    for case in cases {
        let ids = tokenizer.encode(&case.prompt).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  got  {:?}\n  want {:?}",
                case.prompt, ids, case.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} prompts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn tiny_model_tokenizer_matches_transformers() {
    let fixture = fixture();
    let tokenizer = ClipTokenizer::from_dir(&model_tokenizer_dir()).unwrap();
    assert_eq!(tokenizer.max_length(), fixture.model_max_length);
    assert!(fixture.cases.len() >= 60);
    check(&tokenizer, &fixture.cases, "tiny-x4-upscaler/tokenizer");
}

/// A scratch folder under the target directory, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tokenizer_parity_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Puts back the vocab and merges the fixture script removed from a saved tokenizer.json.
fn rebuild_tokenizer_json(mut json: serde_json::Value, source: &Path) -> serde_json::Value {
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("vocab.json")).unwrap()).unwrap();
    let merges: Vec<serde_json::Value> = std::fs::read_to_string(source.join("merges.txt"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let (a, b) = line.split_once(' ').unwrap();
            serde_json::json!([a, b])
        })
        .collect();
    json["model"]["vocab"] = vocab;
    json["model"]["merges"] = serde_json::Value::Array(merges);
    json
}

#[test]
fn other_folder_layouts_match_transformers() {
    let fixture = fixture();
    let source = model_tokenizer_dir();
    assert_eq!(fixture.variants.len(), 2);
    for variant in fixture.variants {
        let dir = scratch(&variant.name);
        if variant.copy_vocab_and_merges {
            for name in ["vocab.json", "merges.txt"] {
                std::fs::copy(source.join(name), dir.join(name)).unwrap();
            }
        }
        for (name, value) in variant.files {
            let value = if name == "tokenizer.json" {
                rebuild_tokenizer_json(value, &source)
            } else {
                value
            };
            std::fs::write(dir.join(&name), serde_json::to_string(&value).unwrap()).unwrap();
        }
        let tokenizer = ClipTokenizer::from_dir(&dir).unwrap();
        check(&tokenizer, &variant.cases, &variant.name);
    }
}

#[test]
fn missing_files_are_errors() {
    let dir = scratch("missing");
    let err = ClipTokenizer::from_dir(&dir)
        .err()
        .expect("an empty folder must be refused");
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(dir.join("vocab.json"), "{}").unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"model_max_length\": \"many\"}",
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(&dir)
        .err()
        .expect("a malformed config must be refused");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}
