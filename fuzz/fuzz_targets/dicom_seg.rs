//! DICOM Segmentation files (`dicom_seg`), as the planner and `needle_nav seg-to-nifti` read them:
//! the SEG reader with the vessel classes, then the volume on the grid the SEG declares.
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_fuzz::{scratch, write};
use needle_nav_imaging::dicom_seg;
use needle_nav_segmentation::outputs::vessel_segment_classes;

fuzz_target!(|data: &[u8]| {
    // The reader turns dicom-rs's panics into errors on purpose (a panic that escapes still crashes).
    needle_nav_fuzz::let_caught_panics_unwind();
    let dir = scratch("dicom_seg");
    let path = dir.join("seg.dcm");
    write(&path, data);
    if let Ok(seg) = dicom_seg::read_seg(&path, &vessel_segment_classes()) {
        let _ = seg.declared_grid();
    }
});
