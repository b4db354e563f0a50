//! Sliding-window inference support: the patch grid over a volume (with overlap, every voxel
//! covered, patches inside the volume), Gaussian blending weights, and the stitching of
//! per-patch class scores into a label map by weighted average and argmax.

/// Patch origins along one axis: patches of `patch` voxels stepping by `patch * (1 - overlap)`,
/// the last one flush with the end. A volume smaller than a patch gets one patch at 0 (the
/// caller pads).
pub fn axis_origins(len: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if len <= patch {
        return vec![0];
    }
    let step = ((patch as f64) * (1.0 - overlap.clamp(0.0, 0.9))).round().max(1.0) as usize;
    let mut origins: Vec<usize> = (0..).map(|n| n * step).take_while(|&o| o + patch < len).collect();
    origins.push(len - patch);
    origins.dedup();
    origins
}

/// Every patch origin [i, j, k] over a volume of `dims`.
pub fn patch_origins(dims: [usize; 3], patch: [usize; 3], overlap: f64) -> Vec<[usize; 3]> {
    let axes: Vec<Vec<usize>> = (0..3).map(|a| axis_origins(dims[a], patch[a], overlap)).collect();
    let mut out = Vec::new();
    for &k in &axes[2] {
        for &j in &axes[1] {
            for &i in &axes[0] {
                out.push([i, j, k]);
            }
        }
    }
    out
}

/// Gaussian importance weights over a patch (sigma = patch / 8, as nnU-Net does), normalised
/// to a maximum of 1 and floored so border voxels still count a little.
pub fn gaussian_weights(patch: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let s = (n as f64 / 8.0).max(1e-6);
        (0..n).map(|x| (-((x as f64 - c).powi(2)) / (2.0 * s * s)).exp()).collect()
    };
    let (wx, wy, wz) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w = Vec::with_capacity(patch.iter().product());
    for z in &wz {
        for y in &wy {
            for x in &wx {
                w.push((x * y * z) as f32);
            }
        }
    }
    let max = w.iter().cloned().fold(0.0f32, f32::max).max(f32::MIN_POSITIVE);
    w.iter().map(|v| (v / max).max(1e-3)).collect()
}

/// Accumulates weighted class scores of patches and turns them into labels.
#[derive(Debug)]
pub struct Stitcher {
    dims: [usize; 3],
    classes: usize,
    scores: Vec<f32>,
    weights: Vec<f32>,
}

impl Stitcher {
    pub fn new(dims: [usize; 3], classes: usize) -> Stitcher {
        let n = dims.iter().product::<usize>();
        Stitcher { dims, classes, scores: vec![0.0; n * classes], weights: vec![0.0; n] }
    }

    /// Adds one patch's scores, laid out [class][k][j][i] over `patch`, at `origin`; the parts
    /// of the patch outside the volume (padding) are ignored.
    pub fn add(&mut self, origin: [usize; 3], patch: [usize; 3], scores: &[f32], weights: &[f32]) {
        let [nx, ny, nz] = self.dims;
        let per_class = patch.iter().product::<usize>();
        for k in 0..patch[2] {
            let z = origin[2] + k;
            if z >= nz {
                break;
            }
            for j in 0..patch[1] {
                let y = origin[1] + j;
                if y >= ny {
                    break;
                }
                for i in 0..patch[0] {
                    let x = origin[0] + i;
                    if x >= nx {
                        break;
                    }
                    let p = (k * patch[1] + j) * patch[0] + i;
                    let v = (z * ny + y) * nx + x;
                    let w = weights[p];
                    self.weights[v] += w;
                    for c in 0..self.classes {
                        self.scores[c * self.weights.len() + v] += w * scores[c * per_class + p];
                    }
                }
            }
        }
    }

    /// Label of each voxel: the class with the highest blended score (0 where no patch reached).
    pub fn labels(&self) -> Vec<u8> {
        let n = self.weights.len();
        (0..n)
            .map(|v| {
                if self.weights[v] <= 0.0 {
                    return 0;
                }
                (0..self.classes)
                    .max_by(|&a, &b| self.scores[a * n + v].total_cmp(&self.scores[b * n + v]))
                    .unwrap_or(0) as u8
            })
            .collect()
    }

    /// Blended score of class `c` at voxel `v`.
    pub fn score(&self, c: usize, v: usize) -> f32 {
        let w = self.weights[v];
        if w > 0.0 {
            self.scores[c * self.weights.len() + v] / w
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_every_voxel_and_stay_inside() {
        for (len, patch, overlap) in [(100, 32, 0.5), (64, 64, 0.5), (65, 64, 0.25), (20, 64, 0.5), (141, 48, 0.0)] {
            let o = axis_origins(len, patch, overlap);
            let mut covered = vec![false; len];
            for &s in &o {
                assert!(s + patch <= len.max(patch));
                for c in covered.iter_mut().skip(s).take(patch) {
                    *c = true;
                }
            }
            assert!(covered.iter().all(|&c| c), "{len} {patch} {overlap}: {o:?}");
        }
        assert_eq!(axis_origins(100, 32, 0.5), vec![0, 16, 32, 48, 64, 68]);
        assert_eq!(patch_origins([100, 64, 20], [32, 64, 64], 0.5).len(), 6);
    }

    #[test]
    fn stitching_constant_scores_gives_the_constant_and_blends_by_weight() {
        let dims = [40, 30, 20];
        let patch = [16, 16, 16];
        let w = gaussian_weights(patch);
        assert!((w.iter().cloned().fold(0.0, f32::max) - 1.0).abs() < 1e-6);
        let mut s = Stitcher::new(dims, 2);
        let per = 16 * 16 * 16;
        for o in patch_origins(dims, patch, 0.5) {
            // class 1 everywhere with score 0.7, class 0 with 0.3
            let mut scores = vec![0.3f32; per];
            scores.extend(vec![0.7f32; per]);
            s.add(o, patch, &scores, &w);
        }
        assert!(s.labels().iter().all(|&l| l == 1));
        assert!((s.score(1, 123) - 0.7).abs() < 1e-5);
        // Two overlapping opinions average by weight: equal weights -> the mean.
        let mut t = Stitcher::new([4, 1, 1], 2);
        t.add([0, 0, 0], [4, 1, 1], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[1.0; 4]);
        t.add([0, 0, 0], [4, 1, 1], &[0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0], &[1.0; 4]);
        assert!((t.score(0, 0) - 0.5).abs() < 1e-6 && (t.score(1, 0) - 1.5).abs() < 1e-6);
        assert_eq!(t.labels(), vec![1; 4]);
    }
}
