//! The live window (feature `display`): the captured frame, the model
//! input, its reconstruction, the anomaly heatmap, a bar per latent
//! against its normal range, the score history with the threshold line,
//! and a status bar.
//!
//! [`render`] draws the picture into a plain pixel buffer ([`canvas`]),
//! with no display involved, so it is tested like any other code;
//! [`window`] shows it with minifb, which loads X11 at run time (building
//! needs no X11 packages; without a display the loop runs headless).

pub mod canvas;
pub mod render;
pub mod window;

pub use render::{RenderConfig, Renderer, Scene};
pub use window::LiveWindow;
