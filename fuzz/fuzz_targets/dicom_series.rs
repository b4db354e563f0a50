//! DICOM series loading (`imaging::dicom_read`): the input is one or more files (separated by
//! `FILE_SEPARATOR`) in one folder, loaded as the planner and the segmentation service do.
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_imaging::dicom_read;
use needle_nav_fuzz::{scratch, split_files, write};

fuzz_target!(|data: &[u8]| {
    needle_nav_fuzz::let_caught_panics_unwind();
    let dir = scratch("dicom");
    for (i, file) in split_files(data, 24).into_iter().enumerate() {
        write(&dir.join(format!("slice{i:02}.dcm")), file);
    }
    let _ = dicom_read::list_series(&dir);
    if let Ok(series) = dicom_read::load_series(&dir, None) {
        // What a caller relies on: one value per voxel of the geometry it reports.
        assert_eq!(series.volume.data.len(), series.volume.geometry.voxel_count());
    }
});
