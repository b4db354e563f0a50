//! Multi-scale Hessian shape measures for bright structures in dark lung: Frangi's vesselness
//! (bright tubes: two large negative eigenvalues, one near zero) and a sheet measure (one large
//! negative eigenvalue: fissures). Gaussian smoothing in mm on the anisotropic grid, second
//! derivatives by central differences, eigenvalues scale-normalised by sigma^2 (so a tube of
//! radius r answers most strongly at sigma = r / sqrt(2), with |lambda| ~ 0.37 x its contrast).

/// Frangi's weights: alpha for the plate/line ratio, beta for the blob ratio (0.35, below
/// Frangi's 0.5, so a sphere's centre scores ~0.02 instead of ~0.12), and c [HU] for the
/// structure strength (a 900 HU tube gives S ~ 470, a faint 300 HU one ~ 160).
pub const FRANGI_ALPHA: f64 = 0.5;
pub const FRANGI_BETA: f64 = 0.35;
pub const FRANGI_C_HU: f64 = 150.0;
/// Strength scale [HU] of the sheet measure: fissures are sub-millimetre sheets in millimetre
/// voxels, their partial-volume contrast a few hundred HU at most (a 350 HU, 1.5 mm sheet gives
/// S ~ 160 at sigma 1 mm).
pub const SHEET_C_HU: f64 = 60.0;

/// Smoothing scale [mm] at which a tube of `diameter_mm` answers most strongly.
pub fn sigma_for_diameter(diameter_mm: f64) -> f64 {
    diameter_mm / (2.0 * std::f64::consts::SQRT_2)
}

/// Runs `f(slice index, slice)` over the z-slices of `out` on two threads.
fn per_slice_parallel(out: &mut [f32], plane: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let nz = out.len() / plane.max(1);
    let half = nz.div_ceil(2) * plane;
    let (first, second) = out.split_at_mut(half.min(out.len()));
    let f = &f;
    std::thread::scope(|s| {
        s.spawn(move || first.chunks_exact_mut(plane).enumerate().for_each(|(k, sl)| f(k, sl)));
        let offset = half / plane.max(1);
        second.chunks_exact_mut(plane).enumerate().for_each(|(k, sl)| f(k + offset, sl));
    });
}

fn gaussian_kernel(sigma_vox: f64) -> Vec<f32> {
    if sigma_vox < 0.2 {
        return vec![1.0];
    }
    let radius = (3.0 * sigma_vox).ceil() as i64;
    let w: Vec<f64> = (-radius..=radius).map(|t| (-(t * t) as f64 / (2.0 * sigma_vox * sigma_vox)).exp()).collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|x| (x / sum) as f32).collect()
}

/// Separable Gaussian smoothing with `sigma_mm` (border values repeated).
pub fn gaussian_blur(data: &[f32], dims: [usize; 3], spacing_mm: [f64; 3], sigma_mm: f64) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let kernels = [0, 1, 2].map(|a| gaussian_kernel(sigma_mm / spacing_mm[a]));
    let clamp = |t: i64, n: usize| t.clamp(0, n as i64 - 1) as usize;
    // x: along rows.
    let mut a = vec![0.0f32; data.len()];
    let kx = &kernels[0];
    let rx = (kx.len() / 2) as i64;
    per_slice_parallel(&mut a, plane, |k, out| {
        let src = &data[k * plane..(k + 1) * plane];
        for j in 0..ny {
            let row = &src[j * nx..(j + 1) * nx];
            for i in 0..nx {
                out[j * nx + i] =
                    kx.iter().enumerate().map(|(t, w)| w * row[clamp(i as i64 + t as i64 - rx, nx)]).sum();
            }
        }
    });
    // y: whole rows at a time.
    let mut b = vec![0.0f32; data.len()];
    let ky = &kernels[1];
    let ry = (ky.len() / 2) as i64;
    per_slice_parallel(&mut b, plane, |k, out| {
        let src = &a[k * plane..(k + 1) * plane];
        for j in 0..ny {
            let dst = &mut out[j * nx..(j + 1) * nx];
            for (t, w) in ky.iter().enumerate() {
                let jj = clamp(j as i64 + t as i64 - ry, ny);
                for (d, s) in dst.iter_mut().zip(&src[jj * nx..(jj + 1) * nx]) {
                    *d += w * s;
                }
            }
        }
    });
    // z: whole slices at a time.
    let kz = &kernels[2];
    let rz = (kz.len() / 2) as i64;
    a.iter_mut().for_each(|v| *v = 0.0);
    per_slice_parallel(&mut a, plane, |k, out| {
        for (t, w) in kz.iter().enumerate() {
            let kk = clamp(k as i64 + t as i64 - rz, nz);
            for (d, s) in out.iter_mut().zip(&b[kk * plane..(kk + 1) * plane]) {
                *d += w * s;
            }
        }
    });
    a
}

/// Eigenvalues of a symmetric 3x3 matrix [xx, yy, zz, xy, xz, yz], sorted by absolute value
/// (|l1| <= |l2| <= |l3|). Closed form (trigonometric), in f64.
pub fn symmetric_eigenvalues(h: [f64; 6]) -> [f64; 3] {
    let [a, d, f, b, c, e] = h;
    let p1 = b * b + c * c + e * e;
    let mut eig = if p1 <= 1e-30 * (a * a + d * d + f * f).max(1e-300) {
        [a, d, f]
    } else {
        let q = (a + d + f) / 3.0;
        let p2 = (a - q).powi(2) + (d - q).powi(2) + (f - q).powi(2) + 2.0 * p1;
        let p = (p2 / 6.0).sqrt();
        let (ba, bd, bf) = ((a - q) / p, (d - q) / p, (f - q) / p);
        let (bb, bc, be) = (b / p, c / p, e / p);
        let det = ba * (bd * bf - be * be) - bb * (bb * bf - be * bc) + bc * (bb * be - bd * bc);
        let r = (det / 2.0).clamp(-1.0, 1.0);
        let phi = r.acos() / 3.0;
        let e1 = q + 2.0 * p * phi.cos();
        let e3 = q + 2.0 * p * (phi + 2.0 * std::f64::consts::FRAC_PI_3).cos();
        [e1, 3.0 * q - e1 - e3, e3]
    };
    eig.sort_by(|x, y| x.abs().total_cmp(&y.abs()));
    eig
}

/// Unit eigenvector of the symmetric matrix for eigenvalue `l` (largest cross product of the
/// rows of H - l I); None when degenerate.
pub fn eigenvector(h: [f64; 6], l: f64) -> Option<[f64; 3]> {
    let [a, d, f, b, c, e] = h;
    let rows = [[a - l, b, c], [b, d - l, e], [c, e, f - l]];
    let cross =
        |u: [f64; 3], v: [f64; 3]| [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
    let norm = |u: [f64; 3]| (u[0] * u[0] + u[1] * u[1] + u[2] * u[2]).sqrt();
    let best = [cross(rows[0], rows[1]), cross(rows[0], rows[2]), cross(rows[1], rows[2])]
        .into_iter()
        .max_by(|x, y| norm(*x).total_cmp(&norm(*y)))?;
    let n = norm(best);
    (n > 1e-12).then(|| best.map(|x| x / n))
}

/// Shape of one voxel at one scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HessianShape {
    /// Frangi vesselness for bright tubes (0..1), times the along-axis gradient penalty.
    pub tube: f64,
    /// Tube shape factors times strength S (HU): compares scales without saturating.
    pub tube_strength: f64,
    /// Bright sheet measure (0..1): one large negative eigenvalue, the other two small.
    pub sheet: f64,
}

/// Weight of the along-axis gradient penalty: inside a straight tube the intensity does not
/// change along the axis (the eigenvector of the smallest eigenvalue); on the shell of a blob,
/// where Frangi's ratios look like a tube, that eigenvector points at the blob's centre and the
/// scale-normalised gradient along it is about as large as the curvature across it.
pub const AXIAL_GRADIENT_WEIGHT: f64 = 0.5;

/// `l`: scale-normalised eigenvalues sorted by |.|; `axial_gradient`: sigma |grad L . e1| [HU].
pub fn shape(l: [f64; 3], axial_gradient: f64) -> HessianShape {
    let [l1, l2, l3] = l;
    let s = (l1 * l1 + l2 * l2 + l3 * l3).sqrt();
    let strength = 1.0 - (-s * s / (2.0 * FRANGI_C_HU * FRANGI_C_HU)).exp();
    let sheet = if l3 < 0.0 {
        let r_plate = l2.abs() / l3.abs();
        (-r_plate * r_plate / (2.0 * FRANGI_ALPHA * FRANGI_ALPHA)).exp()
            * (1.0 - (-s * s / (2.0 * SHEET_C_HU * SHEET_C_HU)).exp())
    } else {
        0.0
    };
    if l2 >= 0.0 || l3 >= 0.0 {
        return HessianShape { tube: 0.0, tube_strength: 0.0, sheet };
    }
    let ra = l2.abs() / l3.abs();
    let rb = l1.abs() / (l2 * l3).abs().sqrt();
    let q = axial_gradient / l2.abs();
    let form = (1.0 - (-ra * ra / (2.0 * FRANGI_ALPHA * FRANGI_ALPHA)).exp())
        * (-rb * rb / (2.0 * FRANGI_BETA * FRANGI_BETA)).exp()
        * (-q * q / (2.0 * AXIAL_GRADIENT_WEIGHT * AXIAL_GRADIENT_WEIGHT)).exp();
    HessianShape { tube: form * strength, tube_strength: form * s, sheet }
}

/// Shape at voxel `v` of the smoothed volume: scale-normalised Hessian (central differences,
/// border voxels repeated) and gradient.
fn voxel_shape(l: &[f32], dims: [usize; 3], spacing_mm: [f64; 3], sigma_mm: f64, v: usize) -> HessianShape {
    let [nx, ny, nz] = dims;
    let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
    let step = |p: usize, n: usize| (if p > 0 { p - 1 } else { p }, if p + 1 < n { p + 1 } else { p });
    let (im, ip) = step(i, nx);
    let (jm, jp) = step(j, ny);
    let (km, kp) = step(k, nz);
    let at = |i: usize, j: usize, k: usize| l[(k * ny + j) * nx + i] as f64;
    let c = at(i, j, k);
    let [sx, sy, sz] = spacing_mm;
    let xx = (at(ip, j, k) - 2.0 * c + at(im, j, k)) / (sx * sx);
    let yy = (at(i, jp, k) - 2.0 * c + at(i, jm, k)) / (sy * sy);
    let zz = (at(i, j, kp) - 2.0 * c + at(i, j, km)) / (sz * sz);
    let xy = (at(ip, jp, k) - at(ip, jm, k) - at(im, jp, k) + at(im, jm, k)) / (4.0 * sx * sy);
    let xz = (at(ip, j, kp) - at(ip, j, km) - at(im, j, kp) + at(im, j, km)) / (4.0 * sx * sz);
    let yz = (at(i, jp, kp) - at(i, jp, km) - at(i, jm, kp) + at(i, jm, km)) / (4.0 * sy * sz);
    let gradient = [
        (at(ip, j, k) - at(im, j, k)) / (sx * (ip - im).max(1) as f64),
        (at(i, jp, k) - at(i, jm, k)) / (sy * (jp - jm).max(1) as f64),
        (at(i, j, kp) - at(i, j, km)) / (sz * (kp - km).max(1) as f64),
    ];
    let n = sigma_mm * sigma_mm;
    let h = [xx * n, yy * n, zz * n, xy * n, xz * n, yz * n];
    let eig = symmetric_eigenvalues(h);
    let axial_gradient = eigenvector(h, eig[0])
        .map_or(0.0, |e| sigma_mm * (gradient[0] * e[0] + gradient[1] * e[1] + gradient[2] * e[2]).abs());
    shape(eig, axial_gradient)
}

/// Per candidate voxel: the vesselness at the scale where the tube answers most strongly, or 0
/// where that scale is the `reject_sigma_mm` probe (the tube is thinner than the smallest scale
/// in `sigmas_mm` asks for), and the sheet measure at the smallest scale of `sigmas_mm`.
#[derive(Debug, Clone)]
pub struct MultiScale {
    pub tube: Vec<f32>,
    pub sheet: Vec<f32>,
}

pub fn multiscale_shape(
    data: &[f32],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigmas_mm: &[f64],
    reject_sigma_mm: Option<f64>,
    candidates: &[usize],
) -> MultiScale {
    let n = candidates.len();
    let mut best_strength = vec![0.0f64; n];
    let mut tube = vec![0.0f32; n];
    let mut sheet = vec![0.0f32; n];
    let smallest = sigmas_mm.iter().copied().fold(f64::INFINITY, f64::min);
    let scales: Vec<(f64, bool)> =
        reject_sigma_mm.map(|s| (s, true)).into_iter().chain(sigmas_mm.iter().map(|s| (*s, false))).collect();
    for (sigma, is_probe) in scales {
        let smoothed = gaussian_blur(data, dims, spacing_mm, sigma);
        let shapes: Vec<HessianShape> = {
            let half = n.div_ceil(2);
            let (a, b) = candidates.split_at(half);
            let run = |part: &[usize]| -> Vec<HessianShape> {
                part.iter().map(|&v| voxel_shape(&smoothed, dims, spacing_mm, sigma, v)).collect()
            };
            std::thread::scope(|s| {
                let first = s.spawn(|| run(a));
                let mut second = run(b);
                let mut all = first.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                all.append(&mut second);
                all
            })
        };
        for (c, sh) in shapes.iter().enumerate() {
            if sh.tube_strength > best_strength[c] {
                best_strength[c] = sh.tube_strength;
                tube[c] = if is_probe { 0.0 } else { sh.tube as f32 };
            }
            if !is_probe && sigma == smallest {
                sheet[c] = sh.sheet as f32;
            }
        }
    }
    MultiScale { tube, sheet }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn eigenvalues_match_a_rotated_diagonal_matrix() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let d = [rng.random_range(-5.0..5.0), rng.random_range(-5.0..5.0), rng.random_range(-5.0..5.0)];
            let r = nalgebra::Rotation3::from_euler_angles(
                rng.random_range(0.0..6.0),
                rng.random_range(0.0..6.0),
                rng.random_range(0.0..6.0),
            );
            let m = r.matrix() * nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::from(d)) * r.matrix().transpose();
            let got = symmetric_eigenvalues([m[(0, 0)], m[(1, 1)], m[(2, 2)], m[(0, 1)], m[(0, 2)], m[(1, 2)]]);
            let mut want = d;
            want.sort_by(|x: &f64, y: &f64| x.abs().total_cmp(&y.abs()));
            for a in 0..3 {
                assert!((got[a] - want[a]).abs() < 1e-6, "{got:?} vs {want:?}");
            }
            // The eigenvector of the smallest |eigenvalue| is the rotated axis that carries it.
            let h = [m[(0, 0)], m[(1, 1)], m[(2, 2)], m[(0, 1)], m[(0, 2)], m[(1, 2)]];
            let axis = (0..3).min_by(|x, y| d[*x].abs().total_cmp(&d[*y].abs())).unwrap_or(0);
            let gaps = (0..3).filter(|&b| b != axis).all(|b| (d[b] - d[axis]).abs() > 0.5);
            if let (Some(e), true) = (eigenvector(h, got[0]), gaps) {
                let want_axis = r.matrix().column(axis);
                let dot = (e[0] * want_axis[0] + e[1] * want_axis[1] + e[2] * want_axis[2]).abs();
                assert!(dot > 1.0 - 1e-6, "{e:?} vs {want_axis:?}");
            }
        }
    }

    #[test]
    fn blur_keeps_the_mean_and_spreads_a_point_as_a_gaussian() {
        let dims = [31, 31, 15];
        let mut data = vec![0.0f32; 31 * 31 * 15];
        let centre = (7 * 31 + 15) * 31 + 15;
        data[centre] = 1000.0;
        let b = gaussian_blur(&data, dims, [1.0, 1.0, 2.0], 2.0);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1000.0).abs() < 1.0, "{sum}");
        // Along x at 2 mm (one sigma) the value falls by exp(-1/2); along z one voxel is 2 mm too.
        let ratio_x = b[centre + 2] / b[centre];
        let ratio_z = b[centre + 31 * 31] / b[centre];
        assert!(
            (ratio_x - (-0.5f32).exp()).abs() < 0.01 && (ratio_z - (-0.5f32).exp()).abs() < 0.02,
            "{ratio_x} {ratio_z}"
        );
    }
}
