//! The GAN path: the Real-ESRGAN family (RRDBNet, SRVGGNetCompact) in Candle, loaded from
//! safetensors, PyTorch `.pth` or ncnn files, and run in tiles.

pub mod ncnn;
pub mod state_dict;

pub use state_dict::StateDict;
