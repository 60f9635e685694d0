//! The fuzz harness (tests/fuzz.rs): mutation strategies that know the formats diffsr reads,
//! valid seeds to start from, the capped allocator, the run loop, and the targets.

pub mod alloc;
pub mod bundle;
pub mod crc;
pub mod harness;
pub mod json;
pub mod mutate;
pub mod ncnn;
pub mod png;
pub mod safetensors;
pub mod seeds;
pub mod targets;
pub mod zip;
