//! The live picture: the captured frame, the model input, its
//! reconstruction, the anomaly heatmap, a bar per latent against its
//! normal range, the score history with the threshold line, and a status
//! bar. One renderer, two outputs: the live window and the web view.
//!
//! [`render`] draws the picture into a plain pixel buffer ([`canvas`]),
//! with no display involved, so it is tested like any other code;
//! [`window`] (feature `display`) shows it with minifb, which loads X11 at
//! run time (building needs no X11 packages; without a display the loop
//! runs headless); the web view (`crate::web`) serves it as JPEG.

pub mod canvas;
pub mod render;
#[cfg(feature = "display")]
pub mod window;

pub use render::{RenderConfig, Renderer, Scene};
#[cfg(feature = "display")]
pub use window::LiveWindow;

use crate::calibrate::Profile;
use crate::model::Model;

/// The renderer's settings for `model` and `profile` (with tiles, the
/// panels show the whole grid image).
pub fn render_config(model: &Model, profile: &Profile) -> RenderConfig {
    let spec = match &profile.tiles {
        Some(t) => t.grid.grid_spec(model.spec()),
        None => model.spec().clone(),
    };
    let mut cfg = RenderConfig::new(
        profile,
        spec.channels,
        spec.height,
        spec.width,
        spec.active_latents(),
    );
    cfg.latents = cfg.latents.with_names(spec.latent_names.as_deref());
    cfg
}
