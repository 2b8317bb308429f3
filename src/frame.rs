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

    /// A copy of the `w`×`h` region at (`x`, `y`), clipped to the frame.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Frame {
        let bpp = self.format.bytes_per_pixel();
        let (x, y) = (x.min(self.width), y.min(self.height));
        let (w, h) = (w.min(self.width - x), h.min(self.height - y));
        let mut data = Vec::with_capacity(w * h * bpp);
        if self.data.len() == self.width * self.height * bpp {
            for row in y..y + h {
                let start = (row * self.width + x) * bpp;
                data.extend_from_slice(&self.data[start..start + w * bpp]);
            }
        }
        let (width, height) = if data.len() == w * h * bpp {
            (w, h)
        } else {
            (0, 0)
        };
        Frame {
            width,
            height,
            format: self.format,
            data,
        }
    }

    /// Copies `part` (of the same pixel format) into the frame with its
    /// top-left corner at (`x`, `y`), clipped to the frame.
    pub fn paste(&mut self, part: &Frame, x: usize, y: usize) {
        let bpp = self.format.bytes_per_pixel();
        if part.format != self.format
            || self.data.len() != self.width * self.height * bpp
            || part.data.len() != part.width * part.height * bpp
            || x >= self.width
            || y >= self.height
        {
            return;
        }
        let w = part.width.min(self.width - x);
        let h = part.height.min(self.height - y);
        for row in 0..h {
            let dst = ((y + row) * self.width + x) * bpp;
            let src = row * part.width * bpp;
            self.data[dst..dst + w * bpp].copy_from_slice(&part.data[src..src + w * bpp]);
        }
    }
}
