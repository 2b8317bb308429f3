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
    check_output(&args.output, args.force)?;
    let mut source = open_source(&spec)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
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
        let name = format!("frame_{written:0digits$}.png");
        let png = encode_png(
            frame.width as u32,
            frame.height as u32,
            frame.format,
            &frame.data,
        )?;
        let path = args.output.join(&name);
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(t) = truth {
            let label = t.map_or("normal", |k| k.name());
            labels.push_str(&format!("{name},{},{label}\n", info.index));
        }
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
    let mut summary = format!(
        "wrote {written} frames ({}x{} {}) to {} from {} ({read} frames read",
        frame.width,
        frame.height,
        frame.format.name(),
        args.output.display(),
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
    Ok(())
}
