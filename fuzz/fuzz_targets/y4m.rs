//! Bytes → the Y4M header parser and frame conversion
//! (`Y4mHeader::parse` + `convert` on a `frame_bytes()`-sized buffer),
//! then the same bytes as a stream read by `Y4mReader` frame by frame,
//! rewound, and read again.
#![no_main]

use std::io::Cursor;

use bvae::frame::Frame;
use bvae::source::y4m::{Y4mError, Y4mHeader, Y4mReader};
use libfuzzer_sys::fuzz_target;

/// Frames larger than this are allowed by the format's bounds (up to
/// `MAX_IMAGE_ALLOC`), but zeroing them on every run would slow the fuzzer
/// down without reaching new code.
const MAX_FUZZ_FRAME: usize = 16 << 20;
/// Frames read per pass.
const MAX_FRAMES: usize = 8;

fn check(h: &Y4mHeader, frame: &Frame) {
    assert_eq!((frame.width, frame.height), (h.width, h.height));
    assert_eq!(
        frame.data.len(),
        h.width * h.height * frame.format.bytes_per_pixel()
    );
}

fuzz_target!(|data: &[u8]| {
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(h) = Y4mHeader::parse(&String::from_utf8_lossy(&data[..end])) else {
        return;
    };
    let n = h.frame_bytes();
    if n > MAX_FUZZ_FRAME {
        return;
    }
    let mut frame = Frame::empty();
    let mut raw = vec![0u8; n];
    let rest = data.get(end + 1..).unwrap_or(&[]);
    let k = rest.len().min(n);
    raw[..k].copy_from_slice(&rest[..k]);
    if h.convert(&raw, &mut frame).is_ok() {
        check(&h, &frame);
    }

    let mut reader = Y4mReader::new(Cursor::new(data));
    for _pass in 0..2 {
        for _ in 0..MAX_FRAMES {
            match reader.next_frame(&mut frame) {
                Ok(()) => check(&h, &frame),
                Err(Y4mError::Pending) => panic!("a byte slice is never pending"),
                Err(_) => break,
            }
        }
        if reader.rewind().is_err() {
            break;
        }
    }
});
