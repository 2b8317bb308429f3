//! bvae's compute kernels: the direct and transposed convolutions
//! ([`conv`]), the fully connected layer ([`dense`]) and the thread team
//! that shares them ([`team`]).
//!
//! Each kernel body is written once, as generic Rust over a small vector
//! type ([`simd::Vector`]), and compiled once per instruction set under
//! `#[target_feature]`: a *variant* ([`Isa`]). The variant is picked at run
//! time: the fastest one this CPU runs, unless `BVAE_KERNELS` names another
//! ([`Kernels::from_env`]), so that one machine can test and time every
//! variant it can execute (an AVX-512 machine runs the AVX2 variant too).
//!
//! | variant | registers | convolution tile (channels × pixels) |
//! | --- | --- | --- |
//! | `avx512` | 32 × 16 lanes | 32 × 8 |
//! | `avx2` (with FMA) | 16 × 8 lanes | 16 × 6 |
//! | `neon` (aarch64) | 32 × 4 lanes | 16 × 6 |
//! | `neon` (armv7) | 16 × 4 lanes (tile, `asm!`); 32 × 2 (the rest) | 8 × 4 |
//! | `scalar` | the compiler's | 8 × 4 |
//!
//! The scalar variant is the reference the others are tested against, and
//! runs anywhere. `tract` names tract's own operators instead of bvae's.

pub mod conv;
pub mod dense;
pub(crate) mod simd;
pub mod team;

use std::fmt;

/// Below this many multiply-adds a convolution or a dense layer runs on one
/// thread: handing a part to another costs more than it saves.
pub(crate) const PARALLEL_MACS: usize = 100_000;

/// The environment variable that forces a kernel variant.
pub const KERNELS_ENV: &str = "BVAE_KERNELS";

/// An instruction set bvae's kernels are compiled for: one variant of every
/// kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, one lane at a time (whatever the compiler makes of it):
    /// the reference, and the fallback on any CPU.
    Scalar,
    /// x86_64 AVX2 with FMA: 16 output channels × 6 pixels per tile.
    Avx2,
    /// x86_64 AVX-512F: 32 output channels × 8 pixels per tile.
    Avx512,
    /// NEON: on aarch64 16 output channels × 6 pixels per tile; on 32-bit
    /// ARM (built with NEON) 8 × 4, an `asm!` loop on Q registers, and the
    /// other kernels on D registers.
    Neon,
}

impl Isa {
    /// Every variant, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The name `BVAE_KERNELS`, `bvae info` and `bvae bench` use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the variant.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(any(target_arch = "aarch64", bvae_arm_neon))]
            Isa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The variants this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The fastest vector variant this CPU runs, if any (the scalar one is
    /// not counted: where it is all there is, tract's operators run by
    /// default).
    pub fn best_vector() -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| i.supported())
    }

    /// The variant bvae's kernels run with in this process: the one
    /// `BVAE_KERNELS` names, else the fastest this CPU has. `None` when
    /// tract's operators run instead (`BVAE_KERNELS=tract`, or no vector
    /// variant for this CPU). A `BVAE_KERNELS` value this CPU cannot run is
    /// ignored here; the command line refuses it ([`Kernels::from_env`]).
    /// Read once per process.
    pub fn detect() -> Option<Isa> {
        static SELECTED: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *SELECTED.get_or_init(|| {
            Kernels::from_env()
                .unwrap_or_else(|_| Kernels::auto())
                .isa()
        })
    }

    /// Output channels per tile of the convolution kernel (for a variant
    /// of another architecture, the scalar one's).
    pub fn mr(self) -> usize {
        simd::on_variant!(self, v => v::MR, other => simd::scalar::MR)
    }

    /// Output pixels per tile of the convolution kernel (for a variant of
    /// another architecture, the scalar one's).
    pub fn nr(self) -> usize {
        simd::on_variant!(self, v => v::NR, other => simd::scalar::NR)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kernels plans run: one of bvae's variants, or tract's operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// bvae's kernels, compiled for this instruction set.
    Own(Isa),
    /// tract's own convolution and matrix-product operators.
    Tract,
}

/// A `BVAE_KERNELS` value that names no variant, or one this CPU cannot
/// run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    /// Not a variant's name.
    #[error("{KERNELS_ENV}={0:?}: expected one of auto, avx512, avx2, neon, scalar, tract")]
    Unknown(String),
    /// A variant this CPU cannot execute.
    #[error("{KERNELS_ENV}={0}: this CPU cannot run it (it runs: {1})")]
    Unsupported(Isa, String),
}

impl Kernels {
    /// The default: the fastest vector variant this CPU has, else tract's
    /// operators (which carry their own SSE and armv7 NEON code).
    pub fn auto() -> Kernels {
        Isa::best_vector().map_or(Kernels::Tract, Kernels::Own)
    }

    /// Parses a variant's name (`auto` or empty for [`Kernels::auto`]) and
    /// checks that this CPU runs it.
    pub fn parse(value: &str) -> Result<Kernels, KernelsError> {
        let v = value.trim().to_ascii_lowercase();
        let k = match v.as_str() {
            "" | "auto" => return Ok(Kernels::auto()),
            "tract" => return Ok(Kernels::Tract),
            _ => Isa::ALL
                .into_iter()
                .find(|i| i.name() == v)
                .ok_or_else(|| KernelsError::Unknown(value.to_string()))?,
        };
        if !k.supported() {
            let runs: Vec<&str> = Isa::available()
                .into_iter()
                .map(Isa::name)
                .chain(["tract"])
                .collect();
            return Err(KernelsError::Unsupported(k, runs.join(", ")));
        }
        Ok(Kernels::Own(k))
    }

    /// The variant `BVAE_KERNELS` asks for ([`Kernels::auto`] when unset).
    pub fn from_env() -> Result<Kernels, KernelsError> {
        match std::env::var(KERNELS_ENV) {
            Ok(v) => Kernels::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(Kernels::auto()),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(KernelsError::Unknown(v.to_string_lossy().into_owned()))
            }
        }
    }

    /// bvae's variant, `None` for tract's operators.
    pub fn isa(self) -> Option<Isa> {
        match self {
            Kernels::Own(i) => Some(i),
            Kernels::Tract => None,
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernels::Own(i) => f.write_str(i.name()),
            Kernels::Tract => f.write_str("tract"),
        }
    }
}

/// The core's measured peak in GFLOP/s for variant `isa` on one thread: the
/// best of a few runs of a loop of independent multiply-adds on 12 vector
/// registers (more than the FMA pipes × their latency, so every pipe is
/// busy each cycle). `None` when this CPU cannot run the variant.
pub fn peak_gflops(isa: Isa) -> Option<f64> {
    if !isa.supported() {
        return None;
    }
    const ROUNDS: usize = 100_000;
    let mut best = f64::INFINITY;
    let mut flop = 0.0;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let rounds = std::hint::black_box(ROUNDS);
        // SAFETY: the CPU runs `isa` (checked above).
        let (f, sink) = unsafe { simd::fma_loop(isa, rounds) };
        // Used before the clock is read, so the loop cannot move past it.
        std::hint::black_box(sink);
        best = best.min(start.elapsed().as_secs_f64());
        flop = f;
    }
    Some(flop / best / 1e9)
}

/// An output shared by the parts of one kernel call (a convolution's, a
/// dense layer's) that fill disjoint pieces of it.
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32, pub(crate) usize);

impl Out {
    /// The address of value `i`.
    ///
    /// # Safety
    /// `i` is at most the output's length.
    pub(crate) unsafe fn at(self, i: usize) -> *mut f32 {
        debug_assert!(i <= self.1);
        // SAFETY: the function's contract.
        unsafe { self.0.add(i) }
    }
}

// SAFETY: `Out` is only handed to the parts of one kernel call, which
// write disjoint tiles, pixels or outputs.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ARM builds CI makes run their `neon` variant by default: on
    /// aarch64 always, on armv7 when build.rs saw `+neon` (from
    /// .cargo/config.toml).
    #[test]
    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    fn arm_builds_have_the_neon_variant() {
        assert!(
            Isa::available().contains(&Isa::Neon),
            "{:?}",
            Isa::available()
        );
        assert_eq!(Isa::best_vector(), Some(Isa::Neon));
    }

    #[test]
    fn names_parse_back() {
        for isa in Isa::ALL {
            match Kernels::parse(isa.name()) {
                Ok(k) => assert_eq!(k, Kernels::Own(isa)),
                Err(e) => {
                    assert!(!isa.supported(), "{isa} runs here but: {e}");
                    assert!(e.to_string().contains("cannot run"), "{e}");
                }
            }
        }
        assert_eq!(Kernels::parse("tract"), Ok(Kernels::Tract));
        assert_eq!(Kernels::parse(" AUTO "), Ok(Kernels::auto()));
        assert_eq!(Kernels::parse(""), Ok(Kernels::auto()));
        let e = Kernels::parse("sse9").unwrap_err();
        assert!(e.to_string().contains("expected one of"), "{e}");
        assert!(Isa::Scalar.supported());
        assert_eq!(Isa::available()[0], Isa::Scalar);
    }

    #[test]
    fn peak_is_measured_for_each_variant_this_cpu_runs() {
        for isa in Isa::ALL {
            match peak_gflops(isa) {
                Some(p) => assert!(p.is_finite() && p > 0.0, "{isa}: {p}"),
                None => assert!(!isa.supported()),
            }
        }
    }
}
