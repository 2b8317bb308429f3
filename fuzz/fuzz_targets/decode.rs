//! Bytes → every camera frame decoder of `bvae::source::decode` (YUYV,
//! NV12, packed gray and RGB, MJPEG). The first five bytes choose the
//! decoder (byte 0, whose top bit picks the YUV range) and the size
//! (bytes 1–2 width, 3–4 height, little-endian); the rest is the frame.
//! Each input is decoded twice into one frame, the second time with width
//! and height swapped, to exercise buffer reuse.
#![no_main]

use bvae::frame::{Frame, PixelFormat};
use bvae::source::decode::{Range, copy_packed, decode_mjpeg, decode_nv12, decode_yuyv};
use libfuzzer_sys::fuzz_target;

fn decode(kind: u8, w: usize, h: usize, range: Range, data: &[u8], frame: &mut Frame) {
    let r = match kind % 5 {
        0 => decode_yuyv(data, w, h, range, frame),
        1 => decode_nv12(data, w, h, range, frame),
        2 => copy_packed(data, w, h, PixelFormat::Gray8, frame),
        3 => copy_packed(data, w, h, PixelFormat::Rgb8, frame),
        _ => decode_mjpeg(data, frame),
    };
    if r.is_ok() {
        assert_eq!(
            frame.data.len(),
            frame.width * frame.height * frame.format.bytes_per_pixel()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [kind, w0, w1, h0, h1, rest @ ..] = data else {
        return;
    };
    let w = u16::from_le_bytes([*w0, *w1]) as usize;
    let h = u16::from_le_bytes([*h0, *h1]) as usize;
    let range = if kind & 0x80 != 0 {
        Range::Full
    } else {
        Range::Limited
    };
    let mut frame = Frame::empty();
    decode(*kind, w, h, range, rest, &mut frame);
    decode(*kind, h, w, range, rest, &mut frame);
});
