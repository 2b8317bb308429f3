//! V4L2 cameras (cargo feature `camera`, Linux).
//!
//! A camera is `/dev/videoN`, opened through [`super::v4l2`]. What it
//! offers is read first (formats, sizes, rates), then a mode is chosen
//! ([`choose_mode`]):
//! - the format the spec names (`format=yuyv|nv12|rgb|gray|mjpeg`), or
//!   else the first the camera offers in [`CameraFormat::PREFERENCE`]
//!   order (YUYV, NV12, RGB/BGR, gray, then MJPEG);
//! - the size the spec names, exactly, or else 640×480, or else the
//!   camera's size closest to it;
//! - the rate the spec names, exactly, or else 30 fps where offered, or
//!   else the camera's own rate.
//!
//! When the camera lacks what was asked, the error lists what it offers
//! and what to type. Frames are decoded here into the caller's buffer
//! (BT.601 for YUV, in the range the driver reports). A frame that fails
//! to decode, or that the driver marks as damaged, is a
//! [`SourceError::BadFrame`]; a lost device is
//! [`SourceError::Disconnected`] (the capture thread reopens it).
//!
//! Waiting for a frame never blocks longer than [`FRAME_WAIT`]: a stalled
//! camera gives [`SourceError::Timeout`], so the capture thread notices a
//! stop request at once, and the live loop's watchdog sees the stall.

use std::path::PathBuf;
use std::time::Duration;

use super::decode::{
    Range, catch_decoder_panic, copy_packed, decode_mjpeg, decode_nv12, decode_yuyv,
};
use super::v4l2::{self, FormatInfo, Fourcc, Mode, Sizes, Stream, V4l2Error, Wait};
use super::{
    CameraDescription, CameraFormat, CameraFormatOffer, FrameInfo, FrameSource, SourceError,
};
use crate::frame::{Frame, PixelFormat};
use crate::imageio::MAX_IMAGE_SIDE;

/// Size asked for when the spec gives none.
pub const DEFAULT_SIZE: (u32, u32) = (640, 480);
/// Frame rate asked for when the spec gives none (where the camera has it).
pub const DEFAULT_FPS: u32 = 30;
/// Longest single wait for a frame; a stop request is seen within this.
pub const FRAME_WAIT: Duration = Duration::from_millis(100);

/// What a camera spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraRequest {
    /// `N` of `/dev/videoN`.
    pub index: usize,
    /// Width, when asked.
    pub width: Option<u32>,
    /// Height, when asked.
    pub height: Option<u32>,
    /// Frame rate, when asked.
    pub fps: Option<u32>,
    /// Pixel format, when asked.
    pub format: Option<CameraFormat>,
}

/// The kind of a V4L2 format, when bvae decodes it.
pub fn kind_of(fourcc: Fourcc) -> Option<CameraFormat> {
    match fourcc {
        Fourcc::YUYV => Some(CameraFormat::Yuyv),
        Fourcc::NV12 => Some(CameraFormat::Nv12),
        Fourcc::RGB24 | Fourcc::BGR24 => Some(CameraFormat::Rgb),
        Fourcc::GREY => Some(CameraFormat::Gray),
        Fourcc::MJPEG | Fourcc::JPEG => Some(CameraFormat::Mjpeg),
        _ => None,
    }
}

/// A mode chosen from what the camera offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Pixel format.
    pub fourcc: Fourcc,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Rate to set; `None` leaves the camera's own.
    pub fps: Option<f64>,
}

/// The formats bvae decodes, in the order they are preferred.
fn usable(formats: &[FormatInfo]) -> Vec<&FormatInfo> {
    let mut usable: Vec<(usize, &FormatInfo)> = formats
        .iter()
        .filter_map(|f| {
            let kind = kind_of(f.fourcc)?;
            let rank = CameraFormat::PREFERENCE.iter().position(|k| *k == kind)?;
            Some((rank, f))
        })
        .collect();
    usable.sort_by_key(|(rank, _)| *rank);
    usable.into_iter().map(|(_, f)| f).collect()
}

/// What a camera offers, one line per format, for error messages.
fn offered(formats: &[&FormatInfo]) -> String {
    formats
        .iter()
        .map(|f| {
            let spec = kind_of(f.fourcc).map_or("?", |k| k.name());
            format!("  format={spec} ({}): {}", f.fourcc, f.sizes)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The size of `sizes` to use: with a side asked, one with that side
/// (the closest to the other side asked, or to the default); without,
/// the default size if offered, else the closest (`closest == true`).
fn pick_size(sizes: &Sizes, req: &CameraRequest, closest: bool) -> Option<(u32, u32)> {
    let target = (
        req.width.unwrap_or(DEFAULT_SIZE.0),
        req.height.unwrap_or(DEFAULT_SIZE.1),
    );
    let fits = |(w, h): (u32, u32)| {
        req.width.is_none_or(|rw| rw == w) && req.height.is_none_or(|rh| rh == h)
    };
    if req.width.is_some() || req.height.is_some() || !closest {
        let candidate = match sizes {
            Sizes::Discrete(list) => list
                .iter()
                .map(|s| (s.width, s.height))
                .filter(|s| fits(*s))
                .min_by_key(|(w, h)| w.abs_diff(target.0) as u64 + h.abs_diff(target.1) as u64),
            Sizes::Stepwise { .. } => Some(target).filter(|t| sizes.offers(t.0, t.1)),
        };
        return candidate;
    }
    sizes.closest(target.0, target.1)
}

/// Chooses the mode to open from what the camera offers (see the module
/// documentation), or says what it offers and what to type.
pub fn choose_mode(
    formats: &[FormatInfo],
    req: &CameraRequest,
    camera: &str,
) -> Result<Choice, String> {
    let all = usable(formats);
    if all.is_empty() {
        let codes: Vec<String> = formats.iter().map(|f| f.fourcc.to_string()).collect();
        return Err(format!(
            "{camera} offers no pixel format bvae can decode (it offers {}); bvae reads YUYV, \
             NV12, RGB3, BGR3, GREY and MJPEG",
            if codes.is_empty() {
                "none".to_string()
            } else {
                codes.join(", ")
            }
        ));
    }
    let wanted: Vec<&FormatInfo> = match req.format {
        Some(k) => all
            .iter()
            .copied()
            .filter(|f| kind_of(f.fourcc) == Some(k))
            .collect(),
        None => all.clone(),
    };
    if wanted.is_empty() {
        return Err(format!(
            "{camera} does not offer format={}; it offers:\n{}\ntry --source camera:{},format={}",
            req.format.map_or("?", |k| k.name()),
            offered(&all),
            req.index,
            kind_of(all[0].fourcc).map_or("?", |k| k.name()),
        ));
    }
    // Exact default size first (any format), then the closest.
    for closest in [false, true] {
        for f in &wanted {
            let Some((width, height)) = pick_size(&f.sizes, req, closest) else {
                continue;
            };
            let rates = f.sizes.rates_at(width, height);
            let fps = match req.fps {
                Some(fps) if rates.offers(fps as f64) => Some(fps as f64),
                Some(_) => continue,
                None if rates.offers(DEFAULT_FPS as f64) => Some(DEFAULT_FPS as f64),
                None => None,
            };
            return Ok(Choice {
                fourcc: f.fourcc,
                width,
                height,
                fps,
            });
        }
    }
    let mut asked = vec![];
    if let Some(k) = req.format {
        asked.push(format!("format={k}"));
    }
    match (req.width, req.height) {
        (Some(w), Some(h)) => asked.push(format!("{w}x{h}")),
        (Some(w), None) => asked.push(format!("width={w}")),
        (None, Some(h)) => asked.push(format!("height={h}")),
        (None, None) => {}
    }
    if let Some(fps) = req.fps {
        asked.push(format!("{fps} fps"));
    }
    let first = wanted[0];
    let hint = match first.sizes.closest(
        req.width.unwrap_or(DEFAULT_SIZE.0),
        req.height.unwrap_or(DEFAULT_SIZE.1),
    ) {
        Some((w, h)) => format!(
            "try --source camera:{},format={},width={w},height={h}",
            req.index,
            kind_of(first.fourcc).map_or("?", |k| k.name())
        ),
        None => "run `bvae cameras` to see its modes".to_string(),
    };
    Err(format!(
        "{camera} does not offer {}; it offers:\n{}\n{hint}",
        asked.join(" at "),
        offered(&wanted)
    ))
}

/// Why opening `/dev/videoN` failed, in words a user can act on.
fn open_error(index: usize, e: &V4l2Error) -> String {
    let path = v4l2::node_path(index as u32);
    match e.source.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
            "cannot open camera {index}: {} is gone ({e}): the camera was unplugged or its \
             driver unloaded",
            path.display()
        ),
        Some(libc::ENOENT) => {
            let present = v4l2::video_nodes();
            let list = if present.is_empty() {
                "no /dev/video* node is present".to_string()
            } else {
                let names: Vec<String> = present.iter().map(|n| format!("camera:{n}")).collect();
                format!("present: {}", names.join(", "))
            };
            format!(
                "cannot open camera {index}: {} does not exist ({list}; `bvae cameras` lists \
                 what can be opened)",
                path.display()
            )
        }
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "cannot open camera {index}: permission denied on {}; add this user to the `video` \
             group (sudo usermod -aG video $USER, then log in again)",
            path.display()
        ),
        Some(libc::EBUSY) => format!(
            "cannot open camera {index}: {} is busy (another program is streaming from it)",
            path.display()
        ),
        _ => format!("cannot open camera {index} ({}): {e}", path.display()),
    }
}

/// The cameras the system has (empty when there are none): every
/// `/dev/videoN` that answers, with what it offers.
pub fn list_cameras() -> anyhow::Result<Vec<CameraDescription>> {
    let mut out = vec![];
    for n in v4l2::video_nodes() {
        let path = v4l2::node_path(n);
        let (info, formats) = match v4l2::describe(&path) {
            Ok(d) => d,
            Err(e) => {
                out.push(CameraDescription {
                    index: n.to_string(),
                    name: String::new(),
                    description: path.display().to_string(),
                    formats: vec![],
                    unusable: Some(open_error(n as usize, &e)),
                });
                continue;
            }
        };
        let unusable = if info.multiplanar_only {
            Some(
                "captures only through the multi-planar V4L2 API, which bvae does not support"
                    .to_string(),
            )
        } else if !info.can_capture {
            Some("not a video capture device (e.g. a camera's metadata node)".to_string())
        } else if usable(&formats).is_empty() {
            Some("offers no pixel format bvae can decode".to_string())
        } else {
            None
        };
        out.push(CameraDescription {
            index: n.to_string(),
            name: info.card.clone(),
            description: format!(
                "driver {}, {}, {}",
                info.driver,
                info.path.display(),
                info.bus
            ),
            formats: formats
                .iter()
                .map(|f| CameraFormatOffer {
                    fourcc: f.fourcc.to_string(),
                    description: f.description.clone(),
                    spec: kind_of(f.fourcc).map(|k| k.name().to_string()),
                    sizes: f.sizes.to_string(),
                })
                .collect(),
            unusable,
        });
    }
    Ok(out)
}

/// A V4L2 camera as a frame source.
#[derive(Debug)]
pub struct CameraSource {
    req: CameraRequest,
    path: PathBuf,
    stream: Option<Stream>,
    /// Rows copied without their padding, for drivers whose lines are
    /// longer than the pixels (sized when the camera is opened).
    packed: Vec<u8>,
    next_index: u64,
    described: String,
}

impl CameraSource {
    /// A source for `/dev/video{index}`; the device is opened by
    /// [`FrameSource::open`].
    pub fn new(req: CameraRequest) -> CameraSource {
        CameraSource {
            path: v4l2::node_path(req.index as u32),
            req,
            stream: None,
            packed: vec![],
            next_index: 0,
            described: format!("camera:{}", req.index),
        }
    }

    fn start(&mut self) -> Result<Stream, SourceError> {
        let index = self.req.index;
        let lost = |e: &V4l2Error| SourceError::Disconnected(open_error(index, e));
        let (info, formats) = v4l2::describe(&self.path).map_err(|e| lost(&e))?;
        let camera = format!("camera {index} ({}, {})", info.card, self.path.display());
        if info.multiplanar_only {
            return Err(SourceError::Disconnected(format!(
                "{camera} captures only through the multi-planar V4L2 API, which bvae does not \
                 support"
            )));
        }
        if !info.can_capture {
            return Err(SourceError::Disconnected(format!(
                "{camera} is not a video capture device (`bvae cameras` lists the cameras)"
            )));
        }
        let choice =
            choose_mode(&formats, &self.req, &camera).map_err(SourceError::Disconnected)?;
        let stream = Stream::start(
            &self.path,
            choice.fourcc,
            choice.width,
            choice.height,
            choice.fps,
        )
        .map_err(|e| SourceError::Disconnected(format!("{camera}: {e}")))?;
        let mode = stream.mode();
        check_mode(&mode).map_err(|why| SourceError::Disconnected(format!("{camera}: {why}")))?;
        self.packed.resize(unpadded_bytes(&mode), 0);
        self.described = format!(
            "camera:{index} ({}, {} {}x{}{}, {})",
            info.card,
            mode.fourcc,
            mode.width,
            mode.height,
            mode.interval.map_or(String::new(), |i| format!(
                " at {} fps",
                v4l2::format_fps(i.fps())
            )),
            self.path.display()
        );
        Ok(stream)
    }
}

/// Refuses a mode the driver set that bvae cannot decode or that is
/// absurdly large.
fn check_mode(mode: &Mode) -> Result<(), String> {
    if kind_of(mode.fourcc).is_none() {
        return Err(format!(
            "the driver switched to {}, which bvae cannot decode",
            mode.fourcc
        ));
    }
    let side = MAX_IMAGE_SIDE;
    if mode.width == 0 || mode.height == 0 || mode.width > side || mode.height > side {
        return Err(format!(
            "the driver set {}x{}: expected 1 to {side} pixels a side",
            mode.width, mode.height
        ));
    }
    let min_line = min_bytes_per_line(mode);
    if mode.bytes_per_line != 0
        && (mode.bytes_per_line < min_line || mode.bytes_per_line > min_line.saturating_mul(4))
    {
        return Err(format!(
            "the driver set {} bytes per line for {} pixels of {}",
            mode.bytes_per_line, mode.width, mode.fourcc
        ));
    }
    Ok(())
}

/// Bytes of one row of pixels without padding (of the first plane).
fn min_bytes_per_line(mode: &Mode) -> u32 {
    match mode.fourcc {
        Fourcc::YUYV => mode.width.div_ceil(2) * 4,
        Fourcc::RGB24 | Fourcc::BGR24 => mode.width * 3,
        _ => mode.width,
    }
}

/// Bytes of a frame without row padding (0 for MJPEG, which has none):
/// the size of the scratch buffer [`decode_camera_frame`] needs.
pub fn unpadded_bytes(mode: &Mode) -> usize {
    let (w, h) = (mode.width as usize, mode.height as usize);
    match mode.fourcc {
        Fourcc::NV12 => w * h + w.div_ceil(2) * 2 * h.div_ceil(2),
        Fourcc::MJPEG | Fourcc::JPEG => 0,
        _ => min_bytes_per_line(mode) as usize * h,
    }
}

/// `raw`'s rows without their padding, in `packed` (or `raw` itself when
/// its rows have none). `None` when `raw` is too short for its rows.
fn unpad<'a>(raw: &'a [u8], mode: &Mode, packed: &'a mut [u8]) -> Option<&'a [u8]> {
    let line = min_bytes_per_line(mode) as usize;
    let stride = mode.bytes_per_line as usize;
    if stride == 0 || stride == line {
        return Some(raw);
    }
    let h = mode.height as usize;
    // NV12's chroma plane has the same stride and half the rows
    let rows = if mode.fourcc == Fourcc::NV12 {
        h + h.div_ceil(2)
    } else {
        h
    };
    if raw.len() < stride * (rows - 1) + line || packed.len() < line * rows {
        return None;
    }
    for (r, out) in packed.chunks_exact_mut(line).take(rows).enumerate() {
        out.copy_from_slice(&raw[r * stride..r * stride + line]);
    }
    Some(&packed[..line * rows])
}

/// Decodes one raw camera frame of `mode` into `frame`.
pub fn decode_camera_frame(
    raw: &[u8],
    mode: &Mode,
    packed: &mut [u8],
    frame: &mut Frame,
) -> Result<(), SourceError> {
    check_mode(mode).map_err(SourceError::BadFrame)?;
    let (w, h) = (mode.width as usize, mode.height as usize);
    let range = if mode.full_range {
        Range::Full
    } else {
        Range::Limited
    };
    if matches!(mode.fourcc, Fourcc::MJPEG | Fourcc::JPEG) {
        return decode_mjpeg(raw, frame);
    }
    let data = unpad(raw, mode, packed).ok_or_else(|| {
        SourceError::BadFrame(format!(
            "a {w}x{h} {} frame of {} bytes is shorter than its {} lines of {} bytes",
            mode.fourcc,
            raw.len(),
            h,
            mode.bytes_per_line
        ))
    })?;
    match mode.fourcc {
        Fourcc::YUYV => decode_yuyv(data, w, h, range, frame),
        Fourcc::NV12 => decode_nv12(data, w, h, range, frame),
        Fourcc::GREY => copy_packed(data, w, h, PixelFormat::Gray8, frame),
        Fourcc::RGB24 => copy_packed(data, w, h, PixelFormat::Rgb8, frame),
        Fourcc::BGR24 => {
            copy_packed(data, w, h, PixelFormat::Rgb8, frame)?;
            for px in frame.data.chunks_exact_mut(3) {
                px.swap(0, 2);
            }
            Ok(())
        }
        other => Err(SourceError::BadFrame(format!(
            "frames in {other} cannot be decoded"
        ))),
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn frame_period(&self) -> Option<Duration> {
        let fps = self.stream.as_ref()?.mode().interval?.fps();
        (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps))
    }

    fn open(&mut self) -> Result<(), SourceError> {
        // close first: a driver lets one program stream at a time
        self.stream = None;
        let stream = self.start()?;
        self.stream = Some(stream);
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(SourceError::Disconnected(format!(
                "camera {} is not open",
                self.req.index
            )));
        };
        let mode = stream.mode();
        let packed = &mut self.packed;
        // a static name: no allocation per frame
        let what = kind_of(mode.fourcc).map_or("camera", |k| k.name());
        let got = stream.next(FRAME_WAIT, |raw| {
            catch_decoder_panic(what, || decode_camera_frame(raw, &mode, packed, frame))
        });
        match got {
            Ok(Wait::Timeout) => Err(SourceError::Timeout),
            Ok(Wait::Damaged) => {
                self.next_index += 1;
                Err(SourceError::BadFrame(
                    "the driver marked the frame as damaged".to_string(),
                ))
            }
            Ok(Wait::Frame(decoded)) => {
                let index = self.next_index;
                self.next_index += 1;
                decoded.map(|()| FrameInfo::unlabelled(index))
            }
            Err(e) => {
                // closing the device lets a driver be unloaded and the node
                // come back (module reload, USB replug)
                self.stream = None;
                Err(SourceError::Disconnected(format!(
                    "camera {} ({}): {e}",
                    self.req.index,
                    self.path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::v4l2::{Rates, SizeRates};

    fn discrete(fourcc: Fourcc, sizes: &[(u32, u32, &[f64])]) -> FormatInfo {
        FormatInfo {
            fourcc,
            description: fourcc.to_string(),
            compressed: fourcc == Fourcc::MJPEG,
            sizes: Sizes::Discrete(
                sizes
                    .iter()
                    .map(|(w, h, r)| SizeRates {
                        width: *w,
                        height: *h,
                        rates: Rates::Discrete(r.to_vec()),
                    })
                    .collect(),
            ),
        }
    }

    fn req(
        format: Option<CameraFormat>,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
    ) -> CameraRequest {
        CameraRequest {
            index: 0,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            fps,
            format,
        }
    }

    /// A typical USB 2 webcam: YUYV up to 720p at low rates, MJPEG fast.
    fn webcam() -> Vec<FormatInfo> {
        vec![
            discrete(
                Fourcc::MJPEG,
                &[(640, 480, &[30.0, 15.0]), (1280, 720, &[30.0])],
            ),
            discrete(
                Fourcc::YUYV,
                &[(640, 480, &[30.0, 15.0]), (1280, 720, &[10.0])],
            ),
            discrete(Fourcc::new(b"H264"), &[(1280, 720, &[30.0])]),
        ]
    }

    #[test]
    fn uncompressed_is_preferred_and_mjpeg_serves_what_it_lacks() {
        let c = choose_mode(&webcam(), &req(None, None, None), "cam").unwrap();
        assert_eq!(
            (c.fourcc, c.width, c.height, c.fps),
            (Fourcc::YUYV, 640, 480, Some(30.0))
        );
        let c = choose_mode(&webcam(), &req(None, Some((1280, 720)), Some(30)), "cam").unwrap();
        assert_eq!((c.fourcc, c.fps), (Fourcc::MJPEG, Some(30.0)));
        let c = choose_mode(&webcam(), &req(None, Some((1280, 720)), None), "cam").unwrap();
        assert_eq!((c.fourcc, c.fps), (Fourcc::YUYV, None));
        let c = choose_mode(
            &webcam(),
            &req(Some(CameraFormat::Mjpeg), None, Some(15)),
            "cam",
        )
        .unwrap();
        assert_eq!((c.fourcc, c.width, c.fps), (Fourcc::MJPEG, 640, Some(15.0)));
    }

    #[test]
    fn a_camera_without_the_default_size_gets_its_closest() {
        let cam = vec![discrete(
            Fourcc::GREY,
            &[(752, 480, &[60.0]), (376, 240, &[60.0])],
        )];
        let c = choose_mode(&cam, &req(None, None, None), "cam").unwrap();
        assert_eq!(
            (c.fourcc, c.width, c.height, c.fps),
            (Fourcc::GREY, 752, 480, None)
        );
        let grid = vec![FormatInfo {
            fourcc: Fourcc::NV12,
            description: "NV12".into(),
            compressed: false,
            sizes: Sizes::Stepwise {
                min_width: 32,
                max_width: 4056,
                step_width: 2,
                min_height: 32,
                max_height: 3040,
                step_height: 2,
            },
        }];
        let c = choose_mode(&grid, &req(None, None, Some(15)), "cam").unwrap();
        assert_eq!((c.width, c.height, c.fps), (640, 480, Some(15.0)));
        let c = choose_mode(&grid, &req(None, Some((1000, 562)), None), "cam").unwrap();
        assert_eq!((c.width, c.height), (1000, 562));
        assert!(choose_mode(&grid, &req(None, Some((1001, 562)), None), "cam").is_err());
    }

    #[test]
    fn what_is_not_offered_is_an_error_listing_what_is() {
        let e = choose_mode(&webcam(), &req(None, Some((800, 600)), None), "camera 0").unwrap_err();
        assert!(e.contains("does not offer 800x600"), "{e}");
        assert!(e.contains("format=yuyv (YUYV): 640x480 (30/15 fps)"), "{e}");
        assert!(e.contains("format=mjpeg (MJPG)"), "{e}");
        assert!(
            e.contains("try --source camera:0,format=yuyv,width=640,height=480"),
            "{e}"
        );
        let e = choose_mode(
            &webcam(),
            &req(Some(CameraFormat::Nv12), None, None),
            "camera 0",
        )
        .unwrap_err();
        assert!(e.contains("does not offer format=nv12"), "{e}");
        assert!(e.contains("try --source camera:0,format=yuyv"), "{e}");
        let e = choose_mode(
            &webcam(),
            &req(None, Some((1280, 720)), Some(60)),
            "camera 0",
        )
        .unwrap_err();
        assert!(e.contains("1280x720 at 60 fps"), "{e}");
        let h264 = vec![discrete(Fourcc::new(b"H264"), &[(1280, 720, &[30.0])])];
        let e = choose_mode(&h264, &req(None, None, None), "camera 0").unwrap_err();
        assert!(
            e.contains("offers no pixel format bvae can decode (it offers H264)"),
            "{e}"
        );
    }

    fn mode(fourcc: Fourcc, w: u32, h: u32, bpl: u32) -> Mode {
        Mode {
            fourcc,
            width: w,
            height: h,
            bytes_per_line: bpl,
            size_image: 0,
            interval: None,
            full_range: false,
        }
    }

    #[test]
    fn padded_lines_are_unpadded_for_every_format() {
        // 3x2 gray with 2 bytes of padding per line
        let m = mode(Fourcc::GREY, 3, 2, 5);
        let raw = [1, 2, 3, 0, 0, 4, 5, 6, 0, 0];
        let mut packed = vec![0; unpadded_bytes(&m)];
        let mut frame = Frame::empty();
        decode_camera_frame(&raw, &m, &mut packed, &mut frame).unwrap();
        assert_eq!(frame.data, vec![1, 2, 3, 4, 5, 6]);
        // NV12 4x2, stride 6: Y rows then one UV row
        let m = mode(Fourcc::NV12, 4, 2, 6);
        let mut raw = vec![0u8; 6 * 3];
        for r in 0..2 {
            raw[r * 6..r * 6 + 4].fill(235);
        }
        raw[12..16].copy_from_slice(&[128, 128, 128, 128]);
        let mut packed = vec![0; unpadded_bytes(&m)];
        decode_camera_frame(&raw, &m, &mut packed, &mut frame).unwrap();
        assert_eq!((frame.width, frame.height), (4, 2));
        assert!(frame.data.iter().all(|&v| v == 255), "{:?}", frame.data);
        // BGR is swapped to RGB
        let m = mode(Fourcc::BGR24, 1, 1, 3);
        decode_camera_frame(&[1, 2, 3], &m, &mut [], &mut frame).unwrap();
        assert_eq!(frame.data, vec![3, 2, 1]);
        // a short frame is a bad frame, not a panic
        let m = mode(Fourcc::YUYV, 4, 4, 12);
        let mut packed = vec![0; unpadded_bytes(&m)];
        let e = decode_camera_frame(&[0; 20], &m, &mut packed, &mut frame).unwrap_err();
        assert!(matches!(e, SourceError::BadFrame(_)), "{e:?}");
        // so is a mode no driver may set (an empty frame, lines shorter
        // than their pixels)
        for m in [mode(Fourcc::NV12, 4, 0, 6), mode(Fourcc::YUYV, 4, 4, 3)] {
            let e = decode_camera_frame(&[0; 64], &m, &mut [], &mut frame).unwrap_err();
            assert!(matches!(e, SourceError::BadFrame(_)), "{e:?}");
        }
    }

    #[test]
    fn absurd_modes_are_refused() {
        assert!(check_mode(&mode(Fourcc::YUYV, 640, 480, 1280)).is_ok());
        assert!(check_mode(&mode(Fourcc::YUYV, 640, 480, 100)).is_err());
        assert!(check_mode(&mode(Fourcc::YUYV, 100_000, 480, 0)).is_err());
        assert!(check_mode(&mode(Fourcc::new(b"H264"), 640, 480, 0)).is_err());
    }

    #[test]
    fn a_missing_camera_names_its_node() {
        let mut src = CameraSource::new(req(None, None, None));
        src.req.index = 57;
        src.path = v4l2::node_path(57);
        let e = src.open().unwrap_err();
        let SourceError::Disconnected(msg) = e else {
            panic!("{e:?}")
        };
        assert!(
            msg.contains("cannot open camera 57: /dev/video57 does not exist"),
            "{msg}"
        );
    }
}
