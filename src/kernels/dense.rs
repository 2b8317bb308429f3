//! bvae's own fully connected layer for one image: `y = W·x + b`, with an
//! optional fused ReLU.
//!
//! The fully connected layers between a β-VAE's convolutions and its latent
//! code are matrix–vector products (1024×256 in the Burgess model): one
//! pass over a weight matrix larger than a core's L1, so their speed is the
//! speed of reading the weights. tract runs them as general matrix products
//! with a separate bias and ReLU, in ~10 µs each here, on one thread. Here
//! the weights are packed once into groups of [`GROUP`] outputs
//! (`[group][k][GROUP]`, one contiguous stream per group), each group is
//! one run over `k` with `GROUP` accumulators in registers, and the groups
//! are shared by the members of the current [`team`] when the layer is large
//! enough, each reading its own part of the weights.

use super::simd::{self, Vector};
use super::{Isa, Out, PARALLEL_MACS, team};

/// Outputs computed together: four AVX-512 registers, eight AVX2 ones,
/// sixteen NEON ones.
pub const GROUP: usize = 64;

/// A fully connected layer with its weights packed for one instruction
/// set.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedDense {
    isa: Isa,
    k: usize,
    n: usize,
    relu: bool,
    /// `[n / GROUP groups][k][GROUP]`, outputs padded with zeros.
    weights: Vec<f32>,
    /// Bias per output, padded like the weights.
    bias: Vec<f32>,
}

impl PackedDense {
    /// Packs `weights` (`[n, k]`: row `o` gives output `o`) and `bias` (`[n]`)
    /// for the fastest kernel of this CPU; `None` when there is none or the
    /// sizes do not match.
    pub fn new(
        k: usize,
        n: usize,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
    ) -> Option<PackedDense> {
        Self::with_isa(Isa::detect()?, k, n, weights, bias, relu)
    }

    /// As [`PackedDense::new`] for a given variant; `None` also when this
    /// CPU cannot run it.
    pub fn with_isa(
        isa: Isa,
        k: usize,
        n: usize,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
    ) -> Option<PackedDense> {
        if weights.len() != n.checked_mul(k)? {
            return None;
        }
        Self::from_fn(isa, k, n, |o, kk| weights[o * k + kk], bias, relu)
    }

    /// As [`PackedDense::with_isa`], with the weight of output `o` and input
    /// `kk` given by `weight(o, kk)` (called for every `o < n`, `kk < k`), so
    /// that a weight matrix stored in another layout is packed straight from
    /// it. The calls run in packed order (for each input, `GROUP` outputs in
    /// a row): a matrix stored `[k, n]` is read in order.
    pub fn from_fn(
        isa: Isa,
        k: usize,
        n: usize,
        weight: impl Fn(usize, usize) -> f32,
        bias: &[f32],
        relu: bool,
    ) -> Option<PackedDense> {
        if !isa.supported() || k == 0 || n == 0 || bias.len() != n {
            return None;
        }
        let groups = n.div_ceil(GROUP);
        let mut packed = Vec::with_capacity(groups.checked_mul(k)?.checked_mul(GROUP)?);
        for g in 0..groups {
            for kk in 0..k {
                for l in 0..GROUP {
                    let o = g * GROUP + l;
                    packed.push(if o < n { weight(o, kk) } else { 0.0 });
                }
            }
        }
        let mut padded = vec![0.0f32; groups * GROUP];
        padded[..n].copy_from_slice(bias);
        Some(PackedDense {
            isa,
            k,
            n,
            relu,
            weights: packed,
            bias: padded,
        })
    }

    /// Inputs per image.
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Outputs per image.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Whether a ReLU is applied to the output.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Computes one image: `x` holds `k` inputs, `out` receives `n` outputs.
    ///
    /// # Panics
    /// When a slice is shorter than that (a caller's bug).
    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        assert!(x.len() >= self.k, "dense input too short");
        assert!(out.len() >= self.n, "dense output too short");
        let groups = self.bias.len() / GROUP;
        let parts = if team::threads() > 1 && self.k * self.n >= PARALLEL_MACS {
            team::threads().min(groups)
        } else {
            1
        };
        let dst = Out(out.as_mut_ptr(), out.len());
        team::split(parts, &|p| {
            let mut acc = [0.0f32; GROUP];
            for g in p * groups / parts..(p + 1) * groups / parts {
                let w = &self.weights[g * self.k * GROUP..(g + 1) * self.k * GROUP];
                let b = &self.bias[g * GROUP..(g + 1) * GROUP];
                let x = &x[..self.k];
                // SAFETY: a layer is only built for a variant this
                // CPU runs; `w` holds k·GROUP values, `x` k.
                simd::on_variant!(self.isa, v => unsafe {
                    v::group(w, x, b, self.relu, &mut acc)
                }, other => group_reference(w, x, b, self.relu, &mut acc));
                let valid = GROUP.min(self.n - g * GROUP);
                // SAFETY: outputs `g·GROUP ..+ valid` are below `n` (checked
                // above), and only this part writes group `g`.
                unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.at(g * GROUP), valid) };
            }
        });
    }
}

/// One group in plain Rust (other CPUs, and the tests' reference).
fn group_reference(w: &[f32], x: &[f32], bias: &[f32], relu: bool, acc: &mut [f32; GROUP]) {
    acc.copy_from_slice(&bias[..GROUP]);
    for (kk, &xv) in x.iter().enumerate() {
        for (a, &wv) in acc.iter_mut().zip(&w[kk * GROUP..(kk + 1) * GROUP]) {
            *a += wv * xv;
        }
    }
    if relu {
        acc.iter_mut().for_each(|a| *a = a.max(0.0));
    }
}

/// One group of [`GROUP`] outputs, written once: `VG` vectors of
/// accumulators (`VG·V::LANES = GROUP`) in `SETS` sets that take turns over
/// `k` (two sets halve the dependency chains where registers allow), each
/// weight row of the group read once.
///
/// # Safety
/// Called from a variant of `V`'s instruction set on a CPU that has it; `w`
/// holds `x.len()·GROUP` values, `bias` `GROUP`.
#[inline(always)]
pub(crate) unsafe fn group<V: Vector, const VG: usize, const SETS: usize>(
    w: &[f32],
    x: &[f32],
    bias: &[f32],
    relu: bool,
    acc: &mut [f32; GROUP],
) {
    debug_assert_eq!(VG * V::LANES, GROUP);
    debug_assert!(w.len() >= x.len() * GROUP && bias.len() >= GROUP);
    let l = V::LANES;
    // SAFETY: the function's contract covers every pointer read here.
    unsafe {
        let (w, b) = (w.as_ptr(), bias.as_ptr());
        let mut a = [[V::zero(); VG]; SETS];
        for (j, v) in a[0].iter_mut().enumerate() {
            *v = V::load(b.add(l * j));
        }
        let k = x.len();
        let mut kk = 0;
        while kk + SETS <= k {
            for (s, set) in a.iter_mut().enumerate() {
                let xv = V::load_splat(x.as_ptr().add(kk + s));
                let row = w.add((kk + s) * GROUP);
                for (j, v) in set.iter_mut().enumerate() {
                    *v = V::load(row.add(l * j)).mul_add(xv, *v);
                }
            }
            kk += SETS;
        }
        while kk < k {
            let xv = V::load_splat(x.as_ptr().add(kk));
            let row = w.add(kk * GROUP);
            for (j, v) in a[0].iter_mut().enumerate() {
                *v = V::load(row.add(l * j)).mul_add(xv, *v);
            }
            kk += 1;
        }
        let zero = V::zero();
        for j in 0..VG {
            let mut v = a[0][j];
            for set in &a[1..] {
                v = v.add(set[j]);
            }
            if relu {
                v = v.max(zero);
            }
            v.store(acc.as_mut_ptr().add(l * j));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::tests::values;

    fn check(isa: Isa) {
        let teams = [
            None,
            Some(team::Team::new(2).expect("threads")),
            Some(team::Team::new(3).expect("threads")),
        ];
        // The Burgess model's layers, odd sizes, and a single output.
        for (i, &(k, n)) in [
            (1024, 256),
            (256, 1024),
            (10, 256),
            (7, 65),
            (301, 130),
            (5, 1),
        ]
        .iter()
        .enumerate()
        {
            let w = values(n * k, 1 + i as u32);
            let b = values(n, 50 + i as u32);
            let x = values(k, 90 + i as u32);
            for relu in [false, true] {
                let d = PackedDense::with_isa(isa, k, n, &w, &b, relu).expect("packs");
                let want: Vec<f32> = (0..n)
                    .map(|o| {
                        let s = b[o] + (0..k).map(|j| w[o * k + j] * x[j]).sum::<f32>();
                        if relu { s.max(0.0) } else { s }
                    })
                    .collect();
                for t in &teams {
                    let mut out = vec![f32::NAN; n + 3];
                    team::frame(t.as_ref(), || d.run(&x, &mut out));
                    for o in 0..n {
                        let err = (out[o] - want[o]).abs();
                        assert!(err < 1e-4, "{isa:?} k={k} n={n} {o}: {err}");
                    }
                    assert!(out[n..].iter().all(|v| v.is_nan()), "wrote past the end");
                }
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        for isa in Isa::available() {
            check(isa);
            let d = PackedDense::with_isa(isa, 3, 2, &[1., 2., 3., 4., 5., 6.], &[1., -100.], true)
                .expect("packs");
            let mut out = [0.0; 2];
            d.run(&[1.0, 1.0, 1.0], &mut out);
            assert_eq!(out, [7.0, 0.0], "{isa}");
        }
        for isa in Isa::ALL.into_iter().filter(|i| !i.supported()) {
            assert!(PackedDense::with_isa(isa, 3, 2, &[0.0; 6], &[0.0; 2], false).is_none());
        }
        // The plain form the kernels are checked against.
        let mut acc = [0.0; GROUP];
        let w: Vec<f32> = (0..2 * GROUP).map(|i| i as f32).collect();
        group_reference(&w, &[1.0, -1.0], &[0.5; GROUP], false, &mut acc);
        assert!(acc.iter().all(|&a| a == 0.5 - GROUP as f32), "{acc:?}");
    }

    /// Random layer sizes (tails of a group, single outputs, long and
    /// short inputs), with and without ReLU, on one thread or a team,
    /// against the definition; nothing is written past the output.
    #[test]
    fn random_layers_match_the_definition() {
        use proptest::prelude::*;
        let isas = Isa::available();
        let teams = [
            None,
            Some(team::Team::new(2).expect("threads")),
            Some(team::Team::new(3).expect("threads")),
        ];
        let config = ProptestConfig {
            cases: 64 * isas.len() as u32,
            ..ProptestConfig::default()
        };
        proptest!(config, |(k in 1usize..=1100, n in 1usize..=300, relu: bool, t in 0usize..3, v in 0..isas.len(), seed: u32)| {
            let isa = isas[v];
            let w = values(n * k, seed);
            let b = values(n, seed ^ 0x55);
            let x = values(k, seed ^ 0xaa);
            let d = PackedDense::with_isa(isa, k, n, &w, &b, relu);
            prop_assert!(d.is_some());
            let Some(d) = d else { return Ok(()) };
            let mut out = vec![f32::NAN; n + 3];
            team::frame(teams[t].as_ref(), || d.run(&x, &mut out));
            for o in 0..n {
                let s = b[o] as f64 + (0..k).map(|j| (w[o * k + j] * x[j]) as f64).sum::<f64>();
                let want = if relu { s.max(0.0) } else { s } as f32;
                let err = (out[o] - want).abs();
                prop_assert!(err < 1e-4 * (k as f32 / 64.0).max(1.0), "{} k={} n={} {}: {}", isa, k, n, o, err);
            }
            prop_assert!(out[n..].iter().all(|v| v.is_nan()), "wrote past the end");
        });
    }

    #[test]
    fn refuses_mismatched_sizes() {
        let isa = Isa::Scalar;
        assert!(PackedDense::with_isa(isa, 3, 2, &[0.0; 5], &[0.0; 2], false).is_none());
        assert!(PackedDense::with_isa(isa, 3, 2, &[0.0; 6], &[0.0; 1], false).is_none());
        assert!(PackedDense::with_isa(isa, 0, 2, &[], &[0.0; 2], false).is_none());
    }
}
