//! Frames: 8-bit gray or RGB pixel buffers from any source.

use anyhow::{Result, bail};

/// Pixel layout of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel, R G B.
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
        }
    }

    /// Short lowercase name for messages: `gray` or `rgb`.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "gray",
            PixelFormat::Rgb8 => "rgb",
        }
    }
}

/// A borrowed frame, tightly packed rows (no padding).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// `width · height · bytes_per_pixel` bytes.
    pub data: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Wraps a buffer, checking that its size matches the dimensions.
    pub fn new(width: usize, height: usize, format: PixelFormat, data: &'a [u8]) -> Result<Self> {
        if width == 0 || height == 0 {
            bail!("a frame must be at least 1×1 pixels, found {width}×{height}");
        }
        let need = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(format.bytes_per_pixel()));
        match need {
            Some(n) if n == data.len() => Ok(FrameRef {
                width,
                height,
                format,
                data,
            }),
            Some(n) => bail!(
                "a {width}×{height} {format:?} frame needs {n} bytes, found {}",
                data.len()
            ),
            None => bail!("frame size {width}×{height} overflows"),
        }
    }
}

/// An owned frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Packed pixels.
    pub data: Vec<u8>,
}

impl Frame {
    /// A 0×0 frame with no buffer yet: sources fill and size it on first use.
    pub fn empty() -> Frame {
        Frame {
            width: 0,
            height: 0,
            format: PixelFormat::Gray8,
            data: Vec::new(),
        }
    }

    /// Borrows the frame.
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            width: self.width,
            height: self.height,
            format: self.format,
            data: &self.data,
        }
    }
}
