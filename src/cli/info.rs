//! `bvae info MODEL`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::meta::ACTIVE_KL_NATS;

/// Arguments of `bvae info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bvae info`.
pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let kernels = crate::kernels::Kernels::from_env()?;
    let runs: Vec<&str> = crate::kernels::Isa::available()
        .into_iter()
        .map(|i| i.name())
        .chain(["tract"])
        .collect();
    let s = model.spec();
    let m = model.meta();
    let active = s.active_latents();
    if args.json {
        let ports = |ps: &[crate::model::Port]| {
            ps.iter()
                .map(|p| json!({"name": p.name, "dtype": p.dtype, "shape": p.shape_text()}))
                .collect::<Vec<_>>()
        };
        let out = json!({
            "model": model.path(),
            "sha256": model.sha256(),
            "inputs": ports(model.inputs()),
            "outputs": ports(model.outputs()),
            "channels": s.channels,
            "height": s.height,
            "width": s.width,
            "latent_dim": s.latent_dim,
            "likelihood": s.likelihood,
            "objective": s.objective,
            "beta": s.beta,
            "gamma": m.gamma,
            "capacity_max": m.capacity_max,
            "latent_kl": s.latent_kl,
            "latent_names": s.latent_names,
            "active_latents": active,
            "active_threshold_nats": ACTIVE_KL_NATS,
            "dataset": m.dataset,
            "illumination_mean": s.illumination,
            "steps": m.steps,
            "seed": m.seed,
            "max_batch": s.max_batch,
            "decoder": super::sibling_decoder(model.path()),
            "load_ms": model.load_time().as_secs_f64() * 1e3,
            "kernels": kernels.to_string(),
            "kernels_available": runs,
        });
        println!("{out}");
        return Ok(());
    }
    println!("model      {}", model.path().display());
    println!("sha256     {}", model.sha256());
    for p in model.inputs() {
        println!("input      {} {} {}", p.name, p.dtype, p.shape_text());
    }
    for p in model.outputs() {
        println!("output     {} {} {}", p.name, p.dtype, p.shape_text());
    }
    println!(
        "image      {}×{} {}",
        s.width,
        s.height,
        if s.channels == 1 { "gray" } else { "RGB" }
    );
    println!(
        "likelihood {}{}",
        s.likelihood,
        if m.likelihood.is_none() {
            " (default: not in metadata)"
        } else {
            ""
        }
    );
    match s.objective {
        crate::meta::Objective::Beta => println!(
            "objective  beta, β = {}{}",
            s.beta,
            if m.beta.is_none() {
                " (default: not in metadata)"
            } else {
                ""
            }
        ),
        crate::meta::Objective::Capacity => println!(
            "objective  capacity, γ = {}, C_max = {} nats",
            m.gamma.map_or("?".into(), |v| v.to_string()),
            m.capacity_max.map_or("?".into(), |v| v.to_string())
        ),
    }
    if let Some(d) = &m.dataset {
        println!("dataset    {d}");
    }
    if let Some(st) = m.steps {
        println!("steps      {st}");
    }
    if let Some(t) = s.illumination {
        println!(
            "light      normalised: every input is scaled to mean {t:.4} (bvae.illumination \
             = gain), so a global brightness change is not an anomaly"
        );
    }
    println!(
        "batch      {}",
        s.max_batch
            .map_or("dynamic".to_string(), |b| format!("fixed at {b}"))
    );
    match super::sibling_decoder(model.path()) {
        Some(d) => println!("decoder    {}", d.display()),
        None => println!("decoder    none found (traversals need NAME.decoder.onnx)"),
    }
    println!("latents    {}", s.latent_dim);
    match (&s.latent_kl, &active) {
        (Some(kl), Some(act)) => {
            let max = kl.iter().cloned().fold(0.0f32, f32::max).max(1e-9);
            let n_active = act.iter().filter(|a| **a).count();
            println!(
                "  {n_active} of {} active (mean KL ≥ {ACTIVE_KL_NATS} nats on training data)",
                s.latent_dim
            );
            for (i, (k, a)) in kl.iter().zip(act).enumerate() {
                let bar = "#".repeat(((k / max) * 30.0).round() as usize);
                println!(
                    "  z{i:<3} {:<12} {k:>7.3} nats  {:<8} {bar}",
                    s.latent_name(i).unwrap_or(""),
                    if *a { "active" } else { "inactive" }
                );
            }
        }
        _ => {
            println!("  per-latent KL unknown (no bvae.latent_kl metadata)");
            for i in 0..s.latent_dim {
                if let Some(n) = s.latent_name(i) {
                    println!("  z{i:<3} {n}");
                }
            }
        }
    }
    println!("load time  {:.1} ms", model.load_time().as_secs_f64() * 1e3);
    println!(
        "kernels    {kernels} (this CPU runs: {}; {} forces one)",
        runs.join(", "),
        crate::kernels::KERNELS_ENV
    );
    Ok(())
}
