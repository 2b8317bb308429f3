//! Bytes → `Profile::from_bytes` against the shipped models/dsprites.onnx:
//! JSON parsing, the model check and every size check; a profile that is
//! accepted is then used as the live loop uses it (latent distance and
//! per-latent deviations).
#![no_main]

use std::sync::OnceLock;

use bvae::Model;
use bvae::calibrate::Profile;
use libfuzzer_sys::fuzz_target;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        Model::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/dsprites.onnx"
        ))
        .expect("the shipped model loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let model = model();
    let path = std::path::Path::new("fuzz-input.calibration.json");
    let Ok(p) = Profile::from_bytes(data, path, model) else {
        return;
    };
    let z = model.spec().latent_dim;
    let mu = vec![0.5f32; z];
    let m = p
        .mahalanobis()
        .expect("an accepted profile has a usable covariance");
    let _ = m.distance(&mu, &mut vec![0.0; z]);
    // every score an accepted profile defines can be computed
    let mut reference = p
        .reference()
        .expect("an accepted profile gives a usable reference");
    if let Some(nn) = reference.knn.as_mut() {
        let _ = nn.distance(&mu, &reference.mahalanobis, None);
    }
    let active = model.spec().active_latents();
    let d = bvae::explain::deviations(&mu, &vec![0.1; z], Some(&p), active.as_deref(), None, 3);
    assert!(d.len() <= 3);
    let _ = p
        .threshold_for(p.method)
        .expect("the default method has a threshold");
});
