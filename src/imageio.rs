//! Reading image files (with limits against hostile headers), finding
//! images in folders, and writing files atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use crate::frame::{Frame, PixelFormat};

/// Largest width or height accepted from an image file.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation accepted for one image file, and the largest
/// image file read.
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;
/// File endings read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The first bytes of every PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The first bytes of every JPEG file (start of image, then a marker).
const JPEG_SIGNATURE: &[u8] = &[0xFF, 0xD8, 0xFF];

/// Reads a PNG or JPEG file as a gray frame (gray files) or an RGB frame
/// (everything else; alpha is dropped).
pub fn load_image(path: &Path) -> Result<Frame> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    // One byte more than the limit tells a file that is too large.
    let mut bytes = vec![];
    file.take(MAX_IMAGE_ALLOC + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if bytes.len() as u64 > MAX_IMAGE_ALLOC {
        bail!(
            "{} is larger than {} MiB: too large for an image of at most {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels",
            path.display(),
            MAX_IMAGE_ALLOC >> 20
        );
    }
    decode_image(&bytes, path)
}

/// Decodes the bytes of a PNG or JPEG file, as [`load_image`] does a file
/// (`name` names it in errors), with the same limits.
pub fn decode_image(bytes: &[u8], name: &Path) -> Result<Frame> {
    if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes).map_err(|e| anyhow::anyhow!("{} {e:#}", name.display()))
    } else if bytes.starts_with(JPEG_SIGNATURE) {
        let mut frame = Frame::empty();
        decode_jpeg_into(bytes, &mut frame).map_err(|e| match e {
            ImageError::TooLarge(d) => anyhow::anyhow!(
                "{} declares an image too large to decode ({d}); the limit is {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels",
                name.display()
            ),
            ImageError::Bad(d) => {
                anyhow::anyhow!("{} is not a readable PNG or JPEG image: {d}", name.display())
            }
        })?;
        Ok(frame)
    } else {
        bail!(
            "{} is not a readable PNG or JPEG image: it starts with neither format's signature",
            name.display()
        )
    }
}

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Its header declares more pixels than the limits allow.
    #[error("{0}")]
    TooLarge(String),
    /// It is not a valid image of its format.
    #[error("{0}")]
    Bad(String),
}

/// Decodes a PNG file's bytes (every bit depth, palette and alpha reduced to
/// 8-bit gray or RGB, as 8-bit samples rounded from 16-bit ones).
fn decode_png(bytes: &[u8]) -> Result<Frame> {
    // The header chunk comes first (signature, length, "IHDR", width,
    // height): its size is checked before the decoder reads any further.
    if let (Some(b"IHDR"), Some(w), Some(h)) = (
        bytes.get(12..16),
        bytes.get(16..20).and_then(|b| b.try_into().ok()),
        bytes.get(20..24).and_then(|b| b.try_into().ok()),
    ) {
        let (w, h) = (u32::from_be_bytes(w), u32::from_be_bytes(h));
        if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
            bail!(
                "declares an image too large to decode ({w}×{h}); the limit is {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels"
            );
        }
    }
    let limits = png::Limits {
        bytes: MAX_IMAGE_ALLOC as usize,
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    // Palettes and gray below 8 bits become 8-bit; 16-bit samples are
    // rounded to 8 bits below (stripping would truncate them).
    decoder.set_transformations(png::Transformations::EXPAND);
    let bad = |e: png::DecodingError| match e {
        png::DecodingError::LimitsExceeded => anyhow::anyhow!(
            "declares an image too large to decode; the limit is {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels"
        ),
        other => anyhow::anyhow!("not a readable PNG or JPEG image: {other}"),
    };
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        bail!(
            "declares an image too large to decode ({width}×{height}); the limit is {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels"
        );
    }
    let size = reader
        .output_buffer_size()
        .filter(|&s| s as u64 <= MAX_IMAGE_ALLOC)
        .context("declares an image too large to decode")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let samples = info.color_type.samples();
    let line = info.line_size;
    let wide = info.bit_depth == png::BitDepth::Sixteen;
    let (format, keep) = match info.color_type {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => (PixelFormat::Gray8, 1),
        _ => (PixelFormat::Rgb8, 3),
    };
    let mut data = Vec::with_capacity(w * h * keep);
    for row in buf.chunks(line).take(h) {
        if wide {
            for px in row[..w * samples * 2].chunks_exact(samples * 2) {
                for s in px[..keep * 2].chunks_exact(2) {
                    let v = u16::from_be_bytes([s[0], s[1]]) as u32;
                    data.push(((v + 128) / 257) as u8);
                }
            }
        } else {
            for px in row[..w * samples].chunks_exact(samples) {
                data.extend_from_slice(&px[..keep]);
            }
        }
    }
    Ok(Frame {
        width: w,
        height: h,
        format,
        data,
    })
}

/// Decodes a JPEG image into `frame`'s buffer (gray stays gray, every other
/// colour space becomes RGB), refusing images larger than the limits before
/// anything is allocated for their pixels.
pub fn decode_jpeg_into(bytes: &[u8], frame: &mut Frame) -> Result<(), ImageError> {
    let side = MAX_IMAGE_SIDE as usize;
    let options = DecoderOptions::default()
        .set_max_width(side)
        .set_max_height(side);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| {
        let text = e.to_string();
        if text.contains("width") || text.contains("height") {
            ImageError::TooLarge(text)
        } else {
            ImageError::Bad(text)
        }
    })?;
    let info = decoder
        .info()
        .ok_or_else(|| ImageError::Bad("no image header".into()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let (format, space) = match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => (PixelFormat::Gray8, ColorSpace::Luma),
        _ => (PixelFormat::Rgb8, ColorSpace::RGB),
    };
    decoder.set_options(options.jpeg_set_out_colorspace(space));
    let need = w * h * format.bytes_per_pixel();
    if w == 0 || h == 0 || need as u64 > MAX_IMAGE_ALLOC {
        return Err(ImageError::TooLarge(format!("{w}×{h}")));
    }
    frame.width = w;
    frame.height = h;
    frame.format = format;
    frame.data.resize(need, 0);
    decoder
        .decode_into(&mut frame.data)
        .map_err(|e| ImageError::Bad(e.to_string()))
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
        PixelFormat::Gray8 => png::ColorType::Grayscale,
        PixelFormat::Rgb8 => png::ColorType::Rgb,
    };
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut w| w.write_image_data(data))
        .context("encoding PNG")?;
    Ok(out)
}

/// JPEG quality of the snapshots and the web view's pictures.
pub const JPEG_QUALITY: u8 = 80;

/// Encodes RGB rows as a JPEG (quality [`JPEG_QUALITY`]): MQTT's snapshot
/// and the web view (features `mqtt`, `http`).
#[cfg(any(feature = "mqtt", feature = "http"))]
pub fn encode_jpeg(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    anyhow::ensure!(
        width > 0 && height > 0 && width <= 65535 && height <= 65535,
        "a snapshot of {width}x{height} cannot be a JPEG"
    );
    anyhow::ensure!(
        rgb.len() == width * height * 3,
        "the snapshot's buffer does not match its size"
    );
    let mut out = Vec::with_capacity(rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY)
        .encode(
            rgb,
            width as u16,
            height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .context("encoding the snapshot as JPEG")?;
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
    fn sixteen_bit_png_is_rounded_to_eight_bits() {
        let mut bytes = vec![];
        let mut enc = png::Encoder::new(&mut bytes, 3, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        let samples: Vec<u8> = [0u16, 32_896, 65_535]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        enc.write_header()
            .unwrap()
            .write_image_data(&samples)
            .unwrap();
        let f = decode_image(&bytes, Path::new("g16.png")).unwrap();
        assert_eq!((f.width, f.height, f.format), (3, 1, PixelFormat::Gray8));
        assert_eq!(f.data, [0, 128, 255]);
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
