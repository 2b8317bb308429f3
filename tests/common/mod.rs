//! Helpers shared by the integration tests: run the real binary in a
//! temporary folder, and paths to the shipped files.
#![allow(dead_code)]

pub mod onnx;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped file under models/.
pub fn model(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// A test data folder under tests/data/.
pub fn data(name: &str) -> PathBuf {
    root().join("tests").join("data").join(name)
}

/// Result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts a clean failure (exit 1, an `error:` line, no panic) whose
    /// message contains every one of `needles`.
    pub fn fails_with(&self, needles: &[&str]) {
        assert_eq!(
            self.code, 1,
            "expected exit 1\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.stderr);
        assert!(
            self.stderr.contains("error:"),
            "no error line:\n{}",
            self.stderr
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "expected {n:?} in the error, got:\n{}",
                self.stderr
            );
        }
    }
}

/// A command that starts the built `bvae`. When the tests themselves run
/// under an emulator (cross-compiled for ARM and run by qemu-user in
/// `.ci/run`), the binary they start must go through it too, since the host
/// may not run foreign binaries by itself: `BVAE_TEST_RUNNER` then holds that
/// command line, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
pub fn bvae_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_bvae");
    let runner = std::env::var("BVAE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Runs `bvae ARGS` in `dir`.
pub fn bvae(dir: &Path, args: &[&str]) -> Run {
    bvae_with_env(dir, &[], args)
}

/// Runs `bvae ARGS` in `dir` with the environment variables `env` set.
pub fn bvae_with_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let out: Output = bvae_command()
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("the bvae binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A path as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
