//! `bvae bench MODEL`: latency of each stage and end to end.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::frame::{FrameRef, PixelFormat};
use crate::model::{Decoder, Model, OpTime, PlanKind, Runtime, RuntimeOptions, Session};
use crate::pipeline::Pipeline;
use crate::preprocess::{Fit, Preprocessor};
use crate::score::{Method, Scorer};
use crate::stats::quantile_sorted;

/// Arguments of `bvae bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// Decoder for the decode stage [default: NAME.decoder.onnx next to the model].
    #[arg(long, short)]
    pub decoder: Option<PathBuf>,
    /// Calibration profile: end to end uses its default score (else `kl`).
    #[arg(long, short)]
    pub calibration: Option<PathBuf>,
    /// Timed runs per stage.
    #[arg(long, short = 'n', default_value_t = 300)]
    pub iterations: usize,
    /// Untimed runs before timing each stage.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Batch size of the batched full pass (per-frame time reported).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Width of the synthetic RGB camera frame.
    #[arg(long, default_value_t = 640)]
    pub frame_width: usize,
    /// Height of the synthetic RGB camera frame.
    #[arg(long, default_value_t = 480)]
    pub frame_height: usize,
    /// Threads for inference (a team sharing bvae's kernels; on CPUs
    /// without them, a pool for tract's matrix products).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run convolutions with tract's own operators instead of bvae's
    /// kernels, to compare the two (as `BVAE_KERNELS=tract` does).
    #[arg(long)]
    pub tract_conv: bool,
    /// Only the inference stages (encode, full pass, batched full pass) and
    /// load to first result: what `python -m bvae_tools bench` compares
    /// with onnxruntime.
    #[arg(long)]
    pub inference_only: bool,
    /// Also measure the core's peak GFLOP/s for the kernel variant in use
    /// (a loop of independent multiply-adds on its vector registers, one
    /// thread).
    #[arg(long)]
    pub peak: bool,
    /// Also time each operator of the full pass (median over the runs):
    /// where the time goes, layer by layer.
    #[arg(long)]
    pub layers: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Timing of one stage, in milliseconds per frame.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    /// Stable identifier: `preprocess`, `encode`, `encode_batch`, `full`,
    /// `full_batch`, `decode`, `score`, `e2e`.
    pub key: &'static str,
    /// Stage name.
    pub stage: String,
    /// Fastest run.
    pub min_ms: f64,
    /// Median run.
    pub median_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Frames per second at the median.
    pub fps: f64,
}

fn time_stage(
    key: &'static str,
    name: &str,
    warmup: usize,
    iterations: usize,
    per_call_frames: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<StageTiming> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(iterations);
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3 / per_call_frames as f64);
    }
    ms.sort_by(f64::total_cmp);
    let median = quantile_sorted(&ms, 0.5);
    Ok(StageTiming {
        key,
        stage: name.to_string(),
        min_ms: ms[0],
        median_ms: median,
        p99_ms: quantile_sorted(&ms, 0.99),
        fps: 1e3 / median,
    })
}

/// A session of a `kind` plan for `batch` images, each of them `input`.
fn session_on(model: &Model, kind: PlanKind, batch: usize, input: &[f32]) -> Result<Session> {
    let mut session = model.plan(kind, batch)?.session()?;
    for image in session.input_mut()?.chunks_mut(input.len()) {
        image.copy_from_slice(input);
    }
    Ok(session)
}

/// A deterministic, textured RGB test frame.
pub fn test_frame(width: usize, height: usize) -> Vec<u8> {
    let mut data = vec![0u8; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let i = (y * width + x) * 3;
            data[i] = ((x * 255) / width.max(1)) as u8;
            data[i + 1] = ((y * 255) / height.max(1)) as u8;
            data[i + 2] = (((x / 16 + y / 16) % 2) * 200) as u8;
        }
    }
    data
}

/// Runs `bvae bench`.
pub fn run(args: Args) -> Result<()> {
    let runtime = Runtime::new(RuntimeOptions {
        threads: super::threads_flag(args.threads as u64)?,
        kernels: if args.tract_conv {
            crate::kernels::Kernels::Tract
        } else {
            crate::kernels::Kernels::from_env()?
        },
    })?;
    let (w, h) = (args.frame_width, args.frame_height);
    let data = test_frame(w, h);
    let frame = FrameRef::new(w, h, PixelFormat::Rgb8, &data)?;
    // Load to first result, as `bvae watch` does it: read and check the
    // model and the profile, plan for the profile's default score, and
    // process one camera frame.
    let load_start = Instant::now();
    let model = super::load_model(&args.model)?.with_runtime(runtime);
    let spec = model.spec().clone();
    let profile = match &args.calibration {
        Some(p) => Some(super::load_profile(p, &model)?),
        None => None,
    };
    let fit = profile.as_ref().map_or(Fit::Crop, |p| p.fit);
    let method = profile.as_ref().map_or(Method::Kl, |p| p.method);
    let kind = PlanKind::needed(method.needs_recon());
    let reference = profile.as_ref().map(|p| p.reference()).transpose()?;
    // With a tiled profile, end to end scores every tile of its grid.
    let mut pipe = match &profile {
        Some(p) => Pipeline::for_profile(&model, kind, p, method)?,
        None => Pipeline::new(&model, kind, fit, reference.clone())?,
    };
    std::hint::black_box(pipe.process(frame)?);
    let first_result_ms = load_start.elapsed().as_secs_f64() * 1e3;

    let mut input = vec![0.0f32; spec.image_len()];
    let mut pre = Preprocessor::new(&spec, fit);
    pre.process(frame, &mut input)?;
    let (n, wu) = (args.iterations, args.warmup);
    let mut stages = vec![];
    if !args.inference_only {
        stages.push(time_stage(
            "preprocess",
            &format!("preprocess {w}x{h} RGB"),
            wu,
            n,
            1,
            || pre.process(frame, &mut input),
        )?);
    }

    let mut enc = session_on(&model, PlanKind::EncoderOnly, 1, &input)?;
    stages.push(time_stage(
        "encode",
        "encode (encoder-only plan)",
        wu,
        n,
        1,
        || Ok(enc.run()?),
    )?);
    let mut full = session_on(&model, PlanKind::Full, 1, &input)?;
    stages.push(time_stage(
        "full",
        "full pass (mu, logvar, recon)",
        wu,
        n,
        1,
        || Ok(full.run()?),
    )?);
    if args.batch > 1 && spec.max_batch.is_none() {
        for (key, kind, what) in [
            ("encode_batch", PlanKind::EncoderOnly, "encode"),
            ("full_batch", PlanKind::Full, "full pass"),
        ] {
            let mut fb = session_on(&model, kind, args.batch, &input)?;
            let name = format!("{what}, batch {} (per frame)", args.batch);
            stages.push(time_stage(
                key,
                &name,
                wu,
                n.div_ceil(args.batch).max(10),
                args.batch,
                || Ok(fb.run()?),
            )?);
        }
    }
    let layers = if args.layers {
        full.profile(n.max(1))?
    } else {
        vec![]
    };
    if args.inference_only {
        return report(&args, &model, first_result_ms, &stages, &layers);
    }
    if let Some(dp) = args
        .decoder
        .clone()
        .or_else(|| super::sibling_decoder(&args.model))
    {
        let mut dec = Decoder::load(&dp, &model, 1)
            .with_context(|| format!("loading decoder {}", dp.display()))?;
        let z = enc.mu()?.to_vec();
        let mut out = vec![0.0f32; spec.image_len()];
        stages.push(time_stage(
            "decode",
            "decode (decoder model)",
            wu,
            n,
            1,
            || Ok(dec.decode(&z, &mut out)?),
        )?);
    }
    let mut scorer = Scorer::new(&spec, reference);
    let (mu, lv) = (full.mu()?.to_vec(), full.logvar()?.to_vec());
    let recon = full.recon()?.map(|r| r.to_vec());
    stages.push(time_stage("score", "score (all scores)", wu, n, 1, || {
        std::hint::black_box(scorer.score(&input, &mu, &lv, recon.as_deref()));
        Ok(())
    })?);
    let mut meter = crate::noise::NoiseMeter::new();
    stages.push(time_stage(
        "noise",
        &format!("sensor noise check ({w}x{h} frame)"),
        wu,
        n,
        1,
        || {
            std::hint::black_box(meter.measure(frame));
            Ok(())
        },
    )?);
    let e2e_name = match pipe.grid() {
        Some(g) => format!(
            "end to end ({w}x{h} RGB as {g} tiles → {method} score; per tile: ÷{})",
            g.count()
        ),
        None => format!("end to end ({w}x{h} RGB → {method} score)"),
    };
    stages.push(time_stage("e2e", &e2e_name, wu, n, 1, || {
        std::hint::black_box(pipe.process(frame)?);
        Ok(())
    })?);

    report(&args, &model, first_result_ms, &stages, &layers)
}

fn report(
    args: &Args,
    model: &Model,
    first_result_ms: f64,
    stages: &[StageTiming],
    layers: &[OpTime],
) -> Result<()> {
    let spec = model.spec();
    let kernels = model.runtime().kernels();
    let peak = match (args.peak, kernels.isa()) {
        (true, Some(isa)) => crate::kernels::peak_gflops(isa),
        _ => None,
    };
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "threads": args.threads,
            "kernels": kernels.to_string(),
            "load_ms": model.load_time().as_secs_f64() * 1e3,
            "load_to_first_result_ms": first_result_ms,
            "stages": stages,
            "peak_gflops": peak,
            "layers": layers.iter().map(|l| serde_json::json!({
                "name": l.name,
                "op": l.op,
                "info": l.info,
                "median_ms": l.median.as_secs_f64() * 1e3,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "model {} ({}×{}×{}, Z={}), {} thread{}, {kernels} kernels",
        args.model.display(),
        spec.channels,
        spec.height,
        spec.width,
        spec.latent_dim,
        args.threads,
        if args.threads == 1 { "" } else { "s" }
    );
    println!(
        "load {:.1} ms, load to first result {:.1} ms",
        model.load_time().as_secs_f64() * 1e3,
        first_result_ms
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "stage", "min ms", "median", "p99", "fps"
    );
    for s in stages {
        println!(
            "{:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.0}",
            s.stage, s.min_ms, s.median_ms, s.p99_ms, s.fps
        );
    }
    if !layers.is_empty() {
        let total: f64 = layers.iter().map(|l| l.median.as_secs_f64()).sum();
        println!(
            "full pass by operator (median µs, share of their sum {:.3} ms):",
            total * 1e3
        );
        for l in layers {
            let us = l.median.as_secs_f64() * 1e6;
            println!(
                "{:>9.1} {:>5.1}%  {:<12} {}",
                us,
                100.0 * l.median.as_secs_f64() / total.max(1e-12),
                l.op,
                if l.info.is_empty() { &l.name } else { &l.info }
            );
        }
    }
    match (args.peak, peak) {
        (true, Some(p)) => {
            println!("core peak ({kernels} multiply-add loop, one thread): {p:.0} GFLOP/s")
        }
        (true, None) => println!("core peak: not measured (tract's operators run, not bvae's)"),
        _ => {}
    }
    Ok(())
}
