//! Frame sources: where the live loop and `bvae record` get frames from.
//!
//! Every source implements [`FrameSource`]: it is opened, then asked for
//! one frame at a time, written into a caller-owned [`Frame`] whose buffer
//! is reused (no allocation per frame in steady state). Failures are typed
//! ([`SourceError`]) because the caller branches on them: a bad frame is
//! skipped and counted, a lost device is reopened with backoff, a finite
//! source that has ended stops the run.
//!
//! A source is chosen by a [`SourceSpec`], parsed from the `--source`
//! strings users type:
//!
//! | spec | source |
//! | --- | --- |
//! | `camera:0` (`camera:0,width=640,height=480,fps=30`) | a V4L2 camera (cargo feature `camera`) |
//! | `images:DIR` (`images:DIR,loop`) | sorted PNG/JPEG files below DIR |
//! | `video:FILE.y4m` (`video:FILE.y4m,loop,pace=off,fps=25`, `video:-`) | uncompressed YUV4MPEG2 video from a file, a pipe or standard input |
//! | `synthetic` (`synthetic:seed=3,width=320,height=240,anomalies=on`) | a rendered, seeded scene |
//! | `photos:DIR` (`photos:DIR,seed=3,width=640,height=480,anomalies=on`) | a seeded camera scene rendered from the photographs in DIR |
//!
//! ```
//! use bvae::frame::{Frame, PixelFormat};
//! use bvae::source::{SourceSpec, open_source};
//!
//! let spec: SourceSpec = "synthetic:seed=3,fps=0".parse().unwrap();
//! let mut source = open_source(&spec).unwrap();
//! let mut frame = Frame::empty();
//! let info = source.next_frame(&mut frame).unwrap();
//! assert_eq!((frame.width, frame.height, info.index), (320, 240, 0));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};

use crate::frame::{Frame, PixelFormat};
use crate::imageio;

#[cfg(feature = "camera")]
pub mod camera;
pub mod decode;
pub mod images;
pub mod photos;
pub mod synthetic;
#[cfg(feature = "camera")]
pub mod v4l2;
pub mod y4m;

pub use images::ImageSource;
pub use photos::{PhotoScene, PhotosConfig, PhotosSource};
pub use synthetic::{
    AnomalySchedule, Blob, Episode, SHAPE_SEGMENT, Scene, SceneState, Shape, Sprite,
    SyntheticConfig, SyntheticSource, render_frame,
};
pub use y4m::VideoSource;

/// A stream of frames: a camera, a folder of images, a video file, the
/// synthetic scene or the photos scene.
pub trait FrameSource: Send {
    /// What this source is, for logs and events, e.g.
    /// `"synthetic 320x240 gray seed 1"` or `"images:/data (412 files)"`.
    fn describe(&self) -> String;

    /// (Re)opens the device or file. Called before the first frame and
    /// after an error; [`open_source`] returns sources already opened once.
    fn open(&mut self) -> Result<(), SourceError>;

    /// Writes the next frame into `frame` and returns its metadata. The
    /// frame's buffer is reused: it is resized only when the frame size
    /// changes, so steady-state capture does not allocate.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError>;

    /// Whether every frame must reach the loop: the capture thread then
    /// waits for the loop to take each frame instead of replacing it
    /// (recorded footage evaluated with `pace=off`). Live sources keep
    /// the default, `false`: stale frames are dropped, never queued.
    fn lossless(&self) -> bool {
        false
    }

    /// The time between frames the source means to keep (a camera's frame
    /// interval, a video's rate), when it has one. The watchdog waits at
    /// least a few of these before it calls a source stalled, so a 1 fps
    /// camera is not lost between its frames.
    fn frame_period(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The kinds of anomaly the synthetic and photos scenes inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A shape never seen in normal frames (a ring, an open square frame, or two squares touching at a corner).
    NovelShape,
    /// Two sprites at once where normal frames have one.
    TwoObjects,
    /// A large bright blob in front of the scene.
    Occlusion,
    /// Strong pixel noise over the whole frame.
    NoiseBurst,
    /// The last normal frame repeated (a stuck camera).
    FrozenFrame,
    /// A real object (a crop of another photograph, 60–120 pixels at
    /// 640×480) pasted into the photos scene.
    PastedObject,
    /// A small pasted object, about 20×20 pixels at 640×480.
    SmallObject,
    /// A dark person-sized silhouette (head and body, about a third of the
    /// frame's height).
    Person,
    /// The scene's light drops to about a quarter.
    LightsOut,
    /// A large soft dark blob coming in from one edge (something on or
    /// close to the lens).
    LensOcclusion,
}

impl AnomalyKind {
    /// Every kind of the synthetic scene, in the order its schedule cycles
    /// through them.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::NovelShape,
        AnomalyKind::TwoObjects,
        AnomalyKind::Occlusion,
        AnomalyKind::NoiseBurst,
        AnomalyKind::FrozenFrame,
    ];

    /// Every kind of the photos scene, in the order its schedule cycles
    /// through them.
    pub const PHOTOS: [AnomalyKind; 7] = [
        AnomalyKind::PastedObject,
        AnomalyKind::Person,
        AnomalyKind::LightsOut,
        AnomalyKind::LensOcclusion,
        AnomalyKind::NoiseBurst,
        AnomalyKind::FrozenFrame,
        AnomalyKind::SmallObject,
    ];

    /// The snake_case name used in JSON and file names.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::NovelShape => "novel_shape",
            AnomalyKind::TwoObjects => "two_objects",
            AnomalyKind::Occlusion => "occlusion",
            AnomalyKind::NoiseBurst => "noise_burst",
            AnomalyKind::FrozenFrame => "frozen_frame",
            AnomalyKind::PastedObject => "pasted_object",
            AnomalyKind::SmallObject => "small_object",
            AnomalyKind::Person => "person",
            AnomalyKind::LightsOut => "lights_out",
            AnomalyKind::LensOcclusion => "lens_occlusion",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Metadata of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The source's frame counter: 0 for the first frame it delivered (or
    /// failed to decode), +1 for each following one. Never reset by
    /// [`FrameSource::open`].
    pub index: u64,
    /// Ground truth, when the source knows it (the synthetic and photos scenes):
    /// `Some(None)` = a normal frame, `Some(Some(kind))` = an anomaly of
    /// that kind, `None` = unknown (cameras, files).
    pub truth: Option<Option<AnomalyKind>>,
}

impl FrameInfo {
    /// A frame whose ground truth is unknown.
    pub fn unlabelled(index: u64) -> FrameInfo {
        FrameInfo { index, truth: None }
    }
}

/// Why a source gave no frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No frame arrived within the source's timeout.
    #[error("no frame within the source's timeout")]
    Timeout,
    /// A finite source is exhausted (images without `loop`, end of video).
    #[error("the source has no more frames")]
    Ended,
    /// The device vanished or the file cannot be read: reopen with backoff.
    #[error("source lost: {0}")]
    Disconnected(String),
    /// One frame could not be decoded: skip it and count it.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

/// Which source to open, with its options.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A V4L2 camera (cargo feature `camera`).
    Camera {
        /// Device index (`/dev/videoN`).
        index: usize,
        /// Requested width; 640 or the closest the camera has when `None`.
        width: Option<u32>,
        /// Requested height; 480 or the closest the camera has when `None`.
        height: Option<u32>,
        /// Requested frame rate; 30 when offered, else the camera's own.
        fps: Option<u32>,
        /// Requested pixel format; the first of [`CameraFormat::PREFERENCE`]
        /// the camera offers when `None`.
        format: Option<CameraFormat>,
    },
    /// Sorted image files below a folder.
    Images {
        /// The folder (searched recursively).
        dir: PathBuf,
        /// Start again from the first file after the last.
        looping: bool,
    },
    /// An uncompressed YUV4MPEG2 (`.y4m`) video: a file, a FIFO, or
    /// standard input (`-`). See [`y4m`] for the pacing.
    Video {
        /// The file, FIFO or device; `-` for standard input.
        path: PathBuf,
        /// Start again from the first frame after the last (regular files
        /// only).
        looping: bool,
        /// `pace=on|off`; [`y4m::Pace::Auto`] when not given.
        pace: y4m::Pace,
        /// `fps=N`: play at this rate instead of the header's.
        fps: Option<f64>,
    },
    /// The synthetic scene.
    Synthetic(SyntheticConfig),
    /// The photos scene, rendered from the photographs of a folder.
    Photos(PhotosConfig),
}

impl SourceSpec {
    /// The options of a rendered scene (seed, size, schedule, pace) when
    /// the spec names one (`synthetic`, `photos`): such a source knows the
    /// ground truth of every frame.
    pub fn scene(&self) -> Option<&SyntheticConfig> {
        match self {
            SourceSpec::Synthetic(c) => Some(c),
            SourceSpec::Photos(p) => Some(&p.scene),
            _ => None,
        }
    }

    /// [`SourceSpec::scene`], to change.
    pub fn scene_mut(&mut self) -> Option<&mut SyntheticConfig> {
        match self {
            SourceSpec::Synthetic(c) => Some(c),
            SourceSpec::Photos(p) => Some(&mut p.scene),
            _ => None,
        }
    }
}

/// The pixel formats a camera can be asked for (`camera:0,format=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraFormat {
    /// Packed YUV 4:2:2 (V4L2 `YUYV`), what most USB cameras send
    /// uncompressed.
    Yuyv,
    /// 4:2:0 with interleaved chroma (V4L2 `NV12`), common on SoC cameras
    /// and `libcamerify`.
    Nv12,
    /// Packed 8-bit RGB or BGR (V4L2 `RGB3` / `BGR3`).
    Rgb,
    /// 8-bit gray (V4L2 `GREY`), monochrome cameras.
    Gray,
    /// Motion JPEG (V4L2 `MJPG` / `JPEG`).
    Mjpeg,
}

impl CameraFormat {
    /// The order in which formats are tried when the spec names none:
    /// uncompressed formats first (no compression artefacts, and cheap to
    /// convert), YUYV first among them because nearly every USB camera
    /// offers it; gray last among those because it throws colour away;
    /// MJPEG last, because decoding a JPEG per frame costs the board CPU.
    /// A size or rate the spec asks for may still pick a later format
    /// (USB 2 cameras often offer 1280×720 at 30 fps only as MJPEG).
    pub const PREFERENCE: [CameraFormat; 5] = [
        CameraFormat::Yuyv,
        CameraFormat::Nv12,
        CameraFormat::Rgb,
        CameraFormat::Gray,
        CameraFormat::Mjpeg,
    ];

    /// The name used in specs: `yuyv`, `nv12`, `rgb`, `gray`, `mjpeg`.
    pub fn name(self) -> &'static str {
        match self {
            CameraFormat::Yuyv => "yuyv",
            CameraFormat::Nv12 => "nv12",
            CameraFormat::Rgb => "rgb",
            CameraFormat::Gray => "gray",
            CameraFormat::Mjpeg => "mjpeg",
        }
    }
}

impl fmt::Display for CameraFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CameraFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuy2" => CameraFormat::Yuyv,
            "nv12" => CameraFormat::Nv12,
            "rgb" | "rgb3" | "rgb24" | "bgr" | "bgr3" | "bgr24" => CameraFormat::Rgb,
            "gray" | "grey" | "y8" => CameraFormat::Gray,
            "mjpeg" | "mjpg" | "jpeg" => CameraFormat::Mjpeg,
            _ => anyhow::bail!("format={s}: expected yuyv, nv12, rgb, gray or mjpeg"),
        })
    }
}

/// The forms `--source` accepts, for error messages.
pub const SPEC_FORMS: &str = "camera:INDEX[,width=W,height=H,fps=F,format=yuyv|nv12|rgb|gray|mjpeg], \
     images:DIR[,loop], \
     video:FILE.y4m|-[,loop][,pace=on|off][,fps=N], synthetic[:seed=N,width=W,height=H,rgb=on|off,anomalies=on|off,\
     fps=F,every=N,length=N,first=N] or photos:DIR[,seed=N,width=W,height=H,...] (the options of synthetic)";

/// Splits `PATH[,loop]`.
fn path_and_loop(rest: &str, what: &str) -> Result<(PathBuf, bool)> {
    let (path, looping) = match rest.strip_suffix(",loop") {
        Some(p) => (p, true),
        None => (rest, false),
    };
    if path.is_empty() {
        anyhow::bail!("`--source {what}:` needs a path after the colon, e.g. {what}:frames/");
    }
    Ok((PathBuf::from(path), looping))
}

/// Parses `key=value` pairs separated by commas.
fn key_values(s: &str) -> Result<Vec<(&str, &str)>> {
    s.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .with_context(|| format!("expected key=value, found {kv:?}"))
        })
        .collect()
}

fn parse_num<T: FromStr>(key: &str, v: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    v.parse()
        .with_context(|| format!("{key}={v}: expected a whole number"))
}

fn parse_switch(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => anyhow::bail!("{key}={v}: expected on or off"),
    }
}

fn parse_camera(rest: &str) -> Result<SourceSpec> {
    let (index, opts) = rest.split_once(',').unwrap_or((rest, ""));
    let index = index
        .trim()
        .parse()
        .with_context(|| format!("camera index {index:?}: expected a number such as 0"))?;
    let (mut width, mut height, mut fps, mut format) = (None, None, None, None);
    for (k, v) in key_values(opts)? {
        match k {
            "width" => width = Some(parse_num(k, v)?),
            "height" => height = Some(parse_num(k, v)?),
            "fps" => fps = Some(parse_num(k, v)?),
            "format" => format = Some(v.parse()?),
            _ => {
                anyhow::bail!("unknown camera option {k:?}: expected width, height, fps or format")
            }
        }
    }
    let side = imageio::MAX_IMAGE_SIDE;
    for (name, v) in [("width", width), ("height", height)] {
        if let Some(v) = v
            && (v == 0 || v > side)
        {
            anyhow::bail!("{name}={v}: expected 1 to {side} pixels");
        }
    }
    if fps == Some(0) || fps.is_some_and(|f| f > 1000) {
        anyhow::bail!(
            "fps={}: expected 1 to 1000 frames per second",
            fps.unwrap_or(0)
        );
    }
    Ok(SourceSpec::Camera {
        index,
        width,
        height,
        fps,
        format,
    })
}

/// Applies the options of a rendered scene (`what`: `synthetic` or
/// `photos`, for errors) to `c`, and checks the result.
fn parse_scene_options(
    c: &mut SyntheticConfig,
    opts: &[(&str, &str)],
    what: &str,
    scene_kinds: &[AnomalyKind],
) -> Result<()> {
    let mut schedule = c.anomalies.unwrap_or_default();
    let mut anomalies = c.anomalies.is_some();
    for &(k, v) in opts {
        match k {
            "seed" => c.seed = parse_num(k, v)?,
            "width" => c.width = parse_num(k, v)?,
            "height" => c.height = parse_num(k, v)?,
            "rgb" => {
                c.format = if parse_switch(k, v)? {
                    PixelFormat::Rgb8
                } else {
                    PixelFormat::Gray8
                }
            }
            "anomalies" => anomalies = parse_switch(k, v)?,
            "fps" => {
                let fps: f64 = v
                    .parse()
                    .with_context(|| format!("fps={v}: expected a number (0 = unpaced)"))?;
                c.frame_period = synthetic::period_from_fps(fps)?;
            }
            "every" => schedule.every = parse_num(k, v)?,
            "length" => schedule.length = parse_num(k, v)?,
            "first" => schedule.first = parse_num(k, v)?,
            "start" => c.start = parse_num(k, v)?,
            "kinds" => c.kinds = parse_kinds(v, what, scene_kinds)?,
            _ => anyhow::bail!(
                "unknown {what} option {k:?}: expected seed, width, height, rgb, anomalies, \
                 fps, every, length, first, start or kinds"
            ),
        }
    }
    c.anomalies = anomalies.then_some(schedule);
    c.validate()
}

/// Parses `kinds=a+b+...`: anomaly kinds of the scene (`scene_kinds`), by
/// name, each at most once.
fn parse_kinds(v: &str, what: &str, scene_kinds: &[AnomalyKind]) -> Result<Vec<AnomalyKind>> {
    let names = || {
        let n: Vec<&str> = scene_kinds.iter().map(|k| k.name()).collect();
        n.join(", ")
    };
    let mut kinds = vec![];
    for name in v.split('+').map(str::trim) {
        let Some(kind) = scene_kinds.iter().find(|k| k.name() == name) else {
            anyhow::bail!(
                "kinds={v}: {name:?} is not an anomaly of the {what} scene (expected some of {}, joined by +)",
                names()
            );
        };
        if kinds.contains(kind) {
            anyhow::bail!("kinds={v}: {name} is named twice");
        }
        kinds.push(*kind);
    }
    Ok(kinds)
}

fn parse_synthetic(opts: &str) -> Result<SourceSpec> {
    let mut c = SyntheticConfig::default();
    parse_scene_options(&mut c, &key_values(opts)?, "synthetic", &AnomalyKind::ALL)?;
    Ok(SourceSpec::Synthetic(c))
}

/// Parses `DIR[,key=value...]`: options are read from the end, so the
/// folder's name may hold commas (but not end in `,word=value`).
fn parse_photos(rest: &str) -> Result<SourceSpec> {
    let mut dir = rest;
    let mut opts = vec![];
    while let Some((head, last)) = dir.rsplit_once(',') {
        let Some((k, v)) = last.split_once('=') else {
            break;
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase()) {
            break;
        }
        opts.push((k, v.trim()));
        dir = head;
    }
    opts.reverse();
    if dir.is_empty() {
        anyhow::bail!(
            "`--source photos:` needs a folder of photographs after the colon, e.g. photos:photos/ \
             (python -m bvae_tools photos --out photos writes one)"
        );
    }
    let mut c = PhotosConfig::new(PathBuf::from(dir));
    parse_scene_options(&mut c.scene, &opts, "photos", &AnomalyKind::PHOTOS)?;
    Ok(SourceSpec::Photos(c))
}

impl FromStr for SourceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let spec = match kind {
            "camera" if rest.is_empty() => Ok(SourceSpec::Camera {
                index: 0,
                width: None,
                height: None,
                fps: None,
                format: None,
            }),
            "camera" => parse_camera(rest),
            "images" => {
                path_and_loop(rest, kind).map(|(dir, looping)| SourceSpec::Images { dir, looping })
            }
            "video" => y4m::parse_spec(rest)
                .map(|(path, o)| SourceSpec::Video {
                    path,
                    looping: o.looping,
                    pace: o.pace,
                    fps: o.fps,
                })
                .map_err(anyhow::Error::msg),
            "synthetic" => parse_synthetic(rest),
            "photos" => parse_photos(rest),
            _ => Err(anyhow::anyhow!("unknown source kind {kind:?}")),
        };
        spec.map_err(|e| anyhow::anyhow!("invalid source {s:?}: {e:#}; expected {SPEC_FORMS}"))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lp = |l: bool| if l { ",loop" } else { "" };
        match self {
            SourceSpec::Camera {
                index,
                width,
                height,
                fps,
                format,
            } => {
                write!(f, "camera:{index}")?;
                for (k, v) in [("width", width), ("height", height), ("fps", fps)] {
                    if let Some(v) = v {
                        write!(f, ",{k}={v}")?;
                    }
                }
                if let Some(format) = format {
                    write!(f, ",format={format}")?;
                }
                Ok(())
            }
            SourceSpec::Images { dir, looping } => {
                write!(f, "images:{}{}", dir.display(), lp(*looping))
            }
            SourceSpec::Video {
                path,
                looping,
                pace,
                fps,
            } => {
                let o = y4m::VideoOptions {
                    looping: *looping,
                    pace: *pace,
                    fps: *fps,
                };
                write!(f, "video:{}{o}", path.display())
            }
            SourceSpec::Synthetic(c) => write!(f, "{c}"),
            SourceSpec::Photos(c) => write!(f, "{c}"),
        }
    }
}

/// The message for camera sources in a build without the `camera` feature.
pub const NO_CAMERA_FEATURE: &str =
    "camera sources need the `camera` feature: cargo build --release --features camera";

/// One camera found by [`list_cameras`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraDescription {
    /// What to pass as `camera:INDEX`.
    pub index: String,
    /// The device's name.
    pub name: String,
    /// The driver, device node and bus.
    pub description: String,
    /// What the camera offers, one entry per pixel format.
    pub formats: Vec<CameraFormatOffer>,
    /// Why the node cannot be used as a camera, when it cannot.
    pub unusable: Option<String>,
}

/// One pixel format a camera offers, for `bvae cameras`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraFormatOffer {
    /// The V4L2 code, e.g. `YUYV`.
    pub fourcc: String,
    /// The driver's name for it.
    pub description: String,
    /// What to type as `format=` for it; `None` when bvae cannot decode it.
    pub spec: Option<String>,
    /// Its sizes and frame rates, e.g. `640x480 (30/15 fps), 1280x720 (10 fps)`.
    pub sizes: String,
}

/// The cameras the system has (empty when there are none). Without the
/// `camera` feature, an error saying how to build with it.
pub fn list_cameras() -> Result<Vec<CameraDescription>> {
    #[cfg(feature = "camera")]
    return camera::list_cameras();
    #[cfg(not(feature = "camera"))]
    anyhow::bail!(NO_CAMERA_FEATURE)
}

/// Creates the source `spec` names and opens it once, so that a missing
/// folder, an unreadable video or an unsupported option is reported here,
/// with context, rather than as the first frame's error.
pub fn open_source(spec: &SourceSpec) -> Result<Box<dyn FrameSource>> {
    let mut source: Box<dyn FrameSource> = match spec {
        #[cfg(feature = "camera")]
        SourceSpec::Camera {
            index,
            width,
            height,
            fps,
            format,
        } => Box::new(camera::CameraSource::new(camera::CameraRequest {
            index: *index,
            width: *width,
            height: *height,
            fps: *fps,
            format: *format,
        })),
        #[cfg(not(feature = "camera"))]
        SourceSpec::Camera { .. } => anyhow::bail!(NO_CAMERA_FEATURE),
        SourceSpec::Images { dir, looping } => Box::new(ImageSource::new(dir.clone(), *looping)),
        SourceSpec::Video {
            path,
            looping,
            pace,
            fps,
        } => Box::new(VideoSource::with_options(
            path.clone(),
            y4m::VideoOptions {
                looping: *looping,
                pace: *pace,
                fps: *fps,
            },
        )),
        SourceSpec::Synthetic(config) => Box::new(SyntheticSource::new(config.clone())?),
        SourceSpec::Photos(config) => Box::new(PhotosSource::new(config.clone())?),
    };
    source
        .open()
        .map_err(|e| match e {
            SourceError::Disconnected(why) | SourceError::BadFrame(why) => anyhow::anyhow!(why),
            other => anyhow::anyhow!(other),
        })
        .with_context(|| format!("cannot open source {spec}"))?;
    Ok(source)
}

/// Sets `frame` to `width`×`height` in `format`, reusing its buffer: the
/// buffer is only reallocated when it has to grow. Pixel values are left
/// as they were (new bytes are 0).
pub fn reshape(frame: &mut Frame, width: usize, height: usize, format: PixelFormat) {
    frame.width = width;
    frame.height = height;
    frame.format = format;
    frame
        .data
        .resize(width * height * format.bytes_per_pixel(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let cases = [
            "camera:0",
            "camera:2,width=640,height=480,fps=30",
            "camera:1,width=320,height=240,format=nv12",
            "camera:0,format=mjpeg",
            "images:frames",
            "images:frames/a b,loop",
            "video:clip.y4m",
            "video:clip.y4m,loop",
        ];
        for c in cases {
            let spec: SourceSpec = c.parse().unwrap();
            assert_eq!(spec.to_string(), c);
        }
        // a scene can start where a recording ended
        let spec: SourceSpec = "synthetic:seed=2,fps=0,start=500".parse().unwrap();
        assert!(spec.to_string().ends_with(",start=500"), "{spec}");
        assert_eq!(spec.to_string().parse::<SourceSpec>().unwrap(), spec);
        let mut src = open_source(&spec).unwrap();
        let mut f = Frame::empty();
        src.open().unwrap();
        assert_eq!(src.next_frame(&mut f).unwrap().index, 500);
        assert_eq!(
            "camera".parse::<SourceSpec>().unwrap(),
            "camera:0".parse().unwrap()
        );
        let SourceSpec::Synthetic(c) =
            "synthetic:seed=3,width=64,height=48,anomalies=off,rgb=on,fps=0"
                .parse()
                .unwrap()
        else {
            panic!("not synthetic")
        };
        assert_eq!((c.seed, c.width, c.height), (3, 64, 48));
        assert_eq!(c.format, PixelFormat::Rgb8);
        assert!(c.anomalies.is_none() && c.frame_period.is_none());
        let again: SourceSpec = SourceSpec::Synthetic(c.clone())
            .to_string()
            .parse()
            .unwrap();
        assert_eq!(again, SourceSpec::Synthetic(c));
        assert!(matches!(
            "synthetic".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic(_)
        ));
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        for (bad, needle) in [
            ("webcam:0", "unknown source kind"),
            ("camera:x", "camera index"),
            ("camera:0,zoom=2", "unknown camera option"),
            (
                "camera:0,format=h264",
                "expected yuyv, nv12, rgb, gray or mjpeg",
            ),
            ("camera:0,width=0", "width=0"),
            ("camera:0,height=100000", "height=100000"),
            ("camera:0,fps=0", "fps=0"),
            ("images:", "needs a path"),
            ("synthetic:seed=-1", "seed=-1"),
            ("synthetic:color=red", "unknown synthetic option"),
            ("synthetic:anomalies=maybe", "expected on or off"),
            ("synthetic:width=0", "width"),
            ("synthetic:every=10,length=20", "length"),
            (
                "synthetic:kinds=person",
                "not an anomaly of the synthetic scene",
            ),
            ("synthetic:seed", "key=value"),
            ("", "unknown source kind"),
        ] {
            let e = format!("{:#}", bad.parse::<SourceSpec>().unwrap_err());
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains("expected camera:INDEX"), "{bad}: {e}");
        }
    }

    #[test]
    #[cfg(not(feature = "camera"))]
    fn camera_without_feature_says_which_feature() {
        let spec: SourceSpec = "camera:0".parse().unwrap();
        let e = format!("{:#}", open_source(&spec).err().unwrap());
        assert!(e.contains("--features camera"), "{e}");
        let e = format!("{:#}", list_cameras().unwrap_err());
        assert!(e.contains("--features camera"), "{e}");
    }

    /// There is no camera on the build machines: opening one fails cleanly.
    #[test]
    #[cfg(feature = "camera")]
    fn a_missing_camera_is_a_clear_error() {
        let spec: SourceSpec = "camera:57".parse().unwrap();
        let e = format!("{:#}", open_source(&spec).err().unwrap());
        assert!(e.contains("cannot open camera 57"), "{e}");
        assert!(list_cameras().is_ok());
    }
}
