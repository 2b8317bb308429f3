//! The live window on screen (minifb, X11 loaded at run time) as an
//! [`Observer`] of the live loop.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use minifb::{InputCallback, Key, Window, WindowOptions};

use super::render::{FpsMeter, HEIGHT, RenderConfig, Renderer, Scene, WIDTH};
use crate::live::events::EventSink;
use crate::live::observe::{Control, FrameView, Observer};

/// Least time between two redraws: the window shows at most ~30 frames a
/// second; a faster loop skips redraws, never frames.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(33);
/// A redraw waits at least this many times as long as the last one took,
/// so drawing never takes more than a fifth of the loop's time on a slow
/// board (the window then updates less often, the loop keeps its pace).
pub const REDRAW_COST_FACTOR: u32 = 4;

/// Fails, saying why, when the environment names no X display.
pub fn display_available() -> Result<()> {
    check_display(|v| std::env::var_os(v))
}

/// [`display_available`] over any environment lookup.
fn check_display(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<()> {
    let set = |v: &str| var(v).is_some_and(|s| !s.is_empty());
    if !set("DISPLAY") {
        if set("WAYLAND_DISPLAY") {
            bail!("WAYLAND_DISPLAY is set but DISPLAY is not (the window needs X11 or XWayland)");
        }
        bail!("DISPLAY is not set");
    }
    Ok(())
}

/// Remembers a press of Esc or Q: a press and its release can arrive in
/// the same batch of window events, so polling the key's state misses it.
struct QuitKeys(Rc<Cell<bool>>);

impl InputCallback for QuitKeys {
    fn add_char(&mut self, _uni_char: u32) {}

    fn set_key_state(&mut self, key: Key, state: bool) {
        if state && matches!(key, Key::Escape | Key::Q) {
            self.0.set(true);
        }
    }
}

/// The live window: a [`Renderer`] shown through minifb.
pub struct LiveWindow {
    window: Window,
    renderer: Renderer,
    last_draw: Option<Instant>,
    /// Least time until the next redraw.
    redraw_wait: Duration,
    fps: FpsMeter,
    quit: Rc<Cell<bool>>,
}

impl LiveWindow {
    /// Opens a window titled `title`; fails when there is no display or
    /// X11 cannot be loaded.
    pub fn open(title: &str, cfg: RenderConfig) -> Result<LiveWindow> {
        display_available()?;
        let opts = WindowOptions::default();
        // minifb panics on a few X11 failures instead of returning an error.
        let window = std::panic::catch_unwind(|| Window::new(title, WIDTH, HEIGHT, opts))
            .map_err(|_| anyhow!("the window system failed while opening a window"))?
            .map_err(|e| anyhow!("cannot open a window: {e}"))?;
        let mut w = LiveWindow {
            window,
            renderer: Renderer::new(cfg),
            last_draw: None,
            redraw_wait: REDRAW_INTERVAL,
            fps: FpsMeter::default(),
            quit: Rc::new(Cell::new(false)),
        };
        w.window
            .set_input_callback(Box::new(QuitKeys(w.quit.clone())));
        // Redraws are paced here; minifb must not sleep in the loop.
        w.window.set_target_fps(0);
        w.window
            .update_with_buffer(w.renderer.canvas().pixels(), WIDTH, HEIGHT)
            .context("showing the window")?;
        Ok(w)
    }
}

impl Observer for LiveWindow {
    fn needs_map(&self) -> bool {
        true
    }

    fn frame(&mut self, view: &FrameView<'_>, _sink: &mut dyn EventSink) -> Result<Control> {
        let now = Instant::now();
        self.fps.tick(now);
        self.renderer.push_score(view.score, view.in_episode);
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t) < self.redraw_wait)
        {
            return Ok(Control::Continue);
        }
        self.last_draw = Some(now);

        let scene = Scene::from_view(view, self.fps.fps());
        self.renderer.draw(&scene);
        self.window
            .update_with_buffer(self.renderer.canvas().pixels(), WIDTH, HEIGHT)
            .context("updating the window")?;
        self.redraw_wait = REDRAW_INTERVAL.max(now.elapsed() * REDRAW_COST_FACTOR);
        if !self.window.is_open() || self.quit.get() {
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_display_is_reported_clearly() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let e = check_display(env(&[])).unwrap_err().to_string();
        assert!(e.contains("DISPLAY is not set"), "{e}");
        let e = check_display(env(&[("DISPLAY", "")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DISPLAY is not set"), "{e}");
        let e = check_display(env(&[("WAYLAND_DISPLAY", "wayland-0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("XWayland"), "{e}");
        assert!(check_display(env(&[("DISPLAY", ":99")])).is_ok());
    }
}
