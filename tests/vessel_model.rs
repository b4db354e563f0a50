//! The committed vessel model through Rust `ort` against PyTorch's own output, recorded by
//! training/ at export (tests/fixtures/vessel_unet_parity): same probabilities within 1e-4.
//! Needs ONNX Runtime (ORT_DYLIB_PATH from .setup/env.sh).

use needle_nav::core::segmentation::sliding_window::PatchPredictor;
use needle_nav::segmentation::OnnxVesselModel;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vessel_unet_parity").join(name)
}

#[test]
fn rust_ort_reproduces_pytorch_on_the_parity_patch() {
    let model_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vessel_unet.onnx");
    let mut model = OnnxVesselModel::load(&model_path, 2).expect("the committed model loads with its metadata");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("meta.json")).unwrap()).unwrap();
    let shape: Vec<usize> =
        meta["input_hu"]["shape_zyx"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let raw = std::fs::read(fixture("input_hu.i16")).unwrap();
    let hu: Vec<f32> = raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32).collect();
    assert_eq!(hu.len(), shape.iter().product::<usize>());
    let raw = std::fs::read(fixture("torch_probabilities.f32")).unwrap();
    let torch: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(torch.len(), 4 * hu.len());

    // The fixture's normalisation is the model's own.
    let n = &model.info.normalisation;
    assert_eq!(meta["normalisation"]["mean_hu"].as_f64().unwrap() as f32, n.mean_hu);
    let input: Vec<f32> = hu.iter().map(|v| model.info.normalise(*v)).collect();
    let ours = model.predict(&input, 1, [shape[2], shape[1], shape[0]]).unwrap();
    let max_diff = ours.iter().zip(&torch).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-4, "Rust ort differs from PyTorch by {max_diff}");
    // And the patch is not trivial: PyTorch's argmax finds vessels in it.
    let per = hu.len();
    let vessel_voxels =
        (0..per).filter(|&v| (1..4).any(|c| torch[c * per + v] > torch[v] && torch[c * per + v] > 0.5)).count();
    assert!(vessel_voxels > 20, "only {vessel_voxels} vessel voxels in the parity patch");
}

#[test]
fn a_file_that_is_not_a_needle_nav_model_is_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("nn_model_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"definitely not protobuf").unwrap();
    let e = OnnxVesselModel::load(&garbage, 1).unwrap_err().to_string();
    assert!(e.contains("cannot load the model"), "{e}");
    let e = OnnxVesselModel::load(&dir.join("missing.onnx"), 1).unwrap_err().to_string();
    assert!(e.contains("no such file"), "{e}");
}

fn shared(rel: &str) -> std::path::PathBuf {
    let base = std::env::var_os("NEEDLE_NAV_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    base.join(rel)
}

/// The DICOM edge cases of ../shared/data through the whole pipeline with the committed model.
#[test]
fn real_dicom_edge_cases_are_segmented_or_refused_with_the_reason() {
    use needle_nav::core::segmentation_request::SegmentationInput;
    use needle_nav::segmentation::{SegmentationOptions, VesselSegmenter};
    let ge = shared("head_ct_gantry_tilt_dicom");
    let j2k = shared("abdomen_ct_vessels/example_ct_dicom_j2k");
    if !ge.is_dir() || !j2k.is_dir() {
        eprintln!("shared data not found; skipped");
        return;
    }
    let model_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vessel_unet.onnx");
    let mut segmenter = VesselSegmenter::new(OnnxVesselModel::load(&model_path, 2).unwrap());
    let out = std::env::temp_dir().join(format!("nn_seg_edge_{}", std::process::id()));
    let options = SegmentationOptions::new(&out);
    // Gantry tilt with uneven spacing: refused, saying why, nothing written.
    let e = segmenter.run(&SegmentationInput::DicomDirectory(ge), &options, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("gantry tilt"), "{e}");
    assert!(!out.join("vessel_labels.nii.gz").exists());
    // JPEG 2000 with an empty SeriesInstanceUID: segmented, with the missing UID reported.
    let r = segmenter.run(&SegmentationInput::DicomDirectory(j2k), &options, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.labels.geometry.dims, [512, 512, 20]);
    assert!(r.warnings.iter().any(|w| w.contains("SeriesInstanceUID")), "{:?}", r.warnings);
    assert!(out.join("vessel_labels.nii.gz").is_file());
    // Two series in one folder: refused with the list, not mixed.
    let mixed = out.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for (n, dir) in [shared("thorax_ct_dicom"), shared("abdomen_ct_vessels/example_ct_dicom_j2k")].iter().enumerate() {
        for entry in std::fs::read_dir(dir).unwrap().take(3) {
            let p = entry.unwrap().path();
            let link = mixed.join(format!("{n}_{}", p.file_name().unwrap().to_string_lossy()));
            let _ = std::os::unix::fs::symlink(&p, &link);
        }
    }
    let e = segmenter
        .run(&SegmentationInput::DicomDirectory(mixed), &SegmentationOptions::new(out.join("m")), &mut |_, _, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("holds 2 series"), "{e}");
}
