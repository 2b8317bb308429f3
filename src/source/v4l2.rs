//! Video capture from V4L2 devices through the kernel's ioctl interface.
//!
//! This is the part of the `camera` feature that talks to `/dev/videoN`:
//! what a device offers (formats, sizes, frame rates), setting a mode, and
//! streaming with memory-mapped buffers. The structures below are the
//! kernel's UAPI (`linux/videodev2.h`), written out by hand with their
//! sizes checked at compile time for 64- and 32-bit targets, so building
//! needs no C headers and no libclang. Every call goes through libc's
//! `open`/`ioctl`/`mmap`/`poll`, so libcamera's V4L2 compatibility layer
//! (`libcamerify`, which wraps those calls) works as with any V4L2 program.
//!
//! The device is opened non-blocking and a frame is waited for with
//! `poll` and a timeout: no call here blocks for longer than the timeout
//! the caller gives, whatever the driver does (a stalled camera, an
//! unplugged one, a driver being unloaded).
//!
//! Only single-planar capture (`V4L2_BUF_TYPE_VIDEO_CAPTURE`) is
//! supported; it is what USB (UVC) cameras, `libcamerify` and most
//! drivers offer.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::raw::{c_int, c_ulong, c_void};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest frame buffer accepted from a driver (bytes). A buffer length
/// above this is refused before it is mapped.
pub const MAX_BUFFER_BYTES: u32 = 64 << 20;
/// Buffers asked for when streaming.
const BUFFER_COUNT: u32 = 4;
/// Most buffers accepted from a driver.
const MAX_BUFFERS: u32 = 32;
/// Most formats, sizes and rates read from one enumeration (a driver that
/// lists more is cut off there).
const MAX_ENUM: u32 = 256;

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const CAP_TIMEPERFRAME: u32 = 0x1000;
const FMT_FLAG_COMPRESSED: u32 = 0x0001;
const BUF_FLAG_ERROR: u32 = 0x0040;
const FRMSIZE_TYPE_DISCRETE: u32 = 1;
const FRMIVAL_TYPE_DISCRETE: u32 = 1;
const FIELD_NONE: u32 = 1;
const QUANTIZATION_FULL_RANGE: u32 = 1;

/// A V4L2 pixel format code (four ASCII characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fourcc(pub u32);

impl Fourcc {
    /// The code of four characters, e.g. `Fourcc::new(b"YUYV")`.
    pub const fn new(c: &[u8; 4]) -> Fourcc {
        Fourcc(c[0] as u32 | (c[1] as u32) << 8 | (c[2] as u32) << 16 | (c[3] as u32) << 24)
    }
    /// Packed YUV 4:2:2.
    pub const YUYV: Fourcc = Fourcc::new(b"YUYV");
    /// Y plane, then interleaved U/V at half size.
    pub const NV12: Fourcc = Fourcc::new(b"NV12");
    /// 8-bit gray.
    pub const GREY: Fourcc = Fourcc::new(b"GREY");
    /// Packed 8-bit RGB.
    pub const RGB24: Fourcc = Fourcc::new(b"RGB3");
    /// Packed 8-bit BGR.
    pub const BGR24: Fourcc = Fourcc::new(b"BGR3");
    /// Motion JPEG.
    pub const MJPEG: Fourcc = Fourcc::new(b"MJPG");
    /// JPEG frames (some drivers' name for MJPEG).
    pub const JPEG: Fourcc = Fourcc::new(b"JPEG");
}

impl fmt::Display for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.to_le_bytes() {
            let c = if b.is_ascii_graphic() { b as char } else { '?' };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fourcc({self})")
    }
}

/// A fraction as V4L2 gives frame intervals (seconds per frame).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fract {
    /// Numerator.
    pub numerator: u32,
    /// Denominator.
    pub denominator: u32,
}

impl Fract {
    /// Frames per second of this frame interval (0 when undefined).
    pub fn fps(self) -> f64 {
        if self.numerator == 0 {
            0.0
        } else {
            self.denominator as f64 / self.numerator as f64
        }
    }
}

/// The frame rates a device offers at one size.
#[derive(Debug, Clone, PartialEq)]
pub enum Rates {
    /// A list of frame rates (frames per second), fastest first.
    Discrete(Vec<f64>),
    /// Any rate between `min` and `max` frames per second.
    Range {
        /// Slowest.
        min: f64,
        /// Fastest.
        max: f64,
    },
    /// The driver does not say.
    Unknown,
}

impl Rates {
    /// Whether `fps` is offered (within a tenth of a frame per second).
    pub fn offers(&self, fps: f64) -> bool {
        match self {
            Rates::Discrete(list) => list.iter().any(|r| (r - fps).abs() < 0.1),
            Rates::Range { min, max } => fps >= min - 0.1 && fps <= max + 0.1,
            Rates::Unknown => true,
        }
    }
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rates::Discrete(list) => {
                let rates: Vec<String> = list.iter().map(|r| format_fps(*r)).collect();
                write!(f, "{} fps", rates.join("/"))
            }
            Rates::Range { min, max } => {
                write!(f, "{}–{} fps", format_fps(*min), format_fps(*max))
            }
            Rates::Unknown => f.write_str("rates not listed"),
        }
    }
}

/// A frame rate as people write it: `30`, `7.5`.
pub fn format_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.01 {
        format!("{}", fps.round() as i64)
    } else {
        format!("{fps:.1}")
    }
}

/// The sizes a device offers in one format.
#[derive(Debug, Clone, PartialEq)]
pub enum Sizes {
    /// A list of sizes, each with its rates.
    Discrete(Vec<SizeRates>),
    /// Any size on a grid (`continuous` is a grid with step 1).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

/// One offered size and its frame rates.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeRates {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rates at this size.
    pub rates: Rates,
}

/// One pixel format a device offers, with its sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatInfo {
    /// The pixel format.
    pub fourcc: Fourcc,
    /// The driver's name for it.
    pub description: String,
    /// Whether it is compressed (MJPEG).
    pub compressed: bool,
    /// Its sizes.
    pub sizes: Sizes,
}

impl Sizes {
    /// Whether `width`×`height` is offered.
    pub fn offers(&self, width: u32, height: u32) -> bool {
        match self {
            Sizes::Discrete(list) => list.iter().any(|s| s.width == width && s.height == height),
            Sizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                let on = |v: u32, lo: u32, hi: u32, step: u32| {
                    v >= lo && v <= hi && (v - lo).is_multiple_of(step.max(1))
                };
                on(width, *min_width, *max_width, *step_width)
                    && on(height, *min_height, *max_height, *step_height)
            }
        }
    }

    /// The offered size closest to `width`×`height` (by the sum of the
    /// differences of the sides), or `None` for an empty list.
    pub fn closest(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        match self {
            Sizes::Discrete(list) => list
                .iter()
                .min_by_key(|s| s.width.abs_diff(width) as u64 + s.height.abs_diff(height) as u64)
                .map(|s| (s.width, s.height)),
            Sizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                let snap = |v: u32, lo: u32, hi: u32, step: u32| {
                    let step = step.max(1);
                    let v = v.clamp(lo, hi.max(lo));
                    lo + (v - lo) / step * step
                };
                Some((
                    snap(width, *min_width, *max_width, *step_width),
                    snap(height, *min_height, *max_height, *step_height),
                ))
            }
        }
    }

    /// The rates offered at `width`×`height`.
    pub fn rates_at(&self, width: u32, height: u32) -> Rates {
        match self {
            Sizes::Discrete(list) => list
                .iter()
                .find(|s| s.width == width && s.height == height)
                .map_or(Rates::Unknown, |s| s.rates.clone()),
            Sizes::Stepwise { .. } => Rates::Unknown,
        }
    }
}

impl fmt::Display for Sizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sizes::Discrete(list) => {
                for (i, s) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}x{} ({})", s.width, s.height, s.rates)?;
                }
                Ok(())
            }
            Sizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => write!(
                f,
                "{min_width}x{min_height} to {max_width}x{max_height} in steps of \
                 {step_width}x{step_height}"
            ),
        }
    }
}

// ---- the kernel's structures (linux/videodev2.h) ----

#[repr(C)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct FmtDesc {
    index: u32,
    type_: u32,
    flags: u32,
    description: [u8; 32],
    pixelformat: u32,
    mbus_code: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// The format union: 200 bytes, aligned like a pointer (it holds
/// `struct v4l2_window`, which has pointers).
#[repr(C)]
union FormatUnion {
    pix: PixFormat,
    raw: [u8; 200],
    _align: [usize; 0],
}

#[repr(C)]
struct Format {
    type_: u32,
    fmt: FormatUnion,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CaptureParm {
    capability: u32,
    capturemode: u32,
    timeperframe: Fract,
    extendedmode: u32,
    readbuffers: u32,
    reserved: [u32; 4],
}

#[repr(C)]
union StreamParmUnion {
    capture: CaptureParm,
    raw: [u8; 200],
}

#[repr(C)]
struct StreamParm {
    type_: u32,
    parm: StreamParmUnion,
}

#[repr(C)]
struct RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
union BufferM {
    offset: u32,
    userptr: c_ulong,
    planes: *mut c_void,
    fd: i32,
}

#[repr(C)]
struct Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    m: BufferM,
    length: u32,
    reserved2: u32,
    request_fd: i32,
}

#[repr(C)]
struct FrmSizeEnum {
    index: u32,
    pixel_format: u32,
    type_: u32,
    /// discrete: width, height; stepwise: min/max/step width, min/max/step height.
    u: [u32; 6],
    reserved: [u32; 2],
}

#[repr(C)]
struct FrmIvalEnum {
    index: u32,
    pixel_format: u32,
    width: u32,
    height: u32,
    type_: u32,
    /// discrete: one fraction; stepwise: min, max, step fractions.
    u: [Fract; 3],
    reserved: [u32; 2],
}

const PTR64: bool = cfg!(target_pointer_width = "64");
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Capability>() == 104);
    assert!(size_of::<FmtDesc>() == 64);
    assert!(size_of::<PixFormat>() == 48);
    assert!(size_of::<Format>() == if PTR64 { 208 } else { 204 });
    assert!(size_of::<StreamParm>() == 204);
    assert!(size_of::<RequestBuffers>() == 20);
    assert!(size_of::<FrmSizeEnum>() == 44);
    assert!(size_of::<FrmIvalEnum>() == 52);
};
// 88 bytes on 64-bit targets; 68 on 32-bit ones with a 32-bit `time_t`
// (Debian's armhf, Raspberry Pi OS 32-bit).
const _: () = assert!(std::mem::size_of::<Buffer>() == if PTR64 { 88 } else { 68 });

/// `_IOC(dir, 'V', nr, size)` (the encoding of x86, ARM and most others).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
}
const READ: u32 = 2;
const WRITE: u32 = 1;
const VIDIOC_QUERYCAP: u32 = ioc(READ, 0, std::mem::size_of::<Capability>());
const VIDIOC_ENUM_FMT: u32 = ioc(READ | WRITE, 2, std::mem::size_of::<FmtDesc>());
const VIDIOC_G_FMT: u32 = ioc(READ | WRITE, 4, std::mem::size_of::<Format>());
const VIDIOC_S_FMT: u32 = ioc(READ | WRITE, 5, std::mem::size_of::<Format>());
const VIDIOC_REQBUFS: u32 = ioc(READ | WRITE, 8, std::mem::size_of::<RequestBuffers>());
const VIDIOC_QUERYBUF: u32 = ioc(READ | WRITE, 9, std::mem::size_of::<Buffer>());
const VIDIOC_QBUF: u32 = ioc(READ | WRITE, 15, std::mem::size_of::<Buffer>());
const VIDIOC_DQBUF: u32 = ioc(READ | WRITE, 17, std::mem::size_of::<Buffer>());
const VIDIOC_STREAMON: u32 = ioc(WRITE, 18, std::mem::size_of::<c_int>());
const VIDIOC_STREAMOFF: u32 = ioc(WRITE, 19, std::mem::size_of::<c_int>());
const VIDIOC_G_PARM: u32 = ioc(READ | WRITE, 21, std::mem::size_of::<StreamParm>());
const VIDIOC_S_PARM: u32 = ioc(READ | WRITE, 22, std::mem::size_of::<StreamParm>());
const VIDIOC_ENUM_FRAMESIZES: u32 = ioc(READ | WRITE, 74, std::mem::size_of::<FrmSizeEnum>());
const VIDIOC_ENUM_FRAMEINTERVALS: u32 = ioc(READ | WRITE, 75, std::mem::size_of::<FrmIvalEnum>());

/// A capture buffer descriptor for memory-mapped buffer `index`.
fn mmap_buffer(index: u32) -> Buffer {
    let mut b: Buffer = zeroed();
    b.index = index;
    b.type_ = BUF_TYPE_VIDEO_CAPTURE;
    b.memory = MEMORY_MMAP;
    b
}

/// A zeroed kernel structure.
fn zeroed<T>() -> T {
    // SAFETY: only used for the plain-data `repr(C)` structures above, for
    // which all-zero bytes are a valid value (integers, arrays, unions of
    // those, and a null pointer).
    unsafe { std::mem::zeroed() }
}

/// A NUL-terminated byte array from the kernel as text.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// An error of a V4L2 call: what was being done and the OS error.
#[derive(Debug)]
pub struct V4l2Error {
    /// What was being done, e.g. "VIDIOC_S_FMT".
    pub what: String,
    /// The OS error.
    pub source: io::Error,
}

impl fmt::Display for V4l2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for V4l2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl V4l2Error {
    fn last(what: impl Into<String>) -> V4l2Error {
        V4l2Error {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// An answer from the driver that makes no sense (`what` gave it).
    fn odd(what: &str, why: String) -> V4l2Error {
        V4l2Error {
            what: what.into(),
            source: io::Error::other(why),
        }
    }

    /// Whether the error means the device is gone (unplugged, driver
    /// unloaded, or a fatal streaming error) rather than a passing state.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self.source.raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EINTR)
        )
    }
}

/// An open V4L2 device node.
#[derive(Debug)]
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was returned by `open` and is closed once.
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    /// `ioctl(fd, request, arg)`, retried when a signal interrupts it.
    fn ioctl<T>(&self, request: u32, arg: &mut T, what: &str) -> Result<(), V4l2Error> {
        loop {
            // SAFETY: `arg` points to a live structure of the size that
            // `request` encodes (the constants above are built from the
            // same types), which the kernel reads and writes in place.
            let r = unsafe { libc::ioctl(self.0, request as _, arg as *mut T as *mut c_void) };
            if r != -1 {
                return Ok(());
            }
            let e = V4l2Error::last(what);
            if e.source.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Like [`Fd::ioctl`], but `Ok(false)` when the driver answers EINVAL
    /// (the end of an enumeration).
    fn enumerate<T>(&self, request: u32, arg: &mut T, what: &str) -> Result<bool, V4l2Error> {
        match self.ioctl(request, arg, what) {
            Ok(()) => Ok(true),
            Err(e) if e.source.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What a device is, from `VIDIOC_QUERYCAP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// The driver's name, e.g. `uvcvideo`.
    pub driver: String,
    /// The device's name, e.g. `HD Webcam C525`.
    pub card: String,
    /// Where it is attached, e.g. `usb-0000:01:00.0-1.3`.
    pub bus: String,
    /// Whether it can capture single-planar video by streaming.
    pub can_capture: bool,
    /// Whether it captures only through the multi-planar API.
    pub multiplanar_only: bool,
}

fn open_node(path: &Path) -> Result<Fd, V4l2Error> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| V4l2Error {
        what: format!("open {}", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"),
    })?;
    // SAFETY: `c` is a NUL-terminated path; the flags are plain integers.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(V4l2Error::last(format!("open {}", path.display())));
    }
    Ok(Fd(fd))
}

fn query(fd: &Fd, path: &Path) -> Result<DeviceInfo, V4l2Error> {
    let mut cap: Capability = zeroed();
    fd.ioctl(VIDIOC_QUERYCAP, &mut cap, "VIDIOC_QUERYCAP")?;
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    let can_capture = caps & CAP_VIDEO_CAPTURE != 0 && caps & CAP_STREAMING != 0;
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        driver: text(&cap.driver),
        card: text(&cap.card),
        bus: text(&cap.bus_info),
        can_capture,
        multiplanar_only: !can_capture && caps & CAP_VIDEO_CAPTURE_MPLANE != 0,
    })
}

/// The numbers N of the `/dev/videoN` nodes present, sorted.
pub fn video_nodes() -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name();
                    name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// The path of camera `index`.
pub fn node_path(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/video{index}"))
}

/// Describes the device at `path` and what it offers, without streaming.
pub fn describe(path: &Path) -> Result<(DeviceInfo, Vec<FormatInfo>), V4l2Error> {
    let fd = open_node(path)?;
    let info = query(&fd, path)?;
    let formats = if info.can_capture {
        formats(&fd)?
    } else {
        vec![]
    };
    Ok((info, formats))
}

fn formats(fd: &Fd) -> Result<Vec<FormatInfo>, V4l2Error> {
    let mut out = vec![];
    for index in 0..MAX_ENUM {
        let mut d: FmtDesc = zeroed();
        d.index = index;
        d.type_ = BUF_TYPE_VIDEO_CAPTURE;
        if !fd.enumerate(VIDIOC_ENUM_FMT, &mut d, "VIDIOC_ENUM_FMT")? {
            break;
        }
        let fourcc = Fourcc(d.pixelformat);
        out.push(FormatInfo {
            fourcc,
            description: text(&d.description),
            compressed: d.flags & FMT_FLAG_COMPRESSED != 0,
            sizes: sizes(fd, fourcc)?,
        });
    }
    Ok(out)
}

fn sizes(fd: &Fd, fourcc: Fourcc) -> Result<Sizes, V4l2Error> {
    let mut list = vec![];
    for index in 0..MAX_ENUM {
        let mut s: FrmSizeEnum = zeroed();
        s.index = index;
        s.pixel_format = fourcc.0;
        if !fd.enumerate(VIDIOC_ENUM_FRAMESIZES, &mut s, "VIDIOC_ENUM_FRAMESIZES")? {
            break;
        }
        if s.type_ != FRMSIZE_TYPE_DISCRETE {
            let u = s.u;
            return Ok(Sizes::Stepwise {
                min_width: u[0],
                max_width: u[1],
                step_width: u[2].max(1),
                min_height: u[3],
                max_height: u[4],
                step_height: u[5].max(1),
            });
        }
        let (width, height) = (s.u[0], s.u[1]);
        list.push(SizeRates {
            width,
            height,
            rates: rates(fd, fourcc, width, height)?,
        });
    }
    Ok(Sizes::Discrete(list))
}

fn rates(fd: &Fd, fourcc: Fourcc, width: u32, height: u32) -> Result<Rates, V4l2Error> {
    let mut list: Vec<f64> = vec![];
    for index in 0..MAX_ENUM {
        let mut iv: FrmIvalEnum = zeroed();
        iv.index = index;
        iv.pixel_format = fourcc.0;
        iv.width = width;
        iv.height = height;
        if !fd.enumerate(
            VIDIOC_ENUM_FRAMEINTERVALS,
            &mut iv,
            "VIDIOC_ENUM_FRAMEINTERVALS",
        )? {
            break;
        }
        if iv.type_ != FRMIVAL_TYPE_DISCRETE {
            // min interval = fastest rate
            let (fast, slow) = (iv.u[0].fps(), iv.u[1].fps());
            return Ok(Rates::Range {
                min: slow.min(fast),
                max: fast.max(slow),
            });
        }
        let fps = iv.u[0].fps();
        if fps > 0.0 {
            list.push(fps);
        }
    }
    if list.is_empty() {
        return Ok(Rates::Unknown);
    }
    list.sort_by(|a, b| b.total_cmp(a));
    list.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    Ok(Rates::Discrete(list))
}

/// The mode a stream runs in, as the driver set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Pixel format.
    pub fourcc: Fourcc,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next (of the first plane).
    pub bytes_per_line: u32,
    /// Bytes of a whole frame, as the driver says.
    pub size_image: u32,
    /// The frame interval, when the driver reports one.
    pub interval: Option<Fract>,
    /// Whether YUV samples use the full 0–255 range (the driver said
    /// so); otherwise they are limited ("TV") range, V4L2's default.
    pub full_range: bool,
}

/// One mapped buffer.
struct Mapped {
    ptr: *mut c_void,
    len: usize,
}

/// A device streaming frames into memory-mapped buffers.
pub struct Stream {
    fd: Fd,
    info: DeviceInfo,
    mode: Mode,
    buffers: Vec<Mapped>,
    streaming: bool,
}

// SAFETY: the mapped buffers belong to this stream alone (the pointers are
// only read through `&mut self` while the kernel does not own the buffer),
// so the stream may move to the capture thread.
unsafe impl Send for Stream {}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("device", &self.info.path)
            .field("mode", &self.mode)
            .field("buffers", &self.buffers.len())
            .finish()
    }
}

/// The outcome of waiting for a frame.
#[derive(Debug)]
pub enum Wait<R> {
    /// A frame arrived; the closure's result.
    Frame(R),
    /// The driver marked the frame as damaged; it was given back.
    Damaged,
    /// No frame within the timeout.
    Timeout,
}

impl Stream {
    /// Opens `path`, sets `fourcc` at `width`×`height` and, when given,
    /// the frame rate `fps`, maps the buffers and starts streaming.
    pub fn start(
        path: &Path,
        fourcc: Fourcc,
        width: u32,
        height: u32,
        fps: Option<f64>,
    ) -> Result<Stream, V4l2Error> {
        let fd = open_node(path)?;
        let info = query(&fd, path)?;
        let mut format: Format = zeroed();
        format.type_ = BUF_TYPE_VIDEO_CAPTURE;
        fd.ioctl(VIDIOC_G_FMT, &mut format, "VIDIOC_G_FMT")?;
        // SAFETY: for a capture buffer type the union holds `pix`.
        let mut pix = unsafe { format.fmt.pix };
        pix.width = width;
        pix.height = height;
        pix.pixelformat = fourcc.0;
        pix.field = FIELD_NONE;
        pix.bytesperline = 0;
        pix.sizeimage = 0;
        format.fmt.pix = pix;
        fd.ioctl(VIDIOC_S_FMT, &mut format, "VIDIOC_S_FMT")?;
        // SAFETY: as above; the driver wrote back what it set.
        let pix = unsafe { format.fmt.pix };
        let interval = set_rate(&fd, fps)?;
        let mode = Mode {
            fourcc: Fourcc(pix.pixelformat),
            width: pix.width,
            height: pix.height,
            bytes_per_line: pix.bytesperline,
            size_image: pix.sizeimage,
            interval,
            full_range: pix.quantization == QUANTIZATION_FULL_RANGE,
        };
        let mut stream = Stream {
            fd,
            info,
            mode,
            buffers: vec![],
            streaming: false,
        };
        stream.map_buffers()?;
        stream.stream_on()?;
        Ok(stream)
    }

    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The mode the driver set.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn map_buffers(&mut self) -> Result<(), V4l2Error> {
        let mut req: RequestBuffers = zeroed();
        req.count = BUFFER_COUNT;
        req.type_ = BUF_TYPE_VIDEO_CAPTURE;
        req.memory = MEMORY_MMAP;
        self.fd.ioctl(VIDIOC_REQBUFS, &mut req, "VIDIOC_REQBUFS")?;
        if req.count == 0 || req.count > MAX_BUFFERS {
            return Err(V4l2Error::odd(
                "VIDIOC_REQBUFS",
                format!(
                    "the driver gave {} buffers: expected 1 to {MAX_BUFFERS}",
                    req.count
                ),
            ));
        }
        for index in 0..req.count {
            let mut b = mmap_buffer(index);
            self.fd.ioctl(VIDIOC_QUERYBUF, &mut b, "VIDIOC_QUERYBUF")?;
            if b.length == 0 || b.length > MAX_BUFFER_BYTES {
                return Err(V4l2Error::odd(
                    "VIDIOC_QUERYBUF",
                    format!(
                        "the driver offers a buffer of {} bytes: expected 1 to {} MiB",
                        b.length,
                        MAX_BUFFER_BYTES >> 20
                    ),
                ));
            }
            // SAFETY: for MMAP buffers the union holds `offset`.
            let offset = unsafe { b.m.offset };
            // SAFETY: maps `length` bytes of the device at the offset the
            // driver gave for this buffer; the result is checked.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    b.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd.0,
                    offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(V4l2Error::last("mmap of a capture buffer"));
            }
            self.buffers.push(Mapped {
                ptr,
                len: b.length as usize,
            });
        }
        Ok(())
    }

    fn queue(&self, index: u32) -> Result<(), V4l2Error> {
        let mut b = mmap_buffer(index);
        self.fd.ioctl(VIDIOC_QBUF, &mut b, "VIDIOC_QBUF")
    }

    fn stream_on(&mut self) -> Result<(), V4l2Error> {
        for i in 0..self.buffers.len() as u32 {
            self.queue(i)?;
        }
        let mut t: c_int = BUF_TYPE_VIDEO_CAPTURE as c_int;
        self.fd.ioctl(VIDIOC_STREAMON, &mut t, "VIDIOC_STREAMON")?;
        self.streaming = true;
        Ok(())
    }

    /// Waits up to `timeout` for a frame and, when one arrives, lends its
    /// bytes to `use_frame`, then gives the buffer back to the driver.
    /// An error means the stream cannot go on (see [`V4l2Error::is_fatal`]).
    pub fn next<R>(
        &mut self,
        timeout: Duration,
        use_frame: impl FnOnce(&[u8]) -> R,
    ) -> Result<Wait<R>, V4l2Error> {
        let mut pfd = libc::pollfd {
            fd: self.fd.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = V4l2Error::last("poll");
            return if e.is_fatal() {
                Err(e)
            } else {
                Ok(Wait::Timeout)
            };
        }
        if r == 0 {
            return Ok(Wait::Timeout);
        }
        let mut b = mmap_buffer(0);
        if let Err(e) = self.fd.ioctl(VIDIOC_DQBUF, &mut b, "VIDIOC_DQBUF") {
            if e.is_fatal() {
                return Err(e);
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return Err(V4l2Error::odd(
                    "poll",
                    "the device reported an error".to_string(),
                ));
            }
            return Ok(Wait::Timeout);
        }
        let Some(buf) = self.buffers.get(b.index as usize) else {
            return Err(V4l2Error::odd(
                "VIDIOC_DQBUF",
                format!("the driver returned buffer {}", b.index),
            ));
        };
        let damaged = b.flags & BUF_FLAG_ERROR != 0;
        let used = (b.bytesused as usize).min(buf.len);
        let result = if damaged {
            None
        } else {
            // SAFETY: the buffer is mapped for `buf.len` bytes, `used` is at
            // most that, and the driver does not write to it until it is
            // queued again below.
            let bytes = unsafe { std::slice::from_raw_parts(buf.ptr as *const u8, used) };
            Some(use_frame(bytes))
        };
        self.queue(b.index)?;
        Ok(match result {
            Some(r) => Wait::Frame(r),
            None => Wait::Damaged,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.streaming {
            let mut t: c_int = BUF_TYPE_VIDEO_CAPTURE as c_int;
            let _ = self.fd.ioctl(VIDIOC_STREAMOFF, &mut t, "VIDIOC_STREAMOFF");
        }
        for b in &self.buffers {
            // SAFETY: each pointer was returned by mmap for `len` bytes and
            // is unmapped once; no slice of it outlives `next`.
            unsafe { libc::munmap(b.ptr, b.len) };
        }
        // the descriptor is closed by `Fd`'s drop after this
    }
}

/// Sets the frame rate when asked and the driver allows it; returns the
/// interval in force when the driver reports one.
fn set_rate(fd: &Fd, fps: Option<f64>) -> Result<Option<Fract>, V4l2Error> {
    let mut parm: StreamParm = zeroed();
    parm.type_ = BUF_TYPE_VIDEO_CAPTURE;
    if fd.ioctl(VIDIOC_G_PARM, &mut parm, "VIDIOC_G_PARM").is_err() {
        return Ok(None);
    }
    // SAFETY: for a capture buffer type the union holds `capture`.
    let mut capture = unsafe { parm.parm.capture };
    if let Some(fps) = fps
        && capture.capability & CAP_TIMEPERFRAME != 0
        && fps > 0.0
    {
        // 1000/(fps*1000): keeps rates such as 7.5 exact
        capture.timeperframe = Fract {
            numerator: 1000,
            denominator: (fps * 1000.0).round() as u32,
        };
        parm.parm.capture = capture;
        fd.ioctl(VIDIOC_S_PARM, &mut parm, "VIDIOC_S_PARM")?;
        // SAFETY: as above; the driver wrote back what it set.
        capture = unsafe { parm.parm.capture };
    }
    let t = capture.timeperframe;
    Ok((t.numerator > 0 && t.denominator > 0).then_some(t))
}

/// The name libc gives an OS error number.
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(libc::strerror(errno)) };
    s.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_codes_match_the_kernel() {
        // values from linux/videodev2.h
        assert_eq!(Fourcc::YUYV.0, 0x5659_5559);
        assert_eq!(Fourcc::MJPEG.0, 0x4750_4a4d);
        assert_eq!(Fourcc::YUYV.to_string(), "YUYV");
        assert_eq!(Fourcc(0x0000_4142).to_string(), "BA??");
    }

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // values of a 64-bit Linux build of linux/videodev2.h
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_ENUM_FRAMESIZES, 0xc02c_564a);
        assert_eq!(VIDIOC_ENUM_FRAMEINTERVALS, 0xc034_564b);
        assert_eq!(VIDIOC_G_PARM, 0xc0cc_5615);
        if PTR64 {
            assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
            assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        } else {
            assert_eq!(VIDIOC_S_FMT, 0xc0cc_5605);
        }
    }

    #[test]
    fn sizes_offer_and_snap() {
        let grid = Sizes::Stepwise {
            min_width: 16,
            max_width: 1920,
            step_width: 2,
            min_height: 16,
            max_height: 1080,
            step_height: 2,
        };
        assert!(grid.offers(640, 480));
        assert!(!grid.offers(641, 480));
        assert!(!grid.offers(4000, 480));
        assert_eq!(grid.closest(641, 5000), Some((640, 1080)));
        let list = Sizes::Discrete(vec![
            SizeRates {
                width: 320,
                height: 240,
                rates: Rates::Discrete(vec![30.0, 15.0]),
            },
            SizeRates {
                width: 1280,
                height: 720,
                rates: Rates::Discrete(vec![10.0]),
            },
        ]);
        assert_eq!(list.closest(640, 480), Some((320, 240)));
        assert!(list.rates_at(1280, 720).offers(10.0));
        assert!(!list.rates_at(1280, 720).offers(30.0));
        assert_eq!(list.to_string(), "320x240 (30/15 fps), 1280x720 (10 fps)");
    }

    #[test]
    fn a_missing_node_is_an_os_error_naming_it() {
        let e = describe(Path::new("/dev/video-does-not-exist")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/dev/video-does-not-exist"), "{msg}");
        assert!(e.is_fatal());
    }
}
