//! NIfTI-1 reading (`imaging::nifti`), .nii and .nii.gz, through the segmentation service's
//! loader (the header size guard, then the full read).
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_segmentation::request::SegmentationInput;
use needle_nav_imaging::nifti;
use needle_nav_segmentation::pipeline::load_input;
use needle_nav_fuzz::{scratch, write};

/// The service's default limit is far larger; this keeps one run's memory small.
const MAX_VOXELS: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("nifti");
    let path = dir.join("image.nii");
    write(&path, data);
    let _ = nifti::read_dims(&path);
    if let Ok((volume, _, _)) = load_input(&SegmentationInput::Nifti(path), MAX_VOXELS, &Default::default()) {
        assert_eq!(volume.data.len(), volume.geometry.voxel_count());
    }
});
