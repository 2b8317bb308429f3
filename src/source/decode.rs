//! Decoding raw camera and video pixels into frames, reusing the frame's
//! buffer: BT.601 YUV to RGB, packed YUYV 4:2:2, NV12, and MJPEG (one
//! JPEG per frame). A decoder that panics on a hostile frame is caught
//! ([`catch_decoder_panic`]) and reported as a bad frame.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{SourceError, reshape};
use crate::frame::{Frame, PixelFormat};
use crate::imageio::{ImageError, MAX_IMAGE_SIDE, decode_jpeg_into};

/// Value range of YUV samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Y 16–235, U/V 16–240 ("TV" range; what cameras and most video use).
    Limited,
    /// 0–255 ("PC"/JPEG range).
    Full,
}

/// The BT.601 YUV → RGB matrix for one range, in 16.16 fixed point.
#[derive(Debug, Clone, Copy)]
pub struct Bt601 {
    ky: i32,
    y0: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Bt601 {
    /// The matrix for `range`.
    pub fn new(range: Range) -> Bt601 {
        let (ky, y0, rv, gu, gv, bu) = match range {
            Range::Full => (1.0, 0, 1.402, 0.344_136, 0.714_136, 1.772),
            Range::Limited => (
                255.0 / 219.0,
                16,
                1.596_027,
                0.391_762,
                0.812_968,
                2.017_232,
            ),
        };
        let fx = |c: f64| (c * 65536.0).round() as i32;
        Bt601 {
            ky: fx(ky),
            y0,
            rv: fx(rv),
            gu: fx(gu),
            gv: fx(gv),
            bu: fx(bu),
        }
    }

    /// One pixel.
    #[inline]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let clamp = |x: i32| ((x + 32768) >> 16).clamp(0, 255) as u8;
        let y = self.ky * (y as i32 - self.y0);
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        [
            clamp(y + self.rv * v),
            clamp(y - self.gu * u - self.gv * v),
            clamp(y + self.bu * u),
        ]
    }
}

fn check_size(width: usize, height: usize) -> Result<(), SourceError> {
    let side = MAX_IMAGE_SIDE as usize;
    if width == 0 || height == 0 || width > side || height > side {
        return Err(SourceError::BadFrame(format!(
            "a {width}×{height} frame: expected 1 to {side} pixels a side"
        )));
    }
    Ok(())
}

fn wrong_length(what: &str, width: usize, height: usize, want: usize, got: usize) -> SourceError {
    SourceError::BadFrame(format!(
        "a {width}×{height} {what} frame needs {want} bytes, found {got}"
    ))
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V per two pixels), the usual uncompressed
/// webcam format, to RGB.
pub fn decode_yuyv(
    data: &[u8],
    width: usize,
    height: usize,
    range: Range,
    frame: &mut Frame,
) -> Result<(), SourceError> {
    check_size(width, height)?;
    let stride = width.div_ceil(2) * 4;
    if data.len() < stride * height {
        return Err(wrong_length(
            "YUYV",
            width,
            height,
            stride * height,
            data.len(),
        ));
    }
    let m = Bt601::new(range);
    reshape(frame, width, height, PixelFormat::Rgb8);
    for (row, out) in frame.data.chunks_exact_mut(width * 3).enumerate() {
        let src = &data[row * stride..(row + 1) * stride];
        for (x, px) in out.chunks_exact_mut(3).enumerate() {
            let q = &src[(x / 2) * 4..(x / 2) * 4 + 4];
            let y = if x % 2 == 0 { q[0] } else { q[2] };
            px.copy_from_slice(&m.rgb(y, q[1], q[3]));
        }
    }
    Ok(())
}

/// NV12 (a Y plane, then interleaved U V at half width and height) to RGB.
pub fn decode_nv12(
    data: &[u8],
    width: usize,
    height: usize,
    range: Range,
    frame: &mut Frame,
) -> Result<(), SourceError> {
    check_size(width, height)?;
    let cw = width.div_ceil(2);
    let need = width * height + cw * 2 * height.div_ceil(2);
    if data.len() < need {
        return Err(wrong_length("NV12", width, height, need, data.len()));
    }
    let (y_plane, uv) = data.split_at(width * height);
    let m = Bt601::new(range);
    reshape(frame, width, height, PixelFormat::Rgb8);
    for (row, out) in frame.data.chunks_exact_mut(width * 3).enumerate() {
        let uv_row = &uv[(row / 2) * cw * 2..];
        for (x, px) in out.chunks_exact_mut(3).enumerate() {
            let c = (x / 2) * 2;
            px.copy_from_slice(&m.rgb(y_plane[row * width + x], uv_row[c], uv_row[c + 1]));
        }
    }
    Ok(())
}

/// Packed 8-bit pixels (gray or RGB) copied as they are.
pub fn copy_packed(
    data: &[u8],
    width: usize,
    height: usize,
    format: PixelFormat,
    frame: &mut Frame,
) -> Result<(), SourceError> {
    check_size(width, height)?;
    let need = width * height * format.bytes_per_pixel();
    if data.len() < need {
        return Err(wrong_length(
            &format!("{format:?}"),
            width,
            height,
            need,
            data.len(),
        ));
    }
    reshape(frame, width, height, format);
    frame.data.copy_from_slice(&data[..need]);
    Ok(())
}

/// One JPEG image (an MJPEG frame) to a gray or RGB frame, decoded into
/// the frame's buffer. The JPEG decoder keeps its own tables, so this
/// allocates a little per frame; the pixels do not.
pub fn decode_mjpeg(data: &[u8], frame: &mut Frame) -> Result<(), SourceError> {
    decode_jpeg_into(data, frame).map_err(|e| match e {
        ImageError::TooLarge(d) => {
            SourceError::BadFrame(format!("MJPEG frame too large to decode ({d})"))
        }
        ImageError::Bad(d) => SourceError::BadFrame(format!("undecodable MJPEG frame: {d}")),
    })
}

/// Runs a decoder, turning a panic inside it into a bad frame so that one
/// hostile frame cannot take the capture thread down.
pub fn catch_decoder_panic(
    what: &str,
    decode: impl FnOnce() -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        Err(SourceError::BadFrame(format!(
            "the {what} decoder panicked: {msg}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[u8], want: [u8; 3]) -> bool {
        got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 2)
    }

    #[test]
    fn yuyv_and_nv12_colours() {
        // Two pixels: white and red (limited range) sharing red's chroma
        // would tint white, so use one pixel pair per colour.
        let yuyv = [81, 90, 81, 240, 41, 240, 41, 110];
        let mut f = Frame::empty();
        decode_yuyv(&yuyv, 4, 1, Range::Limited, &mut f).unwrap();
        assert_eq!((f.width, f.height, f.format), (4, 1, PixelFormat::Rgb8));
        assert!(close(&f.data[0..3], [255, 0, 0]), "{:?}", f.data);
        assert!(close(&f.data[9..12], [0, 0, 255]), "{:?}", f.data);
        let e = decode_yuyv(&yuyv[..6], 4, 1, Range::Limited, &mut f).unwrap_err();
        assert!(matches!(e, SourceError::BadFrame(_)), "{e}");
        // NV12 2×2: one chroma pair.
        let nv12 = [81, 81, 81, 81, 90, 240];
        decode_nv12(&nv12, 2, 2, Range::Limited, &mut f).unwrap();
        assert!(
            f.data.chunks(3).all(|p| close(p, [255, 0, 0])),
            "{:?}",
            f.data
        );
        assert!(decode_nv12(&nv12[..5], 2, 2, Range::Limited, &mut f).is_err());
        assert!(decode_yuyv(&[], 0, 1, Range::Limited, &mut f).is_err());
    }

    #[test]
    fn mjpeg_decodes_into_the_buffer_and_garbage_is_a_bad_frame() {
        let mut jpeg = vec![];
        let rgb: Vec<u8> = (0..16 * 8).flat_map(|_| [200u8, 30, 30]).collect();
        jpeg_encoder::Encoder::new(&mut jpeg, 95)
            .encode(&rgb, 16, 8, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let mut f = Frame::empty();
        decode_mjpeg(&jpeg, &mut f).unwrap();
        assert_eq!((f.width, f.height, f.format), (16, 8, PixelFormat::Rgb8));
        assert!(
            f.data
                .chunks(3)
                .all(|p| close(p, [200, 30, 30]) || p[0] > 190)
        );
        let ptr = f.data.as_ptr();
        decode_mjpeg(&jpeg, &mut f).unwrap();
        assert_eq!(f.data.as_ptr(), ptr);
        for bad in [
            &b""[..],
            b"\xff\xd8\xff garbage",
            b"\xff\xd8\xff\xc0\x00\x11",
        ] {
            let r = catch_decoder_panic("MJPEG", || decode_mjpeg(bad, &mut f));
            assert!(matches!(r, Err(SourceError::BadFrame(_))), "{r:?}");
        }
        // A truncated frame either decodes (gray fill) or is a bad frame.
        let r = catch_decoder_panic("MJPEG", || decode_mjpeg(&jpeg[..jpeg.len() / 3], &mut f));
        assert!(matches!(r, Ok(()) | Err(SourceError::BadFrame(_))), "{r:?}");
    }

    #[test]
    fn a_panicking_decoder_is_a_bad_frame() {
        let r = catch_decoder_panic("test", || panic!("boom"));
        match r {
            Err(SourceError::BadFrame(m)) => assert!(m.contains("boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
