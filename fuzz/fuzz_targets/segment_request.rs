//! `SegmentVessels` requests through the segmentation service (`segmentation::service`): request
//! checks, input loading, resampling, tiling, refinement and output writing, with a closed-form
//! stand-in for the network (no ONNX Runtime in the fuzz build).
//!
//! Input: byte 0 flags (bit 0 hu_refinement, bit 1 write_surface), bytes 1..5 patch_overlap
//! (f32 LE), then UTF-8 `input_path\noutput_dir`. Relative paths name files of a sandbox folder
//! holding fixtures (ct.nii, ct.nii.gz, dicom/, empty/, notes.png); absolute paths and `..`
//! are skipped (the fuzzer must not write outside the sandbox).
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_segmentation::model_info::ModelInfo;
use needle_nav_segmentation::sliding_window::{PatchPredictor, PredictError};
use needle_nav_imaging::nifti;
use needle_nav_core::volume::Geometry;
use needle_nav_segmentation::pipeline::VesselSegmenter;
use needle_nav_segmentation::service::{PacsSeries, SegmentRequest, SegmentationService, ServiceLimits};
use needle_nav_fuzz::{scratch, write, Bytes};
use std::path::PathBuf;
use std::sync::OnceLock;

const MODEL_INFO: &str = r#"{"format": 1, "spacing_mm_xyz": [4.0, 4.0, 4.0], "patch_size_zyx": [8, 8, 8],
    "normalisation": {"clip_hu": [-1000.0, 800.0], "mean_hu": -300.0, "std_hu": 400.0},
    "class_names": ["background", "artery", "vein", "aorta"],
    "hu_windows": {"contrast": {"artery": [150, 700], "vein": [120, 600], "aorta": [150, 700]},
                   "plain": {"artery": [10, 80], "vein": [10, 80], "aorta": [10, 80]}},
    "orientation": "LPS", "training": {"seed": 7}}"#;

/// Aorta where the normalised input is above 1 (HU > 100), else background.
struct BrightIsAorta;
impl PatchPredictor for BrightIsAorta {
    fn classes(&self) -> usize {
        4
    }
    fn predict(&mut self, p: &[f32], count: usize, patch: [usize; 3]) -> Result<Vec<f32>, PredictError> {
        let n: usize = patch.iter().product();
        let mut out = vec![0.0; count * 4 * n];
        for b in 0..count {
            for v in 0..n {
                let c = if p[b * n + v] > 1.0 { 3 } else { 0 };
                out[(b * 4 + c) * n + v] = 1.0;
            }
        }
        Ok(out)
    }
}

/// Fresh fixtures for every input: earlier requests' outputs must not change later ones.
fn fixtures() -> PathBuf {
    let dir = scratch("segment_request");
    // A 24 mm cube of soft tissue with a bright bar, 2 mm voxels.
    let g = Geometry::axial([12, 12, 12], [2.0; 3], [0.0; 3]);
    let mut hu = vec![40.0f32; g.voxel_count()];
    for k in 3..9 {
        for j in 5..8 {
            for i in 5..8 {
                hu[g.offset(i, j, k)] = 300.0;
            }
        }
    }
    nifti::write(&dir.join("ct.nii"), &g, &hu, "fuzz").expect("fixture ct.nii");
    nifti::write(&dir.join("ct.nii.gz"), &g, &hu, "fuzz").expect("fixture ct.nii.gz");
    write(&dir.join("dicom/1.dcm"), b"DICM but not really");
    std::fs::create_dir_all(dir.join("empty")).expect("fixture empty/");
    write(&dir.join("notes.png"), b"not an image");
    dir
}

fn service() -> &'static SegmentationService {
    static SERVICE: OnceLock<SegmentationService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let limits = ServiceLimits {
            max_input_voxels: 1 << 20,
            queue_when_busy: true,
            max_queue: 2,
            // Requests write into a sandbox of scratch folders: replacing an earlier result is fine.
            overwrite_results: true,
            skip_unreadable_slices: false,
            scheduling: needle_nav_segmentation::scheduling::WorkerScheduling::Normal,
            // No PACS: requests naming a PACS series or asking to store are refused before queueing.
            pacs: Default::default(),
        };
        SegmentationService::start(limits, || {
            let info = ModelInfo::from_json(MODEL_INFO).map_err(|e| e.to_string())?;
            Ok(VesselSegmenter::with_predictor(Box::new(BrightIsAorta), info, "closed-form"))
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes::new(data);
    let flags = bytes.u8();
    let overlap = f32::from_bits(bytes.u32());
    let Ok(text) = std::str::from_utf8(data.get(5..).unwrap_or_default()) else { return };
    let (input_path, output_dir) = text.split_once('\n').unwrap_or((text, "out"));
    let escapes = |p: &str| p.starts_with('/') || p.contains("..") || p.starts_with('~');
    if escapes(input_path) || escapes(output_dir) {
        return;
    }
    let dir = fixtures();
    // Blank fields stay blank (the service must reject them); others are sandbox paths.
    let in_sandbox = |p: &str| if p.trim().is_empty() { p.to_string() } else { dir.join(p).display().to_string() };
    let request = SegmentRequest {
        input_path: in_sandbox(input_path),
        output_dir: in_sandbox(output_dir),
        hu_refinement: flags & 1 != 0,
        write_surface: flags & 2 != 0,
        patch_overlap: overlap,
        pacs_series: (flags & 4 != 0).then(|| PacsSeries {
            study_instance_uid: "1.2.826.0.1.3680043.8.498.1".into(),
            series_instance_uid: "1.2.826.0.1.3680043.8.498.2".into(),
        }),
        store_seg_to_pacs: flags & 8 != 0,
    };
    if let Ok(reply) = service().submit(request) {
        let outcome = reply.blocking_recv().expect("the service answers every accepted request");
        if let Ok(result) = outcome {
            assert!(result.label_map_path.is_file(), "success without a label map: {:?}", result.label_map_path);
        }
    }
});
