//! Bytes → `bvae::imageio::decode_image`: PNG and JPEG decoding with the
//! limits `load_image` applies to image files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = bvae::imageio::decode_image(data, std::path::Path::new("fuzz-input.png")) {
        assert_eq!(
            f.data.len(),
            f.width * f.height * f.format.bytes_per_pixel()
        );
    }
});
