//! Every real DICOM file in the shared data passes the walk whole (pixel data included): scanners'
//! files, JPEG 2000 fragments and private elements are not refused. The files are others' (see
//! ../shared/data/MANIFEST.md); the guard must never cost a real series.

use needle_nav_dicom_guard::check_file;
use std::path::Path;

const DATA: &str = "/work/shared/data";

#[test]
fn real_series_from_scanners_pass_the_walk_whole() {
    let mut checked = 0;
    for series in ["thorax_ct_dicom", "head_ct_gantry_tilt_dicom", "abdomen_ct_vessels/example_ct_dicom_j2k"] {
        let dir = Path::new(DATA).join(series);
        assert!(dir.is_dir(), "test data folder {} is missing (see ../shared/data/MANIFEST.md)", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for path in files.iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(path).unwrap();
            if bytes.get(128..132) != Some(b"DICM") {
                continue; // not a DICOM file (a README, a licence)
            }
            assert_eq!(check_file(&bytes, true), Ok(()), "{}", path.display());
            assert_eq!(check_file(&bytes, false), Ok(()), "{}", path.display());
            checked += 1;
        }
    }
    // 141 thorax slices, 28 head slices, 20 abdomen slices.
    assert!(checked >= 189, "only {checked} DICOM files found");
}
