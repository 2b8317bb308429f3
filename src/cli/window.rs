//! The live window of `bvae watch` and `bvae demo`: opened unless
//! `--headless`; when it cannot be (no display, no X11, a build without
//! the `display` feature) the loop runs headless after one note on stderr.

use crate::calibrate::Profile;
use crate::live::observe::Observer;
use crate::model::Model;

/// The window as a live-loop observer, or `None` to run headless.
pub fn open(
    headless: bool,
    model: &Model,
    profile: &Profile,
    title: &str,
) -> Option<Box<dyn Observer>> {
    if headless {
        return None;
    }
    #[cfg(feature = "display")]
    {
        use crate::display::{LiveWindow, render_config};
        match LiveWindow::open(title, render_config(model, profile)) {
            Ok(w) => {
                eprintln!("live window open: Esc, Q or closing it stops the loop");
                Some(Box::new(w))
            }
            Err(e) => {
                eprintln!(
                    "note: no live window: {e:#}; running headless (--headless skips the window and this note)"
                );
                None
            }
        }
    }
    #[cfg(not(feature = "display"))]
    {
        let _ = (model, profile, title);
        eprintln!(
            "note: no live window: this build lacks the `display` feature; running headless (--headless skips this note)"
        );
        None
    }
}
