//! The picture of an end-to-end run, without ROS: two CT planes with the vessel labels,
//! lesion, tracked markers and the planned needle path drawn in, written as PNG.
//!
//! Left: the axial slice through the target (radiological view: patient's right on the left,
//! anterior up); the path and markers are projected onto it. Right: the oblique plane that
//! contains the whole path and is closest to the body's long axis, so that the path and its
//! clearance from the vessels are seen undistorted.

use crate::outputs::CLASS_COLOURS;
use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::Volume;
use std::path::Path;

/// How a tracked marker is drawn, in the picture and in rviz (`ros::viz`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarkerRole {
    Registration,
    Correction,
    Unclassified,
}

/// Registration markers blue, correction markers orange, unclassified grey.
pub const REGISTRATION_RGB: [f32; 3] = [0.2, 0.5, 1.0];
pub const CORRECTION_RGB: [f32; 3] = [1.0, 0.55, 0.0];
pub const UNCLASSIFIED_RGB: [f32; 3] = [0.7, 0.7, 0.7];

impl MarkerRole {
    pub fn rgb(self) -> [f32; 3] {
        match self {
            MarkerRole::Registration => REGISTRATION_RGB,
            MarkerRole::Correction => CORRECTION_RGB,
            MarkerRole::Unclassified => UNCLASSIFIED_RGB,
        }
    }

    fn rgb8(self) -> [u8; 3] {
        self.rgb().map(|c| (c * 255.0).round() as u8)
    }
}

/// What is drawn on the CT, CT patient coordinates (LPS) [mm].
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub target_mm: Point3<f64>,
    pub entry_mm: Option<Point3<f64>>,
    pub lesion_radius_mm: f64,
    /// True: the path keeps the safety margin (drawn green); false: refused (drawn red).
    pub path_safe: bool,
    /// Tracked markers mapped into the CT, with their class.
    pub markers_mm: Vec<(Point3<f64>, MarkerRole)>,
}

/// An RGB picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Picture {
    fn new(width: usize, height: usize) -> Picture {
        Picture { width, height, rgb: vec![0; width * height * 3] }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let o = (y as usize * self.width + x as usize) * 3;
            self.rgb[o..o + 3].copy_from_slice(&c);
        }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    fn disc(&mut self, cx: f64, cy: f64, r: f64, c: [u8; 3]) {
        let ri = r.ceil() as i64;
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                if ((dx * dx + dy * dy) as f64) <= r * r {
                    self.put(cx.round() as i64 + dx, cy.round() as i64 + dy, c);
                }
            }
        }
    }

    fn ring(&mut self, cx: f64, cy: f64, r: f64, c: [u8; 3]) {
        let steps = (r * 8.0).max(16.0) as usize;
        for s in 0..steps {
            let a = s as f64 / steps as f64 * std::f64::consts::TAU;
            self.put((cx + r * a.cos()).round() as i64, (cy + r * a.sin()).round() as i64, c);
        }
    }

    fn line(&mut self, a: (f64, f64), b: (f64, f64), width: f64, c: [u8; 3]) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) * 2.0).ceil().max(1.0) as usize;
        for s in 0..=n {
            let t = s as f64 / n as f64;
            self.disc(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, width / 2.0, c);
        }
    }

    /// Side by side, with a gap.
    fn beside(&self, other: &Picture, gap: usize) -> Picture {
        let mut out = Picture::new(self.width + gap + other.width, self.height.max(other.height));
        for (src, x0) in [(self, 0), (other, self.width + gap)] {
            for y in 0..src.height {
                for x in 0..src.width {
                    out.put((x0 + x) as i64, y as i64, src.pixel(x, y));
                }
            }
        }
        out
    }
}

/// A plane through `origin` spanned by unit vectors `right` and `down` (mm), sampled every `pixel_mm`.
struct Plane {
    origin: Point3<f64>,
    right: Vector3<f64>,
    down: Vector3<f64>,
    half_width_mm: f64,
    half_height_mm: f64,
    pixel_mm: f64,
}

impl Plane {
    fn size(&self) -> (usize, usize) {
        ((2.0 * self.half_width_mm / self.pixel_mm) as usize, (2.0 * self.half_height_mm / self.pixel_mm) as usize)
    }
    fn point(&self, x: usize, y: usize) -> Point3<f64> {
        self.origin
            + self.right * (x as f64 * self.pixel_mm - self.half_width_mm)
            + self.down * (y as f64 * self.pixel_mm - self.half_height_mm)
    }
    /// Pixel coordinates of the orthogonal projection of `p` onto the plane.
    fn project(&self, p: &Point3<f64>) -> (f64, f64) {
        let d = p - self.origin;
        (
            (d.dot(&self.right) + self.half_width_mm) / self.pixel_mm,
            (d.dot(&self.down) + self.half_height_mm) / self.pixel_mm,
        )
    }
}

/// Soft-tissue/lung compromise window: −1000 … +400 HU.
fn grey(hu: f32) -> u8 {
    (((hu + 1000.0) / 1400.0).clamp(0.0, 1.0) * 255.0) as u8
}

fn sample(ct: &Volume<f32>, labels: &Volume<u8>, plane: &Plane) -> Picture {
    let (w, h) = plane.size();
    let mut pic = Picture::new(w, h);
    let g = &ct.geometry;
    for y in 0..h {
        for x in 0..w {
            let idx = g.patient_to_index(&plane.point(x, y)).map(|v| v.round());
            if (0..3).any(|a| idx[a] < 0.0 || idx[a] > (g.dims[a] - 1) as f64) {
                continue; // outside the CT: black
            }
            let v = g.offset(idx[0] as usize, idx[1] as usize, idx[2] as usize);
            let gval = grey(ct.data[v]);
            let label = labels.data.get(v).copied().unwrap_or(0) as usize;
            let c = if label > 0 && label < CLASS_COLOURS.len() {
                // Half-transparent class colour over the CT.
                CLASS_COLOURS[label].map(|k| ((k as u16 + gval as u16) / 2) as u8)
            } else {
                [gval; 3]
            };
            pic.put(x as i64, y as i64, c);
        }
    }
    pic
}

fn draw_overlay(pic: &mut Picture, plane: &Plane, o: &Overlay) {
    let px = |mm: f64| mm / plane.pixel_mm;
    for (m, role) in &o.markers_mm {
        let (x, y) = plane.project(m);
        pic.ring(x, y, px(4.0), role.rgb8());
        pic.ring(x, y, px(4.0) + 1.0, role.rgb8());
    }
    let (tx, ty) = plane.project(&o.target_mm);
    pic.ring(tx, ty, px(o.lesion_radius_mm).max(3.0), [200, 60, 200]);
    if let Some(e) = &o.entry_mm {
        let path_colour = if o.path_safe { [40, 230, 40] } else { [240, 40, 40] };
        pic.line(plane.project(e), (tx, ty), 2.0, path_colour);
        let (ex, ey) = plane.project(e);
        pic.disc(ex, ey, 3.5, [40, 230, 40]);
    }
    pic.disc(tx, ty, 3.0, [240, 40, 40]);
}

/// The two planes (axial through the target, oblique along the path) side by side.
pub fn render(ct: &Volume<f32>, labels: &Volume<u8>, o: &Overlay) -> Picture {
    let g = &ct.geometry;
    let spacing = g.spacing_mm;
    // Twice the CT's in-plane resolution, so that the overlay lines stay thin.
    let pixel_mm = (spacing[0].min(spacing[1]) / 2.0).max(0.3);
    let corners: Vec<Point3<f64>> = (0..8)
        .map(|c| {
            let ijk = [0, 1, 2].map(|a| if c >> a & 1 == 1 { (g.dims[a] - 1) as f64 } else { 0.0 });
            g.index_to_patient(ijk)
        })
        .collect();
    let lo = |a: usize| corners.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
    let hi = |a: usize| corners.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max);
    // Axial: the whole CT cross-section at the target's height.
    let axial = Plane {
        origin: Point3::new((lo(0) + hi(0)) / 2.0, (lo(1) + hi(1)) / 2.0, o.target_mm.z),
        right: Vector3::x(),
        down: Vector3::y(),
        half_width_mm: ((hi(0) - lo(0)) / 2.0).min(300.0),
        half_height_mm: ((hi(1) - lo(1)) / 2.0).min(300.0),
        pixel_mm,
    };
    let mut left = sample(ct, labels, &axial);
    draw_overlay(&mut left, &axial, o);
    // Oblique: along the path (target -> entry, drawn upwards) and the body axis made orthogonal
    // to it, centred on the path with 40 mm around it.
    let entry = o.entry_mm.unwrap_or(o.target_mm - Vector3::y() * 60.0);
    let along = (entry - o.target_mm).try_normalize(1e-9).unwrap_or(-Vector3::y());
    let mut across = Vector3::z() - along * along.z;
    if across.norm() < 1e-6 {
        across = Vector3::x() - along * along.x;
    }
    let across = across.normalize();
    let half = ((entry - o.target_mm).norm() / 2.0 + 40.0).min(300.0);
    let oblique = Plane {
        origin: o.target_mm + (entry - o.target_mm) / 2.0,
        right: across,
        down: -along,
        half_width_mm: half,
        half_height_mm: half,
        pixel_mm,
    };
    let mut right = sample(ct, labels, &oblique);
    draw_overlay(&mut right, &oblique, o);
    left.beside(&right, 8)
}

/// Writes an 8-bit RGB PNG.
pub fn write_png(path: &Path, pic: &Picture) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), pic.width as u32, pic.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| format!("{}: {e}", path.display()))?;
    w.write_image_data(&pic.rgb).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle_nav_core::volume::Geometry;

    #[test]
    fn the_axial_plane_shows_vessels_in_class_colour_and_the_path_where_it_is() {
        // 1 mm grid centred on 0; a vessel (label 1) column at x = +20 mm; the target at 0.
        let g = Geometry::axial_centred([61, 61, 21], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        let ct = Volume::filled(g.clone(), 40.0f32);
        let mut labels = Volume::filled(g.clone(), 0u8);
        for k in 0..21 {
            for j in 0..61 {
                for i in 0..61 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    if ((p.x - 20.0).powi(2) + p.y.powi(2)).sqrt() <= 3.0 {
                        labels.data[g.offset(i, j, k)] = 1;
                    }
                }
            }
        }
        let o = Overlay {
            target_mm: Point3::origin(),
            entry_mm: Some(Point3::new(0.0, -25.0, 0.0)),
            lesion_radius_mm: 5.0,
            path_safe: true,
            markers_mm: vec![],
        };
        let pic = render(&ct, &labels, &o);
        // Left panel: the 60 x 60 mm cross-section at 0.5 mm per pixel, target at its centre (60, 60).
        let grey40 = grey(40.0);
        let vessel = pic.pixel(60 + 40, 60);
        assert_eq!(vessel, CLASS_COLOURS[1].map(|k| ((k as u16 + grey40 as u16) / 2) as u8));
        assert_eq!(pic.pixel(60 - 40, 60), [grey40; 3], "no vessel on the patient's right");
        // The path runs anteriorly (up) from the target: green 15 mm above it.
        assert_eq!(pic.pixel(60, 30), [40, 230, 40]);
        assert_eq!(pic.pixel(60, 60), [240, 40, 40], "the target dot");
        // Right panel: the path plane (y-z here), (25 / 2 + 40) mm each side of the path's midpoint,
        // which is at its centre; the path runs vertically through it.
        assert_eq!(pic.width, 120 + 8 + 210);
        assert_eq!(pic.pixel(128 + 105, 105), [40, 230, 40]);
        assert_eq!(pic.pixel(128 + 105 + 20, 105), [grey40; 3]);
        let dir = std::env::temp_dir().join(format!("nn_report_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.png");
        write_png(&f, &pic).unwrap();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
