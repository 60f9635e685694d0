//! The CLIP BPE tokenizer, equal to transformers' `CLIPTokenizer` (`tokenization_clip.py`,
//! transformers 5.23, which is backed by HF `tokenizers`) as diffusers'
//! `StableDiffusionUpscalePipeline` loads and calls it: `padding="max_length"`,
//! `max_length=model_max_length`, `truncation=True`.
//!
//! transformers 5 no longer has the ftfy-based "slow" tokenizer: CLIP text is NFC-normalised,
//! runs of whitespace become one space, then lowercased; CLIP's regex splits words, numbers (one
//! digit each) and punctuation runs; byte-level BPE appends `</w>` to each word's last piece; the
//! Roberta-style post-processor wraps the ids in `<|startoftext|>` … `<|endoftext|>`. The special
//! tokens (including the pad token, `"!"` in the x4 upscaler) are *added tokens*: they are cut out
//! of the prompt before normalisation, so `"wow!!!"` gives three pad ids, as in Python.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::{Error, Result};

/// CLIP's pre-tokenizer pattern (transformers' `CLIPTokenizer.__init__`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// CLIP's context length, used when `tokenizer_config.json` has no `model_max_length`
/// (transformers would then pad to "infinity", which no CLIP text model accepts).
const CLIP_CONTEXT: usize = 77;

/// A special token as the config files spell it: a bare string or an `AddedToken` dict.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Full {
        content: String,
        #[serde(default)]
        single_word: bool,
        #[serde(default)]
        lstrip: bool,
        #[serde(default)]
        rstrip: bool,
        normalized: Option<bool>,
        special: Option<bool>,
    },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            Self::Plain(s) => s,
            Self::Full { content, .. } => content,
        }
    }

    fn into_special(self) -> Self {
        match self {
            Self::Full {
                content,
                single_word,
                lstrip,
                rstrip,
                normalized,
                ..
            } => Self::Full {
                content,
                single_word,
                lstrip,
                rstrip,
                normalized,
                special: Some(true),
            },
            plain => plain,
        }
    }

    /// The `AddedToken` transformers builds. A bare string becomes `AddedToken(s, special=True)`;
    /// a dict is `AddedToken(**dict)`, whose `special` defaults to false and whose `normalized`
    /// defaults to `not special` (so a dict in `tokenizer_config.json` that omits both is
    /// normalised even though it names a special token).
    fn to_added(&self) -> AddedToken {
        match self {
            Self::Plain(s) => AddedToken::from(s.clone(), true),
            Self::Full {
                content,
                single_word,
                lstrip,
                rstrip,
                normalized,
                special,
            } => {
                let special = special.unwrap_or(false);
                AddedToken::from(content.clone(), special)
                    .single_word(*single_word)
                    .lstrip(*lstrip)
                    .rstrip(*rstrip)
                    .normalized(normalized.unwrap_or(!special))
            }
        }
    }
}

/// The fields of `tokenizer_config.json` / `special_tokens_map.json` that matter here.
#[derive(Debug, Default, Deserialize)]
struct SpecialTokens {
    bos_token: Option<TokenSpec>,
    eos_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    pad_token: Option<TokenSpec>,
    model_max_length: Option<f64>,
    added_tokens_decoder: Option<BTreeMap<String, TokenSpec>>,
}

impl SpecialTokens {
    /// Applies `special_tokens_map.json`, whose dict entries transformers builds with
    /// `special=True`.
    fn override_with(&mut self, map: SpecialTokens) {
        let slots = [
            (&mut self.bos_token, map.bos_token),
            (&mut self.eos_token, map.eos_token),
            (&mut self.unk_token, map.unk_token),
            (&mut self.pad_token, map.pad_token),
        ];
        for (slot, value) in slots {
            if let Some(value) = value {
                *slot = Some(value.into_special());
            }
        }
    }
}

/// The CLIP tokenizer of a Stable Diffusion checkpoint.
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl ClipTokenizer {
    /// Loads the hub's `tokenizer/` folder: `vocab.json` + `merges.txt` (or `tokenizer.json`
    /// where present, as transformers prefers it), `tokenizer_config.json` and
    /// `special_tokens_map.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let mut config: SpecialTokens = read_json_opt(&config_path)?.unwrap_or_default();
        let max_length = max_length(&config, &config_path)?;
        let (vocab, merges, mut added) = read_model_files(dir, &config)?;
        if let Some(decoder) = &config.added_tokens_decoder {
            added.extend(decoder_tokens(decoder, &config_path)?);
        } else {
            // transformers reads special_tokens_map.json only for legacy folders, those whose
            // config has no `added_tokens_decoder`; its entries then override the config's.
            let map_path = dir.join("special_tokens_map.json");
            if let Some(map) = read_json_opt::<SpecialTokens>(&map_path)? {
                config.override_with(map);
            }
        }
        let named = |t: Option<TokenSpec>, default: &str| {
            t.unwrap_or_else(|| TokenSpec::Plain(default.into()))
        };
        let bos = named(config.bos_token, "<|startoftext|>");
        let eos = named(config.eos_token, "<|endoftext|>");
        let unk = named(config.unk_token, "<|endoftext|>");
        let pad = named(config.pad_token, "<|endoftext|>");

        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .unk_token(unk.content().into())
            .build()
            .map_err(|e| Error::Tokenizer(format!("{}: BPE model: {e}", dir.display())))?;
        let mut inner = clip_pipeline(model)?;

        // The named special tokens join the added tokens, in transformers' attribute order; one
        // that the added tokens already hold keeps the flags given there, as transformers maps
        // named tokens onto `added_tokens_decoder` / tokenizer.json's entries.
        for named in [&bos, &eos, &unk, &pad] {
            if !added.iter().any(|t| t.content == named.content()) {
                added.push(named.to_added().special(true));
            }
        }
        let (special, plain): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
        inner.add_tokens(plain).map_err(tok_err)?;
        inner.add_special_tokens(special).map_err(tok_err)?;

        let id = |t: &TokenSpec| {
            inner.token_to_id(t.content()).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{}: special token {:?} has no id",
                    dir.display(),
                    t.content()
                ))
            })
        };
        let (bos_id, eos_id, pad_id) = (id(&bos)?, id(&eos)?, id(&pad)?);
        inner.with_post_processor(Some(
            RobertaProcessing::new(
                (eos.content().into(), eos_id),
                (bos.content().into(), bos_id),
            )
            .trim_offsets(false)
            .add_prefix_space(false),
        ));
        // What transformers sets for padding="max_length", truncation=True.
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(tok_err)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad.content().into(),
        }));
        Ok(Self { inner, max_length })
    }

    /// The ids of `prompt`, truncated and padded to [`Self::max_length`].
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(prompt, true).map_err(tok_err)?;
        let ids = encoding.get_ids();
        if ids.len() != self.max_length {
            return Err(Error::Tokenizer(format!(
                "encoded {} ids instead of {}",
                ids.len(),
                self.max_length
            )));
        }
        Ok(ids.to_vec())
    }

    /// `model_max_length`: the length of every encoding (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

/// The normaliser and pre-tokenizer `CLIPTokenizer.__init__` builds around the BPE model.
fn clip_pipeline(model: BPE) -> Result<Tokenizer> {
    let mut inner = Tokenizer::new(model);
    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(tok_err)?;
    inner
        .with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])))
        .map_err(tok_err)?;
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(tok_err)?;
    inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    Ok(inner)
}

/// Vocab and merges from tokenizer.json (with its added tokens, which transformers uses only
/// when the config has no `added_tokens_decoder`) or from vocab.json + merges.txt.
fn read_model_files(
    dir: &Path,
    config: &SpecialTokens,
) -> Result<(Vocab, Merges, Vec<AddedToken>)> {
    let json_path = dir.join("tokenizer.json");
    if json_path.is_file() {
        let (vocab, merges, mut added) = read_tokenizer_json(&json_path)?;
        if config.added_tokens_decoder.is_some() {
            added.clear();
        }
        Ok((vocab, merges, added))
    } else {
        let (vocab, merges) = read_vocab_and_merges(dir)?;
        Ok((vocab, merges, Vec::new()))
    }
}

/// `added_tokens_decoder`'s tokens in index order, as transformers adds them (the keys are
/// decimal strings, so a string sort would put "10" before "9").
fn decoder_tokens(decoder: &BTreeMap<String, TokenSpec>, path: &Path) -> Result<Vec<AddedToken>> {
    let mut entries = Vec::with_capacity(decoder.len());
    for (index, token) in decoder {
        let index: u64 = index.parse().map_err(|_| {
            config_err(
                path,
                format!("`added_tokens_decoder` key {index:?} is not an id"),
            )
        })?;
        entries.push((index, token.to_added()));
    }
    entries.sort_by_key(|(index, _)| *index);
    Ok(entries.into_iter().map(|(_, token)| token).collect())
}

fn tok_err(e: tokenizers::Error) -> Error {
    Error::Tokenizer(e.to_string())
}

fn config_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn max_length(config: &SpecialTokens, path: &Path) -> Result<usize> {
    match config.model_max_length {
        None => Ok(CLIP_CONTEXT),
        Some(n) if (3.0..=1e6).contains(&n) && n.fract() == 0.0 => Ok(n as usize),
        Some(n) => Err(config_err(
            path,
            format!("`model_max_length` {n} is not a usable length"),
        )),
    }
}

/// Parses a JSON file, or `None` where it does not exist.
fn read_json_opt<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| config_err(path, e.to_string()))
}

/// `vocab.json` + `merges.txt`, parsed by the same code Python's `BPE(vocab_path, merges_path)`
/// runs.
fn read_vocab_and_merges(dir: &Path) -> Result<(Vocab, Merges)> {
    let vocab = utf8_file(dir.join("vocab.json"))?;
    let merges = utf8_file(dir.join("merges.txt"))?;
    BPE::read_file(&vocab, &merges)
        .map_err(|e| Error::Tokenizer(format!("{}: vocab.json / merges.txt: {e}", dir.display())))
}

fn utf8_file(path: PathBuf) -> Result<String> {
    if !path.is_file() {
        let (dir, name) = (
            path.parent().unwrap_or(&path),
            path.file_name().unwrap_or_default(),
        );
        return Err(Error::MissingComponent {
            dir: dir.to_path_buf(),
            what: format!("{} (or tokenizer.json)", name.to_string_lossy()),
        });
    }
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Tokenizer(format!("path {} is not UTF-8", path.display())))
}

/// The BPE part of a `tokenizer.json`: transformers 5 keeps only its vocab, merges and added
/// tokens and rebuilds CLIP's pipeline around them.
#[derive(Deserialize)]
struct TokenizerJson {
    model: BpeJson,
    #[serde(default)]
    added_tokens: Vec<TokenSpec>,
}

#[derive(Deserialize)]
struct BpeJson {
    vocab: BTreeMap<String, u32>,
    merges: Vec<MergeJson>,
}

/// A merge is `"a b"` in older files and `["a", "b"]` in newer ones.
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Joined(String),
    Pair(String, String),
}

fn read_tokenizer_json(path: &Path) -> Result<(Vocab, Merges, Vec<AddedToken>)> {
    let parsed: TokenizerJson =
        read_json_opt(path)?.ok_or_else(|| config_err(path, "unreadable"))?;
    let merges = parsed
        .model
        .merges
        .into_iter()
        .map(|m| match m {
            MergeJson::Pair(a, b) => Ok((a, b)),
            MergeJson::Joined(s) => match s.split_once(' ') {
                Some((a, b)) if !b.contains(' ') => Ok((a.to_owned(), b.to_owned())),
                _ => Err(config_err(path, format!("malformed merge {s:?}"))),
            },
        })
        .collect::<Result<Merges>>()?;
    let added = parsed.added_tokens.iter().map(|t| t.to_added()).collect();
    Ok((parsed.model.vocab.into_iter().collect(), merges, added))
}
