//! Bytes → `Model::load_bytes`: protobuf parsing, the stored tensors'
//! declared sizes, external data, metadata and the model contract check
//! (tract's graph analysis included), as `bvae info` runs them.
#![no_main]

use std::collections::HashSet;
use std::sync::{Mutex, Once};

use libfuzzer_sys::fuzz_target;

/// The model "file": external weight files resolve in the shipped models'
/// folder, so a seed such as tiny_rgb.onnx finds its real `.onnx.data`
/// (read only).
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fuzz-input.onnx");

/// bvae turns a panic inside tract's parsing or analysis into an error
/// (`model::guarded`); libFuzzer's own hook would abort on it first. This
/// hook reports each such place once and lets bvae catch it: a panic that
/// escapes `load_bytes` still aborts (libfuzzer-sys catches it), so it is
/// still a crash.
fn report_caught_panics() {
    static ONCE: Once = Once::new();
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get_or_insert_with(HashSet::new).insert(at) {
                eprintln!("bvae-fuzz: panic inside tract (bvae must catch it): {info}");
            }
        }))
    });
}

fuzz_target!(|data: &[u8]| {
    report_caught_panics();
    if let Ok(model) = bvae::Model::load_bytes(data, PATH) {
        let s = model.spec();
        assert!(s.channels == 1 || s.channels == 3);
        assert!(s.height <= bvae::model::MAX_INPUT_SIDE && s.width <= bvae::model::MAX_INPUT_SIDE);
        assert!((1..=bvae::model::MAX_LATENT_DIM).contains(&s.latent_dim));
        if let Some(kl) = &s.latent_kl {
            assert_eq!(kl.len(), s.latent_dim);
        }
    }
});
