//! The benches' input picture.

/// A deterministic S×S RGB picture with smooth structure and fine noise (the content does
/// not change the work, only keeps activations realistic).
pub fn input_rgb8(size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(3 * size * size);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let (u, v) = (x as f32 / size as f32, y as f32 / size as f32);
                let smooth = 0.5 + 0.3 * (9.0 * u + 6.0 * v + c as f32 * 2.1).sin();
                data.push(((smooth + 0.2 * noise).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    data
}
