//! What an object derived from a CT series (a DICOM Segmentation) must copy or reference and
//! [`crate::dicom_read`] does not keep: the patient and study attributes, the UIDs of the series
//! and its frame of reference, and each slice's SOP Class and Instance UID in volume order.
//!
//! The slices are matched to the loaded volume by their ImagePositionPatient (the slice index
//! along the grid's normal), not by file name or reading order, so the order is the one the
//! voxels have whatever dicom_read did to sort them.

use crate::dicom_read::files_in;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use nalgebra::Vector3;
use needle_nav_core::volume::Geometry;
use needle_nav_dicom_guard::{check_file, guarded};
use std::path::{Path, PathBuf};

/// A slice may lie this fraction of the slice step off its grid position (rounding in the files).
const SLICE_TOL: f64 = 0.1;
/// Orientation cosines may differ from the grid's by this much.
const IOP_TOL: f64 = 1e-3;

/// Patient (C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2) attributes copied into
/// derived objects, so that they file under the same patient and study.
pub const PATIENT_STUDY_TAGS: [Tag; 17] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
];

/// One source slice, at volume slice index = its place in [`SourceSeries::slices`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSlice {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// ImagePositionPatient as the file has it [mm, LPS].
    pub position_mm: [f64; 3],
}

/// The source series of a volume, as derived objects reference it.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    /// None when the files carry no (or an empty) UID.
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub specific_character_set: Option<String>,
    /// The [`PATIENT_STUDY_TAGS`] present in the first slice, as they are there.
    pub patient_study: Vec<InMemElement>,
    /// SliceThickness of the first slice [mm].
    pub slice_thickness_mm: Option<f64>,
    pub series_description: String,
    /// One per volume slice, in volume order (k = 0 first).
    pub slices: Vec<SourceSlice>,
    /// Things a derived object should say (UIDs taken from the file meta information).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DicomSourceError {
    #[error("cannot read the folder {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("no file in {dir} lies at slice {index} of the volume ({position_mm:?} mm)")]
    MissingSlice { dir: String, index: usize, position_mm: [f64; 3] },
    #[error("{path_a} and {path_b} both lie at slice {index} of the volume")]
    TwoAtOnePosition { path_a: String, path_b: String, index: usize },
    #[error("{path} has no SOP Class or SOP Instance UID, neither in its data set nor in its file meta information")]
    NoSopUids { path: String },
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn floats<const N: usize>(obj: &DefaultDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.get(..N)?.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

/// The header of a file (up to the pixel data), or None when it is not a readable DICOM file.
fn header(path: &Path) -> Option<DefaultDicomObject> {
    let bytes = std::fs::read(path).ok()?;
    check_file(&bytes, false).ok()?;
    guarded(|| OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| e.to_string())).ok()
}

/// The source series of `grid` (a volume [`crate::dicom_read`] loaded from `dir`): every file of
/// `dir` whose slice lies on the grid (same orientation and matrix, position on a slice of it) is
/// matched to its slice; each slice must be matched exactly once.
pub fn read_source(dir: &Path, grid: &Geometry) -> Result<SourceSeries, DicomSourceError> {
    let paths = files_in(dir).map_err(|source| DicomSourceError::Io { path: dir.display().to_string(), source })?;
    let origin = Vector3::from(grid.origin_mm);
    let axes = grid.direction.map(Vector3::from);
    let [nx, ny, nz] = grid.dims;
    let mut found: Vec<Option<(SourceSlice, DefaultDicomObject)>> = (0..nz).map(|_| None).collect();
    let mut warnings = Vec::new();
    for path in paths {
        let Some(obj) = header(&path) else { continue };
        let (Some(iop), Some(ipp)) =
            (floats::<6>(&obj, tags::IMAGE_ORIENTATION_PATIENT), floats::<3>(&obj, tags::IMAGE_POSITION_PATIENT))
        else {
            continue;
        };
        let rows = obj.get(tags::ROWS).and_then(|e| e.to_int::<usize>().ok());
        let cols = obj.get(tags::COLUMNS).and_then(|e| e.to_int::<usize>().ok());
        let frames = obj.get(tags::NUMBER_OF_FRAMES).and_then(|e| e.to_int::<i64>().ok()).unwrap_or(1);
        let same_plane =
            (0..3).all(|x| (iop[x] - axes[0][x]).abs() < IOP_TOL && (iop[3 + x] - axes[1][x]).abs() < IOP_TOL);
        if rows != Some(ny) || cols != Some(nx) || frames > 1 || !same_plane {
            continue;
        }
        let d = Vector3::from(ipp) - origin;
        let k = d.dot(&axes[2]) / grid.spacing_mm[2];
        let lateral = (d - axes[2] * d.dot(&axes[2])).norm();
        let index = k.round();
        if (k - index).abs() > SLICE_TOL
            || lateral > SLICE_TOL * grid.spacing_mm[0].min(grid.spacing_mm[1])
            || index < 0.0
            || index >= nz as f64
        {
            continue;
        }
        let index = index as usize;
        let name = path.display().to_string();
        let sop_class = text(&obj, tags::SOP_CLASS_UID)
            .or_else(|| Some(obj.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_string()))
            .filter(|s| !s.is_empty());
        let sop_instance = text(&obj, tags::SOP_INSTANCE_UID)
            .or_else(|| Some(obj.meta().media_storage_sop_instance_uid().trim_end_matches(['\0', ' ']).to_string()))
            .filter(|s| !s.is_empty());
        let (Some(sop_class_uid), Some(sop_instance_uid)) = (sop_class, sop_instance) else {
            return Err(DicomSourceError::NoSopUids { path: name });
        };
        if text(&obj, tags::SOP_INSTANCE_UID).is_none() && warnings.is_empty() {
            warnings.push(
                "the source slices have no SOPInstanceUID in their data sets; the file meta information's \
                 MediaStorageSOPInstanceUID is referenced"
                    .to_string(),
            );
        }
        if let Some((other, _)) = &found[index] {
            return Err(DicomSourceError::TwoAtOnePosition {
                path_a: other.path.display().to_string(),
                path_b: name,
                index,
            });
        }
        found[index] = Some((SourceSlice { path, sop_class_uid, sop_instance_uid, position_mm: ipp }, obj));
    }
    let mut slices = Vec::with_capacity(nz);
    let mut first: Option<DefaultDicomObject> = None;
    for (index, slot) in found.into_iter().enumerate() {
        let Some((slice, obj)) = slot else {
            let p = grid.index_to_patient([0.0, 0.0, index as f64]);
            return Err(DicomSourceError::MissingSlice {
                dir: dir.display().to_string(),
                index,
                position_mm: [p.x, p.y, p.z],
            });
        };
        slices.push(slice);
        if first.is_none() {
            first = Some(obj);
        }
    }
    let Some(first) = first else {
        return Err(DicomSourceError::MissingSlice {
            dir: dir.display().to_string(),
            index: 0,
            position_mm: grid.origin_mm,
        });
    };
    let patient_study = PATIENT_STUDY_TAGS.iter().filter_map(|t| first.get(*t).cloned()).collect();
    Ok(SourceSeries {
        study_instance_uid: text(&first, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(&first, tags::SERIES_INSTANCE_UID),
        frame_of_reference_uid: text(&first, tags::FRAME_OF_REFERENCE_UID),
        specific_character_set: text(&first, tags::SPECIFIC_CHARACTER_SET),
        patient_study,
        slice_thickness_mm: first.get(tags::SLICE_THICKNESS).and_then(|e| e.to_float64().ok()).filter(|t| *t > 0.0),
        series_description: text(&first, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        slices,
        warnings,
    })
}

/// The FrameOfReferenceUID of the series in `dir` that `grid` was loaded from (None when its files carry none).
pub fn frame_of_reference(dir: &Path, grid: &Geometry) -> Result<Option<String>, DicomSourceError> {
    Ok(read_source(dir, grid)?.frame_of_reference_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_read::load_series;

    #[test]
    fn thorax_slices_come_in_volume_order_with_their_uids() {
        let dir = Path::new("/work/shared/data/thorax_ct_dicom");
        let ct = load_series(dir, None).unwrap();
        let source = read_source(dir, &ct.volume.geometry).unwrap();
        assert_eq!(source.slices.len(), 141);
        // The volume runs along +z from the lowest slice: the file names run the other way.
        assert!(source.slices[0].path.ends_with("00-slice140.dcm"), "{:?}", source.slices[0].path);
        assert!(source.slices[140].path.ends_with("00-slice000.dcm"));
        assert_eq!(source.slices[0].position_mm, [-250.0, -164.0, -164.5]);
        assert_eq!(source.series_instance_uid, ct.series_uid);
        assert!(source.frame_of_reference_uid.as_deref().is_some_and(|u| u.ends_with("7717670467")));
        assert_eq!(
            source.slices[140].sop_instance_uid,
            "1.2.826.0.1.3680043.2.1143.7168738577591082787858905645416096478"
        );
        assert!(source.warnings.is_empty());
    }

    #[test]
    fn a_series_without_uids_in_its_data_sets_takes_the_instance_uids_from_the_file_meta() {
        let dir = Path::new("/work/shared/data/abdomen_ct_vessels/example_ct_dicom_j2k");
        let ct = load_series(dir, None).unwrap();
        let source = read_source(dir, &ct.volume.geometry).unwrap();
        assert_eq!((source.study_instance_uid.as_deref(), source.series_instance_uid.as_deref()), (None, None));
        assert_eq!(source.slices.len(), 20);
        for s in &source.slices {
            // The files are named after their instance UIDs.
            assert!(s.path.ends_with(format!("CT.{}", s.sop_instance_uid)), "{s:?}");
            assert_eq!(s.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        }
        assert!(source.warnings.iter().any(|w| w.contains("MediaStorageSOPInstanceUID")));
    }

    #[test]
    fn a_missing_slice_is_named() {
        let dir = Path::new("/work/shared/data/thorax_ct_dicom");
        let ct = load_series(dir, None).unwrap();
        let mut grid = ct.volume.geometry.clone();
        grid.dims[2] += 1;
        let err = read_source(dir, &grid).unwrap_err();
        assert!(matches!(err, DicomSourceError::MissingSlice { index: 141, .. }), "{err}");
    }
}
