//! What a segmentation run is asked and what it produced, as plain data shared by the pipeline
//! that computes it and the outputs that write it.

use needle_nav_core::volume::Volume;
use serde::Serialize;
use std::path::PathBuf;

/// Refinement passes by default (voxels of growth at the model spacing, 2 mm each).
pub const DEFAULT_REFINEMENT_PASSES: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationOptions {
    pub output_dir: PathBuf,
    pub hu_refinement: bool,
    pub write_surface: bool,
    /// 0 takes [`DEFAULT_OVERLAP`].
    pub patch_overlap: f64,
    pub max_input_voxels: u64,
    /// Patches per network call.
    pub batch: usize,
    /// Surface point cloud cell size [mm]: one point per class per cell.
    pub surface_cell_mm: f64,
    /// Also return the network's labels before the refinement (evaluation).
    pub keep_unrefined: bool,
    /// Also return the labels refined until nothing changes (no pass limit), from the same
    /// network output (evaluation: one inference for all three variants).
    pub keep_unbounded_refinement: bool,
    /// The refinement repeats until nothing changes, but at most this many passes (one voxel
    /// of growth each): enough to bridge the gaps between vessel ends, while in plain CT, whose
    /// blood window overlaps all soft tissue, unbounded growth floods the mediastinum
    /// (measured: Dice 0.80 -> 0.07 on digital patients; see README).
    pub refinement_max_passes: usize,
    /// Replace an earlier result in `output_dir` (label map, summary, surface); without it such
    /// a folder is refused before anything is computed.
    pub overwrite: bool,
    /// DICOM input: skip slices that cannot be read instead of refusing the series (see
    /// [`dicom_read::LoadOptions`]).
    pub skip_unreadable_slices: bool,
}

impl SegmentationOptions {
    pub fn new(output_dir: impl Into<PathBuf>) -> SegmentationOptions {
        SegmentationOptions {
            output_dir: output_dir.into(),
            hu_refinement: true,
            write_surface: true,
            patch_overlap: 0.0,
            max_input_voxels: 512 * 512 * 1024,
            batch: 1,
            surface_cell_mm: 3.0,
            keep_unrefined: false,
            keep_unbounded_refinement: false,
            refinement_max_passes: DEFAULT_REFINEMENT_PASSES,
            overwrite: false,
            skip_unreadable_slices: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// What a run produced; the labels stay in memory for callers in the same process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationResult {
    pub input: String,
    pub model: String,
    #[serde(skip)]
    pub labels: Volume<u8>,
    /// The network's labels before the refinement, when asked for.
    #[serde(skip)]
    pub unrefined_labels: Option<Volume<u8>>,
    /// The labels refined without a pass limit, when asked for.
    #[serde(skip)]
    pub unbounded_refined_labels: Option<Volume<u8>>,
    pub class_names: Vec<String>,
    pub voxel_counts: Vec<u64>,
    pub volumes_ml: Vec<f64>,
    /// Judged from the network's vessel voxels; picks the HU windows.
    pub contrast_enhanced: bool,
    pub vessel_median_hu: Option<f32>,
    pub hu_refinement: bool,
    pub refined_voxels: usize,
    pub refinement_passes: usize,
    pub patches: usize,
    pub patch_overlap: f64,
    pub model_grid_dims: [usize; 3],
    pub stages: Vec<StageTime>,
    pub total_seconds: f64,
    pub warnings: Vec<String>,
    pub label_map_path: PathBuf,
    pub summary_json_path: PathBuf,
    pub surface_path: Option<PathBuf>,
    /// The DICOM Segmentation (DICOM input only) and its SOPInstanceUID.
    pub dicom_seg_path: Option<PathBuf>,
    pub dicom_seg_sop_instance_uid: Option<String>,
    /// Why no DICOM SEG was written (NIfTI input, a source series without UIDs), when none was.
    pub dicom_seg_note: Option<String>,
    /// Where the DICOM SEG was stored (PACS address and AE title), when it was.
    pub stored_seg_to: Option<String>,
    #[serde(skip)]
    pub surface: Vec<VesselPoint>,
}

/// One point of the vessel surface.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VesselPoint {
    /// CT patient coordinates (LPS) [m].
    pub position_m: [f64; 3],
    pub label: u8,
}
