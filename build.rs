//! Tells the crate whether it is built for 32-bit ARM with NEON, as the
//! cfg `bvae_arm_neon`: there the `neon` kernel variant exists. rustc
//! applies `-C target-feature=+neon` on 32-bit ARM (.cargo/config.toml sets
//! it for armv7) but, the feature being unstable there, does not set
//! `cfg(target_feature = "neon")`; so this reads the flags cargo passes.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bvae_arm_neon)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ARCH") != "arm" {
        return;
    }
    let stable = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "neon");
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let flags: Vec<&str> = flags.split('\x1f').collect();
    // `-C target-feature=…` (one argument or two), last mention wins.
    let mut neon = stable;
    for (i, f) in flags.iter().enumerate() {
        let list = if let Some(l) = f.strip_prefix("-Ctarget-feature=") {
            l
        } else if let Some(l) = f.strip_prefix("target-feature=") {
            if i > 0 && flags[i - 1] == "-C" {
                l
            } else {
                continue;
            }
        } else {
            continue;
        };
        for feature in list.split(',') {
            match feature {
                "+neon" => neon = true,
                "-neon" => neon = false,
                _ => {}
            }
        }
    }
    if neon {
        println!("cargo::rustc-cfg=bvae_arm_neon");
    }
}
