//! Reading image files (with limits against hostile headers), finding
//! images in folders, and writing files atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::{DynamicImage, ImageReader, Limits};

use crate::frame::{Frame, PixelFormat};

/// Largest width or height accepted from an image file.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation accepted for one image file.
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;
/// File endings read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads a PNG or JPEG file as a gray frame (gray files) or an RGB frame
/// (everything else; alpha is dropped).
pub fn load_image(path: &Path) -> Result<Frame> {
    let reader =
        ImageReader::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    decode_reader(reader, path)
}

/// Decodes the bytes of a PNG or JPEG file, as [`load_image`] does a file
/// (`name` names it in errors), with the same limits.
pub fn decode_image(bytes: &[u8], name: &Path) -> Result<Frame> {
    decode_reader(ImageReader::new(std::io::Cursor::new(bytes)), name)
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
) -> Result<Frame> {
    let reader = reader
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if reader.format().is_none() {
        bail!(
            "{} is not an image: expected a PNG or JPEG file",
            path.display()
        );
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut reader = reader;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => anyhow::anyhow!(
            "{} declares an image too large to decode ({l}); the limit is {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels",
            path.display()
        ),
        other => anyhow::anyhow!("{} is not a readable PNG or JPEG image: {other}", path.display()),
    })?;
    Ok(frame_from_image(img))
}

/// Converts a decoded image to a frame.
pub fn frame_from_image(img: DynamicImage) -> Frame {
    let (width, height) = (img.width() as usize, img.height() as usize);
    match img {
        DynamicImage::ImageLuma8(g) => Frame {
            width,
            height,
            format: PixelFormat::Gray8,
            data: g.into_raw(),
        },
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => Frame {
            width,
            height,
            format: PixelFormat::Gray8,
            data: img.to_luma8().into_raw(),
        },
        other => Frame {
            width,
            height,
            format: PixelFormat::Rgb8,
            data: other.to_rgb8().into_raw(),
        },
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// Image files below `dir` (recursively), sorted by path. Errors on a
/// missing folder or one with no images.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder: expected a folder of PNG or JPEG images",
            dir.display()
        );
    }
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let p = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        bail!(
            "{} holds no images: expected files ending in .png, .jpg or .jpeg (searched recursively)",
            dir.display()
        );
    }
    out.sort();
    Ok(out)
}

/// Expands command-line arguments: files are kept, folders become their images.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            out.extend(list_images(p)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images given");
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder
/// is written, flushed to disk and renamed over `path`, so a crash or power
/// cut leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Encodes 8-bit pixels as PNG bytes.
pub fn encode_png(width: u32, height: u32, format: PixelFormat, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![];
    let color = match format {
        PixelFormat::Gray8 => image::ExtendedColorType::L8,
        PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
    };
    let enc = image::codecs::png::PngEncoder::new(&mut out);
    image::ImageEncoder::write_image(enc, data, width, height, color).context("encoding PNG")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn png_round_trip_and_non_images() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        let data: Vec<u8> = (0..12).collect();
        std::fs::write(&p, encode_png(2, 2, PixelFormat::Rgb8, &data).unwrap()).unwrap();
        let f = load_image(&p).unwrap();
        assert_eq!((f.width, f.height, f.format), (2, 2, PixelFormat::Rgb8));
        assert_eq!(f.data, data);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"this is text").unwrap();
        let e = format!("{:#}", load_image(&bad).unwrap_err());
        assert!(
            e.contains("not an image") || e.contains("not a readable PNG or JPEG image"),
            "{e}"
        );
        assert!(list_images(&dir.path().join("missing")).is_err());
    }
}
