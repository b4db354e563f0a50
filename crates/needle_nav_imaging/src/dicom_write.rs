//! Writes a CT volume as a DICOM CT Image series (one file per axial slice), with correct
//! patient geometry, rescale to Hounsfield units and UIDs.

use dicom_core::smallvec::SmallVec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use needle_nav_core::volume::Volume;
use std::path::{Path, PathBuf};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Stored pixel = HU - RESCALE_INTERCEPT (unsigned 16-bit, as most scanners write).
pub const RESCALE_INTERCEPT: f64 = -1024.0;

#[derive(Debug, thiserror::Error)]
pub enum DicomWriteError {
    #[error("cannot create {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot encode {path}: {reason}")]
    Encode { path: String, reason: String },
    #[error("the volume must be axial (direction = identity) to be written as axial slices")]
    NotAxial,
}

/// Identity and timing of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub patient_name: String,
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub series_number: u32,
    pub series_description: String,
    /// YYYYMMDD
    pub date: String,
    /// HHMMSS.FFFFFF: acquisition time of this series (phases of a 4-D CT differ here).
    pub acquisition_time: String,
    /// Contrast agent name when contrast-enhanced.
    pub contrast_agent: Option<String>,
}

/// A DICOM UID under the 2.25 root (derived from 128 bits), deterministic for `(seed, purpose)`.
pub fn uid_from_seed(seed: u64, purpose: &str) -> String {
    use rand::{Rng, SeedableRng};
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ h);
    let v: u128 = rng.random::<u128>() >> 1 | 1 << 126; // no leading zero, below 2^128
    format!("2.25.{v}")
}

/// A new, unique DICOM UID under the 2.25 root (PS3.5 B.2: a UUID's 128 bits as one integer),
/// from the operating system's randomness: for objects made at run time (a SEG), which must
/// never share a UID with another, even when made from the same input.
pub fn new_uid() -> String {
    let v: u128 = rand::random::<u128>() >> 1 | 1 << 126; // no leading zero, below 2^128
    format!("2.25.{v}")
}

/// Decimal String value: at most 16 characters.
pub fn ds(v: f64) -> String {
    for precision in (0..=6).rev() {
        let s = format!("{v:.precision$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    format!("{v:.3e}")
}

fn ds_multi(values: &[f64]) -> String {
    values.iter().map(|v| ds(*v)).collect::<Vec<_>>().join("\\")
}

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

/// Writes `volume` (HU) as `dir/IM_00001.dcm` ... ; returns the written paths.
pub fn write_ct_series(dir: &Path, volume: &Volume<i16>, info: &SeriesInfo) -> Result<Vec<PathBuf>, DicomWriteError> {
    let g = &volume.geometry;
    if g.direction != [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] {
        return Err(DicomWriteError::NotAxial);
    }
    std::fs::create_dir_all(dir).map_err(|source| DicomWriteError::Io { path: dir.display().to_string(), source })?;
    let [nx, ny, nz] = g.dims;
    let mut paths = Vec::with_capacity(nz);
    for k in 0..nz {
        let position = g.index_to_patient([0.0, 0.0, k as f64]);
        let instance = k as u32 + 1;
        let sop_uid = format!("{}.{}", info.series_uid, instance);
        let pixels: SmallVec<[u16; 2]> =
            volume.slice(k).iter().map(|&h| (h as f64 - RESCALE_INTERCEPT).clamp(0.0, 65535.0) as u16).collect();
        let mut obj = InMemDicomObject::from_element_iter([
            el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
            el(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"),
            el(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str()),
            el(tags::STUDY_DATE, VR::DA, info.date.as_str()),
            el(tags::SERIES_DATE, VR::DA, info.date.as_str()),
            el(tags::ACQUISITION_DATE, VR::DA, info.date.as_str()),
            el(tags::CONTENT_DATE, VR::DA, info.date.as_str()),
            el(tags::STUDY_TIME, VR::TM, info.acquisition_time.as_str()),
            el(tags::ACQUISITION_TIME, VR::TM, info.acquisition_time.as_str()),
            el(tags::CONTENT_TIME, VR::TM, info.acquisition_time.as_str()),
            el(tags::ACCESSION_NUMBER, VR::SH, ""),
            el(tags::MODALITY, VR::CS, "CT"),
            el(tags::MANUFACTURER, VR::LO, "needle_nav digital patient"),
            el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
            el(tags::SERIES_DESCRIPTION, VR::LO, info.series_description.as_str()),
            el(tags::PATIENT_NAME, VR::PN, info.patient_name.as_str()),
            el(tags::PATIENT_ID, VR::LO, info.patient_id.as_str()),
            el(tags::PATIENT_BIRTH_DATE, VR::DA, ""),
            el(tags::PATIENT_SEX, VR::CS, "O"),
            el(tags::SLICE_THICKNESS, VR::DS, ds(g.spacing_mm[2]).as_str()),
            el(tags::KVP, VR::DS, "120"),
            el(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(g.spacing_mm[2]).as_str()),
            el(tags::PATIENT_POSITION, VR::CS, "HFS"),
            el(tags::STUDY_INSTANCE_UID, VR::UI, info.study_uid.as_str()),
            el(tags::SERIES_INSTANCE_UID, VR::UI, info.series_uid.as_str()),
            el(tags::STUDY_ID, VR::SH, "1"),
            el(tags::SERIES_NUMBER, VR::IS, info.series_number.to_string().as_str()),
            el(tags::INSTANCE_NUMBER, VR::IS, instance.to_string().as_str()),
            el(tags::IMAGE_POSITION_PATIENT, VR::DS, ds_multi(&[position.x, position.y, position.z]).as_str()),
            el(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            el(tags::FRAME_OF_REFERENCE_UID, VR::UI, info.frame_of_reference_uid.as_str()),
            el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
            el(tags::SLICE_LOCATION, VR::DS, ds(position.z).as_str()),
            el(tags::SAMPLES_PER_PIXEL, VR::US, 1_u16),
            el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            el(tags::ROWS, VR::US, ny as u16),
            el(tags::COLUMNS, VR::US, nx as u16),
            // PixelSpacing is (between rows, between columns) = (y, x).
            el(tags::PIXEL_SPACING, VR::DS, ds_multi(&[g.spacing_mm[1], g.spacing_mm[0]]).as_str()),
            el(tags::BITS_ALLOCATED, VR::US, 16_u16),
            el(tags::BITS_STORED, VR::US, 16_u16),
            el(tags::HIGH_BIT, VR::US, 15_u16),
            el(tags::PIXEL_REPRESENTATION, VR::US, 0_u16),
            el(tags::WINDOW_CENTER, VR::DS, "40"),
            el(tags::WINDOW_WIDTH, VR::DS, "400"),
            el(tags::RESCALE_INTERCEPT, VR::DS, ds(RESCALE_INTERCEPT).as_str()),
            el(tags::RESCALE_SLOPE, VR::DS, "1"),
            el(tags::RESCALE_TYPE, VR::LO, "HU"),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels)),
        ]);
        if let Some(agent) = &info.contrast_agent {
            obj.put(el(tags::CONTRAST_BOLUS_AGENT, VR::LO, agent.as_str()));
        }
        let path = dir.join(format!("IM_{instance:05}.dcm"));
        let encode = |reason: String| DicomWriteError::Encode { path: path.display().to_string(), reason };
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
                    .implementation_class_uid("1.2.826.0.1.3680043.10.543.1"),
            )
            .map_err(|e| encode(e.to_string()))?;
        file.write_to_file(&path).map_err(|e| encode(e.to_string()))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle_nav_core::volume::Geometry;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(1.5), "1.5");
        assert_eq!(ds(-182.5), "-182.5");
        assert_eq!(ds(2.0), "2");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(1.0 / 3.0), "0.333333");
        assert!(ds(-123456789.123456).len() <= 16);
    }

    #[test]
    fn uids_are_valid_deterministic_and_distinct() {
        let a = uid_from_seed(1, "series");
        assert_eq!(a, uid_from_seed(1, "series"));
        assert_ne!(a, uid_from_seed(1, "study"));
        assert_ne!(a, uid_from_seed(2, "series"));
        assert!(a.len() <= 64 - 6, "room for .NNNNN instance suffixes: {a}");
        assert!(a.split('.').all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))));
    }

    #[test]
    fn written_slices_read_back_with_geometry_and_hu() {
        let g = Geometry::axial([4, 3, 2], [0.7, 0.8, 2.5], [-10.0, 20.0, -30.0]);
        let data: Vec<i16> = (0..24).map(|v| v as i16 * 100 - 1000).collect();
        let vol = Volume { geometry: g, data };
        let dir = std::env::temp_dir().join(format!("nn_dcm_{}", std::process::id()));
        let info = SeriesInfo {
            patient_name: "Phantom^Test".into(),
            patient_id: "P1".into(),
            study_uid: uid_from_seed(1, "study"),
            series_uid: uid_from_seed(1, "series"),
            frame_of_reference_uid: uid_from_seed(1, "for"),
            series_number: 1,
            series_description: "test".into(),
            date: "20261121".into(),
            acquisition_time: "101500.000000".into(),
            contrast_agent: None,
        };
        let paths = write_ct_series(&dir, &vol, &info).unwrap();
        assert_eq!(paths.len(), 2);
        let obj = dicom_object::open_file(&paths[1]).unwrap();
        let get = |t| obj.element(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(get(tags::IMAGE_POSITION_PATIENT), "-10\\20\\-27.5");
        assert_eq!(get(tags::PIXEL_SPACING), "0.8\\0.7");
        let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_multi_int::<u16>().unwrap();
        let hu: Vec<i16> = pixels.iter().map(|&p| (p as f64 + RESCALE_INTERCEPT) as i16).collect();
        assert_eq!(hu, vol.slice(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
