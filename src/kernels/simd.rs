//! The small vector type every kernel body is written over, and the
//! variants: each kernel body instantiated for one instruction set under
//! `#[target_feature]`.
//!
//! A kernel body is an `#[inline(always)]` generic function over
//! [`Vector`]. Each variant's module (made by `variant!`) holds one
//! `#[target_feature]` function per kernel that calls the body with that
//! instruction set's vector type and tile shape; the body and the vector
//! methods are inlined into it, so the whole kernel is compiled for that
//! instruction set, whatever the binary's baseline.

use super::Isa;

/// A vector of `f32` lanes: the operations the kernels are written with.
///
/// # Safety
/// The methods use instructions of the vector's instruction set: call them
/// only from code compiled for it (a variant's `#[target_feature]`
/// function), on a CPU that has it.
pub(crate) trait Vector: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self;
    /// All lanes the value at `p` (a broadcast from memory, one
    /// instruction where the instruction set has one).
    #[inline(always)]
    unsafe fn load_splat(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        unsafe { Self::splat(p.read()) }
    }
    /// `LANES` values from `p` (any alignment).
    unsafe fn load(p: *const f32) -> Self;
    /// Stores the lanes at `p` (any alignment).
    unsafe fn store(self, p: *mut f32);
    /// `self · b + c` (fused where the instruction set fuses).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// Lane-wise maximum.
    unsafe fn max(self, b: Self) -> Self;
    /// The first lane.
    unsafe fn first(self) -> f32;
}

/// The scalar variant: one lane, a separate multiply and add (a fused one
/// without FMA hardware is a slow library call).
impl Vector for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { p.write_unaligned(self) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.max(b)
    }
    #[inline(always)]
    unsafe fn first(self) -> f32 {
        self
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use std::arch::x86_64::*;

    // SAFETY (every method below): the trait's contract, AVX and FMA.
    impl Vector for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm256_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            unsafe { _mm256_max_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn first(self) -> f32 {
            unsafe { _mm256_cvtss_f32(self) }
        }
    }

    // SAFETY (every method below): the trait's contract, AVX-512F.
    impl Vector for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm512_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            unsafe { _mm512_max_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn first(self) -> f32 {
            unsafe { _mm512_cvtss_f32(self) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm64 {
    use super::Vector;
    use std::arch::aarch64::*;

    // SAFETY (every method below): the trait's contract; NEON is part of
    // aarch64.
    impl Vector for float32x4_t {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { vdupq_n_f32(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { vst1q_f32(p, self) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { vfmaq_f32(c, self, b) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { vaddq_f32(self, b) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            unsafe { vmaxq_f32(self, b) }
        }
        #[inline(always)]
        unsafe fn first(self) -> f32 {
            unsafe { vgetq_lane_f32::<0>(self) }
        }
    }
}

#[cfg(bvae_arm_neon)]
mod arm32 {
    use super::Vector;
    use std::arch::asm;

    /// The armv7 convolution tile, 8 output channels × 4 pixels, as one
    /// `asm!` loop on Q registers: `q8`–`q15` accumulate (two per pixel),
    /// each `k` loads the 8 weights into `q0`–`q1` and each of the 4 pixels'
    /// inputs into one of `d4`–`d7`, and 8 `vmla.f32` by scalar do its 32
    /// multiply-adds. Written by hand because stable Rust has no Q-register
    /// type on 32-bit ARM: with D registers ([`D2`]) the same loop takes 2.3×
    /// the cycles (llvm-mca, Cortex-A72). Same contract as
    /// [`crate::kernels::conv::tile`].
    ///
    /// # Safety
    /// As [`crate::kernels::conv::tile`] with `MR = 8`, `NR = 4`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn tile(
        w: *const f32,
        koff: *const u32,
        k: usize,
        src: *const f32,
        base: &[usize; 4],
        bias: *const f32,
        relu: bool,
        acc: &mut [[f32; 8]; 4],
    ) {
        // The accumulators start as the bias, from `acc`.
        for row in acc.iter_mut() {
            // SAFETY: `bias` holds 8 values (the contract).
            row.copy_from_slice(unsafe { std::slice::from_raw_parts(bias, 8) });
        }
        // SAFETY: the contract: `w` holds `8·k` values, `koff` `k` offsets,
        // and every `src + base[j] + koff[i]` is in bounds; `acc` holds 32
        // values. The registers written are declared.
        unsafe {
            let p = base.map(|b| src.add(b));
            asm!(
                "vld1.32 {{d16-d19}}, [{acc}]!",
                "vld1.32 {{d20-d23}}, [{acc}]!",
                "vld1.32 {{d24-d27}}, [{acc}]!",
                "vld1.32 {{d28-d31}}, [{acc}]",
                "sub {acc}, {acc}, #96",
                "cmp {k}, #0",
                "beq 2f",
                "1:",
                "ldr {off}, [{koff}], #4",
                // Each input into all lanes of its own register: a load
                // into one lane would wait for the register's last value,
                // chaining the loads across iterations (20 cycles instead
                // of 6, llvm-mca).
                "add {t}, {p0}, {off}, lsl #2",
                "vld1.32 {{d4[]}}, [{t}]",
                "add {t}, {p1}, {off}, lsl #2",
                "vld1.32 {{d5[]}}, [{t}]",
                "add {t}, {p2}, {off}, lsl #2",
                "vld1.32 {{d6[]}}, [{t}]",
                "add {t}, {p3}, {off}, lsl #2",
                "vld1.32 {{d7[]}}, [{t}]",
                "vld1.32 {{d0-d3}}, [{w}]!",
                "vmla.f32 q8, q0, d4[0]",
                "vmla.f32 q9, q1, d4[0]",
                "vmla.f32 q10, q0, d5[0]",
                "vmla.f32 q11, q1, d5[0]",
                "vmla.f32 q12, q0, d6[0]",
                "vmla.f32 q13, q1, d6[0]",
                "vmla.f32 q14, q0, d7[0]",
                "vmla.f32 q15, q1, d7[0]",
                "subs {k}, {k}, #1",
                "bne 1b",
                "2:",
                "vst1.32 {{d16-d19}}, [{acc}]!",
                "vst1.32 {{d20-d23}}, [{acc}]!",
                "vst1.32 {{d24-d27}}, [{acc}]!",
                "vst1.32 {{d28-d31}}, [{acc}]",
                acc = inout(reg) acc.as_mut_ptr() => _,
                k = inout(reg) k => _,
                koff = inout(reg) koff => _,
                w = inout(reg) w => _,
                p0 = in(reg) p[0],
                p1 = in(reg) p[1],
                p2 = in(reg) p[2],
                p3 = in(reg) p[3],
                off = out(reg) _,
                t = out(reg) _,
                out("q0") _, out("q1") _, out("q2") _, out("q3") _,
                out("q8") _, out("q9") _, out("q10") _, out("q11") _,
                out("q12") _, out("q13") _, out("q14") _, out("q15") _,
                options(nostack),
            );
        }
        if relu {
            for v in acc.iter_mut().flatten() {
                *v = v.max(0.0);
            }
        }
    }

    /// Two `f32` lanes in one NEON D register, for 32-bit ARM. Stable Rust
    /// has no NEON vector type there (`core::arch::arm` is unstable), but an
    /// `f64` lives in a D register: its bits carry the two lanes, and each
    /// operation is one NEON instruction in `asm!`. The D form loses little
    /// on the Cortex-A7 and A53 (their NEON datapath is 64 bits wide: a Q
    /// instruction issues as two) but half the lanes on the Cortex-A72, so
    /// the tile, where most of the work is, has its own Q-register loop
    /// ([`tile`]); the other kernels use this.
    #[derive(Clone, Copy)]
    #[repr(transparent)]
    pub(crate) struct D2(f64);

    /// One NEON instruction `$op` on two D registers into a third.
    macro_rules! binary {
        ($op:literal, $a:expr, $b:expr) => {{
            let d: f64;
            // SAFETY: as the methods below.
            unsafe {
                asm!(concat!($op, " {0}, {1}, {2}"), out(dreg) d, in(dreg) $a, in(dreg) $b,
                     options(pure, nomem, nostack))
            };
            D2(d)
        }};
    }

    /// One NEON load `$op` of the value(s) at `$p` into a D register.
    macro_rules! load {
        ($op:literal, $p:expr) => {{
            let d: f64;
            // SAFETY: as the methods below.
            unsafe { asm!($op, out(dreg) d, in(reg) $p, options(pure, readonly, nostack)) };
            D2(d)
        }};
    }

    // SAFETY (every method below): the trait's contract; the crate is built
    // with NEON (the module's cfg, `bvae_arm_neon`, set by build.rs). Every
    // block is one instruction on its operands: `pure, nomem` where it
    // touches no memory, `readonly` for loads.
    impl Vector for D2 {
        const LANES: usize = 2;
        #[inline(always)]
        unsafe fn zero() -> Self {
            let d: f64;
            unsafe { asm!("vmov.i32 {0}, #0", out(dreg) d, options(pure, nomem, nostack)) };
            D2(d)
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            let d: f64;
            unsafe {
                asm!("vdup.32 {0}, {1}", out(dreg) d, in(reg) v.to_bits(), options(pure, nomem, nostack))
            };
            D2(d)
        }
        #[inline(always)]
        unsafe fn load_splat(p: *const f32) -> Self {
            load!("vld1.32 {{{0}[]}}, [{1}]", p)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            load!("vld1.32 {{{0}}}, [{1}]", p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { asm!("vst1.32 {{{0}}}, [{1}]", in(dreg) self.0, in(reg) p, options(nostack)) };
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // Not fused: ARMv7 NEON has no fused multiply-add by vector
            // before VFPv4, and VMLA is on every NEON core.
            let mut acc = c.0;
            unsafe {
                asm!("vmla.f32 {0}, {1}, {2}", inout(dreg) acc, in(dreg) self.0, in(dreg) b.0,
                     options(pure, nomem, nostack))
            };
            D2(acc)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            binary!("vadd.f32", self.0, b.0)
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            binary!("vmax.f32", self.0, b.0)
        }
        #[inline(always)]
        unsafe fn first(self) -> f32 {
            let r: u32;
            unsafe {
                asm!("vmov.32 {0}, {1}[0]", out(reg) r, in(dreg) self.0, options(pure, nomem, nostack))
            };
            f32::from_bits(r)
        }
    }
}

/// Vectors in flight in [`fma_body`]: more than FMA pipes × latency on the
/// cores we know (2 × 4), within every variant's register file.
const FMA_CHAINS: usize = 12;

/// `rounds` × [`FMA_CHAINS`] independent multiply-adds of `V`: the FLOP
/// done and a value to keep the work alive.
#[inline(always)]
unsafe fn fma_body<V: Vector>(rounds: usize) -> (f64, f32) {
    // SAFETY: the caller's contract (a variant's function).
    unsafe {
        let m = V::splat(0.999_999);
        let c = V::splat(1e-6);
        // Different starting values: identical chains could be merged.
        let mut a = [V::zero(); FMA_CHAINS];
        for (i, v) in a.iter_mut().enumerate() {
            *v = V::splat(1.0 + i as f32);
        }
        for _ in 0..rounds {
            for v in a.iter_mut() {
                *v = v.mul_add(m, c);
            }
        }
        let mut sum = V::zero();
        for v in a {
            sum = sum.add(v);
        }
        ((rounds * FMA_CHAINS * V::LANES * 2) as f64, sum.first())
    }
}

/// Makes one variant's module: every kernel body instantiated with vector
/// type `$v` and the variant's tile shapes, each function compiled with the
/// attributes `$attr` (its `#[target_feature]`).
macro_rules! variant {
    (
        $(#[$cfg:meta])*
        mod $name:ident($(#[$attr:meta])*): $v:ty,
        conv $vm:literal x $nr:literal $(by $tile:path)?,
        small $nv:literal,
        dense $vg:literal x $sets:literal
    ) => {
        $(#[$cfg])*
        pub(crate) mod $name {
            use super::super::{conv, dense};
            /// Output channels × pixels of the convolution tile.
            pub(crate) const MR: usize = $vm * <$v as super::Vector>::LANES;
            /// Pixels of the convolution tile.
            pub(crate) const NR: usize = $nr;
            /// Pixels per tile of the small-channel convolution.
            pub(crate) const SMALL_PX: usize = $nv * <$v as super::Vector>::LANES;

            /// The convolution tile ([`conv::tile`], or the variant's own
            /// where it names one with `by`).
            ///
            /// # Safety
            /// As [`conv::tile`]; the CPU runs this variant.
            $(#[$attr])*
            #[allow(clippy::too_many_arguments, unreachable_code)]
            pub(crate) unsafe fn tile(
                w: *const f32,
                koff: *const u32,
                k: usize,
                src: *const f32,
                base: &[usize; NR],
                bias: *const f32,
                relu: bool,
                acc: &mut [[f32; MR]; NR],
            ) {
                // SAFETY (both): the function's contract.
                $(return unsafe { $tile(w, koff, k, src, base, bias, relu, acc) };)?
                unsafe { conv::tile::<$v, $vm, NR, MR>(w, koff, k, src, base, bias, relu, acc) }
            }

            /// The small-channel convolution ([`conv::small`]).
            ///
            /// # Safety
            /// As [`conv::small`]; the CPU runs this variant.
            $(#[$attr])*
            pub(crate) unsafe fn small(
                w: &[f32],
                koff: &[u32],
                src: &[f32],
                bias: &[f32],
                relu: bool,
                run: conv::Span,
            ) {
                // SAFETY: the function's contract.
                unsafe { conv::small::<$v, $nv>(w, koff, src, bias, relu, run) }
            }

            /// One group of the dense layer ([`dense::group`]).
            ///
            /// # Safety
            /// As [`dense::group`]; the CPU runs this variant.
            $(#[$attr])*
            pub(crate) unsafe fn group(
                w: &[f32],
                x: &[f32],
                bias: &[f32],
                relu: bool,
                acc: &mut [f32; dense::GROUP],
            ) {
                // SAFETY: the function's contract.
                unsafe { dense::group::<$v, $vg, $sets>(w, x, bias, relu, acc) }
            }

            /// The peak loop ([`super::fma_body`]).
            ///
            /// # Safety
            /// The CPU runs this variant.
            $(#[$attr])*
            pub(crate) unsafe fn fma_loop(rounds: usize) -> (f64, f32) {
                // SAFETY: the function's contract.
                unsafe { super::fma_body::<$v>(rounds) }
            }

            /// The summed binary cross-entropy ([`crate::score`]).
            ///
            /// # Safety
            /// The CPU runs this variant.
            $(#[$attr])*
            pub(crate) unsafe fn bce_sum(x: &[f32], r: &[f32]) -> f32 {
                crate::score::bce_sum_portable(x, r)
            }
        }
    };
}

variant! {
    mod scalar(): f32, conv 8 x 4, small 8, dense 64 x 1
}

variant! {
    #[cfg(target_arch = "x86_64")]
    mod avx2(#[target_feature(enable = "avx2,fma")]): std::arch::x86_64::__m256,
    conv 2 x 6, small 2, dense 8 x 1
}

variant! {
    #[cfg(target_arch = "x86_64")]
    mod avx512(#[target_feature(enable = "avx512f")]): std::arch::x86_64::__m512,
    conv 2 x 8, small 6, dense 4 x 2
}

variant! {
    #[cfg(target_arch = "aarch64")]
    mod neon(#[target_feature(enable = "neon")]): std::arch::aarch64::float32x4_t,
    conv 4 x 6, small 4, dense 16 x 1
}

// 32-bit ARM: the tile is `arm32::tile` (Q registers, `asm!`), the other
// kernels run on D registers (`arm32::D2`). `#[target_feature]` is
// unstable there, so the variant exists where the whole crate is built with
// NEON (.cargo/config.toml does for armv7; build.rs turns the flag into
// `cfg(bvae_arm_neon)`).
variant! {
    #[cfg(bvae_arm_neon)]
    mod neon(): super::arm32::D2,
    conv 4 x 4 by super::arm32::tile, small 4, dense 32 x 1
}

/// Evaluates `$body` with `$v` naming the module of variant `$isa`
/// (`scalar`, `avx2`, ...): the one place that maps a variant to its
/// compiled kernels. `$other` serves variants of another architecture,
/// which are never built here (every constructor refuses a variant the CPU
/// cannot run).
macro_rules! on_variant {
    ($isa:expr, $v:ident => $body:expr, other => $other:expr) => {
        match $isa {
            $crate::kernels::Isa::Scalar => {
                use $crate::kernels::simd::scalar as $v;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx2 => {
                use $crate::kernels::simd::avx2 as $v;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx512 => {
                use $crate::kernels::simd::avx512 as $v;
                $body
            }
            #[cfg(any(target_arch = "aarch64", bvae_arm_neon))]
            $crate::kernels::Isa::Neon => {
                use $crate::kernels::simd::neon as $v;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => $other,
        }
    };
}
pub(crate) use on_variant;

/// Pixels per tile of the small-channel convolution of `isa`.
pub(crate) fn small_px(isa: Isa) -> usize {
    on_variant!(isa, v => v::SMALL_PX, other => scalar::SMALL_PX)
}

/// [`fma_body`] of variant `isa`.
///
/// # Safety
/// The CPU runs `isa`.
pub(crate) unsafe fn fma_loop(isa: Isa, rounds: usize) -> (f64, f32) {
    // SAFETY: the function's contract.
    unsafe { on_variant!(isa, v => v::fma_loop(rounds), other => scalar::fma_loop(rounds)) }
}

/// [`crate::score`]'s binary cross-entropy compiled for `isa`.
///
/// # Safety
/// The CPU runs `isa` ([`Isa::detect`] or [`Isa::supported`]).
pub(crate) unsafe fn bce_sum(isa: Isa, x: &[f32], r: &[f32]) -> f32 {
    // SAFETY: the function's contract.
    unsafe { on_variant!(isa, v => v::bce_sum(x, r), other => scalar::bce_sum(x, r)) }
}
