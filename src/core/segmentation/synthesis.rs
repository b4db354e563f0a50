//! Non-contrast training data from contrast CT: per vessel class, an enhancement factor from
//! the class's mean HU and its window width lowers that class's voxels to plain blood.
//!
//! For class c with mean HU m_c (over the class's voxels inside its HU window, so partial-volume
//! rims do not bias it) and window width w_c: the
//! enhancement is e_c = m_c - PLAIN_BLOOD_HU, and the spread around the mean is compressed by
//! s_c = PLAIN_WINDOW_WIDTH / w_c (contrast windows are wide, plain blood is narrow):
//! hu' = hu - e_c - (1 - s_c) (hu - m_c) = PLAIN_BLOOD_HU + s_c (hu - m_c).

use super::HuWindows;

pub const PLAIN_BLOOD_HU: f32 = 40.0;
/// Width of plain blood's HU spread that contrast vessels are compressed into.
pub const PLAIN_WINDOW_WIDTH: f32 = 70.0;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Enhancement {
    pub label: u8,
    pub mean_hu: f32,
    pub enhancement_hu: f32,
    pub spread_scale: f32,
    pub voxels: usize,
}

/// Lowers each vessel class to plain blood; returns the factors used. Classes without voxels are skipped.
pub fn synthesise_plain(hu: &mut [f32], labels: &[u8], windows: &HuWindows) -> Vec<Enhancement> {
    let mut out = Vec::new();
    for &(label, lo, hi) in &windows.windows {
        let (sum, n) = hu
            .iter()
            .zip(labels)
            .filter(|(h, &l)| l == label && **h >= lo && **h <= hi)
            .fold((0.0f64, 0usize), |(s, n), (h, _)| (s + *h as f64, n + 1));
        if n == 0 {
            continue;
        }
        let mean = (sum / n as f64) as f32;
        let scale = (PLAIN_WINDOW_WIDTH / (hi - lo).max(1.0)).min(1.0);
        for (h, &l) in hu.iter_mut().zip(labels) {
            if l == label {
                *h = PLAIN_BLOOD_HU + scale * (*h - mean);
            }
        }
        out.push(Enhancement {
            label,
            mean_hu: mean,
            enhancement_hu: mean - PLAIN_BLOOD_HU,
            spread_scale: scale,
            voxels: n,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::phantom::{MotionState, Phantom, PhantomConfig};

    #[test]
    fn synthesised_plain_vessels_match_the_digital_patients_own_plain_ct() {
        let cfg = PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() };
        let contrast = Phantom::new(cfg.clone()).unwrap().render(&MotionState::REST, 0);
        let plain = Phantom::new(PhantomConfig { contrast: false, ..cfg }).unwrap().render(&MotionState::REST, 0);
        let mut hu: Vec<f32> = contrast.hu.data.iter().map(|&v| v as f32).collect();
        let factors = synthesise_plain(&mut hu, &contrast.labels.data, &HuWindows::contrast());
        assert_eq!(factors.len(), 3);
        for f in &factors {
            assert!(f.enhancement_hu > 100.0, "{f:?}");
        }
        // Voxels at least 1.5 mm inside a vessel have no partial volume in either CT: compare medians there.
        let phantom =
            Phantom::new(PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() })
                .unwrap();
        let g = &contrast.hu.geometry;
        let mut deep = vec![false; hu.len()];
        for (v, d) in deep.iter_mut().enumerate() {
            if contrast.labels.data[v] == 0 {
                continue;
            }
            let (i, j, k) = (v % g.dims[0], (v / g.dims[0]) % g.dims[1], v / (g.dims[0] * g.dims[1]));
            let p = g.index_to_patient([i as f64, j as f64, k as f64]);
            *d = phantom.vessels.iter().any(|s| s.signed_distance(&p).0 < -1.5);
        }
        let median = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        };
        for label in 1..=3u8 {
            let pick = |values: &dyn Fn(usize) -> f32| -> Vec<f32> {
                (0..hu.len()).filter(|&v| deep[v] && contrast.labels.data[v] == label).map(values).collect()
            };
            let synth = pick(&|v| hu[v]);
            let truth = pick(&|v| plain.hu.data[v] as f32);
            assert!(synth.len() > 20, "label {label}: {} deep voxels", synth.len());
            let (a, b) = (median(synth), median(truth));
            assert!((a - b).abs() < 10.0, "label {label}: synthesised median {a} HU vs plain CT {b} HU");
        }
        // Background untouched.
        let changed = hu
            .iter()
            .zip(&contrast.hu.data)
            .zip(&contrast.labels.data)
            .filter(|((a, b), l)| **l == 0 && **a != **b as f32)
            .count();
        assert_eq!(changed, 0);
    }
}
