//! SplitMix64: the small deterministic generator behind the synthetic
//! scene and the synthetic anomalies of calibration.
//!
//! Both need the same numbers on every machine and in every release
//! (recordings, calibration profiles and tests depend on them), so the
//! stream of a seed is fixed: do not change the constants or the way the
//! helpers draw from [`SplitMix64::next_u64`].

/// SplitMix64 (Steele, Lea and Flood 2014): a 64-bit counter passed
/// through a mixing function. Fast and well mixed; not for cryptography.
///
/// ```
/// use bvae::rng::SplitMix64;
/// let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!((0.0..1.0).contains(&a.unit_f32()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator whose stream `seed` names.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits (every value an `f32` holds exactly).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [`lo`, `hi`) with 53 bits.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index below `n` (0 when `n` is 0); slightly biased towards small
    /// values when `n` is not a power of two, which is fine for picking
    /// positions.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Mixes two numbers into one well-spread seed (one SplitMix64 step of
/// their combination).
pub fn hash2(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ b.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_of_a_seed_is_fixed() {
        // The reference values of SplitMix64 for seed 0 (as in the
        // generator's published C code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        let mut r = SplitMix64::new(1234);
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&r.unit_f32()));
            assert!((2.0..3.0).contains(&r.range_f64(2.0, 3.0)));
            assert!(r.below(5) < 5);
        }
        assert_eq!(r.below(0), 0);
    }
}
