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
//! The micro-kernels ([`tile`], [`small`]) are written once over
//! [`Vector`] and compiled for each variant ([`super::Isa`]); where
//! [`Isa::detect`] finds none, [`PackedConv::new`] returns `None` and the
//! caller keeps tract's own convolution.
//!
//! Inside a [`team::frame`] with more than one thread, a convolution large
//! enough to be worth it is split into parts (ranges of tiles) that the
//! team's members compute at the same time.

use super::simd::{self, Vector};
use super::{Isa, Out, PARALLEL_MACS, team};

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
    /// Output channels written (`oc`, or a phase's channels).
    out_channels: usize,
    /// Values per output channel plane.
    out_plane: usize,
    /// Which channel blocks compute which pixels, written where: one group
    /// of every block and pixel in order, or one per phase of a transposed
    /// convolution.
    groups: Vec<Group>,
    /// A strided convolution with few values per window runs as this
    /// stride-1 small-channel convolution over its input rearranged space
    /// to depth (see [`PackedConv::run_strided`]) instead of the tiles.
    strided: Option<SmallConv>,
}

/// Channel blocks of a [`PackedConv`] with the pixels they compute and where
/// each goes in the output plane.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    /// The channel blocks; the first block's first lane is output channel 0.
    blocks: std::ops::Range<usize>,
    /// Offset in the padded input of each pixel's window.
    base: Vec<u32>,
    /// Index in the output plane of each pixel (empty: `0..base.len()`).
    dst: Vec<u32>,
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

    /// As [`PackedConv::new`], for a given variant; `None` also when this
    /// CPU cannot run it.
    pub fn with_isa(
        isa: Isa,
        shape: ConvShape,
        weights: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) -> Option<PackedConv> {
        let s = shape;
        if !isa.supported() {
            return None;
        }
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
        let (packed, padded_bias) = pack_blocks(&s, weights, bias, mr);
        let koff = window_offsets(&s);
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
            groups: vec![Group {
                blocks: 0..blocks,
                base: base.clone(),
                dst: vec![],
            }],
            base,
            out_channels: s.oc,
            out_plane: oh * ow,
            strided: strided(isa, &s, weights, bias, relu),
        })
    }

    /// Turns the phase convolution of the transposed convolution `d`
    /// (channels phase-major, `d.oc` per phase, a multiple of the tile's)
    /// into one whose blocks compute only their phase's output pixels and
    /// write them in place: `[d.oc, d.oh, d.ow]`, nothing to interleave.
    fn scatter_phases(mut self, d: &DeconvShape) -> PackedConv {
        let per_phase = d.oc / self.isa.mr();
        let mut groups = Vec::with_capacity(d.sh * d.sw);
        for by in 0..d.sh {
            for bx in 0..d.sw {
                let phase = by * d.sw + bx;
                let (mut base, mut dst) = (vec![], vec![]);
                for y in (0..d.oh).filter(|y| (y + d.pads[0]) % d.sh == by) {
                    let a = (y + d.pads[0]) / d.sh;
                    for x in (0..d.ow).filter(|x| (x + d.pads[1]) % d.sw == bx) {
                        let ax = (x + d.pads[1]) / d.sw;
                        base.push(self.base[a * self.ow + ax]);
                        dst.push((y * d.ow + x) as u32);
                    }
                }
                groups.push(Group {
                    blocks: phase * per_phase..(phase + 1) * per_phase,
                    base,
                    dst,
                });
            }
        }
        self.groups = groups;
        self.out_channels = d.oc;
        self.out_plane = d.oh * d.ow;
        self
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

    /// Values of one output image (`oc·oh·ow`, or what the groups write).
    pub fn output_len(&self) -> usize {
        self.out_channels * self.out_plane
    }

    /// Length of the scratch buffer [`PackedConv::run`] needs (the padded
    /// input), per member of the team that takes part.
    pub fn scratch_len(&self) -> usize {
        match &self.strided {
            // One share, for the rearranged input and the wide output.
            Some(inner) => inner.scratch_len() + inner.output_len(),
            None => self.shape.ic * self.shape.padded_h() * self.shape.padded_w(),
        }
    }

    /// Parts the convolution is split into on the current team.
    fn parts(&self) -> usize {
        let pixels = self.groups.iter().map(|g| g.base.len()).max().unwrap_or(0);
        parts(pixels.div_ceil(self.isa.nr()), self.shape.macs())
    }

    fn needs_padding(&self) -> bool {
        self.shape.pads.iter().any(|&p| p > 0)
    }

    /// Convolves one image: `input` is `[ic, ih, iw]`, `out` is
    /// `[oc, oh, ow]`. `scratch` holds at least [`PackedConv::scratch_len`]
    /// values, and each further `scratch_len` lets one more member of the
    /// current team ([`team::frame`]) take part, padding the rows it reads
    /// into its own share; the zero border is kept between calls, so pass
    /// the same buffer each time (it is zeroed here when `fresh` is true).
    ///
    /// # Panics
    /// When a slice is shorter than the shape requires (a caller's bug).
    pub fn run(&self, input: &[f32], scratch: &mut [f32], fresh: bool, out: &mut [f32]) {
        let s = &self.shape;
        assert!(input.len() >= s.input_len(), "conv input too short");
        assert!(out.len() >= self.output_len(), "conv output too short");
        if let Some(inner) = &self.strided {
            return self.run_strided(inner, input, scratch, fresh, out);
        }
        let per = self.scratch_len();
        let padded = self.needs_padding();
        let parts = if padded {
            assert!(scratch.len() >= per, "conv scratch too short");
            self.parts().min(scratch.len() / per)
        } else {
            self.parts()
        };
        if padded && fresh {
            scratch.fill(0.0);
        }
        let input = &input[..s.input_len()];
        let scratch = Out(scratch.as_mut_ptr(), scratch.len());
        // SAFETY: a PackedConv is only built for a variant this CPU runs
        // (`with_isa`), and every offset was derived from the shape the
        // slices were just checked against; `parts` shares of the scratch
        // fit. (Variants of another architecture are refused by `with_isa`;
        // the reference would serve.)
        simd::on_variant!(self.isa, v => unsafe {
            self.tiles::<{ v::MR }, { v::NR }>(input, scratch, out, parts, v::tile)
        }, other => {
            let src = if padded {
                // SAFETY: `scratch` holds at least `per` values (checked
                // above) and nothing else uses it meanwhile.
                let buf = unsafe { std::slice::from_raw_parts_mut(scratch.0, per) };
                pad_into(s, input, buf, false, 1);
                &*buf
            } else {
                input
            };
            self.reference(src, out)
        })
    }

    /// Runs a strided convolution as the stride-1 convolution `inner`:
    /// the zero-padded input is rearranged space to depth (each input
    /// channel becomes `sh·sw` channels, one per phase of the stride) into
    /// `inner`'s scratch, `inner` computes its wide output (vectors of
    /// neighbouring output pixels, each weight a broadcast), and the valid
    /// columns are copied out. With few values per window (the first layer
    /// of an image model: one channel, 4×4) the tiles spend more on writing
    /// their pixels out than on multiply-adds; this path writes whole
    /// vectors.
    fn run_strided(
        &self,
        inner: &SmallConv,
        input: &[f32],
        scratch: &mut [f32],
        fresh: bool,
        out: &mut [f32],
    ) {
        let s = &self.shape;
        let q = inner.shape;
        let (per, wide_len) = (inner.scratch_len(), inner.output_len());
        assert!(scratch.len() >= per + wide_len, "conv scratch too short");
        let (planes, rest) = scratch.split_at_mut(per);
        let wide = &mut rest[..wide_len];
        if fresh {
            // The values past the rearranged input, which the last tiles
            // read, stay zero.
            planes.fill(0.0);
        }
        let (hq, wq) = (q.ih, q.iw);
        // Rearranging and copying out are shared by the team like the
        // convolution between them: by rows of the planes, then by output
        // rows.
        let parts = inner.parts();
        let rows = s.ic * s.sh * s.sw * hq;
        let dst = Out(planes.as_mut_ptr(), planes.len());
        team::split(parts, &|p| {
            for i in p * rows / parts..(p + 1) * rows / parts {
                let (phase, r) = (i / hq, i % hq);
                let (c, py, px) = (phase / (s.sh * s.sw), phase / s.sw % s.sh, phase % s.sw);
                // SAFETY: row `i` of the planes lies inside `planes` (`rows ·
                // wq` values, within the SmallConv's scratch), and only
                // this part writes it.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.at(i * wq), wq) };
                // Padded row `r·sh + py` is input row `y`, if any.
                let y = (r * s.sh + py).checked_sub(s.pads[0]).filter(|&y| y < s.ih);
                let Some(y) = y else {
                    row.fill(0.0);
                    continue;
                };
                let src = &input[(c * s.ih + y) * s.iw..(c * s.ih + y + 1) * s.iw];
                for (qx, v) in row.iter_mut().enumerate() {
                    let x = (qx * s.sw + px).checked_sub(s.pads[1]);
                    *v = x.and_then(|x| src.get(x)).copied().unwrap_or(0.0);
                }
            }
        });
        inner.run_padded(planes, wide);
        let (plane, row) = inner.planes();
        let wide = &*wide;
        let out_rows = s.oc * self.oh;
        let dst = Out(out.as_mut_ptr(), out.len());
        team::split(parts, &|p| {
            for i in p * out_rows / parts..(p + 1) * out_rows / parts {
                let (o, y) = (i / self.oh, i % self.oh);
                let from = o * plane + y * row;
                // SAFETY: output row `i` (of `oc·oh`, `ow` values each) lies
                // inside `out` (checked by `run`), and only this part writes
                // it.
                let d = unsafe { std::slice::from_raw_parts_mut(dst.at(i * self.ow), self.ow) };
                d.copy_from_slice(&wide[from..from + self.ow]);
            }
        });
    }

    /// Runs the micro-kernel over every (channel block, pixel tile), in
    /// `parts` parts shared by the current team (see [`PackedConv::part`]);
    /// each part first pads the input rows it reads into its own share of
    /// `scratch` (when the convolution pads), so that no two members write
    /// the same cache lines.
    ///
    /// # Safety
    /// `input` holds the input; `scratch` points to `parts` shares of
    /// `scratch_len` values (when padding) that nothing else uses
    /// meanwhile, zero outside the rows copied into them; `out` holds at
    /// least `output_len` values; `kernel` must be runnable on this CPU.
    unsafe fn tiles<const MR: usize, const NR: usize>(
        &self,
        input: &[f32],
        scratch: Out,
        out: &mut [f32],
        parts: usize,
        kernel: Tile<MR, NR>,
    ) {
        let out = Out(out.as_mut_ptr(), out.len());
        let per = self.scratch_len();
        let padded = self.needs_padding();
        team::split(parts, &|p| {
            let src: &[f32] = if padded {
                // SAFETY: share `p` lies inside `scratch` (the function's
                // contract) and only part `p` uses it.
                let buf = unsafe { std::slice::from_raw_parts_mut(scratch.at(p * per), per) };
                pad_rows(&self.shape, input, buf, self.rows_read::<NR>(p, parts));
                buf
            } else {
                input
            };
            let last = *self.koff.last().unwrap_or(&0) as usize;
            debug_assert!(self.base.iter().all(|&b| b as usize + last < src.len()));
            // SAFETY: the function's contract; parts write disjoint tiles
            // (see `part`), and read only the rows padded above.
            unsafe { self.part::<MR, NR>(src, out, kernel, p, parts) }
        });
    }

    /// The rows of the padded input that part `p` of `parts` reads.
    fn rows_read<const NR: usize>(&self, p: usize, parts: usize) -> std::ops::Range<usize> {
        let (hp, wp) = (self.shape.padded_h(), self.shape.padded_w());
        if parts == 1 || self.split_blocks(parts) {
            return 0..hp;
        }
        let (mut lo, mut hi) = (usize::MAX, 0);
        for g in &self.groups {
            let per_block = g.base.len().div_ceil(NR);
            let from = (p * per_block / parts * NR).min(g.base.len());
            let to = ((p + 1) * per_block / parts * NR).min(g.base.len());
            for &b in &g.base[from..to] {
                lo = lo.min(b as usize);
                hi = hi.max(b as usize);
            }
        }
        if lo > hi {
            return 0..0;
        }
        (lo / wp)..(hi / wp + self.shape.kh).min(hp)
    }

    /// Whether parts split the channel blocks (each part reads its share
    /// of the weights and the whole input) rather than the pixels (each part
    /// reads all the weights and its share of the input): the former when
    /// the weights outweigh the input and the blocks share out evenly.
    fn split_blocks(&self, parts: usize) -> bool {
        let units: usize = self.groups.iter().map(|g| g.blocks.len()).sum();
        self.weights.len() > self.shape.input_len()
            && (units.is_multiple_of(parts) || units >= 4 * parts)
    }

    /// Runs part `p` of `parts`: a share of the (group, channel block)
    /// pairs over all their pixels when [`PackedConv::split_blocks`], else
    /// in each group every channel block over the group's `p`-th share of
    /// pixel tiles. Pixel shares are runs of neighbouring output pixels, so
    /// a part reads and writes the same region of the image layer after
    /// layer (the data stays in its core's cache). Each (block, pixel) is
    /// written by one tile only, so the parts may run at the same time.
    ///
    /// # Safety
    /// As [`PackedConv::tiles`]; `out` points to at least `output_len`
    /// values that nothing else reads or writes meanwhile except another
    /// part of the same call.
    unsafe fn part<const MR: usize, const NR: usize>(
        &self,
        src: &[f32],
        out: Out,
        kernel: Tile<MR, NR>,
        p: usize,
        parts: usize,
    ) {
        let k = self.koff.len();
        let mut acc = [[0.0f32; MR]; NR];
        let by_block = parts > 1 && self.split_blocks(parts);
        let units: usize = self.groups.iter().map(|g| g.blocks.len()).sum();
        let mine = p * units / parts..(p + 1) * units / parts;
        let mut unit = 0;
        for g in &self.groups {
            let pixels = g.base.len();
            let per_block = pixels.div_ceil(NR);
            let tiles = if by_block {
                0..per_block
            } else {
                p * per_block / parts..(p + 1) * per_block / parts
            };
            for b in g.blocks.clone() {
                unit += 1;
                if by_block && !mine.contains(&(unit - 1)) {
                    continue;
                }
                let w = &self.weights[b * k * MR..(b + 1) * k * MR];
                let bias = &self.bias[b * MR..(b + 1) * MR];
                // Output channel of the block's first lane.
                let ch0 = (b - g.blocks.start) * MR;
                let channels = MR.min(self.out_channels - ch0);
                for t in tiles.clone() {
                    let p0 = t * NR;
                    let n = NR.min(pixels - p0);
                    let mut base = [g.base[p0] as usize; NR];
                    for (j, slot) in base.iter_mut().enumerate().take(n) {
                        *slot = g.base[p0 + j] as usize;
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
                    // Where each pixel of the tile goes in a plane.
                    let mut dst = [0usize; NR];
                    for (j, d) in dst.iter_mut().enumerate().take(n) {
                        *d = if g.dst.is_empty() {
                            p0 + j
                        } else {
                            g.dst[p0 + j] as usize
                        };
                    }
                    // SAFETY: each `plane + dst[j]` is inside the output
                    // (channel below `out_channels`, pixel inside the
                    // plane), and no other tile writes it.
                    unsafe { store_tile(&acc, &dst, n, channels, ch0, self.out_plane, out) };
                }
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

/// Output channels per tile of [`SmallConv`].
const SMALL_MR: usize = 4;

/// A stride-1 convolution with few output channels (fewer than a
/// [`PackedConv`] tile holds), vectorised over pixels instead: the output is
/// computed "wide", one row of the padded input's width per output row, so
/// that consecutive output pixels read consecutive input values. The columns
/// past the output width hold garbage; [`SmallConv::planes`] says where the
/// valid values are.
#[derive(Debug, Clone, PartialEq)]
pub struct SmallConv {
    shape: ConvShape,
    isa: Isa,
    relu: bool,
    oh: usize,
    ow: usize,
    /// Output values per channel plane: `oh·wp` rounded up to a whole tile.
    plane: usize,
    /// `[channel blocks][K][SMALL_MR]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    koff: Vec<u32>,
}

impl SmallConv {
    /// Packs a stride-1 convolution (weights `[oc, ic, kh, kw]`); `None`
    /// for another stride, or a variant this CPU cannot run.
    pub fn with_isa(
        isa: Isa,
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
    ) -> Option<SmallConv> {
        let s = shape;
        if !isa.supported() {
            return None;
        }
        let (oh, ow) = (s.oh()?, s.ow()?);
        let k = s.ic * s.kh * s.kw;
        if s.sh != 1 || s.sw != 1 || k == 0 || weights.len() != s.oc * k || bias.len() != s.oc {
            return None;
        }
        let (hp, wp) = (s.padded_h(), s.padded_w());
        let px = simd::small_px(isa);
        let plane = (oh * wp).div_ceil(px) * px;
        if (s.ic * hp * wp + plane + wp) > u32::MAX as usize {
            return None;
        }
        let (packed, padded_bias) = pack_blocks(&s, weights, Some(bias), SMALL_MR);
        let koff = window_offsets(&s);
        Some(SmallConv {
            shape,
            isa,
            relu,
            oh,
            ow,
            plane,
            weights: packed,
            bias: padded_bias,
            koff,
        })
    }

    /// Output height and width.
    pub fn output_hw(&self) -> (usize, usize) {
        (self.oh, self.ow)
    }

    /// Parts the convolution is split into on the current team.
    fn parts(&self) -> usize {
        parts(self.plane / simd::small_px(self.isa), self.shape.macs())
    }

    /// Values per output plane and per output row of the wide output.
    pub fn planes(&self) -> (usize, usize) {
        (self.plane, self.shape.padded_w())
    }

    /// Length of the wide output (`oc` planes, rounded up to whole tiles of
    /// channels).
    pub fn output_len(&self) -> usize {
        self.bias.len() * self.plane
    }

    /// Length of the scratch (padded input, plus the values the last tile
    /// reads past it).
    pub fn scratch_len(&self) -> usize {
        let s = &self.shape;
        s.ic * s.padded_h() * s.padded_w() + self.plane + s.padded_w() * s.kh
    }

    /// Convolves one image into the wide output; `scratch` as in
    /// [`PackedConv::run`].
    ///
    /// # Panics
    /// When a slice is shorter than the shape requires (a caller's bug).
    pub fn run(&self, input: &[f32], scratch: &mut [f32], fresh: bool, out: &mut [f32]) {
        let s = &self.shape;
        assert!(input.len() >= s.input_len(), "conv input too short");
        let scratch = &mut scratch[..self.scratch_len()];
        pad_into(s, input, scratch, fresh, self.parts());
        self.run_padded(scratch, out);
    }

    /// Convolves the input already copied into `scratch` (zero-bordered,
    /// [`SmallConv::scratch_len`] values, zero past the padded input) into
    /// the wide output.
    ///
    /// # Panics
    /// When a slice is shorter than the shape requires (a caller's bug).
    fn run_padded(&self, scratch: &[f32], out: &mut [f32]) {
        assert!(out.len() >= self.output_len(), "conv output too short");
        let scratch = &scratch[..self.scratch_len()];
        let k = self.koff.len();
        let px = simd::small_px(self.isa);
        let tiles = self.plane / px;
        let blocks = self.bias.len() / SMALL_MR;
        let parts = self.parts();
        let out = Out(out.as_mut_ptr(), out.len());
        team::split(parts, &|p| {
            let (from, to) = (p * tiles / parts * px, (p + 1) * tiles / parts * px);
            for b in 0..blocks {
                let w = &self.weights[b * k * SMALL_MR..(b + 1) * k * SMALL_MR];
                let bias = &self.bias[b * SMALL_MR..(b + 1) * SMALL_MR];
                // SAFETY: block `b`'s SMALL_MR planes are inside the output
                // (`output_len`), and this part alone writes their pixels
                // `from..to`.
                let dst = unsafe { out.at(b * SMALL_MR * self.plane) };
                let run = Span {
                    dst,
                    plane: self.plane,
                    from,
                    to,
                };
                let koff = &self.koff;
                // SAFETY: a SmallConv is only built for a variant
                // this CPU runs; the scratch is long enough for every tile's
                // reads (`scratch_len`); `run` as above.
                simd::on_variant!(self.isa, v => unsafe {
                    v::small(w, koff, scratch, bias, self.relu, run)
                }, other => unsafe { small_reference(w, koff, scratch, bias, self.relu, run) });
            }
        });
    }
}

/// Where a small-channel kernel writes: pixels `from..to` of `SMALL_MR`
/// planes of `plane` values from `dst`.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    dst: *mut f32,
    plane: usize,
    from: usize,
    to: usize,
}

/// Values per window below which a strided convolution runs space to
/// depth on the small-channel kernel rather than on the tiles: with the 4×4
/// windows of a one-channel input (16 values) the tiles ran at a third of
/// the core's peak (Zen 3, AVX2), most of it writing pixels out.
const STRIDED_MAX_K: usize = 64;

/// The stride-1 convolution that computes `s` (strided, few values per
/// window) over its zero-padded input rearranged space to depth: input
/// channel `c` at phase `(py, px)` of the stride becomes channel `(c·sh +
/// py)·sw + px`, a `⌈hp/sh⌉ × ⌈wp/sw⌉` plane, and the kernel shrinks to
/// `⌈kh/sh⌉ × ⌈kw/sw⌉` taps (zero where the original has none). `None`
/// where the tiles serve: stride 1, larger windows, or a shape it would
/// not cover.
fn strided(
    isa: Isa,
    s: &ConvShape,
    weights: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Option<SmallConv> {
    if s.sh * s.sw == 1 || s.ic * s.kh * s.kw > STRIDED_MAX_K {
        return None;
    }
    let q = ConvShape {
        ic: s.ic * s.sh * s.sw,
        ih: s.padded_h().div_ceil(s.sh),
        iw: s.padded_w().div_ceil(s.sw),
        oc: s.oc,
        kh: s.kh.div_ceil(s.sh),
        kw: s.kw.div_ceil(s.sw),
        sh: 1,
        sw: 1,
        pads: [0; 4],
    };
    if q.oh()? < s.oh()? || q.ow()? < s.ow()? {
        return None;
    }
    let (k, kq) = (s.ic * s.kh * s.kw, q.ic * q.kh * q.kw);
    let mut w = vec![0.0f32; s.oc * kq];
    for o in 0..s.oc {
        for c in 0..s.ic {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let (jy, py, jx, px) = (ky / s.sh, ky % s.sh, kx / s.sw, kx % s.sw);
                    let ci = (c * s.sh + py) * s.sw + px;
                    w[o * kq + (ci * q.kh + jy) * q.kw + jx] =
                        weights[o * k + (c * s.kh + ky) * s.kw + kx];
                }
            }
        }
    }
    let zeros = vec![0.0; s.oc];
    SmallConv::with_isa(isa, q, &w, bias.unwrap_or(&zeros), relu)
}

/// How many parts to split `tiles` tiles of a convolution of `macs`
/// multiply-adds into: one per thread of the current team when the work is
/// worth sharing, else one.
fn parts(tiles: usize, macs: usize) -> usize {
    let threads = team::threads();
    if threads > 1 && macs >= PARALLEL_MACS {
        threads.min(tiles).max(1)
    } else {
        1
    }
}

/// Packs `weights` (`[oc, K]`) into blocks of `mr` output channels,
/// `[oc / mr blocks][K][mr]`, and `bias` (zeros when absent) to the same
/// padded channel count; the padding channels are zero.
fn pack_blocks(
    s: &ConvShape,
    weights: &[f32],
    bias: Option<&[f32]>,
    mr: usize,
) -> (Vec<f32>, Vec<f32>) {
    let k = s.ic * s.kh * s.kw;
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
    (packed, padded_bias)
}

/// Offset in the padded input of each `k` (input channel, kernel row,
/// kernel column) from the window's top-left corner.
fn window_offsets(s: &ConvShape) -> Vec<u32> {
    let (hp, wp) = (s.padded_h(), s.padded_w());
    let mut koff = Vec::with_capacity(s.ic * s.kh * s.kw);
    for c in 0..s.ic {
        for y in 0..s.kh {
            for x in 0..s.kw {
                koff.push(((c * hp + y) * wp + x) as u32);
            }
        }
    }
    koff
}

/// Copies the input rows that fall in `rows` (rows of the padded input)
/// into the zero-bordered `scratch`.
fn pad_rows(s: &ConvShape, input: &[f32], scratch: &mut [f32], rows: std::ops::Range<usize>) {
    let (hp, wp) = (s.padded_h(), s.padded_w());
    let first = rows.start.max(s.pads[0]);
    let end = rows.end.min(s.pads[0] + s.ih);
    for c in 0..s.ic {
        for r in first..end {
            let from = (c * s.ih + r - s.pads[0]) * s.iw;
            let to = (c * hp + r) * wp + s.pads[1];
            scratch[to..to + s.iw].copy_from_slice(&input[from..from + s.iw]);
        }
    }
}

/// Copies `input` into the zero-bordered `scratch` (zeroed first when
/// `fresh`), split by rows into `parts` parts shared by the current team
/// when the input is large.
fn pad_into(s: &ConvShape, input: &[f32], scratch: &mut [f32], fresh: bool, parts: usize) {
    let (hp, wp) = (s.padded_h(), s.padded_w());
    if fresh {
        scratch.fill(0.0);
    }
    let input = &input[..s.input_len()];
    assert!(scratch.len() >= s.ic * hp * wp, "conv scratch too short");
    // Members writing neighbouring rows share the cache lines between
    // them, which costs more than the copy itself on small inputs.
    let parts = if s.input_len() >= PARALLEL_PAD {
        parts
    } else {
        1
    };
    let dst = Out(scratch.as_mut_ptr(), scratch.len());
    team::split(parts, &|p| {
        for c in 0..s.ic {
            for y in p * s.ih / parts..(p + 1) * s.ih / parts {
                let from = (c * s.ih + y) * s.iw;
                let to = (c * hp + y + s.pads[0]) * wp + s.pads[1];
                // SAFETY: row `y` of channel `c` lies inside the padded
                // input (checked above), and only this part copies row `y`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        input[from..from + s.iw].as_ptr(),
                        dst.at(to),
                        s.iw,
                    )
                };
            }
        }
    });
}

/// The scalar form of the small-channel kernel (and its test reference).
///
/// # Safety
/// `src` holds every `koff[i] + p` for `p` below `run.to`; `run.dst` points
/// to `SMALL_MR` planes of `run.plane` values, `run.to <= run.plane`.
#[allow(dead_code)]
unsafe fn small_reference(
    w: &[f32],
    koff: &[u32],
    src: &[f32],
    bias: &[f32],
    relu: bool,
    run: Span,
) {
    for c in 0..SMALL_MR {
        for p in run.from..run.to {
            let mut sum = bias[c];
            for (kk, &off) in koff.iter().enumerate() {
                sum += w[kk * SMALL_MR + c] * src[off as usize + p];
            }
            // SAFETY: the function's contract.
            unsafe { *run.dst.add(c * run.plane + p) = if relu { sum.max(0.0) } else { sum } };
        }
    }
}

/// How a transposed convolution's phases are computed.
#[derive(Debug, Clone, PartialEq)]
enum Phases {
    /// Each phase's channel blocks compute that phase's output pixels and
    /// write them in place (output channels a multiple of the tile's).
    Direct(PackedConv),
    /// All phases over the whole phase grid, then interleaved.
    Packed(PackedConv),
    /// Few output channels: the small-channel kernel, then interleaved.
    Small(SmallConv),
}

/// Shape of a transposed convolution (ONNX `ConvTranspose`, group 1, no
/// dilation), batch excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeconvShape {
    /// Input channels.
    pub ic: usize,
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Output channels.
    pub oc: usize,
    /// Kernel height (a multiple of the vertical stride).
    pub kh: usize,
    /// Kernel width (a multiple of the horizontal stride).
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Padding removed from the output: top, left (bottom and right are
    /// implied by the output size).
    pub pads: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// A transposed convolution run as one stride-1 convolution whose output
/// channels are the `sh·sw` phases of the output (sub-pixel convolution),
/// followed by interleaving the phases into the output.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedDeconv {
    shape: DeconvShape,
    phases: Phases,
    relu: bool,
}

impl PackedDeconv {
    /// Packs `weights` (`[oc, ic, kh, kw]`: tract's OIHW form of an ONNX
    /// `ConvTranspose` kernel) and `bias` (`[oc]`). `None` when this CPU has
    /// no kernel or the shape is not one this handles (kernel not a multiple
    /// of the stride, output larger than the phases cover).
    pub fn new(
        shape: DeconvShape,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
    ) -> Option<PackedDeconv> {
        Self::with_isa(Isa::detect()?, shape, weights, bias, relu)
    }

    /// As [`PackedDeconv::new`] for a given instruction set.
    pub fn with_isa(
        isa: Isa,
        shape: DeconvShape,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
    ) -> Option<PackedDeconv> {
        let d = shape;
        if d.sh == 0
            || d.sw == 0
            || !d.kh.is_multiple_of(d.sh)
            || !d.kw.is_multiple_of(d.sw)
            || d.kh == 0
        {
            return None;
        }
        if weights.len() != d.oc * d.ic * d.kh * d.kw || bias.len() != d.oc {
            return None;
        }
        let (ty, tx) = (d.kh / d.sh, d.kw / d.sw);
        let phases = d.sh * d.sw;
        if d.oh == 0 || d.ow == 0 {
            return None;
        }
        // Phase rows and columns the output reaches; a convolution over the
        // input padded by T-1 (more at the bottom and right when the output
        // is extended by `output_padding`) gives `ih + bottom pad` of them.
        let (need_h, need_w) = (
            (d.oh - 1 + d.pads[0]) / d.sh + 1,
            (d.ow - 1 + d.pads[1]) / d.sw + 1,
        );
        let conv = ConvShape {
            ic: d.ic,
            ih: d.ih,
            iw: d.iw,
            oc: phases * d.oc,
            kh: ty,
            kw: tx,
            sh: 1,
            sw: 1,
            pads: [
                ty - 1,
                tx - 1,
                (ty - 1).max(need_h.saturating_sub(d.ih)),
                (tx - 1).max(need_w.saturating_sub(d.iw)),
            ],
        };
        if conv.oh()? < need_h || conv.ow()? < need_w {
            return None;
        }
        // Phase (by, bx), output channel o: the kernel taps of that phase,
        // flipped, as a correlation over the input padded by T-1.
        let k = d.ic * ty * tx;
        let mut w = vec![0.0f32; conv.oc * k];
        for by in 0..d.sh {
            for bx in 0..d.sw {
                for o in 0..d.oc {
                    let c = (by * d.sw + bx) * d.oc + o;
                    for i in 0..d.ic {
                        for jy in 0..ty {
                            for jx in 0..tx {
                                let ky = by + d.sh * (ty - 1 - jy);
                                let kx = bx + d.sw * (tx - 1 - jx);
                                w[c * k + (i * ty + jy) * tx + jx] =
                                    weights[((o * d.ic + i) * d.kh + ky) * d.kw + kx];
                            }
                        }
                    }
                }
            }
        }
        let b: Vec<f32> = (0..phases).flat_map(|_| bias.iter().copied()).collect();
        let phases = match PackedConv::with_isa(isa, conv, &w, Some(&b), relu) {
            Some(p) if d.oc.is_multiple_of(isa.mr()) => Phases::Direct(p.scatter_phases(&d)),
            Some(p) => Phases::Packed(p),
            None => Phases::Small(SmallConv::with_isa(isa, conv, &w, &b, relu)?),
        };
        Some(PackedDeconv {
            shape,
            phases,
            relu,
        })
    }

    /// The transposed convolution's shape.
    pub fn shape(&self) -> &DeconvShape {
        &self.shape
    }

    /// Whether a ReLU is applied to the output.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Values of one output image (`oc·oh·ow`).
    pub fn output_len(&self) -> usize {
        self.shape.oc * self.shape.oh * self.shape.ow
    }

    /// Length of the scratch (padded input) [`PackedDeconv::run`] needs.
    pub fn scratch_len(&self) -> usize {
        match &self.phases {
            Phases::Direct(p) | Phases::Packed(p) => p.scratch_len(),
            Phases::Small(s) => s.scratch_len(),
        }
    }

    /// Length of the phase buffer [`PackedDeconv::run`] needs.
    pub fn phases_len(&self) -> usize {
        match &self.phases {
            Phases::Direct(_) => 0,
            Phases::Packed(p) => p.output_len(),
            Phases::Small(s) => s.output_len(),
        }
    }

    /// Runs one image: `input` `[ic, ih, iw]` → `out` `[oc, oh, ow]`, with
    /// `scratch` and `phases` buffers of the lengths above (`scratch` kept
    /// between calls, `fresh` on the first, as for [`PackedConv::run`]).
    ///
    /// # Panics
    /// When a slice is shorter than the shape requires (a caller's bug).
    pub fn run(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        fresh: bool,
        phases: &mut [f32],
        out: &mut [f32],
    ) {
        let d = &self.shape;
        assert!(out.len() >= self.output_len(), "deconv output too short");
        let (plane, row, parts) = match &self.phases {
            Phases::Direct(p) => return p.run(input, scratch, fresh, out),
            Phases::Packed(p) => {
                p.run(input, scratch, fresh, phases);
                let (h, w) = p.output_hw();
                (h * w, w, p.parts())
            }
            Phases::Small(s) => {
                s.run(input, scratch, fresh, phases);
                let (plane, row) = s.planes();
                (plane, row, s.parts())
            }
        };
        let phases = &*phases;
        // Split by output rows like the phase convolution before it, so that
        // each member reads the phases it computed.
        let parts = parts.min(d.oh);
        let dst = Out(out.as_mut_ptr(), out.len());
        team::split(parts, &|p| {
            for o in 0..d.oc {
                for y in p * d.oh / parts..(p + 1) * d.oh / parts {
                    let u = y + d.pads[0];
                    let (a, by) = (u / d.sh, u % d.sh);
                    let at = (o * d.oh + y) * d.ow;
                    // Phase column `bx` fills the output columns `x0, x0 +
                    // sw, …` from consecutive values of its phase row: a
                    // strided copy per phase, no division or branch per
                    // pixel (that cost more than the copy).
                    for bx in 0..d.sw {
                        let x0 = (bx + d.sw - d.pads[1] % d.sw) % d.sw;
                        let ax0 = (x0 + d.pads[1]) / d.sw;
                        let c = (by * d.sw + bx) * d.oc + o;
                        let from = c * plane + a * row + ax0;
                        let src = &phases[from..from + d.ow.saturating_sub(x0).div_ceil(d.sw)];
                        for (&v, x) in src.iter().zip((x0..d.ow).step_by(d.sw)) {
                            // SAFETY: `at + x` is inside the output (checked
                            // above), and only this part writes row `y`.
                            unsafe { *dst.at(at + x) = v };
                        }
                    }
                }
            }
        });
    }
}

/// Below this many input values the padding copy runs on one thread.
const PARALLEL_PAD: usize = 16_384;

/// A micro-kernel: `MR` output channels × `NR` pixels, accumulated over `k`
/// and written (bias added, ReLU applied) to `acc[pixel][channel]`.
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

/// Writes a tile's `acc[pixel][channel]` to the output planes, channel by
/// channel (each channel's pixels are neighbours in the output: 2.5×
/// faster than pixel by pixel, measured): channels `ch0 ..+ channels`,
/// pixel `j < n` at `dst[j]` of each plane of `plane` values.
///
/// # Safety
/// Every `(ch0 + l)·plane + dst[j]` is inside `out`, and nothing else
/// writes those values meanwhile.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `l` indexes the inner arrays
unsafe fn store_tile<const MR: usize, const NR: usize>(
    acc: &[[f32; MR]; NR],
    dst: &[usize; NR],
    n: usize,
    channels: usize,
    ch0: usize,
    plane: usize,
    out: Out,
) {
    for l in 0..channels {
        // SAFETY: the function's contract.
        let base = unsafe { out.at((ch0 + l) * plane) };
        // A whole tile's stores unroll; a partial one's loop.
        let n = if n == NR { NR } else { n };
        for j in 0..n {
            debug_assert!((ch0 + l) * plane + dst[j] < out.1);
            // SAFETY: the function's contract.
            unsafe { *base.add(dst[j]) = acc[j][l] };
        }
    }
}

/// The convolution micro-kernel, written once: `MR = VM·V::LANES` output
/// channels (`VM` vectors) × `NR` pixels, in `VM·NR` accumulators. For each
/// `k` it loads the `VM` weight vectors once and broadcasts each pixel's
/// input value; bias and ReLU are applied before `acc[pixel][channel]` is
/// written.
///
/// # Safety
/// Called from a variant of `V`'s instruction set on a CPU that has it;
/// `w` holds `k·MR` values, `koff` `k` offsets, `bias` `MR` values, and
/// `src[base[j] + koff[i]]` is in bounds for all `i`, `j`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile<V: Vector, const VM: usize, const NR: usize, const MR: usize>(
    w: *const f32,
    koff: *const u32,
    k: usize,
    src: *const f32,
    base: &[usize; NR],
    bias: *const f32,
    relu: bool,
    acc: &mut [[f32; MR]; NR],
) {
    debug_assert_eq!(VM * V::LANES, MR);
    let l = V::LANES;
    // SAFETY: the function's contract covers every pointer read here.
    unsafe {
        let mut b = [V::zero(); VM];
        for (q, v) in b.iter_mut().enumerate() {
            *v = V::load(bias.add(q * l));
        }
        let mut a = [b; NR];
        let mut p = [src; NR];
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = src.add(base[j]);
        }
        for i in 0..k {
            let off = *koff.add(i) as usize;
            let row = w.add(i * MR);
            let mut wv = [V::zero(); VM];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = V::load(row.add(q * l));
            }
            for j in 0..NR {
                let x = V::load_splat(p[j].add(off));
                for q in 0..VM {
                    a[j][q] = wv[q].mul_add(x, a[j][q]);
                }
            }
        }
        let zero = V::zero();
        for (aj, out) in a.iter().zip(acc.iter_mut()) {
            for (q, &v) in aj.iter().enumerate() {
                let v = if relu { v.max(zero) } else { v };
                v.store(out.as_mut_ptr().add(q * l));
            }
        }
    }
}

/// The small-channel kernel, written once: [`SMALL_MR`] output channels ×
/// `NV` vectors of consecutive pixels per tile, over pixels `run.from ..
/// run.to` of whole planes.
///
/// # Safety
/// Called from a variant of `V`'s instruction set on a CPU that has it;
/// `src` holds every `koff[i] + p` for `p` below `run.to`; `run.dst` points
/// to `SMALL_MR` planes of `run.plane` values; `run.from` and `run.to` are
/// multiples of `NV·V::LANES` with `run.to <= run.plane`; `w` holds
/// `koff.len()·SMALL_MR` values, `bias` `SMALL_MR`.
#[inline(always)]
pub(crate) unsafe fn small<V: Vector, const NV: usize>(
    w: &[f32],
    koff: &[u32],
    src: &[f32],
    bias: &[f32],
    relu: bool,
    run: Span,
) {
    let l = V::LANES;
    // SAFETY: the function's contract covers every pointer read here.
    unsafe {
        let (w, s, d, plane) = (w.as_ptr(), src.as_ptr(), run.dst, run.plane);
        let zero = V::zero();
        let mut p0 = run.from;
        while p0 + l * NV <= run.to {
            let mut acc = [[zero; NV]; SMALL_MR];
            for (c, row) in acc.iter_mut().enumerate() {
                *row = [V::splat(*bias.get_unchecked(c)); NV];
            }
            for (i, &off) in koff.iter().enumerate() {
                let at = s.add(off as usize + p0);
                let mut x = [zero; NV];
                for (v, xv) in x.iter_mut().enumerate() {
                    *xv = V::load(at.add(l * v));
                }
                for (c, row) in acc.iter_mut().enumerate() {
                    let wv = V::load_splat(w.add(i * SMALL_MR + c));
                    for v in 0..NV {
                        row[v] = wv.mul_add(x[v], row[v]);
                    }
                }
            }
            for (c, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    let a = if relu { a.max(zero) } else { *a };
                    a.store(d.add(c * plane + p0 + l * v));
                }
            }
            p0 += l * NV;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Deterministic test values in [-1, 1] (shared with the dense layer's
    /// tests).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
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

    /// Largest absolute difference of two equally long results.
    fn max_error(want: &[f32], got: &[f32]) -> f32 {
        want.iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
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

    /// No team, and teams of 2 and 3 threads.
    fn teams() -> Vec<Option<team::Team>> {
        let mut teams = vec![None];
        teams.extend([2, 3].map(|n| Some(team::Team::new(n).expect("threads"))));
        teams
    }

    fn check(isa: Isa) {
        let teams = teams();
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
                let mut scratch = vec![f32::NAN; p.scratch_len() * 3];
                let mut out = vec![f32::NAN; p.output_len()];
                // Alone and split across teams of 2 and 3; twice through the
                // same scratch: the border must stay zero.
                for team in &teams {
                    for fresh in [true, false] {
                        out.fill(f32::NAN);
                        team::frame(team.as_ref(), || p.run(&x, &mut scratch, fresh, &mut out));
                        let err = max_error(&want, &out);
                        assert!(
                            err < 1e-4,
                            "{isa:?} {s:?} relu={relu} {team:?}: error {err}"
                        );
                    }
                }
                let mut reference = vec![0.0; p.output_len()];
                let mut padded = vec![f32::NAN; p.scratch_len()];
                pad_into(&s, &x, &mut padded, true, 1);
                let src = if p.needs_padding() {
                    &padded[..]
                } else {
                    &x[..]
                };
                p.reference(src, &mut reference);
                let err = max_error(&want, &reference);
                assert!(err < 1e-4, "reference {s:?}: {err}");
            }
        }
    }

    #[test]
    fn kernels_match_the_definition_of_a_convolution() {
        for isa in Isa::available() {
            check(isa);
        }
    }

    /// Transposed convolution straight from the ONNX definition (weights in
    /// tract's `[oc, ic, kh, kw]` order).
    fn naive_deconv(d: &DeconvShape, w: &[f32], b: &[f32], relu: bool, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f64; d.oc * d.oh * d.ow];
        for o in 0..d.oc {
            for v in out[o * d.oh * d.ow..(o + 1) * d.oh * d.ow].iter_mut() {
                *v = b[o] as f64;
            }
            for i in 0..d.ic {
                for y in 0..d.ih {
                    for xi in 0..d.iw {
                        for ky in 0..d.kh {
                            for kx in 0..d.kw {
                                let oy = (y * d.sh + ky) as isize - d.pads[0] as isize;
                                let ox = (xi * d.sw + kx) as isize - d.pads[1] as isize;
                                if oy < 0 || ox < 0 || oy >= d.oh as isize || ox >= d.ow as isize {
                                    continue;
                                }
                                let xv = x[(i * d.ih + y) * d.iw + xi];
                                let wv = w[((o * d.ic + i) * d.kh + ky) * d.kw + kx];
                                out[(o * d.oh + oy as usize) * d.ow + ox as usize] +=
                                    (xv * wv) as f64;
                            }
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|v| if relu { (v as f32).max(0.0) } else { v as f32 })
            .collect()
    }

    fn check_deconv(isa: Isa) {
        let teams = teams();
        let deconv = |ic, ih, oc, k, s, p, oh| DeconvShape {
            ic,
            ih,
            iw: ih,
            oc,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            pads: [p, p],
            oh,
            ow: oh,
        };
        let cases = [
            // The Burgess decoder's transposed convolutions (4×4, stride 2,
            // padding 1: the size doubles).
            deconv(64, 4, 64, 4, 2, 1, 8),
            deconv(64, 8, 32, 4, 2, 1, 16),
            deconv(32, 16, 32, 4, 2, 1, 32),
            deconv(32, 32, 1, 4, 2, 1, 64),
            deconv(32, 32, 3, 4, 2, 1, 64),
            // No padding, stride 3, an output_padding row and column.
            deconv(5, 7, 2, 3, 3, 0, 22),
            deconv(6, 5, 9, 2, 2, 0, 10),
        ];
        for (n, d) in cases.into_iter().enumerate() {
            let w = values(d.oc * d.ic * d.kh * d.kw, 7 + n as u32);
            let b = values(d.oc, 70 + n as u32);
            let x = values(d.ic * d.ih * d.iw, 700 + n as u32);
            for relu in [false, true] {
                let p = PackedDeconv::with_isa(isa, d, &w, &b, relu)
                    .unwrap_or_else(|| panic!("{d:?} refused"));
                let want = naive_deconv(&d, &w, &b, relu, &x);
                let mut scratch = vec![f32::NAN; p.scratch_len() * 3];
                let mut phases = vec![f32::NAN; p.phases_len()];
                let mut out = vec![f32::NAN; p.output_len()];
                for team in &teams {
                    for fresh in [true, false] {
                        out.fill(f32::NAN);
                        team::frame(team.as_ref(), || {
                            p.run(&x, &mut scratch, fresh, &mut phases, &mut out)
                        });
                        let err = max_error(&want, &out);
                        assert!(
                            err < 1e-4,
                            "{isa:?} {d:?} relu={relu} {team:?}: error {err}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_convolutions_match_their_definition() {
        for isa in Isa::available() {
            check_deconv(isa);
        }
    }

    #[test]
    fn the_scalar_small_kernel_matches_the_definition() {
        // The scalar form of the small-channel kernel, through the same
        // packing, on a stride-1 convolution with three output channels.
        let s = ConvShape {
            ic: 3,
            ih: 6,
            iw: 5,
            oc: 3,
            kh: 2,
            kw: 3,
            sh: 1,
            sw: 1,
            pads: [1, 0, 1, 2],
        };
        let w = values(3 * 3 * 6, 5);
        let b = values(3, 6);
        let x = values(s.input_len(), 8);
        let c = SmallConv::with_isa(Isa::Scalar, s, &w, &b, true).unwrap();
        let mut scratch = vec![0.0; c.scratch_len()];
        pad_into(&s, &x, &mut scratch, true, 1);
        let mut wide = vec![0.0; c.output_len()];
        let run = Span {
            dst: wide.as_mut_ptr(),
            plane: c.plane,
            from: 0,
            to: c.plane,
        };
        // SAFETY: `scratch_len` covers the reads, `wide` holds the planes.
        unsafe { small_reference(&c.weights, &c.koff, &scratch, &c.bias, true, run) };
        let want = naive(&s, &w, &b, true, &x);
        let (oh, ow) = c.output_hw();
        let (plane, row) = c.planes();
        for o in 0..3 {
            for y in 0..oh {
                for xo in 0..ow {
                    let got = wide[o * plane + y * row + xo];
                    let err = (got - want[(o * oh + y) * ow + xo]).abs();
                    assert!(err < 1e-4, "{o} {y} {xo}: {err}");
                }
            }
        }
    }

    /// Random cases per variant this CPU runs.
    const CASES: u32 = 64;

    /// Tolerance of a sum of `k` products of values in [-1, 1], in f32
    /// against the f64 definition.
    fn tolerance(k: usize) -> f32 {
        1e-4 * (k as f32 / 64.0).max(1.0)
    }

    /// Random convolutions: channels, sizes and kernels not multiples of
    /// anything, strides up to 3, uneven padding, with and without ReLU, on
    /// one thread or split across a team. Each is checked against
    /// [`naive`]; a refused shape must be one of too few output channels.
    /// A shape that ever fails here joins the fixed cases of [`shapes`]
    /// (and proptest keeps it in `proptest-regressions/`), so it stays a
    /// named test.
    #[test]
    fn random_convolutions_match_the_definition() {
        use proptest::prelude::*;
        let teams = teams();
        let shape = (
            1usize..=9,
            1usize..=20,
            1usize..=20,
            1usize..=80,
            1usize..=5,
            1usize..=5,
        )
            .prop_flat_map(|(ic, ih, iw, oc, kh, kw)| {
                (
                    Just((ic, ih, iw, oc, kh, kw)),
                    1usize..=3,
                    1usize..=3,
                    [0..kh, 0..kw, 0..kh, 0..kw],
                )
            })
            .prop_map(|((ic, ih, iw, oc, kh, kw), sh, sw, pads)| ConvShape {
                ic,
                ih,
                iw,
                oc,
                kh,
                kw,
                sh,
                sw,
                pads,
            })
            .prop_filter("an output", |s| s.oh().is_some() && s.ow().is_some());
        let config = ProptestConfig {
            cases: CASES * Isa::available().len() as u32,
            ..ProptestConfig::default()
        };
        let isas = Isa::available();
        proptest!(config, |(s in shape, relu: bool, t in 0usize..3, v in 0..isas.len(), seed: u32)| {
            let isa = isas[v];
            let k = s.ic * s.kh * s.kw;
            let w = values(s.oc * k, seed);
            let b = values(s.oc, seed ^ 0x55);
            let x = values(s.input_len(), seed ^ 0xaa);
            let Some(p) = PackedConv::with_isa(isa, s, &w, Some(&b), relu) else {
                prop_assert!(s.oc < isa.mr() / 2, "{:?} refused by {}", s, isa);
                return Ok(());
            };
            let want = naive(&s, &w, &b, relu, &x);
            let mut scratch = vec![f32::NAN; p.scratch_len() * 3];
            let mut out = vec![f32::NAN; p.output_len()];
            for fresh in [true, false] {
                team::frame(teams[t].as_ref(), || p.run(&x, &mut scratch, fresh, &mut out));
                let err = max_error(&want, &out);
                prop_assert!(err < tolerance(k), "{} {:?} relu={} team {}: {}", isa, s, relu, t, err);
            }
        });
    }

    /// Random transposed convolutions (kernels a multiple of the stride,
    /// any padding and output padding), each checked against
    /// [`naive_deconv`]; every one of them must be accepted.
    #[test]
    fn random_transposed_convolutions_match_the_definition() {
        use proptest::prelude::*;
        let teams = teams();
        let shape = (
            1usize..=8,
            1usize..=9,
            1usize..=9,
            1usize..=40,
            1usize..=3,
            1usize..=3,
        )
            .prop_flat_map(|(ic, ih, iw, oc, sh, sw)| {
                (
                    Just((ic, ih, iw, oc, sh, sw)),
                    1usize..=2,
                    1usize..=2,
                    0..sh,
                    0..sw,
                )
            })
            .prop_flat_map(|((ic, ih, iw, oc, sh, sw), ty, tx, out_h, out_w)| {
                let (kh, kw) = (ty * sh, tx * sw);
                (
                    Just((ic, ih, iw, oc, sh, sw, kh, kw, out_h, out_w)),
                    0..kh,
                    0..kw,
                )
            })
            .prop_filter_map(
                "an output",
                |((ic, ih, iw, oc, sh, sw, kh, kw, out_h, out_w), ph, pw)| {
                    // ONNX: out = (in - 1)·stride + kernel - 2·pad + output_padding.
                    let oh = ((ih - 1) * sh + kh + out_h).checked_sub(2 * ph)?;
                    let ow = ((iw - 1) * sw + kw + out_w).checked_sub(2 * pw)?;
                    (oh > 0 && ow > 0).then_some(DeconvShape {
                        ic,
                        ih,
                        iw,
                        oc,
                        kh,
                        kw,
                        sh,
                        sw,
                        pads: [ph, pw],
                        oh,
                        ow,
                    })
                },
            );
        let config = ProptestConfig {
            cases: CASES * Isa::available().len() as u32,
            ..ProptestConfig::default()
        };
        let isas = Isa::available();
        proptest!(config, |(d in shape, relu: bool, t in 0usize..3, v in 0..isas.len(), seed: u32)| {
            let isa = isas[v];
            let w = values(d.oc * d.ic * d.kh * d.kw, seed);
            let b = values(d.oc, seed ^ 0x55);
            let x = values(d.ic * d.ih * d.iw, seed ^ 0xaa);
            let p = PackedDeconv::with_isa(isa, d, &w, &b, relu);
            prop_assert!(p.is_some(), "{:?} refused by {}", d, isa);
            let Some(p) = p else { return Ok(()) };
            let want = naive_deconv(&d, &w, &b, relu, &x);
            let mut scratch = vec![f32::NAN; p.scratch_len() * 3];
            let mut phases = vec![f32::NAN; p.phases_len()];
            let mut out = vec![f32::NAN; p.output_len()];
            for fresh in [true, false] {
                team::frame(teams[t].as_ref(), || {
                    p.run(&x, &mut scratch, fresh, &mut phases, &mut out)
                });
                let err = max_error(&want, &out);
                prop_assert!(err < tolerance(d.ic * d.kh * d.kw), "{} {:?} relu={} team {}: {}", isa, d, relu, t, err);
            }
        });
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
        for isa in Isa::ALL {
            assert!(PackedConv::with_isa(isa, s, &w, None, false).is_none());
            let wrong = ConvShape { oc: 32, ..s };
            assert!(PackedConv::with_isa(isa, wrong, &w, None, false).is_none());
            let too_big = ConvShape { kh: 40, ..wrong };
            assert!(PackedConv::with_isa(isa, too_big, &w, None, false).is_none());
        }
    }

    #[test]
    fn refuses_a_variant_this_cpu_cannot_run() {
        let s = ConvShape {
            ic: 2,
            ih: 8,
            iw: 8,
            oc: 32,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            pads: [1; 4],
        };
        let w = vec![0.5; 32 * 18];
        for isa in Isa::ALL {
            let packed = PackedConv::with_isa(isa, s, &w, None, false).is_some();
            let small = SmallConv::with_isa(isa, s, &w, &[0.0; 32], false).is_some();
            assert_eq!((packed, small), (isa.supported(), isa.supported()), "{isa}");
        }
    }
}
