//! ncnn models (`.param` + `.bin`), as realesrgan-ncnn-vulkan and Upscayl ship them.
