//! A folder of image files as a frame source.

use std::path::{Path, PathBuf};

use super::{FrameInfo, FrameSource, SourceError, reshape};
use crate::frame::Frame;
use crate::imageio::{list_images, load_image};

/// The PNG/JPEG files below a folder (recursively), in sorted path order,
/// optionally starting again after the last. A file that cannot be read
/// gives [`SourceError::BadFrame`] naming it, and the next call moves on.
#[derive(Debug)]
pub struct ImageSource {
    dir: PathBuf,
    looping: bool,
    files: Vec<PathBuf>,
    pos: usize,
    next_index: u64,
}

impl ImageSource {
    /// A source over `dir`; the folder is listed by [`FrameSource::open`].
    pub fn new(dir: PathBuf, looping: bool) -> ImageSource {
        ImageSource {
            dir,
            looping,
            files: vec![],
            pos: 0,
            next_index: 0,
        }
    }

    /// The files found by the last `open`, in the order they are delivered.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl FrameSource for ImageSource {
    fn describe(&self) -> String {
        format!(
            "images:{} ({} files{})",
            self.dir.display(),
            self.files.len(),
            if self.looping { ", looping" } else { "" }
        )
    }

    /// Lists the folder again and starts from its first file.
    fn open(&mut self) -> Result<(), SourceError> {
        self.files =
            list_images(&self.dir).map_err(|e| SourceError::Disconnected(format!("{e:#}")))?;
        self.pos = 0;
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        if self.pos >= self.files.len() {
            if !self.looping || self.files.is_empty() {
                return Err(SourceError::Ended);
            }
            self.pos = 0;
        }
        let path = &self.files[self.pos];
        self.pos += 1;
        let index = self.next_index;
        self.next_index += 1;
        let img = load_image(path).map_err(|e| SourceError::BadFrame(format!("{e:#}")))?;
        reshape(frame, img.width, img.height, img.format);
        frame.data.copy_from_slice(&img.data);
        Ok(FrameInfo::unlabelled(index))
    }
}
