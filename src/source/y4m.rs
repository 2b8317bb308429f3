//! Uncompressed YUV4MPEG2 (`.y4m`) video as a frame source: what
//! `ffmpeg -i in.mp4 out.y4m` writes to a file, or
//! `ffmpeg -i rtsp://… -f yuv4mpegpipe -` writes to a pipe.
//!
//! The stream header (`YUV4MPEG2 W.. H.. F.. C..`) gives the size, the
//! frame rate and the colour space; each frame is a `FRAME` line followed
//! by the Y plane and, unless the stream is `Cmono`, the U and V planes.
//! Accepted colour spaces: `420jpeg`, `420paldv`, `420mpeg2`, `420` (all
//! 4:2:0; the chroma siting differences are ignored), `422`, `444` and
//! `mono`; a header without `C` is `420jpeg`, as the format says.
//!
//! Colour frames become RGB with the BT.601 matrix, chroma upsampled by
//! nearest neighbour. The range follows ffmpeg: `XCOLORRANGE=FULL` or
//! `XCOLORRANGE=LIMITED` when the header has it; otherwise colour streams
//! are limited ("TV", Y 16–235, what ffmpeg writes for `yuv420p`) and
//! `mono` streams are full range (ffmpeg's `gray`). Mono streams become
//! gray frames.
//!
//! [`Y4mReader`] parses the format from any [`BufRead`] (a file, a pipe, a
//! byte slice); [`VideoSource`] is the [`FrameSource`] over a file,
//! standard input (`-`) or a FIFO, with the pacing of [`Pace`]:
//!
//! - a regular file plays at its header's frame rate (`F30:1`) by
//!   default, like a camera: each frame is due at its place in the
//!   schedule counted from the start of playback (it does not drift, and
//!   continues across a `loop`); without a rate it is read as fast as it
//!   decodes, unless `fps=N` gives one;
//! - a stream (standard input, a FIFO, a character device) is never
//!   sought; by default frames are delivered as they arrive (the producer
//!   paces them; the live loop drops stale ones like a camera's), and
//!   `pace=on` paces it by its header rate as well;
//! - `pace=off` delivers every frame as fast as the loop takes them
//!   ([`FrameSource::lossless`]): for evaluation on recorded footage,
//!   where no frame may be dropped and the result must be reproducible.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use super::decode::Bt601;
use super::{FrameInfo, FrameSource, SourceError, reshape};
use crate::frame::{Frame, PixelFormat};
use crate::imageio::{MAX_IMAGE_ALLOC, MAX_IMAGE_SIDE};

/// Longest stream header line accepted.
pub const MAX_HEADER: usize = 4096;
/// Longest `FRAME` line accepted.
pub const MAX_FRAME_LINE: usize = 1024;
/// Longest single wait for stream data, so the capture thread sees a stop
/// request soon.
const POLL: Duration = Duration::from_millis(50);
/// Longest single sleep until a paced frame is due; a frame due later
/// gives [`SourceError::Timeout`] after a [`POLL`] sleep.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// A paced frame later than this (the machine or the producer was slow)
/// restarts the schedule from now instead of bursting to catch up.
const MAX_LATE: Duration = Duration::from_secs(1);
/// How long opening a stream waits for its header.
pub const HEADER_WAIT: Duration = Duration::from_secs(30);
/// Bytes per read from a stream.
const CHUNK: usize = 64 << 10;
/// Chunks circulating between a stream's reader thread and the source.
const CHUNKS: usize = 3;
/// Frame rates `fps=N` accepts.
const FPS_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1000.0;

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

    /// The time between two frames by the header's `F` tag; `None` when
    /// the header has none (or a zero one).
    pub fn frame_period(&self) -> Option<Duration> {
        let (n, d) = self.fps.filter(|&(n, d)| n > 0 && d > 0)?;
        Some(Duration::from_nanos(d as u64 * 1_000_000_000 / n as u64)).filter(|p| !p.is_zero())
    }

    /// Converts one frame's planes to a gray (mono) or RGB frame, reusing
    /// `frame`'s buffer. `raw` must hold [`Self::frame_bytes`] bytes (more
    /// are ignored); fewer is an error and leaves `frame` as it was.
    pub fn convert(&self, raw: &[u8], frame: &mut Frame) -> Result<(), String> {
        let (w, h) = (self.width, self.height);
        if raw.len() < self.frame_bytes() {
            return Err(format!(
                "a {w}×{h} {:?} frame needs {} bytes, found {}",
                self.chroma,
                self.frame_bytes(),
                raw.len()
            ));
        }
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
            return Ok(());
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
        Ok(())
    }
}

/// Why [`Y4mReader`] gave no frame.
#[derive(Debug, thiserror::Error)]
pub enum Y4mError {
    /// The underlying reader has no data yet (it returned
    /// [`ErrorKind::WouldBlock`] or [`ErrorKind::TimedOut`]); what was read
    /// so far is kept, so call again.
    #[error("no data yet: call again")]
    Pending,
    /// The data ended at a frame boundary (or before the header).
    #[error("the video has no more frames")]
    End,
    /// The data ended inside a frame (a cut file, a producer stopped
    /// mid-frame). Nothing more can be read.
    #[error("{0}")]
    Truncated(String),
    /// The data is not YUV4MPEG2 from here on (a bad header, garbage
    /// where a `FRAME` line should be). Nothing more can be read.
    #[error("{0}")]
    Corrupt(String),
    /// The underlying reader failed.
    #[error("read error: {0}")]
    Io(io::Error),
}

fn io_error(e: io::Error) -> Y4mError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Y4mError::Pending,
        _ => Y4mError::Io(e),
    }
}

/// How a line read by [`Y4mReader::read_line`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// At its newline (not kept).
    Complete,
    /// At the length limit, without a newline.
    Cut,
    /// At the end of the data (the line may be partly read).
    Eof,
}

/// Reads YUV4MPEG2 frames from any [`BufRead`]: a `BufReader<File>`, a
/// pipe, a byte slice (what a fuzzer feeds it).
///
/// Every size comes from the header, which is bounded before anything is
/// allocated ([`Y4mHeader::parse`]); the line and plane buffers are
/// allocated once and reused, so reading does not allocate per frame. The
/// reader is resumable: when the underlying reader returns
/// [`ErrorKind::WouldBlock`] (no data yet), [`Y4mError::Pending`] is
/// returned and the next call continues where this one stopped.
///
/// ```
/// use bvae::frame::Frame;
/// use bvae::source::y4m::{Y4mError, Y4mReader};
///
/// let data: &[u8] = b"YUV4MPEG2 W2 H2 F25:1 Cmono\nFRAME\n\x00\x40\x80\xff";
/// let mut reader = Y4mReader::new(data);
/// let mut frame = Frame::empty();
/// reader.next_frame(&mut frame).unwrap();
/// assert_eq!((frame.width, frame.height, &frame.data[..]), (2, 2, &[0, 0x40, 0x80, 0xff][..]));
/// assert!(matches!(reader.next_frame(&mut frame), Err(Y4mError::End)));
/// ```
#[derive(Debug)]
pub struct Y4mReader<R> {
    inner: R,
    header: Option<Y4mHeader>,
    /// Bytes consumed from `inner` so far, up to the end of the header.
    consumed: u64,
    /// Bytes of the header line with its newline: where frames start.
    header_bytes: u64,
    line: Vec<u8>,
    raw: Vec<u8>,
    /// Bytes of `raw` filled for the frame being read.
    filled: usize,
    /// The current frame's `FRAME` line is read; its planes are not.
    in_planes: bool,
    /// Nothing more can be read (end, truncation, corruption).
    done: bool,
    /// Complete frames since the start (or the last rewind).
    frames: u64,
}

impl<R: BufRead> Y4mReader<R> {
    /// A reader at the start of a YUV4MPEG2 stream (its header first).
    pub fn new(inner: R) -> Y4mReader<R> {
        Y4mReader {
            inner,
            header: None,
            consumed: 0,
            header_bytes: 0,
            line: Vec::with_capacity(MAX_HEADER),
            raw: Vec::new(),
            filled: 0,
            in_planes: false,
            done: false,
            frames: 0,
        }
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&Y4mHeader> {
        self.header.as_ref()
    }

    /// Complete frames read since the start (or the last rewind).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Reads up to a newline into `self.line`, at most `max` bytes.
    fn read_line(&mut self, max: usize) -> Result<LineEnd, Y4mError> {
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            if avail.is_empty() {
                return Ok(LineEnd::Eof);
            }
            let room = max.saturating_sub(self.line.len());
            let take = &avail[..avail.len().min(room)];
            let (used, end) = match take.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&take[..i]);
                    (i + 1, Some(LineEnd::Complete))
                }
                None => {
                    self.line.extend_from_slice(take);
                    let full = self.line.len() >= max;
                    (take.len(), full.then_some(LineEnd::Cut))
                }
            };
            self.inner.consume(used);
            self.consumed += used as u64;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Reads and checks the stream header (once; later calls return it).
    /// [`Y4mError::End`] when the data is empty.
    pub fn read_header(&mut self) -> Result<Y4mHeader, Y4mError> {
        if let Some(h) = self.header {
            return Ok(h);
        }
        if self.done {
            return Err(Y4mError::End);
        }
        let end = self.read_line(MAX_HEADER)?;
        let fail = match end {
            LineEnd::Complete => None,
            LineEnd::Eof if self.line.is_empty() => Some(Y4mError::End),
            LineEnd::Eof => Some(Y4mError::Corrupt(format!(
                "the header line has no end (the data ends after {} bytes without a newline); \
                 expected a YUV4MPEG2 video",
                self.line.len()
            ))),
            LineEnd::Cut => Some(Y4mError::Corrupt(format!(
                "the header line has no end (no newline in its first {MAX_HEADER} bytes); \
                 expected a YUV4MPEG2 video"
            ))),
        };
        if let Some(e) = fail {
            self.done = true;
            return Err(e);
        }
        let parsed = Y4mHeader::parse(&String::from_utf8_lossy(&self.line));
        self.line.clear();
        let header = parsed.map_err(|e| {
            self.done = true;
            Y4mError::Corrupt(e)
        })?;
        self.header_bytes = self.consumed;
        self.header = Some(header);
        Ok(header)
    }

    /// Reads the next frame's planes into the reader's buffer and returns
    /// the header they follow.
    fn fill_frame(&mut self) -> Result<Y4mHeader, Y4mError> {
        let header = self.read_header()?;
        if self.done {
            return Err(Y4mError::End);
        }
        let size = header.frame_bytes();
        if !self.in_planes {
            let end = self.read_line(MAX_FRAME_LINE)?;
            let fail = match end {
                LineEnd::Complete if self.line.starts_with(b"FRAME") => None,
                LineEnd::Eof if self.line.is_empty() => Some(Y4mError::End),
                LineEnd::Eof => Some(Y4mError::Truncated(format!(
                    "frame {} is truncated: the data ends inside its FRAME line",
                    self.frames
                ))),
                _ => Some(Y4mError::Corrupt(format!(
                    "expected a FRAME line before frame {}, found {:?}; the data is corrupt \
                     from here on",
                    self.frames,
                    String::from_utf8_lossy(&self.line[..self.line.len().min(16)])
                ))),
            };
            self.line.clear();
            if let Some(e) = fail {
                self.done = true;
                return Err(e);
            }
            self.in_planes = true;
            self.filled = 0;
            // Bounded by the header (at most MAX_IMAGE_ALLOC); allocated
            // on the first frame only.
            self.raw.resize(size, 0);
        }
        while self.filled < size {
            match self.inner.read(&mut self.raw[self.filled..size]) {
                Ok(0) => {
                    self.done = true;
                    self.in_planes = false;
                    return Err(Y4mError::Truncated(format!(
                        "frame {} is truncated: expected {size} bytes, found {}",
                        self.frames, self.filled
                    )));
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        self.in_planes = false;
        self.frames += 1;
        Ok(header)
    }

    /// Reads the next frame and returns its planes (Y, then U and V unless
    /// mono), [`Y4mHeader::frame_bytes`] bytes.
    pub fn read_frame(&mut self) -> Result<&[u8], Y4mError> {
        let header = self.fill_frame()?;
        Ok(&self.raw[..header.frame_bytes()])
    }

    /// Reads the next frame into `frame` (gray or RGB, see
    /// [`Y4mHeader::convert`]), reusing its buffer.
    pub fn next_frame(&mut self, frame: &mut Frame) -> Result<(), Y4mError> {
        let header = self.fill_frame()?;
        header.convert(&self.raw, frame).map_err(Y4mError::Corrupt)
    }

    /// Converts the frame [`Self::read_frame`] read last into `frame`.
    fn convert_last(&self, frame: &mut Frame) -> Result<(), Y4mError> {
        match &self.header {
            Some(h) => h.convert(&self.raw, frame).map_err(Y4mError::Corrupt),
            None => Err(Y4mError::Corrupt("no frame has been read".into())),
        }
    }
}

impl<R: BufRead + Seek> Y4mReader<R> {
    /// Goes back to the first frame, after the header. The reader must
    /// have been created at the start of the data.
    pub fn rewind(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.header_bytes))?;
        self.line.clear();
        (self.filled, self.in_planes, self.frames) = (0, false, 0);
        self.done = self.header.is_none();
        Ok(())
    }
}

/// How a [`VideoSource`] paces its frames (`pace=` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// No `pace=`: a regular file at its header's rate (as fast as it
    /// decodes when the header has none), a stream as its frames arrive.
    /// `fps=N` paces either at N frames per second.
    #[default]
    Auto,
    /// `pace=on`: at the header's rate (or `fps=N`), file or stream.
    On,
    /// `pace=off`: every frame, as fast as the loop takes them; none is
    /// dropped ([`FrameSource::lossless`]).
    Off,
}

/// The options of a `video:` source after its path.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VideoOptions {
    /// `loop`: start again from the first frame after the last (regular
    /// files only).
    pub looping: bool,
    /// `pace=on|off`.
    pub pace: Pace,
    /// `fps=N`: the frame rate to play at, instead of the header's.
    pub fps: Option<f64>,
}

impl fmt::Display for VideoOptions {
    /// The spec suffix: `,loop`, `,pace=on|off`, `,fps=N`, in that order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.looping {
            f.write_str(",loop")?;
        }
        match self.pace {
            Pace::Auto => {}
            Pace::On => f.write_str(",pace=on")?,
            Pace::Off => f.write_str(",pace=off")?,
        }
        if let Some(fps) = self.fps {
            write!(f, ",fps={fps}")?;
        }
        Ok(())
    }
}

/// Whether `path` names standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Parses what follows `video:`: `PATH[,loop][,pace=on|off][,fps=N]`.
///
/// Options are taken from the end, so a path may contain commas: a
/// trailing `,loop`, or `,key=value` with a lowercase key, is an option
/// (an unknown key is an error); anything else belongs to the path.
pub fn parse_spec(rest: &str) -> Result<(PathBuf, VideoOptions), String> {
    let mut path = rest;
    let mut opts = VideoOptions::default();
    let mut seen: Vec<&str> = vec![];
    while let Some((head, last)) = path.rsplit_once(',') {
        let (key, value) = match last.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (last.trim(), None),
        };
        let option = match value {
            None => key == "loop",
            Some(_) => !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase()),
        };
        if !option {
            break;
        }
        if seen.contains(&key) {
            return Err(format!("the video option {key} is given twice"));
        }
        seen.push(key);
        match (key, value) {
            ("loop", None) => opts.looping = true,
            ("loop", Some(v)) => {
                return Err(format!("loop={v}: `loop` takes no value, write `,loop`"));
            }
            ("pace", Some("on")) => opts.pace = Pace::On,
            ("pace", Some("off")) => opts.pace = Pace::Off,
            ("pace", Some(v)) => return Err(format!("pace={v}: expected pace=on or pace=off")),
            ("fps", Some(v)) => match v.parse::<f64>() {
                Ok(fps) if FPS_RANGE.contains(&fps) => opts.fps = Some(fps),
                _ => {
                    return Err(format!(
                        "fps={v}: expected a frame rate from {} to {} frames per second \
                         (pace=off for no pacing)",
                        FPS_RANGE.start(),
                        FPS_RANGE.end()
                    ));
                }
            },
            (k, _) => {
                return Err(format!(
                    "unknown video option {k:?}: expected loop, pace=on|off or fps=N"
                ));
            }
        }
        path = head;
    }
    if path.is_empty() {
        return Err(
            "`--source video:` needs a path after the colon, e.g. video:clip.y4m, or \
                    video:- for standard input"
                .into(),
        );
    }
    if opts.fps.is_some() && opts.pace == Pace::Off {
        return Err("fps=N sets the pace and pace=off turns pacing off: give one of them".into());
    }
    if opts.looping && is_stdin(Path::new(path)) {
        return Err(
            "`loop` needs a regular file: standard input (video:-) is a stream, which \
                    cannot be read twice; remove `,loop`"
                .into(),
        );
    }
    Ok((PathBuf::from(path), opts))
}

/// A stream read by its own thread in chunks, so that the capture thread
/// waits at most [`POLL`] for data and notices a stop request even when
/// the producer stalls. The chunk buffers circulate between the two
/// threads (allocated once); the reader thread stops reading when all
/// are full, so a slow consumer slows the producer down through the pipe.
struct StreamReader {
    full: Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    eof: bool,
}

impl StreamReader {
    /// Starts the reader thread over what `open` returns (called in that
    /// thread: opening a FIFO waits for its writer).
    fn spawn<R: Read>(
        name: &str,
        open: impl FnOnce() -> io::Result<R> + Send + 'static,
    ) -> io::Result<StreamReader> {
        let (full_tx, full) = sync_channel::<io::Result<(Vec<u8>, usize)>>(CHUNKS);
        let (empty, empty_rx) = sync_channel::<Vec<u8>>(CHUNKS);
        for _ in 0..CHUNKS {
            // cannot fail: the channel has room for every chunk
            let _ = empty.try_send(vec![0; CHUNK]);
        }
        std::thread::Builder::new()
            .name(format!("bvae-video-in {name}"))
            .spawn(move || {
                let mut src = match open() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when the source is dropped (no more empty chunks).
                while let Ok(mut buf) = empty_rx.recv() {
                    let got = loop {
                        match src.read(&mut buf) {
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            r => break r,
                        }
                    };
                    let last = !matches!(got, Ok(n) if n > 0);
                    if full_tx.send(got.map(|n| (buf, n))).is_err() || last {
                        return;
                    }
                }
            })?;
        Ok(StreamReader {
            full,
            empty,
            chunk: Vec::new(),
            len: 0,
            pos: 0,
            eof: false,
        })
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for StreamReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.len && !self.eof {
            match self.full.recv_timeout(POLL) {
                Ok(Ok((chunk, n))) => {
                    let used = std::mem::replace(&mut self.chunk, chunk);
                    if used.capacity() > 0 {
                        // fails only when the reader thread has finished
                        let _ = self.empty.try_send(used);
                    }
                    (self.len, self.pos, self.eof) = (n.min(self.chunk.len()), 0, n == 0);
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => return Err(ErrorKind::WouldBlock.into()),
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        Ok(&self.chunk[self.pos.min(self.len)..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// What a [`VideoSource`] reads: a regular file, or a stream.
enum Input {
    File(BufReader<File>),
    Stream(StreamReader),
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::File(_) => "Input::File",
            Input::Stream(_) => "Input::Stream",
        })
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::File(r) => r.read(buf),
            Input::Stream(r) => r.read(buf),
        }
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Input::File(r) => r.fill_buf(),
            Input::Stream(r) => r.fill_buf(),
        }
    }
    fn consume(&mut self, n: usize) {
        match self {
            Input::File(r) => r.consume(n),
            Input::Stream(r) => r.consume(n),
        }
    }
}

impl Seek for Input {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Input::File(r) => r.seek(pos),
            Input::Stream(_) => Err(io::Error::new(
                ErrorKind::Unsupported,
                "a stream cannot be sought",
            )),
        }
    }
}

/// A `.y4m` file, standard input (`-`) or a FIFO as a frame source,
/// paced as [`Pace`] says; a regular file may loop.
#[derive(Debug)]
pub struct VideoSource {
    path: PathBuf,
    opts: VideoOptions,
    reader: Option<Y4mReader<Input>>,
    /// Standard input, a FIFO or a device: never sought, never reopened.
    stream: bool,
    /// A stream has been opened: it cannot be opened again.
    stream_opened: bool,
    /// Time between frames when paced.
    period: Option<Duration>,
    /// When frame `ticks` 0 of the schedule was due.
    epoch: Option<Instant>,
    /// Frames delivered since `epoch`.
    ticks: u64,
    /// The reader holds a frame not yet delivered (waiting for its time).
    pending: bool,
    next_index: u64,
}

impl VideoSource {
    /// A source over `path` with default pacing; the file is opened by
    /// [`FrameSource::open`].
    pub fn new(path: PathBuf, looping: bool) -> VideoSource {
        VideoSource::with_options(
            path,
            VideoOptions {
                looping,
                ..VideoOptions::default()
            },
        )
    }

    /// A source over `path` (`-` for standard input) with `opts`.
    pub fn with_options(path: PathBuf, opts: VideoOptions) -> VideoSource {
        VideoSource {
            path,
            opts,
            reader: None,
            stream: false,
            stream_opened: false,
            period: None,
            epoch: None,
            ticks: 0,
            pending: false,
            next_index: 0,
        }
    }

    /// The stream header, once opened.
    pub fn header(&self) -> Option<&Y4mHeader> {
        self.reader.as_ref().and_then(|r| r.header())
    }

    /// The file (`-` for standard input).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the source is a stream (standard input, a FIFO, a device)
    /// rather than a regular file; known once opened.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The time between two delivered frames, when paced; known once
    /// opened.
    pub fn frame_period(&self) -> Option<Duration> {
        self.period
    }

    /// The path for messages.
    fn name(&self) -> String {
        if is_stdin(&self.path) {
            "standard input".into()
        } else {
            self.path.display().to_string()
        }
    }

    fn lost(&self, what: &str, e: io::Error) -> SourceError {
        SourceError::Disconnected(format!("{what} {}: {e}", self.name()))
    }

    /// Opens the input and reads its header.
    fn open_input(&mut self) -> Result<Y4mReader<Input>, SourceError> {
        let stdin = is_stdin(&self.path);
        if !stdin {
            let meta = std::fs::metadata(&self.path).map_err(|e| self.lost("cannot open", e))?;
            if meta.is_dir() {
                return Err(SourceError::Disconnected(format!(
                    "cannot open {}: it is a folder; expected a .y4m video (use images:DIR for \
                     a folder of images)",
                    self.name()
                )));
            }
            self.stream = !meta.is_file();
        } else {
            self.stream = true;
        }
        if self.stream && self.opts.looping {
            return Err(SourceError::Disconnected(format!(
                "{} is a stream (a pipe, FIFO or device), which cannot be read twice: `loop` \
                 needs a regular file; remove `,loop`",
                self.name()
            )));
        }
        let mut reader = if self.stream {
            self.stream_opened = true;
            let path = self.path.clone();
            let input = if stdin {
                StreamReader::spawn("stdin", || Ok(io::stdin()))
            } else {
                StreamReader::spawn(&self.name(), move || File::open(path))
            };
            Y4mReader::new(Input::Stream(
                input.map_err(|e| self.lost("cannot start reading", e))?,
            ))
        } else {
            let file = File::open(&self.path).map_err(|e| self.lost("cannot open", e))?;
            Y4mReader::new(Input::File(BufReader::new(file)))
        };
        let deadline = Instant::now() + HEADER_WAIT;
        let header = loop {
            match reader.read_header() {
                Ok(h) => break h,
                Err(Y4mError::Pending) if Instant::now() < deadline => {}
                Err(Y4mError::Pending) => {
                    return Err(SourceError::Disconnected(format!(
                        "no YUV4MPEG2 header from {} within {} s: is the producer running and \
                         writing y4m (ffmpeg … -f yuv4mpegpipe -)?",
                        self.name(),
                        HEADER_WAIT.as_secs()
                    )));
                }
                Err(Y4mError::End) if self.stream => {
                    return Err(SourceError::Disconnected(format!(
                        "{} ended before a YUV4MPEG2 header: expected a y4m stream \
                         (ffmpeg … -f yuv4mpegpipe -)",
                        self.name()
                    )));
                }
                Err(Y4mError::End) => {
                    return Err(SourceError::Disconnected(format!(
                        "{} is empty: expected a YUV4MPEG2 video",
                        self.name()
                    )));
                }
                Err(Y4mError::Io(e)) => return Err(self.lost("cannot read", e)),
                Err(e) => {
                    return Err(SourceError::Disconnected(format!("{}: {e}", self.name())));
                }
            }
        };
        self.period = match (self.opts.pace, self.opts.fps) {
            (Pace::Off, _) => None,
            (_, Some(fps)) => Some(Duration::from_secs_f64(1.0 / fps)),
            (Pace::On, None) => Some(header.frame_period().ok_or_else(|| {
                SourceError::Disconnected(format!(
                    "{}: pace=on needs a frame rate, but the header has none (no F tag such as \
                     F30:1); add fps=N to the source, e.g. video:{},fps=30",
                    self.name(),
                    self.path.display()
                ))
            })?),
            (Pace::Auto, None) if self.stream => None,
            (Pace::Auto, None) => header.frame_period(),
        };
        Ok(reader)
    }

    /// Reads the next frame into the reader's buffer, going round when
    /// looping.
    fn fill(&mut self) -> Result<(), SourceError> {
        for _ in 0..2 {
            let Some(reader) = self.reader.as_mut() else {
                return Err(if self.stream_opened {
                    SourceError::Ended
                } else {
                    SourceError::Disconnected(format!("{} is not open", self.name()))
                });
            };
            let e = match reader.fill_frame() {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            return Err(match e {
                Y4mError::Pending => SourceError::Timeout,
                Y4mError::End if self.opts.looping && reader.frames() > 0 => {
                    if let Err(e) = reader.rewind() {
                        self.reader = None;
                        return Err(SourceError::Disconnected(format!(
                            "cannot rewind {}: {e}",
                            self.name()
                        )));
                    }
                    continue;
                }
                Y4mError::End => SourceError::Ended,
                // A producer stopped mid-frame: the stream has ended.
                Y4mError::Truncated(_) if self.stream => SourceError::Ended,
                Y4mError::Truncated(m) | Y4mError::Corrupt(m) => {
                    SourceError::BadFrame(format!("{}: {m}", self.name()))
                }
                Y4mError::Io(e) => {
                    self.reader = None;
                    self.lost("cannot read", e)
                }
            });
        }
        Err(SourceError::Ended)
    }

    /// Waits until the pending frame is due. `Err(Timeout)` when it is
    /// due in more than [`MAX_SLEEP`] (after sleeping [`POLL`]), so the
    /// capture thread can look at its stop flag.
    fn wait_until_due(&mut self, period: Duration) -> Result<(), SourceError> {
        let now = Instant::now();
        let epoch = *self.epoch.get_or_insert(now);
        let offset = u64::try_from(period.as_nanos().saturating_mul(self.ticks as u128)).ok();
        match offset.and_then(|n| epoch.checked_add(Duration::from_nanos(n))) {
            Some(due) if due > now => {
                let wait = due - now;
                if wait > MAX_SLEEP {
                    std::thread::sleep(POLL);
                    return Err(SourceError::Timeout);
                }
                std::thread::sleep(wait);
            }
            Some(due) if now - due <= MAX_LATE => {}
            // Far behind, or past any representable time: start again.
            _ => (self.epoch, self.ticks) = (Some(now), 0),
        }
        Ok(())
    }
}

impl FrameSource for VideoSource {
    fn describe(&self) -> String {
        let Some(h) = self.header() else {
            return format!("video:{}", self.path.display());
        };
        let pace = match self.period {
            Some(p) => format!("played at {:.2} fps", 1.0 / p.as_secs_f64()),
            None if self.opts.pace == Pace::Off => "every frame (pace=off)".into(),
            None if self.stream => "as frames arrive".into(),
            None => "as fast as it decodes".into(),
        };
        format!(
            "video:{} ({}x{} {:?}{}, {}{}{})",
            self.path.display(),
            h.width,
            h.height,
            h.chroma,
            h.fps
                .map(|(n, d)| format!(" {:.2} fps", n as f64 / d.max(1) as f64))
                .unwrap_or_default(),
            if self.stream { "stream, " } else { "" },
            pace,
            if self.opts.looping { ", looping" } else { "" }
        )
    }

    /// Opens the file or stream and reads its header. A source that is
    /// open and healthy keeps its place: a file is not restarted by the
    /// watchdog's reopen after a long frame period, and a stream, which
    /// cannot be opened twice, is never reopened (once lost, it has
    /// [`SourceError::Ended`]).
    fn open(&mut self) -> Result<(), SourceError> {
        if self.reader.is_some() || self.stream_opened {
            return Ok(());
        }
        let reader = self.open_input()?;
        self.reader = Some(reader);
        (self.epoch, self.ticks, self.pending) = (None, 0, false);
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        if !self.pending {
            match self.fill() {
                Ok(()) => self.pending = true,
                Err(e @ SourceError::BadFrame(_)) => {
                    self.next_index += 1;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(period) = self.period {
            self.wait_until_due(period)?;
        }
        self.pending = false;
        self.ticks += 1;
        let index = self.next_index;
        self.next_index += 1;
        let converted = match &self.reader {
            Some(r) => r.convert_last(frame),
            None => Err(Y4mError::Corrupt("the video is not open".into())),
        };
        converted.map_err(|e| SourceError::BadFrame(format!("{}: {e}", self.name())))?;
        Ok(FrameInfo::unlabelled(index))
    }

    fn lossless(&self) -> bool {
        self.opts.pace == Pace::Off
    }

    fn frame_period(&self) -> Option<Duration> {
        VideoSource::frame_period(self)
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
            h.convert(&yuv, &mut f).unwrap();
            for (got, want) in f.data.iter().zip(rgb) {
                assert!((*got as i32 - want).abs() <= 1, "{yuv:?}: {:?}", f.data);
            }
        }
    }

    #[test]
    fn video_specs_parse_and_print() {
        for (spec, path, looping, pace, fps) in [
            ("clip.y4m", "clip.y4m", false, Pace::Auto, None),
            ("clip.y4m,loop", "clip.y4m", true, Pace::Auto, None),
            ("a,b.y4m,loop,pace=off", "a,b.y4m", true, Pace::Off, None),
            ("-", "-", false, Pace::Auto, None),
            ("-,pace=on,fps=29.97", "-", false, Pace::On, Some(29.97)),
            ("x.y4m,fps=30", "x.y4m", false, Pace::Auto, Some(30.0)),
            ("my clip,v2.y4m", "my clip,v2.y4m", false, Pace::Auto, None),
        ] {
            let (p, o) = parse_spec(spec).unwrap();
            assert_eq!(
                (p.to_str().unwrap(), o.looping, o.pace, o.fps),
                (path, looping, pace, fps),
                "{spec}"
            );
            assert_eq!(format!("{}{o}", p.display()), spec);
        }
        // Any order in, canonical order out.
        let (p, o) = parse_spec("c.y4m,fps=10,pace=on,loop").unwrap();
        assert_eq!(format!("{}{o}", p.display()), "c.y4m,loop,pace=on,fps=10");
        for (bad, needle) in [
            ("", "needs a path"),
            (",loop", "needs a path"),
            ("-,loop", "standard input"),
            ("c.y4m,pace=maybe", "expected pace=on or pace=off"),
            ("c.y4m,fps=0", "fps=0"),
            ("c.y4m,fps=fast", "expected a frame rate"),
            ("c.y4m,fps=10,pace=off", "give one of them"),
            ("c.y4m,speed=2", "unknown video option \"speed\""),
            ("c.y4m,loop,loop", "given twice"),
            ("c.y4m,loop=on", "takes no value"),
        ] {
            let e = parse_spec(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    /// A reader that has no data every other call, then hands out bytes in
    /// pieces of at most 3, like a slow pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_reader_resumes_after_pending_and_ends_cleanly() {
        let mut data = b"YUV4MPEG2 W4 H2 F10:1 Cmono\n".to_vec();
        for v in 0..3u8 {
            data.extend_from_slice(b"FRAME\n");
            data.extend_from_slice(&[v; 8]);
        }
        let mut reader = Y4mReader::new(BufReader::with_capacity(
            4,
            Trickle {
                data: &data,
                calls: 0,
            },
        ));
        let (mut f, mut got, mut pending) = (Frame::empty(), vec![], 0);
        loop {
            match reader.next_frame(&mut f) {
                Ok(()) => got.push(f.data.clone()),
                Err(Y4mError::Pending) => pending += 1,
                Err(Y4mError::End) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(pending < 1000);
        }
        assert_eq!(got, [vec![0; 8], vec![1; 8], vec![2; 8]]);
        assert!(pending > 5, "{pending}");
        assert_eq!(
            reader.header().and_then(|h| h.frame_period()),
            Some(Duration::from_millis(100))
        );
        // A frame cut short, or a cut FRAME line, is Truncated; then End.
        for cut in [data.len() - 3, data.len() - 10] {
            let mut reader = Y4mReader::new(&data[..cut]);
            for _ in 0..2 {
                reader.next_frame(&mut f).unwrap();
            }
            match reader.next_frame(&mut f) {
                Err(Y4mError::Truncated(m)) => assert!(m.contains("frame 2 is truncated"), "{m}"),
                other => panic!("{other:?}"),
            }
            assert!(matches!(reader.next_frame(&mut f), Err(Y4mError::End)));
        }
        // Rewinding over a seekable reader starts at the first frame.
        let mut reader = Y4mReader::new(io::Cursor::new(&data));
        for _ in 0..2 {
            reader.next_frame(&mut f).unwrap();
        }
        reader.rewind().unwrap();
        assert_eq!(reader.read_frame().unwrap(), [0; 8]);
        assert_eq!(reader.frames(), 1);
        // Every prefix of the data is read without a panic.
        for cut in 0..data.len() {
            let mut reader = Y4mReader::new(&data[..cut]);
            while reader.next_frame(&mut f).is_ok() {}
        }
    }
}
