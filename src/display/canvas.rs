//! A fixed-size `0RGB` pixel buffer with the few drawing primitives the
//! live window needs: rectangles, lines, 8×8 bitmap text and images.
//! Nothing here allocates after [`Canvas::new`].

/// A colour as `0x00RRGGBB` (what minifb shows).
pub type Rgb = u32;

/// Packs 8-bit channels into an [`Rgb`].
pub const fn rgb(r: u8, g: u8, b: u8) -> Rgb {
    ((r as u32) << 16) | ((g as u32) << 8) | b as u32
}

/// Splits an [`Rgb`] into its channels.
pub const fn channels(c: Rgb) -> (u8, u8, u8) {
    ((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// Mixes `a` and `b`: `t = 0` gives `a`, `t = 1` gives `b`.
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    let (ar, ag, ab) = channels(a);
    let (br, bg, bb) = channels(b);
    let m = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * t).round() as u8;
    rgb(m(ar, br), m(ag, bg), m(ab, bb))
}

/// Width and height of one glyph at scale 1.
pub const GLYPH: usize = 8;

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: usize,
    /// Top edge.
    pub y: usize,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
}

impl Rect {
    /// A rectangle.
    pub const fn new(x: usize, y: usize, w: usize, h: usize) -> Rect {
        Rect { x, y, w, h }
    }

    /// Whether the point is inside.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }

    /// The largest rectangle of aspect `aw:ah` centred in this one.
    pub fn fit(&self, aw: usize, ah: usize) -> Rect {
        if aw == 0 || ah == 0 || self.w == 0 || self.h == 0 {
            return Rect::new(self.x, self.y, 0, 0);
        }
        let (w, h) = if aw * self.h > ah * self.w {
            (self.w, (ah * self.w / aw).max(1))
        } else {
            ((aw * self.h / ah).max(1), self.h)
        };
        Rect::new(self.x + (self.w - w) / 2, self.y + (self.h - h) / 2, w, h)
    }
}

/// A `width × height` buffer of [`Rgb`] pixels, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    px: Vec<u32>,
}

impl Canvas {
    /// A black canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            px: vec![0; width * height],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row-major.
    pub fn pixels(&self) -> &[u32] {
        &self.px
    }

    /// One pixel (black outside the canvas).
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        if x < self.width && y < self.height {
            self.px[y * self.width + x]
        } else {
            0
        }
    }

    /// Sets one pixel; points outside the canvas are ignored.
    #[inline]
    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            self.px[y * self.width + x] = c;
        }
    }

    /// Fills the whole canvas.
    pub fn clear(&mut self, c: Rgb) {
        self.px.fill(c);
    }

    /// Fills a rectangle (clipped to the canvas).
    pub fn fill(&mut self, r: Rect, c: Rgb) {
        let x1 = (r.x + r.w).min(self.width);
        let y1 = (r.y + r.h).min(self.height);
        if r.x >= x1 {
            return;
        }
        for y in r.y.min(y1)..y1 {
            self.px[y * self.width + r.x..y * self.width + x1].fill(c);
        }
    }

    /// Draws a rectangle's outline, `t` pixels thick, inside `r`.
    pub fn frame(&mut self, r: Rect, t: usize, c: Rgb) {
        let t = t.min(r.w / 2).min(r.h / 2);
        self.fill(Rect::new(r.x, r.y, r.w, t), c);
        self.fill(Rect::new(r.x, r.y + r.h - t, r.w, t), c);
        self.fill(Rect::new(r.x, r.y, t, r.h), c);
        self.fill(Rect::new(r.x + r.w - t, r.y, t, r.h), c);
    }

    /// A horizontal line from `x0` to `x1` (inclusive), dashed when `dash > 0`.
    pub fn hline(&mut self, x0: usize, x1: usize, y: usize, dash: usize, c: Rgb) {
        for x in x0..=x1 {
            if dash == 0 || ((x - x0) / dash).is_multiple_of(2) {
                self.set(x, y, c);
            }
        }
    }

    /// A vertical line from `y0` to `y1` (either order, inclusive).
    pub fn vline(&mut self, x: usize, y0: usize, y1: usize, c: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            self.set(x, y, c);
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each glyph pixel
    /// `scale × scale`. Returns the x after the last glyph. Characters
    /// outside ASCII are drawn as `?`.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: Rgb) -> usize {
        let scale = scale.max(1);
        let mut cx = x;
        for ch in text.chars() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits & (1 << col) != 0 {
                        self.fill(
                            Rect::new(cx + col * scale, y + row * scale, scale, scale),
                            c,
                        );
                    }
                }
            }
            cx += GLYPH * scale;
        }
        cx
    }

    /// Width of `text` in pixels at `scale`.
    pub fn text_width(text: &str, scale: usize) -> usize {
        text.chars().count() * GLYPH * scale.max(1)
    }

    /// Draws an image given by `pixel(x, y)` over `sw × sh` source pixels,
    /// scaled (nearest neighbour) into `dst`.
    pub fn blit(
        &mut self,
        dst: Rect,
        sw: usize,
        sh: usize,
        mut pixel: impl FnMut(usize, usize) -> Rgb,
    ) {
        // Clip to the canvas; source coordinates still follow `dst`.
        let x1 = (dst.x + dst.w).min(self.width);
        let y1 = (dst.y + dst.h).min(self.height);
        if sw == 0 || sh == 0 || dst.x >= x1 || dst.y >= y1 {
            return;
        }
        for y in dst.y..y1 {
            let sy = ((y - dst.y) * sh / dst.h).min(sh - 1);
            let row = &mut self.px[y * self.width + dst.x..y * self.width + x1];
            for (dx, p) in row.iter_mut().enumerate() {
                *p = pixel((dx * sw / dst.w).min(sw - 1), sy);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_clips_and_text_draws_glyph_pixels() {
        let mut c = Canvas::new(20, 10);
        c.fill(Rect::new(15, 5, 10, 10), 7);
        assert_eq!(c.get(19, 9), 7);
        assert_eq!(c.get(14, 9), 0);
        let mut t = Canvas::new(16, 8);
        let end = t.text(0, 0, "I", 1, 0xffffff);
        assert_eq!(end, 8);
        assert!(t.pixels().contains(&0xffffff));
        assert!(
            t.pixels()[..8 * 16]
                .iter()
                .all(|&p| p == 0 || p == 0xffffff)
        );
        // nothing drawn right of the first glyph
        assert!((0..8).all(|y| (8..16).all(|x| t.get(x, y) == 0)));
    }

    #[test]
    fn fit_keeps_aspect_and_centres() {
        let r = Rect::new(10, 10, 320, 240);
        assert_eq!(r.fit(640, 480), r);
        let f = r.fit(1, 1);
        assert_eq!((f.w, f.h), (240, 240));
        assert_eq!(f.x, 10 + 40);
        assert_eq!(mix(0, 0xffffff, 0.5), rgb(128, 128, 128));
    }
}
