//! The text encoder's output for the last prompts an upscaler encoded, kept so that a batch
//! (thousands of images, one prompt) runs the encoder once instead of once per image. The
//! reference (diffusers' `encode_prompt`) encodes on every call; the values are the same
//! because the encoder is deterministic and its inputs are the same token ids.

use std::sync::Mutex;

use candle_core::Tensor;

/// The embeddings of one list of prompts, as passed to the encoder.
#[derive(Default)]
pub struct PromptCache {
    last: Mutex<Option<(Vec<String>, Tensor)>>,
}

impl PromptCache {
    /// The embeddings of `prompts`, from the cache when they were the last ones encoded, else
    /// from `encode` (whose result replaces the cached one). Tensors share their storage, so
    /// handing out a clone costs no copy.
    pub fn get_or_encode<E>(
        &self,
        prompts: &[&str],
        encode: impl FnOnce() -> Result<Tensor, E>,
    ) -> Result<Tensor, E> {
        let key: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
        if let Ok(guard) = self.last.lock() {
            if let Some((k, t)) = guard.as_ref() {
                if *k == key {
                    return Ok(t.clone());
                }
            }
        }
        let embeddings = encode()?;
        // A poisoned lock only loses the cache, never the result.
        if let Ok(mut guard) = self.last.lock() {
            *guard = Some((key, embeddings.clone()));
        }
        Ok(embeddings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::cell::Cell;

    #[test]
    fn encodes_once_per_distinct_prompt_list() -> candle_core::Result<()> {
        let cache = PromptCache::default();
        let calls = Cell::new(0);
        let encode = |v: f32| {
            calls.set(calls.get() + 1);
            Tensor::new(&[v], &Device::Cpu)
        };
        let a = cache.get_or_encode(&["", "a cat"], || encode(1.0))?;
        let b = cache.get_or_encode(&["", "a cat"], || encode(2.0))?;
        assert_eq!(calls.get(), 1);
        assert_eq!(b.to_vec1::<f32>()?, a.to_vec1::<f32>()?);
        // Another negative prompt, or the same prompts in the other order, encode again.
        let c = cache.get_or_encode(&["blurry", "a cat"], || encode(3.0))?;
        let d = cache.get_or_encode(&["a cat", "blurry"], || encode(4.0))?;
        assert_eq!(calls.get(), 3);
        assert_eq!(c.to_vec1::<f32>()?, [3.0]);
        assert_eq!(d.to_vec1::<f32>()?, [4.0]);
        // An encoder error is returned and leaves the cache as it was.
        let e: Result<Tensor, &str> = cache.get_or_encode(&["x"], || Err("failed"));
        assert!(e.is_err());
        let again = cache.get_or_encode(&["a cat", "blurry"], || encode(5.0))?;
        assert_eq!(again.to_vec1::<f32>()?, [4.0]);
        Ok(())
    }
}
