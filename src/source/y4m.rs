//! Uncompressed YUV4MPEG2 (`.y4m`) video, what `ffmpeg -i in.mp4 out.y4m`
//! writes, as a frame source.
//!
//! The stream header (`YUV4MPEG2 W.. H.. F.. C..`) gives the size and the
//! colour space; each frame is a `FRAME` line followed by the Y plane and,
//! unless the stream is `Cmono`, the U and V planes. Accepted colour
//! spaces: `420jpeg`, `420paldv`, `420mpeg2`, `420` (all 4:2:0; the chroma
//! siting differences are ignored), `422`, `444` and `mono`; a header
//! without `C` is `420jpeg`, as the format says.
//!
//! Colour frames become RGB with the BT.601 matrix, chroma upsampled by
//! nearest neighbour. The range follows ffmpeg: `XCOLORRANGE=FULL` or
//! `XCOLORRANGE=LIMITED` when the header has it; otherwise colour streams
//! are limited ("TV", Y 16–235, what ffmpeg writes for `yuv420p`) and
//! `mono` streams are full range (ffmpeg's `gray`). Mono streams become
//! gray frames.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::decode::Bt601;
use super::{FrameInfo, FrameSource, SourceError, reshape};
use crate::frame::{Frame, PixelFormat};
use crate::imageio::{MAX_IMAGE_ALLOC, MAX_IMAGE_SIDE};

/// Longest stream header line accepted.
const MAX_HEADER: u64 = 4096;
/// Longest `FRAME` line accepted.
const MAX_FRAME_LINE: u64 = 1024;

/// Chroma layout of a Y4M stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chroma {
    /// U and V at half width and half height.
    C420,
    /// U and V at half width, full height.
    C422,
    /// U and V at full size.
    C444,
    /// Y only.
    Mono,
}

pub use super::decode::Range;

/// A parsed stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mHeader {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Frame rate as numerator and denominator, when given.
    pub fps: Option<(u32, u32)>,
    /// Chroma layout.
    pub chroma: Chroma,
    /// Sample range.
    pub range: Range,
}

impl Y4mHeader {
    /// Parses the header line (without its newline).
    pub fn parse(line: &str) -> Result<Y4mHeader, String> {
        let mut tokens = line.split(' ');
        if tokens.next() != Some("YUV4MPEG2") {
            return Err("not a YUV4MPEG2 file: it does not start with `YUV4MPEG2 ` \
                        (convert a video with `ffmpeg -i in.mp4 -pix_fmt yuv420p out.y4m`)"
                .into());
        }
        let (mut width, mut height, mut fps) = (None, None, None);
        let mut chroma = Chroma::C420;
        let mut range = None;
        for t in tokens.filter(|t| !t.is_empty()) {
            let mut chars = t.chars();
            let tag = chars.next();
            let val = chars.as_str();
            match tag {
                Some('W') => width = val.parse::<usize>().ok(),
                Some('H') => height = val.parse::<usize>().ok(),
                Some('F') => {
                    fps = val
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse().ok()?, d.parse().ok()?)))
                }
                Some('C') => {
                    chroma = match val {
                        "420jpeg" | "420paldv" | "420mpeg2" | "420" => Chroma::C420,
                        "422" => Chroma::C422,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => {
                            return Err(format!(
                                "unsupported colour space C{other}: expected 420jpeg, 420paldv, \
                                 420mpeg2, 420, 422, 444 or mono (8 bits); convert with \
                                 `ffmpeg -i in -pix_fmt yuv420p out.y4m`"
                            ));
                        }
                    }
                }
                Some('X') => match val {
                    "COLORRANGE=FULL" => range = Some(Range::Full),
                    "COLORRANGE=LIMITED" => range = Some(Range::Limited),
                    _ => {}
                },
                _ => {}
            }
        }
        let side = |v: Option<usize>, name: &str| match v {
            Some(v) if v > 0 && v <= MAX_IMAGE_SIDE as usize => Ok(v),
            Some(v) => Err(format!(
                "the header's {name} is {v}: expected 1 to {MAX_IMAGE_SIDE} pixels"
            )),
            None => Err(format!(
                "the header has no valid {name} (W and H are required)"
            )),
        };
        let (width, height) = (side(width, "width")?, side(height, "height")?);
        let header = Y4mHeader {
            width,
            height,
            fps,
            chroma,
            range: range.unwrap_or(if chroma == Chroma::Mono {
                Range::Full
            } else {
                Range::Limited
            }),
        };
        // The decoded frame is the largest buffer: RGB, 3 bytes per pixel.
        if (width * height * 3) as u64 > MAX_IMAGE_ALLOC {
            return Err(format!(
                "frames of {width}×{height} pixels are too large to decode (more than {} MiB \
                 per frame)",
                MAX_IMAGE_ALLOC >> 20
            ));
        }
        Ok(header)
    }

    /// Size of one chroma plane, width and height.
    pub fn chroma_size(&self) -> (usize, usize) {
        let (w, h) = (self.width, self.height);
        match self.chroma {
            Chroma::C420 => (w.div_ceil(2), h.div_ceil(2)),
            Chroma::C422 => (w.div_ceil(2), h),
            Chroma::C444 => (w, h),
            Chroma::Mono => (0, 0),
        }
    }

    /// Bytes of one frame's planes (after its `FRAME` line).
    pub fn frame_bytes(&self) -> usize {
        let (cw, ch) = self.chroma_size();
        self.width * self.height + 2 * cw * ch
    }

    /// Converts one frame's planes to a gray (mono) or RGB frame, reusing
    /// `frame`'s buffer. `raw` holds [`Self::frame_bytes`] bytes.
    pub fn convert(&self, raw: &[u8], frame: &mut Frame) {
        let (w, h) = (self.width, self.height);
        let (y_plane, rest) = raw.split_at(w * h);
        if self.chroma == Chroma::Mono {
            reshape(frame, w, h, PixelFormat::Gray8);
            match self.range {
                Range::Full => frame.data.copy_from_slice(y_plane),
                Range::Limited => {
                    for (d, &y) in frame.data.iter_mut().zip(y_plane) {
                        *d = ((y.saturating_sub(16) as u32 * 255 + 109) / 219).min(255) as u8;
                    }
                }
            }
            return;
        }
        reshape(frame, w, h, PixelFormat::Rgb8);
        let (cw, ch) = self.chroma_size();
        let (u_plane, v_plane) = rest.split_at(cw * ch);
        let (sx, sy) = (w.div_ceil(cw).max(1), h.div_ceil(ch).max(1));
        let m = Bt601::new(self.range);
        for (row, out) in frame.data.chunks_exact_mut(w * 3).enumerate() {
            let crow = (row / sy) * cw;
            let ys = &y_plane[row * w..(row + 1) * w];
            for (col, px) in out.chunks_exact_mut(3).enumerate() {
                let c = crow + col / sx;
                px.copy_from_slice(&m.rgb(ys[col], u_plane[c], v_plane[c]));
            }
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How a line read by [`read_line`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At its newline.
    Complete,
    /// At the length limit or the end of the file, without a newline.
    Cut,
}

/// Reads one line of at most `max` bytes, without its newline. `None` at
/// the end of the file.
fn read_line(r: &mut impl BufRead, max: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    buf.clear();
    let n = r.take(max).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(Some(Line::Complete))
    } else {
        Ok(Some(Line::Cut))
    }
}

/// A `.y4m` file as a frame source, optionally looping.
#[derive(Debug)]
pub struct VideoSource {
    path: PathBuf,
    looping: bool,
    reader: Option<BufReader<File>>,
    header: Option<Y4mHeader>,
    data_start: u64,
    raw: Vec<u8>,
    line: Vec<u8>,
    next_index: u64,
    frames_this_pass: u64,
    /// The stream cannot be read past this point (end, truncation, lost sync).
    at_end: bool,
}

impl VideoSource {
    /// A source over `path`; the file is opened by [`FrameSource::open`].
    pub fn new(path: PathBuf, looping: bool) -> VideoSource {
        VideoSource {
            path,
            looping,
            reader: None,
            header: None,
            data_start: 0,
            raw: vec![],
            line: vec![],
            next_index: 0,
            frames_this_pass: 0,
            at_end: false,
        }
    }

    /// The stream header, once opened.
    pub fn header(&self) -> Option<&Y4mHeader> {
        self.header.as_ref()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lost(&self, what: &str, e: std::io::Error) -> SourceError {
        SourceError::Disconnected(format!("{what} {}: {e}", self.path.display()))
    }

    /// Starts the next pass from the first frame, when looping over a file
    /// that has frames; `Ended` otherwise.
    fn rewind(&mut self) -> Result<(), SourceError> {
        if !self.looping || self.frames_this_pass == 0 {
            return Err(SourceError::Ended);
        }
        let start = self.data_start;
        let reader = self.reader.as_mut().ok_or(SourceError::Ended)?;
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| SourceError::Disconnected(format!("cannot rewind: {e}")))?;
        self.frames_this_pass = 0;
        self.at_end = false;
        Ok(())
    }

    /// Reads the next frame's planes into `self.raw`.
    fn read_frame(&mut self) -> Result<(), SourceError> {
        if self.at_end {
            self.rewind()?;
        }
        let (Some(reader), Some(header)) = (self.reader.as_mut(), self.header) else {
            return Err(SourceError::Disconnected(format!(
                "{} is not open",
                self.path.display()
            )));
        };
        let marker = read_line(reader, MAX_FRAME_LINE, &mut self.line);
        match marker {
            Ok(None) => {
                self.at_end = true;
                self.rewind()?;
                return self.read_frame();
            }
            Ok(Some(Line::Complete)) if self.line.starts_with(b"FRAME") => {}
            Ok(Some(_)) => {
                self.at_end = true;
                return Err(SourceError::BadFrame(format!(
                    "{}: expected a FRAME line before frame {}, found {:?}; the file is \
                     corrupt from here on",
                    self.path.display(),
                    self.frames_this_pass,
                    String::from_utf8_lossy(&self.line[..self.line.len().min(16)])
                )));
            }
            Err(e) => return Err(self.lost("cannot read", e)),
        }
        let reader = self.reader.as_mut().ok_or(SourceError::Ended)?;
        self.raw.resize(header.frame_bytes(), 0);
        match read_full(reader, &mut self.raw) {
            Ok(n) if n == self.raw.len() => Ok(()),
            Ok(n) => {
                self.at_end = true;
                Err(SourceError::BadFrame(format!(
                    "{}: frame {} is truncated: expected {} bytes, found {n}",
                    self.path.display(),
                    self.frames_this_pass,
                    self.raw.len()
                )))
            }
            Err(e) => Err(self.lost("cannot read", e)),
        }
    }
}

impl FrameSource for VideoSource {
    fn describe(&self) -> String {
        match &self.header {
            Some(h) => format!(
                "video:{} ({}x{} {:?}{}{})",
                self.path.display(),
                h.width,
                h.height,
                h.chroma,
                h.fps
                    .map(|(n, d)| format!(" {:.2} fps", n as f64 / d.max(1) as f64))
                    .unwrap_or_default(),
                if self.looping { ", looping" } else { "" }
            ),
            None => format!("video:{}", self.path.display()),
        }
    }

    /// Opens the file, reads its header and starts from the first frame.
    fn open(&mut self) -> Result<(), SourceError> {
        self.reader = None;
        let file = File::open(&self.path).map_err(|e| self.lost("cannot open", e))?;
        let mut reader = BufReader::new(file);
        let line = match read_line(&mut reader, MAX_HEADER, &mut self.line) {
            Ok(Some(Line::Complete)) => String::from_utf8_lossy(&self.line).into_owned(),
            Ok(Some(Line::Cut)) => {
                return Err(SourceError::Disconnected(format!(
                    "{}: the header line has no end (no newline in its first {MAX_HEADER} bytes); \
                     expected a YUV4MPEG2 video",
                    self.path.display()
                )));
            }
            Ok(None) => {
                return Err(SourceError::Disconnected(format!(
                    "{} is empty: expected a YUV4MPEG2 video",
                    self.path.display()
                )));
            }
            Err(e) => return Err(self.lost("cannot read", e)),
        };
        let header = Y4mHeader::parse(&line)
            .map_err(|e| SourceError::Disconnected(format!("{}: {e}", self.path.display())))?;
        self.data_start = reader
            .stream_position()
            .map_err(|e| self.lost("cannot read", e))?;
        self.header = Some(header);
        self.reader = Some(reader);
        self.frames_this_pass = 0;
        self.at_end = false;
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        let result = self.read_frame();
        if matches!(result, Err(SourceError::Ended)) {
            return Err(SourceError::Ended);
        }
        let index = self.next_index;
        self.next_index += 1;
        result?;
        self.frames_this_pass += 1;
        if let Some(h) = &self.header {
            h.convert(&self.raw, frame);
        }
        Ok(FrameInfo::unlabelled(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let h = Y4mHeader::parse("YUV4MPEG2 W320 H240 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG")
            .unwrap();
        assert_eq!((h.width, h.height, h.fps), (320, 240, Some((30000, 1001))));
        assert_eq!((h.chroma, h.range), (Chroma::C420, Range::Limited));
        assert_eq!(h.frame_bytes(), 320 * 240 * 3 / 2);
        let h = Y4mHeader::parse("YUV4MPEG2 W3 H3 Cmono").unwrap();
        assert_eq!(
            (h.chroma, h.range, h.frame_bytes()),
            (Chroma::Mono, Range::Full, 9)
        );
        let h = Y4mHeader::parse("YUV4MPEG2 W5 H3 C420 XCOLORRANGE=FULL").unwrap();
        assert_eq!((h.range, h.chroma_size()), (Range::Full, (3, 2)));
        // Unknown tags, even non-ASCII ones, are ignored.
        let h = Y4mHeader::parse("YUV4MPEG2 W3 H3 éx Cmono Zz").unwrap();
        assert_eq!(h.chroma, Chroma::Mono);
        let h = Y4mHeader::parse("YUV4MPEG2 W4 H2 C422").unwrap();
        assert_eq!(h.frame_bytes(), 8 + 2 * 4);
        for (bad, needle) in [
            ("P5 3 3", "not a YUV4MPEG2"),
            (
                "YUV4MPEG2 W3 H3 C420p10",
                "unsupported colour space C420p10",
            ),
            ("YUV4MPEG2 H3", "no valid width"),
            ("YUV4MPEG2 W0 H3", "width is 0"),
            ("YUV4MPEG2 W100000 H3", "width is 100000"),
            ("YUV4MPEG2 W16000 H16000", "too large"),
        ] {
            let e = Y4mHeader::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn bt601_colours() {
        // Limited range: Y=235 U=V=128 is white, Y=16 black, and pure red
        // in BT.601 is Y=81 U=90 V=240.
        let h = Y4mHeader::parse("YUV4MPEG2 W1 H1 C444").unwrap();
        let mut f = Frame::empty();
        for (yuv, rgb) in [
            ([235, 128, 128], [255, 255, 255]),
            ([16, 128, 128], [0, 0, 0]),
            ([81, 90, 240], [255, 0, 0]),
        ] {
            h.convert(&yuv, &mut f);
            for (got, want) in f.data.iter().zip(rgb) {
                assert!((*got as i32 - want).abs() <= 1, "{yuv:?}: {:?}", f.data);
            }
        }
    }
}
