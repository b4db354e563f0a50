//! Straight needle path planning on the planning CT: a clearance map (exact Euclidean distance
//! to the nearest vessel or bone voxel, in mm, on the CT grid), the skin (boundary of the body
//! after filling the lungs), and a search over straight paths from the skin to the target
//! within a cone around the preferred approach direction. The path with the largest minimum
//! clearance wins; one below the safety margin is refused, never returned.

pub mod config;
pub mod morphology;
pub mod obstacles;
pub mod pacs_ct;
pub mod plan_files;
pub mod risk;
pub mod search;
pub mod vesselness;

use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::{Geometry, Volume};
use std::collections::VecDeque;

pub use obstacles::{CtAnatomy, Layer, ObstacleOptions};
pub use risk::{CostWeights, HardLimits, LayerMargins, PathTerms, Refusal};
pub use search::{plan_on_ct, LayerSummary, Plan, PlanError, PlannerOptions, Planning};

/// Squared Euclidean distance [mm²] from every voxel centre to the nearest `obstacle` voxel
/// centre (f32::INFINITY when there is none): exact, separable (Felzenszwalb & Huttenlocher),
/// with anisotropic spacing.
pub fn squared_distance_mm2(obstacle: &[bool], dims: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let mut d: Vec<f64> = obstacle.iter().map(|o| if *o { 0.0 } else { f64::INFINITY }).collect();
    let n_max = nx.max(ny).max(nz);
    let mut line = vec![0.0f64; n_max];
    let mut out = vec![0.0f64; n_max];
    let mut v = vec![0usize; n_max];
    let mut z = vec![0.0f64; n_max + 1];
    let strides = [1, nx, nx * ny];
    for axis in 0..3 {
        let len = dims[axis];
        let w = spacing_mm[axis] * spacing_mm[axis];
        let stride = strides[axis];
        let (a1, a2) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for q in 0..dims[a2] {
            for p in 0..dims[a1] {
                let start = p * strides[a1] + q * strides[a2];
                for (t, l) in line.iter_mut().enumerate().take(len) {
                    *l = d[start + t * stride];
                }
                envelope(&line[..len], w, &mut out[..len], &mut v, &mut z);
                for (t, o) in out.iter().enumerate().take(len) {
                    d[start + t * stride] = *o;
                }
            }
        }
    }
    d.into_iter().map(|x| x as f32).collect()
}

/// 1-D squared distance transform: out[t] = min_s f[s] + w (t - s)².
fn envelope(f: &[f64], w: f64, out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&s| f[s].is_finite()).collect();
    if finite.is_empty() {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let mut k = 0;
    v[0] = finite[0];
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let inter = |q: usize, p: usize| {
        ((f[q] + w * (q * q) as f64) - (f[p] + w * (p * p) as f64)) / (2.0 * w * (q as f64 - p as f64))
    };
    for &q in &finite[1..] {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (t, o) in out.iter_mut().enumerate() {
        while z[k + 1] < t as f64 {
            k += 1;
        }
        let dt = t as f64 - v[k] as f64;
        *o = w * dt * dt + f[v[k]];
    }
}

/// Voxels outside the body: per axial slice, the air connected to the slice border (so the
/// lungs and bowel gas stay inside).
pub fn outside_body(hu: &Volume<f32>, body_hu: f32) -> Vec<bool> {
    let [nx, ny, nz] = hu.geometry.dims;
    let mut outside = vec![false; nx * ny * nz];
    let mut queue = VecDeque::new();
    for k in 0..nz {
        let base = k * nx * ny;
        let air = |i: usize, j: usize| hu.data[base + j * nx + i] <= body_hu;
        for i in 0..nx {
            for j in [0, ny - 1] {
                queue.push_back((i, j));
            }
        }
        for j in 0..ny {
            for i in [0, nx - 1] {
                queue.push_back((i, j));
            }
        }
        while let Some((i, j)) = queue.pop_front() {
            let v = base + j * nx + i;
            if outside[v] || !air(i, j) {
                continue;
            }
            outside[v] = true;
            if i > 0 {
                queue.push_back((i - 1, j));
            }
            if i + 1 < nx {
                queue.push_back((i + 1, j));
            }
            if j > 0 {
                queue.push_back((i, j - 1));
            }
            if j + 1 < ny {
                queue.push_back((i, j + 1));
            }
        }
    }
    outside
}

/// Directions within `max_angle_deg` of `axis` (Fibonacci points on the sphere's cap).
pub(crate) fn cone_directions(axis: &Vector3<f64>, max_angle_deg: f64, count: usize) -> Vec<Vector3<f64>> {
    let axis = axis.normalize();
    let cos_max = max_angle_deg.to_radians().cos();
    // Points spread evenly over the cap [cos_max, 1] of the z axis, then rotated onto `axis`.
    let helper = if axis.x.abs() < 0.9 { Vector3::x() } else { Vector3::y() };
    let u = axis.cross(&helper).normalize();
    let w = axis.cross(&u);
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..count.max(1))
        .map(|n| {
            let c = 1.0 - (1.0 - cos_max) * (n as f64 + 0.5) / count.max(1) as f64;
            let s = (1.0 - c * c).max(0.0).sqrt();
            let phi = golden * n as f64;
            (axis * c + u * (s * phi.cos()) + w * (s * phi.sin())).normalize()
        })
        .collect()
}

pub(crate) fn nearest_voxel(g: &Geometry, p: &Point3<f64>) -> Option<usize> {
    let idx = g.patient_to_index(p).map(|v| v.round());
    if (0..3).any(|a| idx[a] < 0.0 || idx[a] > (g.dims[a] - 1) as f64) {
        return None;
    }
    Some(g.offset(idx[0] as usize, idx[1] as usize, idx[2] as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn distance_transform_equals_brute_force_with_anisotropic_spacing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let dims = [13, 9, 7];
        let spacing = [0.7, 1.3, 2.5];
        let n = dims.iter().product::<usize>();
        let obstacle: Vec<bool> = (0..n).map(|_| rng.random_bool(0.03)).collect();
        let d = squared_distance_mm2(&obstacle, dims, spacing);
        let pos = |v: usize| {
            let (i, j, k) = (v % dims[0], (v / dims[0]) % dims[1], v / (dims[0] * dims[1]));
            [i as f64 * spacing[0], j as f64 * spacing[1], k as f64 * spacing[2]]
        };
        for v in 0..n {
            let p = pos(v);
            let brute = (0..n)
                .filter(|&w| obstacle[w])
                .map(|w| {
                    let q = pos(w);
                    (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert!((d[v] as f64 - brute).abs() < 1e-4 * (1.0 + brute), "voxel {v}: {} vs {brute}", d[v]);
        }
        assert!(squared_distance_mm2(&[false; 8], [2, 2, 2], [1.0; 3]).iter().all(|v| v.is_infinite()));
    }
}
