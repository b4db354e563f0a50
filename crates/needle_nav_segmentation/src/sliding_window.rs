//! Sliding-window inference over a whole volume with any patch predictor (the ONNX model in
//! production, simple closed-form predictors in tests): cut overlapping patches, run them in
//! batches, blend their class probabilities with Gaussian weights and stitch.

use super::tiling::{gaussian_weights, patch_origins, Stitcher};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PredictError(pub String);

/// Something that turns patches of network input into class probabilities.
pub trait PatchPredictor {
    fn classes(&self) -> usize;
    /// `patches`: `count` patches of `patch_xyz` voxels, each laid out [k][j][i]. Returns
    /// `count` blocks of [class][k][j][i] probabilities.
    fn predict(&mut self, patches: &[f32], count: usize, patch_xyz: [usize; 3]) -> Result<Vec<f32>, PredictError>;
}

/// Options of one sliding-window pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowOptions {
    pub patch_xyz: [usize; 3],
    /// Fraction of a patch shared with its neighbour, 0..=0.9.
    pub overlap: f64,
    /// Patches per predictor call.
    pub batch: usize,
    /// Network input value for voxels outside the volume (air, normalised).
    pub pad_value: f32,
}

/// Runs `predictor` over `input` (network input values, `dims` = [nx, ny, nz], i fastest) and
/// returns the stitched scores. `progress(done, total)` is called after every batch.
pub fn predict_volume(
    predictor: &mut dyn PatchPredictor,
    input: &[f32],
    dims: [usize; 3],
    options: &WindowOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Stitcher, PredictError> {
    let patch = options.patch_xyz;
    let per_patch: usize = patch.iter().product();
    if input.len() != dims.iter().product::<usize>() {
        return Err(PredictError(format!("{} input values for a {dims:?} volume", input.len())));
    }
    let origins = patch_origins(dims, patch, options.overlap);
    let weights = gaussian_weights(patch);
    let classes = predictor.classes();
    let mut stitcher = Stitcher::new(dims, classes);
    let batch = options.batch.max(1);
    let mut buffer = Vec::with_capacity(per_patch * batch);
    for (n, chunk) in origins.chunks(batch).enumerate() {
        buffer.clear();
        for origin in chunk {
            extract_patch(input, dims, *origin, patch, options.pad_value, &mut buffer);
        }
        let scores = predictor.predict(&buffer, chunk.len(), patch)?;
        if scores.len() != chunk.len() * classes * per_patch {
            return Err(PredictError(format!(
                "the model returned {} values for {} patches of {} classes x {per_patch} voxels",
                scores.len(),
                chunk.len(),
                classes
            )));
        }
        if let Some(bad) = scores.iter().find(|v| !v.is_finite()) {
            return Err(PredictError(format!("the model returned a non-finite probability ({bad})")));
        }
        for (p, origin) in chunk.iter().enumerate() {
            let block = &scores[p * classes * per_patch..(p + 1) * classes * per_patch];
            stitcher.add(*origin, patch, block, &weights);
        }
        progress((n * batch + chunk.len()).min(origins.len()), origins.len());
    }
    Ok(stitcher)
}

/// Appends the patch at `origin` to `out`, padding outside the volume with `pad`.
fn extract_patch(input: &[f32], dims: [usize; 3], origin: [usize; 3], patch: [usize; 3], pad: f32, out: &mut Vec<f32>) {
    let [nx, ny, nz] = dims;
    for k in 0..patch[2] {
        let z = origin[2] + k;
        for j in 0..patch[1] {
            let y = origin[1] + j;
            if z >= nz || y >= ny {
                out.extend(std::iter::repeat_n(pad, patch[0]));
                continue;
            }
            let row = (z * ny + y) * nx;
            let inside = patch[0].min(nx.saturating_sub(origin[0]));
            out.extend_from_slice(&input[row + origin[0]..row + origin[0] + inside]);
            out.extend(std::iter::repeat_n(pad, patch[0] - inside));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voxel-wise "network": class 1 where the input is above 0, else class 0, with
    /// probabilities from a logistic of the value. Patch-independent, so stitching must give
    /// exactly the voxel-wise answer.
    struct Logistic {
        calls: usize,
    }

    impl PatchPredictor for Logistic {
        fn classes(&self) -> usize {
            2
        }
        fn predict(&mut self, patches: &[f32], count: usize, patch: [usize; 3]) -> Result<Vec<f32>, PredictError> {
            self.calls += 1;
            let n: usize = patch.iter().product();
            let mut out = Vec::with_capacity(count * 2 * n);
            for p in 0..count {
                let block = &patches[p * n..(p + 1) * n];
                out.extend(block.iter().map(|v| 1.0 / (1.0 + v.exp())));
                out.extend(block.iter().map(|v| 1.0 / (1.0 + (-v).exp())));
            }
            Ok(out)
        }
    }

    #[test]
    fn stitched_labels_equal_the_voxelwise_answer_for_any_overlap_and_edge() {
        let dims = [37, 23, 19]; // not multiples of the patch: edge patches and padding
        let input: Vec<f32> =
            (0..dims.iter().product::<usize>()).map(|v| ((v * 7919 % 1000) as f32 / 500.0 - 1.0) + 0.0005).collect();
        for overlap in [0.0, 0.25, 0.5] {
            let mut model = Logistic { calls: 0 };
            let opts = WindowOptions { patch_xyz: [16, 16, 8], overlap, batch: 3, pad_value: -5.0 };
            let mut seen = Vec::new();
            let st = predict_volume(&mut model, &input, dims, &opts, &mut |d, t| seen.push((d, t))).unwrap();
            let labels = st.labels();
            for (v, x) in input.iter().enumerate() {
                assert_eq!(labels[v], u8::from(*x > 0.0), "voxel {v}, overlap {overlap}");
            }
            let total = patch_origins(dims, opts.patch_xyz, overlap).len();
            assert_eq!(seen.last(), Some(&(total, total)));
            assert_eq!(model.calls, total.div_ceil(3));
        }
        // A volume smaller than one patch is padded, not refused.
        let small = vec![1.0f32; 4 * 4 * 4];
        let opts = WindowOptions { patch_xyz: [8, 8, 8], overlap: 0.5, batch: 2, pad_value: -5.0 };
        let st = predict_volume(&mut Logistic { calls: 0 }, &small, [4, 4, 4], &opts, &mut |_, _| {}).unwrap();
        assert!(st.labels().iter().all(|l| *l == 1));
    }

    struct Broken;
    impl PatchPredictor for Broken {
        fn classes(&self) -> usize {
            2
        }
        fn predict(&mut self, _: &[f32], count: usize, patch: [usize; 3]) -> Result<Vec<f32>, PredictError> {
            Ok(vec![f32::NAN; count * 2 * patch.iter().product::<usize>()])
        }
    }

    #[test]
    fn non_finite_or_misshapen_model_output_is_an_error() {
        let opts = WindowOptions { patch_xyz: [8, 8, 8], overlap: 0.0, batch: 1, pad_value: 0.0 };
        let e = predict_volume(&mut Broken, &[0.0; 512], [8, 8, 8], &opts, &mut |_, _| {}).unwrap_err();
        assert!(e.0.contains("non-finite"), "{e}");
        let e = predict_volume(&mut Broken, &[0.0; 10], [8, 8, 8], &opts, &mut |_, _| {}).unwrap_err();
        assert!(e.0.contains("input values"), "{e}");
    }
}
