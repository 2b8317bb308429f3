//! bvae's own 2-D convolution: a direct (implicit-GEMM) convolution with
//! bias and an optional fused ReLU, for the convolutions of a β-VAE.
//!
//! tract lowers a convolution to a padding copy, an im2col packing, a
//! matrix product, a reshape and a separate ReLU; on the small feature maps
//! of a 64×64 model that costs about twice what onnxruntime spends (see the
//! README, Performance). Here the weights are packed once, at plan time, into
//! blocks of `MR` output channels (`[block][k][MR]`, `k` running over input
//! channel, kernel row, kernel column); the input is copied once per frame
//! into a zero-bordered buffer, and a register-blocked micro-kernel computes
//! `MR` output channels × `NR` output pixels at a time, reading each input
//! value as a broadcast and each weight vector once per `k`. Bias and ReLU
//! are applied before the tile is written, so the convolution is one pass
//! over its output.
//!
//! The micro-kernels exist for AVX-512 (x86_64, detected at run time) and
//! NEON (aarch64). Elsewhere [`PackedConv::new`] returns `None` and the
//! caller keeps tract's own convolution.

/// Shape of one convolution (batch excluded), as in ONNX `Conv` with
/// `group = 1` and no dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Input channels.
    pub ic: usize,
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Output channels.
    pub oc: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero padding: top, left, bottom, right.
    pub pads: [usize; 4],
}

impl ConvShape {
    /// Height of the zero-padded input.
    pub fn padded_h(&self) -> usize {
        self.ih + self.pads[0] + self.pads[2]
    }

    /// Width of the zero-padded input.
    pub fn padded_w(&self) -> usize {
        self.iw + self.pads[1] + self.pads[3]
    }

    /// Output height, `None` when the kernel does not fit the padded input.
    pub fn oh(&self) -> Option<usize> {
        let h = self.padded_h();
        (self.sh > 0 && h >= self.kh).then(|| (h - self.kh) / self.sh + 1)
    }

    /// Output width, `None` when the kernel does not fit the padded input.
    pub fn ow(&self) -> Option<usize> {
        let w = self.padded_w();
        (self.sw > 0 && w >= self.kw).then(|| (w - self.kw) / self.sw + 1)
    }

    /// Values of one input image (`ic·ih·iw`).
    pub fn input_len(&self) -> usize {
        self.ic * self.ih * self.iw
    }

    /// Multiply-adds of one image.
    pub fn macs(&self) -> usize {
        self.oc * self.ic * self.kh * self.kw * self.oh().unwrap_or(0) * self.ow().unwrap_or(0)
    }
}

/// The instruction set a [`PackedConv`] runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86_64 AVX-512F: 32 output channels × 8 pixels per tile.
    Avx512,
    /// aarch64 NEON: 16 output channels × 6 pixels per tile.
    Neon,
}

impl Isa {
    /// The fastest kernel this CPU can run, if any.
    pub fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            return Some(Isa::Neon);
        }
        #[allow(unreachable_code)]
        None
    }

    /// Output channels per tile.
    pub fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Neon => 16,
        }
    }

    /// Output pixels per tile.
    pub fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Neon => 6,
        }
    }
}

/// A convolution with its weights packed for one instruction set, ready to
/// run on frames of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    shape: ConvShape,
    isa: Isa,
    relu: bool,
    oh: usize,
    ow: usize,
    /// `[oc / MR blocks][K][MR]`, output channels padded with zeros to a
    /// multiple of `MR`.
    weights: Vec<f32>,
    /// Bias per output channel, padded like the weights.
    bias: Vec<f32>,
    /// Offset in the padded input of each `k` (channel, row, column).
    koff: Vec<u32>,
    /// Offset in the padded input of each output pixel's window.
    base: Vec<u32>,
}

impl PackedConv {
    /// Packs `weights` (`[oc, ic, kh, kw]`, ONNX order) and `bias` (`[oc]`,
    /// zeros when absent) for the fastest kernel of this CPU. `None` when
    /// there is none, or when the convolution would waste most of it (fewer
    /// output channels than a tile holds, a shape that does not fit);
    /// the caller then keeps tract's convolution.
    pub fn new(
        shape: ConvShape,
        weights: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) -> Option<PackedConv> {
        Self::with_isa(Isa::detect()?, shape, weights, bias, relu)
    }

    /// As [`PackedConv::new`], for a given instruction set (which must be
    /// available on this CPU: [`Isa::detect`] or a feature check).
    pub fn with_isa(
        isa: Isa,
        shape: ConvShape,
        weights: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) -> Option<PackedConv> {
        let s = shape;
        let (oh, ow) = (s.oh()?, s.ow()?);
        let k = s.ic * s.kh * s.kw;
        let mr = isa.mr();
        if s.oc < mr / 2 || k == 0 || weights.len() != s.oc * k {
            return None;
        }
        if bias.is_some_and(|b| b.len() != s.oc) {
            return None;
        }
        let (hp, wp) = (s.padded_h(), s.padded_w());
        // Offsets are u32: refuse inputs too large for them.
        if s.ic.checked_mul(hp)?.checked_mul(wp)? > u32::MAX as usize {
            return None;
        }
        let blocks = s.oc.div_ceil(mr);
        let mut packed = vec![0.0f32; blocks * k * mr];
        for o in 0..s.oc {
            let (b, l) = (o / mr, o % mr);
            for kk in 0..k {
                packed[(b * k + kk) * mr + l] = weights[o * k + kk];
            }
        }
        let mut padded_bias = vec![0.0f32; blocks * mr];
        if let Some(b) = bias {
            padded_bias[..s.oc].copy_from_slice(b);
        }
        let mut koff = Vec::with_capacity(k);
        for c in 0..s.ic {
            for y in 0..s.kh {
                for x in 0..s.kw {
                    koff.push(((c * hp + y) * wp + x) as u32);
                }
            }
        }
        let mut base = Vec::with_capacity(oh * ow);
        for y in 0..oh {
            for x in 0..ow {
                base.push((y * s.sh * wp + x * s.sw) as u32);
            }
        }
        Some(PackedConv {
            shape,
            isa,
            relu,
            oh,
            ow,
            weights: packed,
            bias: padded_bias,
            koff,
            base,
        })
    }

    /// The convolution's shape.
    pub fn shape(&self) -> &ConvShape {
        &self.shape
    }

    /// The instruction set it runs with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Whether a ReLU is applied to the output.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Output height and width.
    pub fn output_hw(&self) -> (usize, usize) {
        (self.oh, self.ow)
    }

    /// Values of one output image (`oc·oh·ow`).
    pub fn output_len(&self) -> usize {
        self.shape.oc * self.oh * self.ow
    }

    /// Length of the scratch buffer [`PackedConv::run`] needs (the padded
    /// input).
    pub fn scratch_len(&self) -> usize {
        self.shape.ic * self.shape.padded_h() * self.shape.padded_w()
    }

    fn needs_padding(&self) -> bool {
        self.shape.pads.iter().any(|&p| p > 0)
    }

    /// Convolves one image: `input` is `[ic, ih, iw]`, `out` is
    /// `[oc, oh, ow]`. `scratch` holds at least [`PackedConv::scratch_len`]
    /// values; its zero border is kept between calls, so pass the same
    /// buffer each time (it is zeroed here when `fresh` is true).
    ///
    /// # Panics
    /// When a slice is shorter than the shape requires (a caller's bug).
    pub fn run(&self, input: &[f32], scratch: &mut [f32], fresh: bool, out: &mut [f32]) {
        let s = &self.shape;
        assert!(input.len() >= s.input_len(), "conv input too short");
        assert!(out.len() >= self.output_len(), "conv output too short");
        let src: &[f32] = if self.needs_padding() {
            let (hp, wp) = (s.padded_h(), s.padded_w());
            let scratch = &mut scratch[..s.ic * hp * wp];
            if fresh {
                scratch.fill(0.0);
            }
            for c in 0..s.ic {
                for y in 0..s.ih {
                    let from = (c * s.ih + y) * s.iw;
                    let to = (c * hp + y + s.pads[0]) * wp + s.pads[1];
                    scratch[to..to + s.iw].copy_from_slice(&input[from..from + s.iw]);
                }
            }
            scratch
        } else {
            &input[..s.input_len()]
        };
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: an `Avx512` PackedConv is only built where the CPU
                // has AVX-512F (`Isa::detect`, or a caller that checked), and
                // every offset was derived from the shape the slices were
                // just checked against.
                unsafe { self.tiles::<32, 8>(src, out, avx512::tile) }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                // SAFETY: NEON is part of aarch64; offsets as above.
                unsafe { self.tiles::<16, 6>(src, out, neon::tile) }
            }
            #[allow(unreachable_patterns)]
            _ => self.reference(src, out),
        }
    }

    /// Runs the micro-kernel over every (channel block, pixel tile).
    ///
    /// # Safety
    /// `src` holds the padded input and `out` at least `output_len` values;
    /// `kernel` must be runnable on this CPU.
    #[allow(dead_code)]
    unsafe fn tiles<const MR: usize, const NR: usize>(
        &self,
        src: &[f32],
        out: &mut [f32],
        kernel: Tile<MR, NR>,
    ) {
        let s = &self.shape;
        let k = self.koff.len();
        let pixels = self.oh * self.ow;
        let last = *self.koff.last().unwrap_or(&0) as usize;
        debug_assert!(self.base.iter().all(|&b| b as usize + last < src.len()));
        let mut acc = [[0.0f32; MR]; NR];
        for b in 0..self.bias.len() / MR {
            let w = &self.weights[b * k * MR..(b + 1) * k * MR];
            let bias = &self.bias[b * MR..(b + 1) * MR];
            let channels = MR.min(s.oc - b * MR);
            let mut p0 = 0;
            while p0 < pixels {
                let n = NR.min(pixels - p0);
                let mut base = [self.base[p0] as usize; NR];
                for (j, slot) in base.iter_mut().enumerate().take(n) {
                    *slot = self.base[p0 + j] as usize;
                }
                // SAFETY: see the function's contract; the lanes past `n`
                // repeat the tile's first pixel, which is in bounds.
                unsafe {
                    kernel(
                        w.as_ptr(),
                        self.koff.as_ptr(),
                        k,
                        src.as_ptr(),
                        &base,
                        bias.as_ptr(),
                        self.relu,
                        &mut acc,
                    )
                };
                for l in 0..channels {
                    let row = &mut out[(b * MR + l) * pixels + p0..][..n];
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = acc[j][l];
                    }
                }
                p0 += n;
            }
        }
    }

    /// A plain scalar convolution with the same packing: the reference the
    /// micro-kernels are tested against.
    pub fn reference(&self, src: &[f32], out: &mut [f32]) {
        let s = &self.shape;
        let mr = self.isa.mr();
        let k = self.koff.len();
        let pixels = self.oh * self.ow;
        for o in 0..s.oc {
            let (b, l) = (o / mr, o % mr);
            for p in 0..pixels {
                let mut sum = self.bias[o];
                for kk in 0..k {
                    sum += self.weights[(b * k + kk) * mr + l]
                        * src[self.base[p] as usize + self.koff[kk] as usize];
                }
                out[o * pixels + p] = if self.relu { sum.max(0.0) } else { sum };
            }
        }
    }
}

/// A micro-kernel: `MR` output channels × `NR` pixels, accumulated over `k`
/// and written (bias added, ReLU applied) to `acc[pixel][channel]`.
#[allow(dead_code)]
type Tile<const MR: usize, const NR: usize> = unsafe fn(
    w: *const f32,
    koff: *const u32,
    k: usize,
    src: *const f32,
    base: &[usize; NR],
    bias: *const f32,
    relu: bool,
    acc: &mut [[f32; MR]; NR],
);

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// 32 output channels (two zmm registers) × 8 pixels.
    ///
    /// # Safety
    /// AVX-512F must be available; `w` holds `k·32` values, `koff` `k`
    /// offsets, and `src[base[j] + koff[i]]` is in bounds for all `i`, `j`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        w: *const f32,
        koff: *const u32,
        k: usize,
        src: *const f32,
        base: &[usize; 8],
        bias: *const f32,
        relu: bool,
        acc: &mut [[f32; 32]; 8],
    ) {
        // SAFETY: the caller's contract covers every pointer read here.
        unsafe {
            let b0 = _mm512_loadu_ps(bias);
            let b1 = _mm512_loadu_ps(bias.add(16));
            let mut a0 = [b0; 8];
            let mut a1 = [b1; 8];
            let p: [*const f32; 8] = [
                src.add(base[0]),
                src.add(base[1]),
                src.add(base[2]),
                src.add(base[3]),
                src.add(base[4]),
                src.add(base[5]),
                src.add(base[6]),
                src.add(base[7]),
            ];
            for i in 0..k {
                let off = *koff.add(i) as usize;
                let w0 = _mm512_loadu_ps(w.add(i * 32));
                let w1 = _mm512_loadu_ps(w.add(i * 32 + 16));
                for j in 0..8 {
                    let x = _mm512_set1_ps(*p[j].add(off));
                    a0[j] = _mm512_fmadd_ps(w0, x, a0[j]);
                    a1[j] = _mm512_fmadd_ps(w1, x, a1[j]);
                }
            }
            let zero = _mm512_setzero_ps();
            for j in 0..8 {
                if relu {
                    a0[j] = _mm512_max_ps(a0[j], zero);
                    a1[j] = _mm512_max_ps(a1[j], zero);
                }
                _mm512_storeu_ps(acc[j].as_mut_ptr(), a0[j]);
                _mm512_storeu_ps(acc[j].as_mut_ptr().add(16), a1[j]);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// 16 output channels (four q registers) × 6 pixels.
    ///
    /// # Safety
    /// `w` holds `k·16` values, `koff` `k` offsets, and
    /// `src[base[j] + koff[i]]` is in bounds for all `i`, `j`.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        w: *const f32,
        koff: *const u32,
        k: usize,
        src: *const f32,
        base: &[usize; 6],
        bias: *const f32,
        relu: bool,
        acc: &mut [[f32; 16]; 6],
    ) {
        // SAFETY: the caller's contract covers every pointer read here.
        unsafe {
            let bv = [
                vld1q_f32(bias),
                vld1q_f32(bias.add(4)),
                vld1q_f32(bias.add(8)),
                vld1q_f32(bias.add(12)),
            ];
            let mut a = [bv; 6];
            let p: [*const f32; 6] = [
                src.add(base[0]),
                src.add(base[1]),
                src.add(base[2]),
                src.add(base[3]),
                src.add(base[4]),
                src.add(base[5]),
            ];
            for i in 0..k {
                let off = *koff.add(i) as usize;
                let wp = w.add(i * 16);
                let wv = [
                    vld1q_f32(wp),
                    vld1q_f32(wp.add(4)),
                    vld1q_f32(wp.add(8)),
                    vld1q_f32(wp.add(12)),
                ];
                for j in 0..6 {
                    let x = vld1q_dup_f32(p[j].add(off));
                    for q in 0..4 {
                        a[j][q] = vfmaq_f32(a[j][q], wv[q], x);
                    }
                }
            }
            let zero = vdupq_n_f32(0.0);
            for j in 0..6 {
                for q in 0..4 {
                    let v = if relu {
                        vmaxq_f32(a[j][q], zero)
                    } else {
                        a[j][q]
                    };
                    vst1q_f32(acc[j].as_mut_ptr().add(q * 4), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Convolution straight from the ONNX definition.
    fn naive(s: &ConvShape, w: &[f32], b: &[f32], relu: bool, x: &[f32]) -> Vec<f32> {
        let (oh, ow) = (s.oh().unwrap(), s.ow().unwrap());
        let mut out = vec![0.0; s.oc * oh * ow];
        for o in 0..s.oc {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = b[o] as f64;
                    for c in 0..s.ic {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (y * s.sh + ky) as isize - s.pads[0] as isize;
                                let ix = (xo * s.sw + kx) as isize - s.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.ih as isize || ix >= s.iw as isize {
                                    continue;
                                }
                                let xv = x[(c * s.ih + iy as usize) * s.iw + ix as usize];
                                let wv = w[((o * s.ic + c) * s.kh + ky) * s.kw + kx];
                                sum += (xv * wv) as f64;
                            }
                        }
                    }
                    let v = sum as f32;
                    out[(o * oh + y) * ow + xo] = if relu { v.max(0.0) } else { v };
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn shapes() -> Vec<ConvShape> {
        let conv = |ic, ih, iw, oc, k, s, p: [usize; 4]| ConvShape {
            ic,
            ih,
            iw,
            oc,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            pads: p,
        };
        vec![
            // The Burgess encoder's layers.
            conv(1, 64, 64, 32, 4, 2, [1; 4]),
            conv(32, 32, 32, 32, 4, 2, [1; 4]),
            conv(32, 16, 16, 64, 4, 2, [1; 4]),
            conv(64, 8, 8, 64, 4, 2, [1; 4]),
            // Sub-pixel decoder layers: 2×2, stride 1, padded by one.
            conv(64, 8, 8, 128, 2, 1, [1; 4]),
            conv(32, 16, 16, 128, 2, 1, [1; 4]),
            // Odd sizes: channels not a multiple of a tile, uneven pads, 3×5.
            ConvShape {
                ic: 3,
                ih: 11,
                iw: 7,
                oc: 20,
                kh: 3,
                kw: 5,
                sh: 1,
                sw: 2,
                pads: [0, 2, 1, 0],
            },
            conv(5, 9, 9, 17, 3, 1, [0; 4]),
        ]
    }

    fn check(isa: Isa) {
        for (i, s) in shapes().into_iter().enumerate() {
            let k = s.ic * s.kh * s.kw;
            let w = values(s.oc * k, 1 + i as u32);
            let b = values(s.oc, 100 + i as u32);
            let x = values(s.input_len(), 200 + i as u32);
            for relu in [false, true] {
                let Some(p) = PackedConv::with_isa(isa, s, &w, Some(&b), relu) else {
                    assert!(s.oc < isa.mr() / 2, "{s:?} refused");
                    continue;
                };
                let want = naive(&s, &w, &b, relu, &x);
                let mut scratch = vec![f32::NAN; p.scratch_len()];
                let mut out = vec![f32::NAN; p.output_len()];
                // Twice through the same scratch: the border must stay zero.
                for fresh in [true, false] {
                    p.run(&x, &mut scratch, fresh, &mut out);
                    let err = want
                        .iter()
                        .zip(&out)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    assert!(err < 1e-4, "{isa:?} {s:?} relu={relu}: max error {err}");
                }
                let mut reference = vec![0.0; p.output_len()];
                let padded = if p.needs_padding() {
                    &scratch[..]
                } else {
                    &x[..]
                };
                p.reference(padded, &mut reference);
                let err = want
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-4, "reference {s:?}: {err}");
            }
        }
    }

    #[test]
    fn kernels_match_the_definition_of_a_convolution() {
        match Isa::detect() {
            Some(isa) => check(isa),
            None => eprintln!("no convolution kernel for this CPU: tract's is used"),
        }
    }

    #[test]
    fn refuses_what_it_cannot_run_well() {
        let s = ConvShape {
            ic: 32,
            ih: 32,
            iw: 32,
            oc: 1,
            kh: 4,
            kw: 4,
            sh: 2,
            sw: 2,
            pads: [1; 4],
        };
        let w = vec![0.0; 32 * 16];
        for isa in [Isa::Avx512, Isa::Neon] {
            assert!(PackedConv::with_isa(isa, s, &w, None, false).is_none());
            let wrong = ConvShape { oc: 32, ..s };
            assert!(PackedConv::with_isa(isa, wrong, &w, None, false).is_none());
            let too_big = ConvShape { kh: 40, ..wrong };
            assert!(PackedConv::with_isa(isa, too_big, &w, None, false).is_none());
        }
    }
}
