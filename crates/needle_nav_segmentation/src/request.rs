//! Checks a vessel-segmentation request before any work starts, so that a bad request gets
//! a precise error instead of a failure halfway through.

use std::path::{Path, PathBuf};

/// What kind of input a request names.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentationInput {
    DicomDirectory(PathBuf),
    Nifti(PathBuf),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("input_path is empty")]
    EmptyInput,
    #[error("input_path {0} does not exist")]
    InputMissing(String),
    #[error("input_path {0} is neither a DICOM directory nor a .nii/.nii.gz file")]
    InputKind(String),
    #[error("input directory {0} contains no files")]
    EmptyDirectory(String),
    #[error("output_dir is empty")]
    EmptyOutput,
    #[error("output_dir {path} cannot be created or written: {reason}")]
    OutputUnwritable { path: String, reason: String },
    #[error("patch_overlap {0} is outside [0, 0.9]")]
    BadOverlap(f32),
}

/// What kind of input `input_path` names (DICOM folder or NIfTI file), checking it exists.
pub fn input_kind(input_path: &str) -> Result<SegmentationInput, RequestError> {
    if input_path.trim().is_empty() {
        return Err(RequestError::EmptyInput);
    }
    let input = Path::new(input_path);
    if input.is_dir() {
        let has_file = std::fs::read_dir(input)
            .map_err(|_| RequestError::InputMissing(input_path.into()))?
            .filter_map(Result::ok)
            .any(|e| e.path().is_file());
        if !has_file {
            return Err(RequestError::EmptyDirectory(input_path.into()));
        }
        Ok(SegmentationInput::DicomDirectory(input.to_path_buf()))
    } else if input.is_file() {
        let name = input.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
        if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            Ok(SegmentationInput::Nifti(input.to_path_buf()))
        } else {
            Err(RequestError::InputKind(input_path.into()))
        }
    } else {
        Err(RequestError::InputMissing(input_path.into()))
    }
}

/// Validates the request fields; creates `output_dir` if missing.
pub fn validate(input_path: &str, output_dir: &str, patch_overlap: f32) -> Result<SegmentationInput, RequestError> {
    if !(0.0..=0.9).contains(&patch_overlap) {
        return Err(RequestError::BadOverlap(patch_overlap));
    }
    let input_kind = input_kind(input_path)?;
    validate_output(output_dir, patch_overlap)?;
    Ok(input_kind)
}

/// Validates the fields other than the input (a request whose input comes from a PACS is
/// checked with this before it is retrieved); creates `output_dir` if missing.
pub fn validate_output(output_dir: &str, patch_overlap: f32) -> Result<(), RequestError> {
    if !(0.0..=0.9).contains(&patch_overlap) {
        return Err(RequestError::BadOverlap(patch_overlap));
    }
    if output_dir.trim().is_empty() {
        return Err(RequestError::EmptyOutput);
    }
    let unwritable =
        |e: std::io::Error| RequestError::OutputUnwritable { path: output_dir.into(), reason: e.to_string() };
    std::fs::create_dir_all(output_dir).map_err(unwritable)?;
    let probe = Path::new(output_dir).join(".needle_nav_write_probe");
    std::fs::write(&probe, b"").map_err(unwritable)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_kind_of_bad_request_and_accepts_good_ones() {
        let tmp = std::env::temp_dir().join(format!("nn_seg_req_{}", std::process::id()));
        let out = tmp.join("out");
        std::fs::create_dir_all(tmp.join("empty")).unwrap();
        std::fs::create_dir_all(tmp.join("dicom")).unwrap();
        std::fs::write(tmp.join("dicom/1.dcm"), b"x").unwrap();
        std::fs::write(tmp.join("ct.nii.gz"), b"x").unwrap();
        std::fs::write(tmp.join("ct.png"), b"x").unwrap();
        let o = out.to_str().unwrap();
        let p = |s: &str| tmp.join(s).to_str().unwrap().to_string();

        assert_eq!(validate("", o, 0.5), Err(RequestError::EmptyInput));
        assert_eq!(validate(&p("nope"), o, 0.5), Err(RequestError::InputMissing(p("nope"))));
        assert_eq!(validate(&p("empty"), o, 0.5), Err(RequestError::EmptyDirectory(p("empty"))));
        assert_eq!(validate(&p("ct.png"), o, 0.5), Err(RequestError::InputKind(p("ct.png"))));
        assert_eq!(validate(&p("ct.nii.gz"), o, 1.5), Err(RequestError::BadOverlap(1.5)));
        assert_eq!(validate(&p("ct.nii.gz"), "", 0.5), Err(RequestError::EmptyOutput));
        assert!(matches!(validate(&p("ct.nii.gz"), &p("ct.png/sub"), 0.5), Err(RequestError::OutputUnwritable { .. })));
        assert_eq!(validate(&p("ct.nii.gz"), o, 0.5), Ok(SegmentationInput::Nifti(tmp.join("ct.nii.gz"))));
        assert_eq!(validate(&p("dicom"), o, 0.0), Ok(SegmentationInput::DicomDirectory(tmp.join("dicom"))));
        assert!(out.is_dir());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
