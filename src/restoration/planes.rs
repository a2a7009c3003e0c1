//! A photo as three planes of `f32` in 0..=1: the form every stage works on.

use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};

#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub width: usize,
    pub height: usize,
    /// R, G, B (equal for grey photos).
    pub c: [Vec<f32>; 3],
}

impl Planes {
    pub fn new(width: usize, height: usize) -> Self {
        let n = width * height;
        Self {
            width,
            height,
            c: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
        }
    }

    pub fn from_image(image: &DynamicImage) -> Self {
        let rgb = image.to_rgb32f();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut planes = Self::new(w, h);
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                planes.c[ch][i] = p.0[ch].clamp(0.0, 1.0);
            }
        }
        planes
    }

    pub fn len(&self) -> usize {
        self.width * self.height
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pixels inside `r`, as planes of their own.
    pub fn crop(&self, r: super::stages::Rect) -> Planes {
        let mut out = Planes::new(r.width, r.height);
        for (src, dst) in self.c.iter().zip(out.c.iter_mut()) {
            for y in 0..r.height {
                let from = (r.y + y) * self.width + r.x;
                dst[y * r.width..(y + 1) * r.width].copy_from_slice(&src[from..from + r.width]);
            }
        }
        out
    }

    /// Luminance (Rec. 601).
    pub fn luma(&self) -> Vec<f32> {
        (0..self.len())
            .map(|i| 0.299 * self.c[0][i] + 0.587 * self.c[1][i] + 0.114 * self.c[2][i])
            .collect()
    }

    /// Back to an image of the same colour type as `like`.
    pub fn to_image_like(&self, like: &DynamicImage) -> DynamicImage {
        let (w, h) = (self.width as u32, self.height as u32);
        let at = |ch: usize, x: u32, y: u32| self.c[ch][y as usize * self.width + x as usize].clamp(0.0, 1.0);
        let grey = |x: u32, y: u32| 0.299 * at(0, x, y) + 0.587 * at(1, x, y) + 0.114 * at(2, x, y);
        let q8 = |v: f32| (v * 255.0 + 0.5) as u8;
        let q16 = |v: f32| (v * 65535.0 + 0.5) as u16;
        let alpha8 = |x: u32, y: u32| like.as_rgba8().map_or(255, |a| a.get_pixel(x, y).0[3]);
        match like {
            DynamicImage::ImageLuma8(_) => {
                DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([q8(grey(x, y))])))
            }
            DynamicImage::ImageLumaA8(src) => {
                DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                    LumaA([q8(grey(x, y)), src.get_pixel(x, y).0[1]])
                }))
            }
            DynamicImage::ImageLuma16(_) => {
                DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([q16(grey(x, y))])))
            }
            DynamicImage::ImageLumaA16(src) => {
                DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                    LumaA([q16(grey(x, y)), src.get_pixel(x, y).0[1]])
                }))
            }
            DynamicImage::ImageRgb16(_) => DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([q16(at(0, x, y)), q16(at(1, x, y)), q16(at(2, x, y))])
            })),
            DynamicImage::ImageRgba16(src) => {
                DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                    Rgba([
                        q16(at(0, x, y)),
                        q16(at(1, x, y)),
                        q16(at(2, x, y)),
                        src.get_pixel(x, y).0[3],
                    ])
                }))
            }
            DynamicImage::ImageRgba8(_) => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgba([q8(at(0, x, y)), q8(at(1, x, y)), q8(at(2, x, y)), alpha8(x, y)])
            })),
            _ => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([q8(at(0, x, y)), q8(at(1, x, y)), q8(at(2, x, y))])
            })),
        }
    }
}
