//! The committed vessel model through Rust `ort` against PyTorch's own output, recorded by
//! training/ at export (tests/fixtures/vessel_unet_parity): same probabilities within 1e-4.
//! Needs ONNX Runtime (ORT_DYLIB_PATH from .setup/env.sh).

use needle_nav_segmentation::sliding_window::PatchPredictor;
use needle_nav_segmentation::OnnxVesselModel;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures/vessel_unet_parity").join(name)
}

#[test]
fn rust_ort_reproduces_pytorch_on_the_parity_patch() {
    let model_path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("models/vessel_unet.onnx");
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
        .unwrap_or_else(|| Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("../shared/data"));
    base.join(rel)
}

/// The DICOM edge cases of ../shared/data through the whole pipeline with the committed model.
#[test]
fn real_dicom_edge_cases_are_segmented_or_refused_with_the_reason() {
    use needle_nav_segmentation::request::SegmentationInput;
    use needle_nav_segmentation::{SegmentationOptions, VesselSegmenter};
    let ge = shared("head_ct_gantry_tilt_dicom");
    let j2k = shared("abdomen_ct_vessels/example_ct_dicom_j2k");
    if !ge.is_dir() || !j2k.is_dir() {
        eprintln!("shared data not found; skipped");
        return;
    }
    let model_path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("models/vessel_unet.onnx");
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

/// Policy (field 41) and name of every thread of this process, read from /proc: the kernel's view.
#[cfg(target_os = "linux")]
fn threads_with_policy() -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c.to_string()).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        out.push((entry.file_name().to_string_lossy().into_owned(), fields[41 - 3].parse().unwrap(), comm));
    }
    out
}

/// The worker lowers itself before it loads the model, so ONNX Runtime's intra-op threads, created
/// with the session, inherit SCHED_IDLE: segmentation cannot take CPU time from guidance.
#[cfg(target_os = "linux")]
#[test]
fn onnx_runtime_threads_inherit_the_workers_idle_scheduling() {
    use needle_nav_segmentation::scheduling::WorkerScheduling;
    use needle_nav_segmentation::service::{SegmentationService, ServiceLimits};
    use needle_nav_segmentation::VesselSegmenter;
    let model_path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("models/vessel_unet.onnx");
    let before: Vec<String> = threads_with_policy().into_iter().map(|t| t.0).collect();
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let limits = ServiceLimits {
        max_input_voxels: 1 << 24,
        queue_when_busy: true,
        max_queue: 1,
        overwrite_results: false,
        skip_unreadable_slices: false,
        scheduling: WorkerScheduling::Idle,
        pacs: Default::default(),
    };
    let service = SegmentationService::start(limits, move || {
        let model = OnnxVesselModel::load(&model_path, 3).map_err(|e| e.to_string());
        // Hold the worker (and its session) while the test reads /proc.
        let _ = loaded_tx.send(model.is_ok());
        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(60));
        model.map(VesselSegmenter::new)
    });
    assert!(loaded_rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap(), "the model loads");
    // The worker and the threads it created have the worker's name (Linux names a new thread after
    // its creator); with 3 intra-op threads ONNX Runtime adds 2 to the calling one.
    let segmentation: Vec<_> = threads_with_policy()
        .into_iter()
        .filter(|(tid, _, comm)| !before.contains(tid) && comm.starts_with("vessel_segmen"))
        .collect();
    let _ = release_tx.send(());
    drop(service);
    assert!(segmentation.len() >= 3, "worker + 2 inference threads expected: {segmentation:?}");
    assert!(segmentation.iter().all(|t| t.1 == 5), "every segmentation thread SCHED_IDLE (5): {segmentation:?}");
}
