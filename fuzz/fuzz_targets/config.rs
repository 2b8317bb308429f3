//! Bytes → `bvae watch --config` parsing (`FileConfig::parse`): TOML, the
//! keys, and each value's check (seconds, threads, snapshot budget, source).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bvae::cli::watch::FileConfig::parse(data, std::path::Path::new("fuzz-input.toml"));
});
