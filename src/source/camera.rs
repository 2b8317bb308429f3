//! V4L2 cameras through `nokhwa` (cargo feature `camera`).
//!
//! The camera is asked for MJPEG at the requested size and rate (640×480
//! at 30 fps unless given), and nokhwa picks the closest mode it has.
//! Frames are decoded here, into the caller's buffer: MJPEG, YUYV and NV12
//! (BT.601, limited range, as webcams send), gray and RGB. A frame that
//! fails to decode, or whose decoder panics, is a
//! [`SourceError::BadFrame`]; a failed capture is
//! [`SourceError::Disconnected`] (the loop reopens the camera).
//!
//! nokhwa's capture call blocks until the driver hands over a frame, so a
//! stalled camera shows as no frame at all: the live loop's watchdog, not
//! this source, notices it.

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::decode::{
    Range, catch_decoder_panic, copy_packed, decode_mjpeg, decode_nv12, decode_yuyv,
};
use super::{CameraDescription, FrameInfo, FrameSource, SourceError};
use crate::frame::{Frame, PixelFormat};

/// Size and rate asked for when the spec gives none.
pub const DEFAULT_MODE: (u32, u32, u32) = (640, 480, 30);

/// The cameras the system has (empty when there are none).
pub fn list_cameras() -> anyhow::Result<Vec<CameraDescription>> {
    let found = std::panic::catch_unwind(|| nokhwa::query(ApiBackend::Auto))
        .map_err(|_| anyhow::anyhow!("listing cameras failed (the camera library panicked)"))?
        .map_err(|e| anyhow::anyhow!("cannot list cameras: {e}"))?;
    Ok(found
        .into_iter()
        .map(|c| CameraDescription {
            index: c.index().to_string(),
            name: c.human_name(),
            description: c.description().to_string(),
        })
        .collect())
}

/// A V4L2 camera as a frame source.
pub struct CameraSource {
    index: usize,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    camera: Option<Camera>,
    next_index: u64,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("index", &self.index)
            .field("open", &self.camera.is_some())
            .finish()
    }
}

impl CameraSource {
    /// A source for `/dev/video{index}`; the device is opened by
    /// [`FrameSource::open`].
    pub fn new(
        index: usize,
        width: Option<u32>,
        height: Option<u32>,
        fps: Option<u32>,
    ) -> CameraSource {
        CameraSource {
            index,
            width,
            height,
            fps,
            camera: None,
            next_index: 0,
        }
    }

    fn open_camera(&self) -> Result<Camera, String> {
        let (dw, dh, dfps) = DEFAULT_MODE;
        let want = CameraFormat::new(
            Resolution::new(self.width.unwrap_or(dw), self.height.unwrap_or(dh)),
            FrameFormat::MJPEG,
            self.fps.unwrap_or(dfps),
        );
        let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(want));
        let index = u32::try_from(self.index).map_err(|e| e.to_string())?;
        let mut camera =
            Camera::new(CameraIndex::Index(index), request).map_err(|e| e.to_string())?;
        camera.open_stream().map_err(|e| e.to_string())?;
        Ok(camera)
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        match &self.camera {
            Some(c) => {
                let f = c.camera_format();
                format!(
                    "camera:{} ({}, {}x{} {} at {} fps)",
                    self.index,
                    c.info().human_name(),
                    f.width(),
                    f.height(),
                    f.format(),
                    f.frame_rate()
                )
            }
            None => format!("camera:{}", self.index),
        }
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.camera = None;
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.open_camera()))
            .unwrap_or_else(|_| Err("the camera library panicked".to_string()));
        let camera = opened.map_err(|e| {
            SourceError::Disconnected(format!("cannot open camera {}: {e}", self.index))
        })?;
        self.camera = Some(camera);
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        let Some(camera) = self.camera.as_mut() else {
            return Err(SourceError::Disconnected(format!(
                "camera {} is not open",
                self.index
            )));
        };
        let format = camera.frame_format();
        let res = camera.resolution();
        let (w, h) = (res.width() as usize, res.height() as usize);
        let raw = match camera.frame_raw() {
            Ok(raw) => raw,
            Err(e) => {
                self.camera = None;
                return Err(SourceError::Disconnected(format!(
                    "camera {}: {e}",
                    self.index
                )));
            }
        };
        let index = self.next_index;
        self.next_index += 1;
        catch_decoder_panic(&format.to_string(), || match format {
            FrameFormat::MJPEG => decode_mjpeg(&raw, frame),
            FrameFormat::YUYV => decode_yuyv(&raw, w, h, Range::Limited, frame),
            FrameFormat::NV12 => decode_nv12(&raw, w, h, Range::Limited, frame),
            FrameFormat::GRAY => copy_packed(&raw, w, h, PixelFormat::Gray8, frame),
            FrameFormat::RAWRGB => copy_packed(&raw, w, h, PixelFormat::Rgb8, frame),
            FrameFormat::RAWBGR => {
                copy_packed(&raw, w, h, PixelFormat::Rgb8, frame)?;
                for px in frame.data.chunks_exact_mut(3) {
                    px.swap(0, 2);
                }
                Ok(())
            }
        })?;
        Ok(FrameInfo::unlabelled(index))
    }
}
