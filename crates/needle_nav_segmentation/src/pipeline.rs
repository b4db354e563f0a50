//! One segmentation request from input path to written outputs: load (DICOM series or NIfTI),
//! size guard, canonical LPS grid at the model spacing, crop to the body, sliding-window
//! inference, argmax, HU-window refinement, labels back onto the input grid, outputs.

use super::onnx_model::{ModelError, OnnxVesselModel};
use super::outputs;
use crate::model_info::{ModelInfo, CLASS_NAMES};
use crate::preprocess::{bounding_box_above, canonical_grid, crop, paste, BODY_HU};
use crate::refine::refine;
use crate::request::{RequestError, SegmentationInput};
use crate::sliding_window::{predict_volume, PatchPredictor, PredictError, WindowOptions};
use needle_nav_core::volume::Volume;
use needle_nav_imaging::{dicom_read, nifti, resample};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Median HU of the network's vessel voxels above which the scan counts as contrast-enhanced
/// (enhanced blood 150-500 HU, plain blood 30-60 HU).
pub const CONTRAST_MEDIAN_HU: f32 = 100.0;
/// Overlap used when a request leaves it at 0.
pub const DEFAULT_OVERLAP: f64 = 0.25;
pub use crate::result::DEFAULT_REFINEMENT_PASSES;

#[derive(Debug, thiserror::Error)]
pub enum SegmentationError {
    #[error("bad request: {0}")]
    Request(#[from] RequestError),
    #[error("cannot read the input: {0}")]
    Input(String),
    #[error("the input has {voxels} voxels, more than the configured limit of {limit} (max_input_voxels)")]
    TooLarge { voxels: u64, limit: u64 },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("inference failed: {0}")]
    Inference(#[from] PredictError),
    #[error("cannot write the outputs: {0}")]
    Output(#[from] needle_nav_imaging::output_files::OutputError),
}

pub use crate::result::{SegmentationOptions, SegmentationResult, StageTime};

/// Progress of a long run: stage name, units done, units in total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The network plus its description; one request at a time (`&mut self`).
pub struct VesselSegmenter {
    predictor: Box<dyn PatchPredictor + Send>,
    info: ModelInfo,
    model_name: String,
}

impl VesselSegmenter {
    pub fn new(model: OnnxVesselModel) -> VesselSegmenter {
        let info = model.info.clone();
        let model_name = model.path.display().to_string();
        VesselSegmenter { predictor: Box::new(model), info, model_name }
    }

    /// Any predictor that follows the model contract (tests use closed-form ones).
    pub fn with_predictor(predictor: Box<dyn PatchPredictor + Send>, info: ModelInfo, name: &str) -> VesselSegmenter {
        VesselSegmenter { predictor, info, model_name: name.into() }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The whole request: load, segment, write.
    pub fn run(
        &mut self,
        input: &SegmentationInput,
        options: &SegmentationOptions,
        progress: Progress,
    ) -> Result<SegmentationResult, SegmentationError> {
        let started = Instant::now();
        // An earlier result is refused before minutes of work, and again when writing.
        outputs::check_output_dir(options)?;
        let load = dicom_read::LoadOptions { skip_unreadable_slices: options.skip_unreadable_slices };
        let (ct, mut warnings, input_name) = load_input(input, options.max_input_voxels, &load)?;
        // What the DICOM SEG references, matched to the loaded grid now: a series that cannot
        // have one is known before the inference.
        let seg_source = outputs::seg_source(input, &ct.geometry);
        if let (SegmentationInput::DicomDirectory(_), Err(note)) = (input, &seg_source) {
            warnings.push(format!("no DICOM SEG: {note}"));
        }
        let load_s = started.elapsed().as_secs_f64();
        progress("load", 1, 1);
        let mut result = self.segment(&ct, options, progress)?;
        result.input = input_name;
        result.stages.insert(0, StageTime { stage: "load".into(), seconds: load_s });
        warnings.append(&mut result.warnings);
        result.warnings = warnings;
        let t = Instant::now();
        let (algorithm_name, algorithm_version) = (model_stem(&self.model_name), self.info.version_label());
        let seg = match &seg_source {
            Ok(series) => Ok(outputs::SegSource {
                series,
                algorithm_name: &algorithm_name,
                algorithm_version: &algorithm_version,
            }),
            Err(note) => Err(note.as_str()),
        };
        let staged = outputs::write_all(&mut result, options, seg.as_ref().map_err(|n| *n))?;
        result.stages.push(StageTime { stage: "write".into(), seconds: t.elapsed().as_secs_f64() });
        result.total_seconds = started.elapsed().as_secs_f64();
        outputs::write_summary(&result, staged)?;
        Ok(result)
    }

    /// Labels for a CT already in memory (HU on its patient grid); writes nothing.
    pub fn segment(
        &mut self,
        ct: &Volume<f32>,
        options: &SegmentationOptions,
        progress: Progress,
    ) -> Result<SegmentationResult, SegmentationError> {
        let started = Instant::now();
        let mut stages = Vec::new();
        let mut stage = |name: &str, t: &mut Instant| {
            stages.push(StageTime { stage: name.into(), seconds: t.elapsed().as_secs_f64() });
            *t = Instant::now();
        };
        let mut t = Instant::now();
        // Readers check their geometry; a volume from elsewhere is checked here.
        ct.geometry.validate().map_err(|e| SegmentationError::Input(format!("the CT's grid: {e}")))?;
        if ct.data.len() != ct.geometry.voxel_count() {
            return Err(SegmentationError::Input(format!(
                "{} values for a grid of {:?} voxels",
                ct.data.len(),
                ct.geometry.dims
            )));
        }
        let voxels = ct.geometry.voxel_count() as u64;
        if voxels > options.max_input_voxels {
            return Err(SegmentationError::TooLarge { voxels, limit: options.max_input_voxels });
        }
        if ct.data.iter().any(|v| !v.is_finite()) {
            return Err(SegmentationError::Input("the CT holds non-finite values".into()));
        }
        let mut warnings = Vec::new();
        // 1. The network's grid: canonical LPS at the model spacing, cropped to the body.
        let grid = canonical_grid(&ct.geometry, self.info.spacing_mm_xyz);
        let model_voxels = grid.voxel_count() as u64;
        if model_voxels > options.max_input_voxels {
            return Err(SegmentationError::TooLarge { voxels: model_voxels, limit: options.max_input_voxels });
        }
        let canonical = resample::trilinear(ct, &grid, -1024.0);
        let body = bounding_box_above(&canonical, BODY_HU, 4).unwrap_or_else(|| {
            warnings.push("no voxel above -500 HU: the input holds no body; the whole grid was searched".into());
            [(0, grid.dims[0]), (0, grid.dims[1]), (0, grid.dims[2])]
        });
        let cropped = crop(&canonical, &body);
        stage("resample", &mut t);

        // 2. Sliding-window inference.
        let overlap = if options.patch_overlap > 0.0 { options.patch_overlap } else { DEFAULT_OVERLAP };
        let input: Vec<f32> = cropped.data.iter().map(|hu| self.info.normalise(*hu)).collect();
        let window = WindowOptions {
            patch_xyz: self.info.patch_size_xyz(),
            overlap,
            batch: options.batch.max(1),
            pad_value: self.info.normalise(-1024.0),
        };
        let dims = cropped.geometry.dims;
        let patches = crate::tiling::patch_origins(dims, window.patch_xyz, overlap).len();
        let stitched = predict_volume(self.predictor.as_mut(), &input, dims, &window, &mut |done, total| {
            progress("inference", done, total)
        })?;
        let mut labels = stitched.labels();
        drop(stitched);
        stage("inference", &mut t);

        // 3. HU-window refinement with the windows of the detected phase.
        let vessel_median_hu = median_hu_of_vessels(&labels, &cropped.data);
        let contrast_enhanced = vessel_median_hu.is_some_and(|m| m >= CONTRAST_MEDIAN_HU);
        let unrefined = options.keep_unrefined.then(|| labels.clone());
        let windows = self.info.windows(contrast_enhanced);
        let unbounded = options.keep_unbounded_refinement.then(|| {
            let mut grown = labels.clone();
            refine(&mut grown, &cropped.data, dims, &windows, usize::MAX);
            grown
        });
        let (mut refined_voxels, mut refinement_passes) = (0, 0);
        if options.hu_refinement {
            (refined_voxels, refinement_passes) =
                refine(&mut labels, &cropped.data, dims, &windows, options.refinement_max_passes);
        }
        stage("refinement", &mut t);

        // 4. Back onto the input grid.
        let mut full = Volume::filled(grid.clone(), 0u8);
        paste(&mut full, &Volume { geometry: cropped.geometry.clone(), data: labels }, &body);
        let labels = resample::nearest_labels(&full, &ct.geometry);
        let to_input_grid = |data: Vec<u8>| {
            let mut full = Volume::filled(grid.clone(), 0u8);
            paste(&mut full, &Volume { geometry: cropped.geometry.clone(), data }, &body);
            resample::nearest_labels(&full, &ct.geometry)
        };
        let unrefined_labels = unrefined.map(to_input_grid);
        let unbounded_refined_labels = unbounded.map(to_input_grid);
        stage("resample back", &mut t);

        let (voxel_counts, volumes_ml) = class_volumes(&labels);
        Ok(SegmentationResult {
            input: String::new(),
            model: self.model_name.clone(),
            labels,
            unrefined_labels,
            unbounded_refined_labels,
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            voxel_counts,
            volumes_ml,
            contrast_enhanced,
            vessel_median_hu,
            hu_refinement: options.hu_refinement,
            refined_voxels,
            refinement_passes,
            patches,
            patch_overlap: overlap,
            model_grid_dims: dims,
            stages,
            total_seconds: started.elapsed().as_secs_f64(),
            warnings,
            label_map_path: PathBuf::new(),
            summary_json_path: PathBuf::new(),
            surface_path: None,
            dicom_seg_path: None,
            dicom_seg_sop_instance_uid: None,
            dicom_seg_note: None,
            stored_seg_to: None,
            surface: Vec::new(),
        })
    }
}

/// The model's name for the records: its file name without the ending ("vessel_unet").
fn model_stem(model: &str) -> String {
    let name = Path::new(model).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let stem = name.strip_suffix(".onnx").unwrap_or(&name);
    if stem.is_empty() {
        "needle_nav vessel network".into()
    } else {
        stem.chars().take(64).collect()
    }
}

/// Reads the request's input, refusing sizes over `max_voxels` before the voxels are loaded
/// where the format allows.
pub fn load_input(
    input: &SegmentationInput,
    max_voxels: u64,
    dicom: &dicom_read::LoadOptions,
) -> Result<(Volume<f32>, Vec<String>, String), SegmentationError> {
    match input {
        SegmentationInput::Nifti(path) => {
            if let Some(dims) = nifti::read_dims(path) {
                let voxels = dims.iter().map(|d| *d as u64).product::<u64>();
                if voxels > max_voxels {
                    return Err(SegmentationError::TooLarge { voxels, limit: max_voxels });
                }
            }
            let img = nifti::read(path).map_err(|e| SegmentationError::Input(e.to_string()))?;
            Ok((Volume { geometry: img.geometry, data: img.data }, img.warnings, path.display().to_string()))
        }
        SegmentationInput::DicomDirectory(dir) => {
            // Uncompressed 16-bit slices: two bytes a voxel. Compressed series pass this and are
            // checked after loading.
            let bytes: u64 = std::fs::read_dir(dir)
                .map_err(|e| SegmentationError::Input(format!("{}: {e}", dir.display())))?
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            if bytes / 2 > max_voxels {
                return Err(SegmentationError::TooLarge { voxels: bytes / 2, limit: max_voxels });
            }
            let series =
                dicom_read::load_series_with(dir, None, dicom).map_err(|e| SegmentationError::Input(e.to_string()))?;
            let voxels = series.volume.geometry.voxel_count() as u64;
            if voxels > max_voxels {
                return Err(SegmentationError::TooLarge { voxels, limit: max_voxels });
            }
            Ok((series.volume, series.warnings, dir.display().to_string()))
        }
    }
}

fn median_hu_of_vessels(labels: &[u8], hu: &[f32]) -> Option<f32> {
    let mut values: Vec<f32> = labels.iter().zip(hu).filter(|(l, _)| **l > 0).map(|(_, h)| *h).collect();
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    Some(*m)
}

/// Voxel counts and volumes [ml] per class on the labels' own grid.
pub fn class_volumes(labels: &Volume<u8>) -> (Vec<u64>, Vec<f64>) {
    let mut counts = vec![0u64; CLASS_NAMES.len()];
    for l in &labels.data {
        if let Some(c) = counts.get_mut(*l as usize) {
            *c += 1;
        }
    }
    let voxel_ml = labels.geometry.spacing_mm.iter().product::<f64>() / 1000.0;
    let volumes = counts.iter().map(|c| *c as f64 * voxel_ml).collect();
    (counts, volumes)
}

/// The model shipped with the package: `$NEEDLE_NAV_MODEL_DIR`, the installed
/// `share/needle_nav/models` on `AMENT_PREFIX_PATH`, else the source tree's `models/`.
pub fn default_model_path() -> PathBuf {
    const FILE: &str = "vessel_unet.onnx";
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("NEEDLE_NAV_MODEL_DIR") {
        candidates.push(Path::new(&dir).join(FILE));
    }
    if let Some(prefixes) = std::env::var_os("AMENT_PREFIX_PATH") {
        candidates.extend(std::env::split_paths(&prefixes).map(|p| p.join("share/needle_nav/models").join(FILE)));
    }
    let source_tree = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("models").join(FILE);
    candidates.into_iter().find(|p| p.is_file()).unwrap_or(source_tree)
}
