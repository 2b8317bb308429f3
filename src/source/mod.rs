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
//! | `video:FILE.y4m` (`video:FILE.y4m,loop`) | uncompressed YUV4MPEG2 video |
//! | `synthetic` (`synthetic:seed=3,width=320,height=240,anomalies=on`) | a rendered, seeded scene |
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

#[cfg(feature = "camera")]
pub mod camera;
pub mod decode;
pub mod images;
pub mod synthetic;
pub mod y4m;

pub use images::ImageSource;
pub use synthetic::{
    AnomalySchedule, Blob, Episode, SHAPE_SEGMENT, Scene, SceneState, Shape, Sprite,
    SyntheticConfig, SyntheticSource, render_frame,
};
pub use y4m::VideoSource;

/// A stream of frames: a camera, a folder of images, a video file or the
/// synthetic scene.
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
}

/// The kinds of anomaly the synthetic scene injects.
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
}

impl AnomalyKind {
    /// Every kind, in the order the synthetic schedule cycles through them.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::NovelShape,
        AnomalyKind::TwoObjects,
        AnomalyKind::Occlusion,
        AnomalyKind::NoiseBurst,
        AnomalyKind::FrozenFrame,
    ];

    /// The snake_case name used in JSON and file names.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::NovelShape => "novel_shape",
            AnomalyKind::TwoObjects => "two_objects",
            AnomalyKind::Occlusion => "occlusion",
            AnomalyKind::NoiseBurst => "noise_burst",
            AnomalyKind::FrozenFrame => "frozen_frame",
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
    /// Ground truth, when the source knows it (the synthetic scene):
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
        /// Requested width; the camera's default when `None`.
        width: Option<u32>,
        /// Requested height; the camera's default when `None`.
        height: Option<u32>,
        /// Requested frame rate; the camera's default when `None`.
        fps: Option<u32>,
    },
    /// Sorted image files below a folder.
    Images {
        /// The folder (searched recursively).
        dir: PathBuf,
        /// Start again from the first file after the last.
        looping: bool,
    },
    /// An uncompressed YUV4MPEG2 (`.y4m`) video.
    Video {
        /// The file.
        path: PathBuf,
        /// Start again from the first frame after the last.
        looping: bool,
    },
    /// The synthetic scene.
    Synthetic(SyntheticConfig),
}

/// The forms `--source` accepts, for error messages.
pub const SPEC_FORMS: &str = "camera:INDEX[,width=W,height=H,fps=F], images:DIR[,loop], \
     video:FILE.y4m[,loop] or synthetic[:seed=N,width=W,height=H,rgb=on|off,anomalies=on|off,\
     fps=F,every=N,length=N,first=N]";

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
    let (mut width, mut height, mut fps) = (None, None, None);
    for (k, v) in key_values(opts)? {
        match k {
            "width" => width = Some(parse_num(k, v)?),
            "height" => height = Some(parse_num(k, v)?),
            "fps" => fps = Some(parse_num(k, v)?),
            _ => anyhow::bail!("unknown camera option {k:?}: expected width, height or fps"),
        }
    }
    Ok(SourceSpec::Camera {
        index,
        width,
        height,
        fps,
    })
}

fn parse_synthetic(opts: &str) -> Result<SourceSpec> {
    let mut c = SyntheticConfig::default();
    let mut schedule = c.anomalies.unwrap_or_default();
    let mut anomalies = c.anomalies.is_some();
    for (k, v) in key_values(opts)? {
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
            _ => anyhow::bail!(
                "unknown synthetic option {k:?}: expected seed, width, height, rgb, anomalies, \
                 fps, every, length or first"
            ),
        }
    }
    c.anomalies = anomalies.then_some(schedule);
    c.validate()?;
    Ok(SourceSpec::Synthetic(c))
}

impl FromStr for SourceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let spec =
            match kind {
                "camera" if rest.is_empty() => Ok(SourceSpec::Camera {
                    index: 0,
                    width: None,
                    height: None,
                    fps: None,
                }),
                "camera" => parse_camera(rest),
                "images" => path_and_loop(rest, kind)
                    .map(|(dir, looping)| SourceSpec::Images { dir, looping }),
                "video" => path_and_loop(rest, kind)
                    .map(|(path, looping)| SourceSpec::Video { path, looping }),
                "synthetic" => parse_synthetic(rest),
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
            } => {
                write!(f, "camera:{index}")?;
                for (k, v) in [("width", width), ("height", height), ("fps", fps)] {
                    if let Some(v) = v {
                        write!(f, ",{k}={v}")?;
                    }
                }
                Ok(())
            }
            SourceSpec::Images { dir, looping } => {
                write!(f, "images:{}{}", dir.display(), lp(*looping))
            }
            SourceSpec::Video { path, looping } => {
                write!(f, "video:{}{}", path.display(), lp(*looping))
            }
            SourceSpec::Synthetic(c) => write!(f, "{c}"),
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
    /// The driver's description.
    pub description: String,
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
        } => Box::new(camera::CameraSource::new(*index, *width, *height, *fps)),
        #[cfg(not(feature = "camera"))]
        SourceSpec::Camera { .. } => anyhow::bail!(NO_CAMERA_FEATURE),
        SourceSpec::Images { dir, looping } => Box::new(ImageSource::new(dir.clone(), *looping)),
        SourceSpec::Video { path, looping } => Box::new(VideoSource::new(path.clone(), *looping)),
        SourceSpec::Synthetic(config) => Box::new(SyntheticSource::new(config.clone())?),
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
            "images:frames",
            "images:frames/a b,loop",
            "video:clip.y4m",
            "video:clip.y4m,loop",
        ];
        for c in cases {
            let spec: SourceSpec = c.parse().unwrap();
            assert_eq!(spec.to_string(), c);
        }
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
            ("images:", "needs a path"),
            ("synthetic:seed=-1", "seed=-1"),
            ("synthetic:color=red", "unknown synthetic option"),
            ("synthetic:anomalies=maybe", "expected on or off"),
            ("synthetic:width=0", "width"),
            ("synthetic:every=10,length=20", "length"),
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
