//! `bvae record --source S --frames N -o DIR`: saves frames as PNG files
//! for training.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::frame::Frame;
use crate::imageio::encode_png;
use crate::source::{SourceError, SourceSpec, open_source};

/// Consecutive undecodable frames after which recording stops.
pub const MAX_BAD_IN_A_ROW: usize = 100;
/// Longest wait for a frame before recording gives up on a silent source.
pub const MAX_WAIT_FOR_FRAME: std::time::Duration = std::time::Duration::from_secs(10);

/// Arguments of `bvae record`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where frames come from: camera:INDEX[,format=F,width=W,height=H,fps=R],
    /// images:DIR[,loop], video:FILE.y4m|-[,loop][,pace=on|off][,fps=N],
    /// synthetic[:seed=N,width=W,height=H,rgb=on,anomalies=off,...] or
    /// photos:DIR[,seed=N,width=W,height=H,...].
    /// Frames are read as fast as the source gives them (the rendered scenes
    /// and video files are not paced unless the spec asks).
    #[arg(long, short)]
    pub source: SourceSpec,
    /// Number of PNG files to write.
    #[arg(long, short = 'n')]
    pub frames: usize,
    /// Output folder (created if missing); files are frame_000000.png, ...
    #[arg(long, short)]
    pub output: PathBuf,
    /// Keep every K-th frame the source delivers (1 = all).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    /// Save only frames the source knows are normal (needs ground truth:
    /// the synthetic and photos sources). On by default for those, since
    /// recordings are training data.
    #[arg(long, conflicts_with = "keep_anomalies")]
    pub normal_only: bool,
    /// Also save the synthetic or photos scene's anomaly frames (labels.csv
    /// says which they are).
    #[arg(long)]
    pub keep_anomalies: bool,
    /// Write into an output folder that is not empty (files with the same
    /// names are replaced).
    #[arg(long)]
    pub force: bool,
    /// Split the frames into OUTPUT/train (for `train`) and OUTPUT/calib
    /// (for `bvae calibrate`), this fraction to calibration. Frames go in
    /// blocks of --block consecutive saved frames, the calibration blocks
    /// spread evenly over the recording, so calibration sees the whole
    /// recording's drift but not the near-copies of training frames.
    #[arg(long, value_parser = parse_fraction)]
    pub calibration: Option<f64>,
    /// Saved frames per block of the --calibration split.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub block: u64,
}

/// The folders of a `--calibration` split, under the output folder.
const SPLIT: [&str; 2] = ["train", "calib"];

/// Parses a fraction strictly between 0 and 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number; give a fraction such as 0.2"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not between 0 and 1 (exclusive); 0.2 sends a fifth of the frames to calibration"
        ))
    }
}

/// Whether block `b` of a recording goes to calibration when a fraction
/// `f` does: blocks where `floor((b + 1)·f)` steps up, which spreads them
/// evenly (f = 0.2: blocks 4, 9, 14, ...).
pub fn calibration_block(b: u64, f: f64) -> bool {
    ((b + 1) as f64 * f).floor() > (b as f64 * f).floor()
}

/// Checks that `dir` is missing or empty (or `force`).
fn check_output(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!("{} exists and is not a folder", dir.display());
        }
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        if entries.next().is_some() && !force {
            bail!(
                "{} is not empty: choose a new folder, or pass --force to write into it \
                 (files with the same names are replaced)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Runs `bvae record`.
pub fn run(args: Args) -> Result<()> {
    if args.frames == 0 {
        bail!("--frames 0: nothing to record; give the number of frames to save");
    }
    let mut spec = args.source.clone();
    // A rendered scene knows every frame's truth; it is recorded unpaced.
    let labelled = spec.scene().is_some();
    if let Some(c) = spec.scene_mut() {
        c.frame_period = None;
    }
    // A video file is copied as fast as it decodes unless its spec asks
    // for a pace; recording it in real time would only be slower.
    if let SourceSpec::Video {
        pace: pace @ crate::source::y4m::Pace::Auto,
        fps: None,
        ..
    } = &mut spec
    {
        *pace = crate::source::y4m::Pace::Off;
    }
    if args.normal_only && !labelled {
        bail!(
            "--normal-only needs a source that knows which frames are normal; only the \
             synthetic and photos sources do (found {spec})"
        );
    }
    let normal_only = args.normal_only || (labelled && !args.keep_anomalies);
    if let Some(f) = args.calibration {
        let blocks = (args.frames as u64).div_ceil(args.block);
        if !(0..blocks).any(|b| calibration_block(b, f)) {
            bail!(
                "--frames {} in blocks of {} make {blocks} blocks, too few for a calibration \
                 share of {f}: record more frames or give a smaller --block",
                args.frames,
                args.block
            );
        }
    }
    check_output(&args.output, args.force)?;
    let mut source = open_source(&spec)?;
    let folders: Vec<PathBuf> = match args.calibration {
        Some(_) => SPLIT.iter().map(|d| args.output.join(d)).collect(),
        None => vec![args.output.clone()],
    };
    for d in &folders {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut per_folder = vec![0usize; folders.len()];
    let digits = (args.frames.saturating_sub(1)).to_string().len().max(6);
    let mut frame = Frame::empty();
    let mut labels = String::new();
    let (mut written, mut read, mut skipped_anomalies, mut bad, mut bad_in_a_row) =
        (0usize, 0u64, 0u64, 0usize, 0usize);
    let mut ended = false;
    let mut last_frame = std::time::Instant::now();
    let pb = super::progress_bar(args.frames, "recording");
    while written < args.frames {
        let info = match source.next_frame(&mut frame) {
            Ok(info) => info,
            Err(SourceError::BadFrame(e)) => {
                bad += 1;
                bad_in_a_row += 1;
                pb.suspend(|| eprintln!("warning: skipped a frame: {e}"));
                if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    bail!(
                        "{bad_in_a_row} frames in a row could not be decoded from {}; stopping",
                        source.describe()
                    );
                }
                continue;
            }
            Err(SourceError::Ended) => {
                ended = true;
                break;
            }
            Err(SourceError::Timeout) => {
                // a camera that has not sent a frame yet, or has stalled
                if last_frame.elapsed() >= MAX_WAIT_FOR_FRAME {
                    bail!(
                        "{} sent no frame for {} s after {written} saved frames; check the \
                         camera, or another program using it",
                        source.describe(),
                        MAX_WAIT_FOR_FRAME.as_secs()
                    );
                }
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("reading {} after {written} saved frames", source.describe())
                });
            }
        };
        bad_in_a_row = 0;
        last_frame = std::time::Instant::now();
        read += 1;
        if (read - 1) % args.every != 0 {
            continue;
        }
        let truth = info.truth;
        if normal_only && matches!(truth, Some(Some(_))) {
            skipped_anomalies += 1;
            continue;
        }
        let folder = match args.calibration {
            Some(f) => usize::from(calibration_block(written as u64 / args.block, f)),
            None => 0,
        };
        let file = format!("frame_{written:0digits$}.png");
        let png = encode_png(
            frame.width as u32,
            frame.height as u32,
            frame.format,
            &frame.data,
        )?;
        let path = folders[folder].join(&file);
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(t) = truth {
            let label = t.map_or("normal", |k| k.name());
            let name = match args.calibration {
                Some(_) => format!("{}/{file}", SPLIT[folder]),
                None => file,
            };
            labels.push_str(&format!("{name},{},{label}\n", info.index));
        }
        per_folder[folder] += 1;
        written += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    if !labels.is_empty() {
        let path = args.output.join("labels.csv");
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(b"file,index,truth\n")
            .and_then(|()| f.write_all(labels.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let to = match args.calibration {
        Some(_) => format!(
            "{} (training {}, calibration {}, in blocks of {})",
            args.output.display(),
            per_folder[0],
            per_folder[1],
            args.block
        ),
        None => args.output.display().to_string(),
    };
    let mut summary = format!(
        "wrote {written} frames ({}x{} {}) to {to} from {} ({read} frames read",
        frame.width,
        frame.height,
        frame.format.name(),
        source.describe(),
    );
    if skipped_anomalies > 0 {
        summary.push_str(&format!(", {skipped_anomalies} anomaly frames skipped"));
    }
    if bad > 0 {
        summary.push_str(&format!(", {bad} undecodable frames skipped"));
    }
    summary.push(')');
    if ended && written < args.frames {
        summary.push_str(&format!(
            "; the source ended before {} frames (add ,loop to the source to go round again)",
            args.frames
        ));
    }
    println!("{summary}");
    if written == 0 {
        bail!("no frames were saved");
    }
    if args.calibration.is_some() && per_folder[1] == 0 {
        bail!(
            "no frame went to calibration: {written} frames make fewer blocks of {} than the \
             split needs; record more frames or give a smaller --block",
            args.block
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_blocks_are_spread_evenly() {
        let pick =
            |f: f64, n: u64| -> Vec<u64> { (0..n).filter(|&b| calibration_block(b, f)).collect() };
        assert_eq!(pick(0.2, 15), vec![4, 9, 14]);
        assert_eq!(pick(0.5, 6), vec![1, 3, 5]);
        for f in [0.1, 0.25, 0.3, 0.9] {
            let n = 1000;
            let k = pick(f, n).len() as f64;
            assert!((k / n as f64 - f).abs() < 0.002, "{f}: {k}");
        }
        assert!(parse_fraction("0").is_err() && parse_fraction("1").is_err());
        assert!(parse_fraction("x").is_err());
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
    }
}
