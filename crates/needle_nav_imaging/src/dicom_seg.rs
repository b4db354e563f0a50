//! DICOM Segmentation (Segmentation Storage, PS3.3 A.51) out and in: a label map on a CT
//! series' grid written as a BINARY SEG with one segment per class, and a SEG read back into
//! labels, each segment mapped to its class by its property type code (never by its number).
//!
//! Written by hand on dicom-object: no Rust crate writes or reads SEG (highdicom, the
//! reference, is Python); the tests check this writer against highdicom and dciodvfy.
//!
//! Frames: one per segment and source slice that holds any of its voxels (empty frames are
//! left out, as highdicom does by default; an all-empty label map keeps every frame), ordered
//! segment by segment, slices along the grid's normal. Each frame references its source slice
//! (DerivationImageSequence) and carries that slice's ImagePositionPatient.

use crate::dicom_source::SourceSeries;
use crate::dicom_write::{ds, new_uid};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use nalgebra::Vector3;
use needle_nav_core::volume::{Geometry, Volume};
use needle_nav_dicom_guard::{check_file, guarded};
use std::path::Path;

pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.543.1";
/// Positions closer than this along the normal are one slice [mm].
const SAME_SLICE_MM: f64 = 0.01;
/// A slice may lie this fraction of a slice step, or of a pixel sideways, off a grid position.
const GRID_TOL: f64 = 0.1;
const IOP_TOL: f64 = 1e-3;
const SPACING_TOL_MM: f64 = 1e-3;

/// A coded concept (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Code {
        Code { value: value.into(), scheme: scheme.into(), meaning: meaning.into() }
    }

    fn same_concept(&self, other: &Code) -> bool {
        self.value == other.value && self.scheme == other.scheme
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}, \"{}\")", self.value, self.scheme, self.meaning)
    }
}

/// One label value and how its segment is described.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentClass {
    pub label: u8,
    /// SegmentLabel.
    pub name: String,
    pub category: Code,
    pub property_type: Code,
    /// Display colour, sRGB.
    pub rgb: [u8; 3],
}

/// What the SEG says about itself and the algorithm that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegDescription {
    pub series_description: String,
    pub series_number: u32,
    /// ContentLabel (a code string: upper case, digits, underscore).
    pub content_label: String,
    pub algorithm_name: String,
    pub algorithm_version: String,
    pub manufacturer: String,
    pub model_name: String,
    pub software_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DicomSegError {
    #[error("the source series has no {what}, which a DICOM Segmentation must reference; no SEG is written")]
    SourceIncomplete { what: &'static str },
    #[error("the labels ({labels:?} voxels) are not on the source series' grid ({source_dims:?} voxels)")]
    NotSourceGrid { labels: [usize; 3], source_dims: [usize; 3] },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a DICOM Segmentation (SOP Class {sop_class})")]
    NotSeg { path: String, sop_class: String },
    #[error(
        "{path} is a {kind} segmentation: only BINARY ones can be represented as labels \
         (a fractional segment holds probabilities or occupancies, not one class per voxel)"
    )]
    NotBinary { path: String, kind: String },
    #[error(
        "{path}: segments {first} and {second} overlap ({voxels} voxels in both, first at {position_mm:?} mm); \
         a label map holds one class per voxel, so overlapping segments cannot be represented"
    )]
    Overlap { path: String, first: String, second: String, voxels: usize, position_mm: [f64; 3] },
    #[error("{path}: segment {number} \"{name}\" has the property type {code}, which is none of the known classes ({known})")]
    UnknownSegment { path: String, number: u16, name: String, code: String, known: String },
    #[error("{path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error(
        "{path} is in the frame of reference {seg}, the CT in {ct}: they are not the same patient coordinates, \
         so the labels cannot be placed on the CT"
    )]
    FrameOfReference { path: String, seg: String, ct: String },
    #[error("{path} is not on the CT's grid: {reason}")]
    NotOnGrid { path: String, reason: String },
}

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code_item(code: &Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, code.value.as_str()),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, code.scheme.as_str()),
        el(tags::CODE_MEANING, VR::LO, code.meaning.as_str()),
    ])
}

fn ds_multi(values: &[f64]) -> String {
    values.iter().map(|v| ds(*v)).collect::<Vec<_>>().join("\\")
}

/// sRGB (D65) to DICOM's scaled CIELab (PS3.3 C.10.7.1.1).
pub fn rgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = rgb.map(lin);
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| if t > 216.0 / 24389.0 { t.cbrt() } else { (24389.0 / 27.0 * t + 16.0) / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let (l, a, bb) = (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz));
    let scale = |v: f64, lo: f64, hi: f64| ((v - lo) / (hi - lo) * 65535.0).round().clamp(0.0, 65535.0) as u16;
    [scale(l, 0.0, 100.0), scale(a, -128.0, 127.0), scale(bb, -128.0, 127.0)]
}

/// Today's date and time (UTC) as DICOM DA and TM.
fn now_da_tm() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}{month:02}{day:02}"), format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60))
}

/// Writes `labels` (on the grid of `source`, slice k = `source.slices[k]`) as a BINARY DICOM
/// Segmentation at `path`, one segment per entry of `segments`; returns its SOPInstanceUID.
pub fn write_seg(
    path: &Path,
    labels: &Volume<u8>,
    source: &SourceSeries,
    segments: &[SegmentClass],
    description: &SegDescription,
) -> Result<String, DicomSegError> {
    let study_uid =
        source.study_instance_uid.as_deref().ok_or(DicomSegError::SourceIncomplete { what: "StudyInstanceUID" })?;
    let series_uid =
        source.series_instance_uid.as_deref().ok_or(DicomSegError::SourceIncomplete { what: "SeriesInstanceUID" })?;
    let frame_of_reference = source
        .frame_of_reference_uid
        .as_deref()
        .ok_or(DicomSegError::SourceIncomplete { what: "FrameOfReferenceUID" })?;
    let g = &labels.geometry;
    let [nx, ny, nz] = g.dims;
    if source.slices.len() != nz || labels.data.len() != g.voxel_count() {
        return Err(DicomSegError::NotSourceGrid { labels: g.dims, source_dims: [nx, ny, source.slices.len()] });
    }
    let (Ok(rows), Ok(cols)) = (u16::try_from(ny), u16::try_from(nx)) else {
        return Err(DicomSegError::NotSourceGrid { labels: g.dims, source_dims: g.dims });
    };
    let plane = nx * ny;
    // (segment index, slice) of every frame written.
    let mut frames: Vec<(usize, usize)> = Vec::new();
    for (s, class) in segments.iter().enumerate() {
        for k in 0..nz {
            if labels.slice(k).contains(&class.label) {
                frames.push((s, k));
            }
        }
    }
    if frames.is_empty() {
        frames = (0..segments.len()).flat_map(|s| (0..nz).map(move |k| (s, k))).collect();
    }
    // 1-bit pixels, frames contiguous in one bit stream (PS3.5 8.1.1: no padding between frames),
    // the first pixel in the lowest bit.
    let bits = frames.len() * plane;
    let mut pixels = vec![0u8; bits.div_ceil(8).next_multiple_of(2)];
    for (f, &(s, k)) in frames.iter().enumerate() {
        let label = segments[s].label;
        for (p, v) in labels.slice(k).iter().enumerate() {
            if *v == label {
                let b = f * plane + p;
                pixels[b >> 3] |= 1 << (b & 7);
            }
        }
    }

    let purpose = code_item(&Code::new("121322", "DCM", "Source image for image processing operation"));
    let derivation = code_item(&Code::new("113076", "DCM", "Segmentation"));
    let per_frame: Vec<InMemDicomObject> = frames
        .iter()
        .map(|&(s, k)| {
            let slice = &source.slices[k];
            let source_image = InMemDicomObject::from_element_iter([
                el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, slice.sop_class_uid.as_str()),
                el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, slice.sop_instance_uid.as_str()),
                seq(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![purpose.clone()]),
                el(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
            ]);
            let derivation_image = InMemDicomObject::from_element_iter([
                seq(tags::DERIVATION_CODE_SEQUENCE, vec![derivation.clone()]),
                seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_image]),
            ]);
            InMemDicomObject::from_element_iter([
                seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation_image]),
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([el(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        [s as u32 + 1, k as u32 + 1],
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([el(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        ds_multi(&slice.position_mm).as_str(),
                    )])],
                ),
                seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([el(
                        tags::REFERENCED_SEGMENT_NUMBER,
                        VR::US,
                        s as u16 + 1,
                    )])],
                ),
            ])
        })
        .collect();
    let [row, col, _] = g.direction;
    let shared = InMemDicomObject::from_element_iter([
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([el(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                ds_multi(&[row[0], row[1], row[2], col[0], col[1], col[2]]).as_str(),
            )])],
        ),
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                // PixelSpacing is (between rows, between columns).
                el(tags::PIXEL_SPACING, VR::DS, ds_multi(&[g.spacing_mm[1], g.spacing_mm[0]]).as_str()),
                el(tags::SLICE_THICKNESS, VR::DS, ds(source.slice_thickness_mm.unwrap_or(g.spacing_mm[2])).as_str()),
                el(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(g.spacing_mm[2]).as_str()),
            ])],
        ),
    ]);
    let segment_items: Vec<InMemDicomObject> = segments
        .iter()
        .enumerate()
        .map(|(s, class)| {
            InMemDicomObject::from_element_iter([
                el(tags::SEGMENT_NUMBER, VR::US, s as u16 + 1),
                el(tags::SEGMENT_LABEL, VR::LO, class.name.as_str()),
                el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, description.algorithm_name.as_str()),
                seq(
                    tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        seq(
                            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                            vec![code_item(&Code::new("123110", "DCM", "Artificial Intelligence"))],
                        ),
                        el(tags::ALGORITHM_NAME, VR::LO, description.algorithm_name.as_str()),
                        el(tags::ALGORITHM_VERSION, VR::LO, description.algorithm_version.as_str()),
                    ])],
                ),
                seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![code_item(&class.category)]),
                seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code_item(&class.property_type)]),
                el(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, VR::US, rgb_to_dicom_lab(class.rgb)),
            ])
        })
        .collect();
    let referenced_instances: Vec<InMemDicomObject> = source
        .slices
        .iter()
        .map(|s| {
            InMemDicomObject::from_element_iter([
                el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, s.sop_class_uid.as_str()),
                el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, s.sop_instance_uid.as_str()),
            ])
        })
        .collect();
    let dimension_organization = new_uid();
    let dimension = |index: Tag, group: Tag, label: &str| {
        InMemDicomObject::from_element_iter([
            el(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dimension_organization.as_str()),
            el(tags::DIMENSION_INDEX_POINTER, VR::AT, index),
            el(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, group),
            el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let sop_instance_uid = new_uid();
    let series_instance_uid = new_uid();
    let (date, time) = now_da_tm();
    let mut obj = InMemDicomObject::from_element_iter([
        el(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()),
        el(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.as_str()),
        el(tags::SERIES_DATE, VR::DA, date.as_str()),
        el(tags::CONTENT_DATE, VR::DA, date.as_str()),
        el(tags::SERIES_TIME, VR::TM, time.as_str()),
        el(tags::CONTENT_TIME, VR::TM, time.as_str()),
        el(tags::MODALITY, VR::CS, "SEG"),
        el(tags::MANUFACTURER, VR::LO, description.manufacturer.as_str()),
        el(tags::SERIES_DESCRIPTION, VR::LO, description.series_description.as_str()),
        el(tags::MANUFACTURER_MODEL_NAME, VR::LO, description.model_name.as_str()),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
                seq(tags::REFERENCED_INSTANCE_SEQUENCE, referenced_instances),
            ])],
        ),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "none (software)"),
        el(tags::SOFTWARE_VERSIONS, VR::LO, description.software_version.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series_instance_uid.as_str()),
        el(tags::SERIES_NUMBER, VR::IS, description.series_number.to_string().as_str()),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference),
        el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dimension_organization.as_str(),
            )])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dimension(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "Segment Number"),
                dimension(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "Image Position Patient"),
            ],
        ),
        el(tags::SAMPLES_PER_PIXEL, VR::US, 1_u16),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string().as_str()),
        el(tags::ROWS, VR::US, rows),
        el(tags::COLUMNS, VR::US, cols),
        el(tags::BITS_ALLOCATED, VR::US, 1_u16),
        el(tags::BITS_STORED, VR::US, 1_u16),
        el(tags::HIGH_BIT, VR::US, 0_u16),
        el(tags::PIXEL_REPRESENTATION, VR::US, 0_u16),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::CONTENT_LABEL, VR::CS, description.content_label.as_str()),
        el(tags::CONTENT_DESCRIPTION, VR::LO, description.series_description.as_str()),
        el(tags::CONTENT_CREATOR_NAME, VR::PN, ""),
        el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        seq(tags::SEGMENT_SEQUENCE, segment_items),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        el(tags::PIXEL_DATA, VR::OB, pixels),
    ]);
    if let Some(charset) = &source.specific_character_set {
        obj.put(el(tags::SPECIFIC_CHARACTER_SET, VR::CS, charset.as_str()));
    }
    // Patient and study as the source has them; the type 2 ones empty where it lacks them.
    for e in &source.patient_study {
        obj.put(e.clone());
    }
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
    ] {
        if obj.get(tag).is_none() {
            obj.put(el(tag, vr, ""));
        }
    }
    let write_error = |reason: String| DicomSegError::Write { path: path.display().to_string(), reason };
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(SEGMENTATION_STORAGE)
                .media_storage_sop_instance_uid(sop_instance_uid.as_str())
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID),
        )
        .map_err(|e| write_error(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| write_error(e.to_string()))?);
    file.write_all(&mut out).map_err(|e| write_error(e.to_string()))?;
    let out = out.into_inner().map_err(|e| write_error(e.to_string()))?;
    out.sync_all().map_err(|e| write_error(e.to_string()))?;
    Ok(sop_instance_uid)
}

/// One segment of a SEG read back, and the label it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct SegSegment {
    pub number: u16,
    pub name: String,
    pub property_type: Code,
    pub label: u8,
}

/// A SEG read back: label planes at the positions its frames declare.
#[derive(Debug, Clone)]
pub struct SegImage {
    pub frame_of_reference_uid: Option<String>,
    /// The SeriesInstanceUIDs in ReferencedSeriesSequence.
    pub referenced_series_uids: Vec<String>,
    pub segments: Vec<SegSegment>,
    pub rows: usize,
    pub columns: usize,
    /// Patient directions of the rows (along a row: increasing column) and of the columns.
    pub row_direction: Vector3<f64>,
    pub column_direction: Vector3<f64>,
    /// Between columns (x) and between rows (y) [mm].
    pub pixel_spacing_xy: [f64; 2],
    pub spacing_between_slices_mm: Option<f64>,
    /// Distinct frame positions sorted along the normal, each with its label plane (row-major).
    pub slices: Vec<([f64; 3], Vec<u8>)>,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.get(..N)?.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

fn read_code(obj: &InMemDicomObject, tag: Tag) -> Option<Code> {
    let item = first_item(obj, tag)?;
    Some(Code {
        value: text(item, tags::CODE_VALUE)?,
        scheme: text(item, tags::CODING_SCHEME_DESIGNATOR)?,
        meaning: text(item, tags::CODE_MEANING).unwrap_or_default(),
    })
}

/// Transfer syntaxes whose pixel data is stored as it is (no compression of the frames).
const NATIVE_SYNTAXES: [&str; 4] =
    ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"];

/// Reads a BINARY SEG; each segment becomes the label of the class in `classes` with the same
/// property type code. Refused: another SOP class, FRACTIONAL (or other) segmentation types,
/// compressed frames, segments of unknown type, segments of different classes that overlap,
/// frames that do not share one orientation, matrix and pixel spacing.
pub fn read_seg(path: &Path, classes: &[SegmentClass]) -> Result<SegImage, DicomSegError> {
    let name = path.display().to_string();
    let malformed = |reason: String| DicomSegError::Malformed { path: name.clone(), reason };
    let bytes = std::fs::read(path).map_err(|e| DicomSegError::Read { path: name.clone(), reason: e.to_string() })?;
    check_file(&bytes, true).map_err(|reason| DicomSegError::Read { path: name.clone(), reason })?;
    let file = guarded(|| OpenFileOptions::new().open_file(path).map_err(|e| e.to_string()))
        .map_err(|reason| DicomSegError::Read { path: name.clone(), reason })?;
    let syntax = file.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_string();
    let obj: &InMemDicomObject = &file;
    let sop_class = text(obj, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop_class != SEGMENTATION_STORAGE {
        return Err(DicomSegError::NotSeg { path: name, sop_class });
    }
    let kind = text(obj, tags::SEGMENTATION_TYPE).unwrap_or_default();
    if kind != "BINARY" {
        return Err(DicomSegError::NotBinary { path: name, kind });
    }
    if !NATIVE_SYNTAXES.contains(&syntax.as_str()) {
        return Err(malformed(format!(
            "its frames are compressed (transfer syntax {syntax}); only uncompressed SEGs are read \
             (e.g. `dcmconv +te` makes one)"
        )));
    }
    let int = |tag: Tag| obj.get(tag).and_then(|e| e.to_int::<i64>().ok());
    if int(tags::BITS_ALLOCATED) != Some(1) {
        return Err(malformed(format!("BitsAllocated is {:?}, a BINARY SEG has 1", int(tags::BITS_ALLOCATED))));
    }
    let (Some(rows), Some(columns)) = (int(tags::ROWS), int(tags::COLUMNS)) else {
        return Err(malformed("no Rows or Columns".into()));
    };
    let (rows, columns) = (rows.max(0) as usize, columns.max(0) as usize);
    let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(0) as usize;
    if rows == 0 || columns == 0 || frames == 0 {
        return Err(malformed(format!("{frames} frames of {rows} x {columns} pixels")));
    }
    let known = || classes.iter().map(|c| format!("{} {}", c.name, c.property_type)).collect::<Vec<_>>().join(", ");
    let mut segments = Vec::new();
    for item in obj.get(tags::SEGMENT_SEQUENCE).and_then(|e| e.items()).unwrap_or(&[]) {
        let number = item.get(tags::SEGMENT_NUMBER).and_then(|e| e.to_int::<u16>().ok());
        let segment_name = text(item, tags::SEGMENT_LABEL).unwrap_or_default();
        let (Some(number), Some(code)) = (number, read_code(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE)) else {
            return Err(malformed(format!("segment \"{segment_name}\" has no SegmentNumber or property type")));
        };
        let Some(class) = classes.iter().find(|c| c.property_type.same_concept(&code)) else {
            return Err(DicomSegError::UnknownSegment {
                path: name,
                number,
                name: segment_name,
                code: code.to_string(),
                known: known(),
            });
        };
        segments.push(SegSegment { number, name: segment_name, property_type: code, label: class.label });
    }
    if segments.is_empty() {
        return Err(malformed("no SegmentSequence".into()));
    }
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).unwrap_or(&[]);
    if per_frame.len() != frames {
        return Err(malformed(format!("{frames} frames but {} per-frame functional groups", per_frame.len())));
    }
    let pixel_data = obj.get(tags::PIXEL_DATA).ok_or_else(|| malformed("no PixelData".into()))?;
    let pixels = pixel_data.to_bytes().map_err(|e| malformed(format!("PixelData: {e}")))?;
    let plane = rows * columns;
    if pixels.len() * 8 < frames * plane {
        return Err(malformed(format!(
            "PixelData holds {} bits, {frames} frames of {rows} x {columns} need {}",
            pixels.len() * 8,
            frames * plane
        )));
    }
    let orientation =
        functional::<6>(per_frame, shared, tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT);
    let spacing = functional::<2>(per_frame, shared, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING);
    let (Some(iop), Some(spacing)) = (orientation, spacing) else {
        return Err(malformed(
            "ImageOrientationPatient or PixelSpacing missing, or not the same in every frame".into(),
        ));
    };
    let row_direction = Vector3::new(iop[0], iop[1], iop[2]);
    let column_direction = Vector3::new(iop[3], iop[4], iop[5]);
    if (row_direction.norm() - 1.0).abs() > 1e-2
        || (column_direction.norm() - 1.0).abs() > 1e-2
        || row_direction.dot(&column_direction).abs() > 1e-2
        || spacing.iter().any(|s| *s <= 0.0)
    {
        return Err(malformed(format!("orientation {iop:?} or pixel spacing {spacing:?} is not a plane")));
    }
    let row_direction = row_direction.normalize();
    let column_direction = (column_direction - row_direction * row_direction.dot(&column_direction)).normalize();
    let normal = row_direction.cross(&column_direction);
    let spacing_between_slices_mm = shared
        .and_then(|s| first_item(s, tags::PIXEL_MEASURES_SEQUENCE))
        .and_then(|m| m.get(tags::SPACING_BETWEEN_SLICES))
        .and_then(|e| e.to_float64().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    let label_of = |number: u16| segments.iter().find(|s| s.number == number);
    let mut slices: Vec<([f64; 3], Vec<u8>)> = Vec::new();
    // Overlaps between classes: (first segment, second segment) -> voxels, first position.
    let mut overlaps: Vec<(u16, u16, usize, [f64; 3])> = Vec::new();
    let mut owner: Vec<Vec<u16>> = Vec::new();
    for (f, item) in per_frame.iter().enumerate() {
        let number = first_item(item, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .or_else(|| shared.and_then(|s| first_item(s, tags::SEGMENT_IDENTIFICATION_SEQUENCE)))
            .and_then(|i| i.get(tags::REFERENCED_SEGMENT_NUMBER))
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or_else(|| malformed(format!("frame {} names no segment", f + 1)))?;
        let segment = label_of(number)
            .ok_or_else(|| malformed(format!("frame {} is of segment {number}, which SegmentSequence lacks", f + 1)))?;
        let position = first_item(item, tags::PLANE_POSITION_SEQUENCE)
            .or_else(|| shared.and_then(|s| first_item(s, tags::PLANE_POSITION_SEQUENCE)))
            .and_then(|p| floats::<3>(p, tags::IMAGE_POSITION_PATIENT))
            .ok_or_else(|| malformed(format!("frame {} has no ImagePositionPatient", f + 1)))?;
        let along = Vector3::from(position).dot(&normal);
        let at = match slices.iter().position(|(p, _)| (Vector3::from(*p).dot(&normal) - along).abs() < SAME_SLICE_MM) {
            Some(at) => at,
            None => {
                slices.push((position, vec![0u8; plane]));
                owner.push(vec![0u16; plane]);
                slices.len() - 1
            }
        };
        let (slice_position, labels) = &mut slices[at];
        let owners = &mut owner[at];
        for p in 0..plane {
            let b = f * plane + p;
            if pixels[b >> 3] >> (b & 7) & 1 == 0 {
                continue;
            }
            if labels[p] != 0 && labels[p] != segment.label {
                let pair = (owners[p], number);
                match overlaps.iter_mut().find(|o| (o.0, o.1) == pair) {
                    Some(o) => o.2 += 1,
                    None => {
                        let (i, j) = ((p % columns) as f64, (p / columns) as f64);
                        let at = Vector3::from(*slice_position)
                            + row_direction * (i * spacing[1])
                            + column_direction * (j * spacing[0]);
                        overlaps.push((pair.0, pair.1, 1, [at.x, at.y, at.z]));
                    }
                }
                continue;
            }
            labels[p] = segment.label;
            owners[p] = number;
        }
    }
    if let Some((a, b, voxels, position_mm)) = overlaps.first() {
        let describe = |n: u16| label_of(n).map(|s| format!("{n} \"{}\"", s.name)).unwrap_or_default();
        return Err(DicomSegError::Overlap {
            path: name,
            first: describe(*a),
            second: describe(*b),
            voxels: *voxels,
            position_mm: *position_mm,
        });
    }
    slices.sort_by(|a, b| Vector3::from(a.0).dot(&normal).total_cmp(&Vector3::from(b.0).dot(&normal)));
    let referenced_series_uids = obj
        .get(tags::REFERENCED_SERIES_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| text(i, tags::SERIES_INSTANCE_UID))
        .collect();
    Ok(SegImage {
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
        referenced_series_uids,
        segments,
        rows,
        columns,
        row_direction,
        column_direction,
        pixel_spacing_xy: [spacing[1], spacing[0]],
        spacing_between_slices_mm,
        slices,
    })
}

/// A value of a functional group that must be the same for every frame: the shared group's, or
/// each frame's own when they all agree. None: missing, or different between frames.
fn functional<const N: usize>(
    per_frame: &[InMemDicomObject],
    shared: Option<&InMemDicomObject>,
    group: Tag,
    tag: Tag,
) -> Option<[f64; N]> {
    if let Some(v) = shared.and_then(|s| first_item(s, group)).and_then(|g| floats::<N>(g, tag)) {
        return Some(v);
    }
    let mut values = per_frame.iter().map(|f| first_item(f, group).and_then(|g| floats::<N>(g, tag)));
    let first = values.next()??;
    values.all(|v| v.is_some_and(|v| v.iter().zip(&first).all(|(a, b)| (a - b).abs() < IOP_TOL))).then_some(first)
}

impl SegImage {
    /// The slice normal (rows x columns).
    pub fn normal(&self) -> Vector3<f64> {
        self.row_direction.cross(&self.column_direction)
    }

    /// The labels on `grid`, when every frame lies on it: same orientation, matrix and pixel
    /// spacing, and each frame's position on one of its slices (slices without a frame are 0).
    pub fn on_grid(&self, grid: &Geometry) -> Result<Volume<u8>, String> {
        let axes = grid.direction.map(Vector3::from);
        if (self.row_direction - axes[0]).amax() > IOP_TOL || (self.column_direction - axes[1]).amax() > IOP_TOL {
            return Err(format!(
                "its rows and columns run along {:?} and {:?}, the grid's along {:?} and {:?}",
                self.row_direction.as_slice(),
                self.column_direction.as_slice(),
                grid.direction[0],
                grid.direction[1]
            ));
        }
        if [self.columns, self.rows] != [grid.dims[0], grid.dims[1]] {
            return Err(format!(
                "its frames are {} x {} pixels (columns x rows), the grid's slices {} x {}",
                self.columns, self.rows, grid.dims[0], grid.dims[1]
            ));
        }
        if (0..2).any(|a| (self.pixel_spacing_xy[a] - grid.spacing_mm[a]).abs() > SPACING_TOL_MM) {
            return Err(format!(
                "its pixels are {:?} mm, the grid's {:?} mm",
                self.pixel_spacing_xy,
                &grid.spacing_mm[..2]
            ));
        }
        let origin = Vector3::from(grid.origin_mm);
        let mut volume = Volume::filled(grid.clone(), 0u8);
        let plane = self.rows * self.columns;
        for (position, labels) in &self.slices {
            let d = Vector3::from(*position) - origin;
            let k = d.dot(&axes[2]) / grid.spacing_mm[2];
            let lateral = (d - axes[2] * d.dot(&axes[2])).norm();
            let index = k.round();
            if (k - index).abs() > GRID_TOL
                || lateral > GRID_TOL * grid.spacing_mm[0].min(grid.spacing_mm[1])
                || index < 0.0
                || index >= grid.dims[2] as f64
            {
                return Err(format!(
                    "its frame at {position:?} mm is not on a slice of the grid (slice index {k:.2}, {lateral:.2} mm \
                     sideways)"
                ));
            }
            let at = index as usize * plane;
            volume.data[at..at + plane].copy_from_slice(labels);
        }
        Ok(volume)
    }

    /// The labels on the grid the SEG declares: its frames' plane, from the first frame position
    /// to the last along the normal, the slice step SpacingBetweenSlices (else the smallest step
    /// between frames); slices without a frame are 0.
    pub fn declared_grid(&self) -> Result<Volume<u8>, String> {
        let normal = self.normal();
        let along: Vec<f64> = self.slices.iter().map(|(p, _)| Vector3::from(*p).dot(&normal)).collect();
        let smallest_step = along.windows(2).map(|w| w[1] - w[0]).reduce(f64::min);
        let step = self.spacing_between_slices_mm.or(smallest_step).unwrap_or(1.0);
        let (Some(first), Some(last)) = (along.first(), along.last()) else {
            return Err("it has no frames".into());
        };
        // Positions and spacing come from the file: a grid they declare must not be allowed to
        // exhaust memory (the same bound as the segmentation's largest input by default).
        let slices = ((last - first) / step).round() + 1.0;
        let voxels = slices * (self.columns * self.rows) as f64;
        if !slices.is_finite() || slices < 1.0 || voxels > MAX_DECLARED_VOXELS as f64 {
            return Err(format!(
                "its frames span {slices} slices of {} x {} pixels (step {step} mm), more than {MAX_DECLARED_VOXELS} voxels",
                self.columns, self.rows
            ));
        }
        let nz = slices as usize;
        let grid = Geometry {
            dims: [self.columns, self.rows, nz],
            spacing_mm: [self.pixel_spacing_xy[0], self.pixel_spacing_xy[1], step],
            origin_mm: self.slices[0].0,
            direction: [self.row_direction.into(), self.column_direction.into(), normal.into()],
        };
        grid.validate().map_err(|e| format!("its frames do not form a grid: {e}"))?;
        self.on_grid(&grid)
    }
}

/// The largest grid a SEG may declare (voxels): 512 x 512 x 1024.
pub const MAX_DECLARED_VOXELS: usize = 512 * 512 * 1024;

/// Whether `path` is a DICOM file (the "DICM" prefix after the 128-byte preamble).
pub fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// Labels from a SEG on a CT's grid: refused when the SEG is in another frame of reference than
/// the CT (`ct_frame_of_reference`, when the CT has one) or its frames are not on the grid.
/// The warnings say what could not be checked.
pub fn read_seg_on_grid(
    path: &Path,
    classes: &[SegmentClass],
    grid: &Geometry,
    ct_frame_of_reference: Option<&str>,
) -> Result<(Volume<u8>, Vec<String>), DicomSegError> {
    let seg = read_seg(path, classes)?;
    let mut warnings = Vec::new();
    match (seg.frame_of_reference_uid.as_deref(), ct_frame_of_reference) {
        (Some(s), Some(c)) if s != c => {
            return Err(DicomSegError::FrameOfReference {
                path: path.display().to_string(),
                seg: s.to_string(),
                ct: c.to_string(),
            })
        }
        (Some(_), Some(_)) => {}
        (None, _) => {
            warnings.push(format!("{} has no FrameOfReferenceUID: only its geometry was checked", path.display()))
        }
        (_, None) => warnings.push(format!(
            "the CT has no FrameOfReferenceUID (not a DICOM series): only the geometry of {} was checked",
            path.display()
        )),
    }
    let labels =
        seg.on_grid(grid).map_err(|reason| DicomSegError::NotOnGrid { path: path.display().to_string(), reason })?;
    Ok((labels, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_read::load_series;
    use crate::dicom_source::read_source;
    use crate::dicom_write::{uid_from_seed, write_ct_series, SeriesInfo};

    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("nn_dcmseg_{}_{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn classes() -> Vec<SegmentClass> {
        let category = Code::new("91723000", "SCT", "Anatomical Structure");
        [(1, "artery", "51114001", "Artery"), (2, "vein", "29092000", "Vein"), (3, "aorta", "15825003", "Aorta")]
            .into_iter()
            .map(|(label, name, value, meaning)| SegmentClass {
                label,
                name: name.into(),
                category: category.clone(),
                property_type: Code::new(value, "SCT", meaning),
                rgb: [200, 50, 50],
            })
            .collect()
    }

    fn description() -> SegDescription {
        SegDescription {
            series_description: "vessels".into(),
            series_number: 901,
            content_label: "VESSELS".into(),
            algorithm_name: "test".into(),
            algorithm_version: "1".into(),
            manufacturer: "needle_nav".into(),
            model_name: "test".into(),
            software_version: "0".into(),
        }
    }

    /// A CT series of 5 x 3 pixels (15 bits a frame: frames share bytes) and 6 slices, its
    /// source, and seeded labels on its grid with slice 2 empty.
    fn case(dir: &Path) -> (SourceSeries, Volume<u8>) {
        use rand::{Rng, SeedableRng};
        let g = Geometry::axial([5, 3, 6], [0.8, 0.7, 2.5], [-10.0, 20.0, -30.0]);
        let ct = Volume { geometry: g.clone(), data: vec![0i16; 90] };
        let info = SeriesInfo {
            patient_name: "Seg^Test".into(),
            patient_id: "S1".into(),
            study_uid: uid_from_seed(3, "study"),
            series_uid: uid_from_seed(3, "series"),
            frame_of_reference_uid: uid_from_seed(3, "for"),
            series_number: 1,
            series_description: "ct".into(),
            date: "20261201".into(),
            acquisition_time: "101500".into(),
            contrast_agent: None,
        };
        write_ct_series(dir, &ct, &info).unwrap();
        let loaded = load_series(dir, None).unwrap();
        let source = read_source(dir, &loaded.volume.geometry).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let mut data: Vec<u8> = (0..90).map(|_| rng.random_range(0..4u8)).collect();
        data[30..45].fill(0);
        (source, Volume { geometry: loaded.volume.geometry, data })
    }

    #[test]
    fn labels_round_trip_through_a_seg_and_empty_frames_are_left_out() {
        let dir = Scratch::new("round_trip");
        let (source, labels) = case(&dir.0.join("ct"));
        let path = dir.0.join("seg.dcm");
        let uid = write_seg(&path, &labels, &source, &classes(), &description()).unwrap();
        let seg = read_seg(&path, &classes()).unwrap();
        assert_eq!(seg.on_grid(&labels.geometry).unwrap().data, labels.data);
        assert_eq!(seg.frame_of_reference_uid, source.frame_of_reference_uid);
        assert_eq!(seg.referenced_series_uids, vec![source.series_instance_uid.clone().unwrap()]);
        assert_eq!(seg.slices.len(), 5, "the empty slice has no frame");
        // Read back independently of the reader: the header as written.
        let obj = dicom_object::open_file(&path).unwrap();
        let get = |t| obj.element(t).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        assert_eq!(get(tags::SOP_INSTANCE_UID), uid);
        let frames = (1..=3u8).map(|l| (0..6).filter(|k| labels.slice(*k).contains(&l)).count()).sum::<usize>();
        assert!(frames > 10, "{frames}");
        assert_eq!(get(tags::NUMBER_OF_FRAMES), frames.to_string(), "one frame per segment and slice with its voxels");
        assert_eq!(get(tags::PATIENT_NAME), "Seg^Test");
        assert_eq!(get(tags::STUDY_INSTANCE_UID), source.study_instance_uid.clone().unwrap());
        assert_ne!(get(tags::SERIES_INSTANCE_UID), source.series_instance_uid.clone().unwrap());
        // 15 bits a frame, no padding between frames; the whole padded to an even length.
        let bytes = (frames * 15).div_ceil(8).next_multiple_of(2);
        assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(), bytes);
        // The declared grid starts at the first slice with a frame and holds the same labels.
        let declared = seg.declared_grid().unwrap();
        assert_eq!(declared.geometry.dims, [5, 3, 6]);
        assert_eq!(declared.data, labels.data);
        // A slice step that would make the declared grid larger than the bound is refused, not allocated
        // (found by the dicom_seg fuzz target: an out-of-memory).
        let hostile = SegImage { spacing_between_slices_mm: Some(1e-9), ..seg.clone() };
        let refused = hostile.declared_grid().unwrap_err();
        assert!(refused.contains("more than"), "{refused}");
    }

    #[test]
    fn an_empty_label_map_keeps_every_frame_and_reads_back_empty() {
        let dir = Scratch::new("empty");
        let (source, mut labels) = case(&dir.0.join("ct"));
        labels.data.fill(0);
        let path = dir.0.join("seg.dcm");
        write_seg(&path, &labels, &source, &classes(), &description()).unwrap();
        let seg = read_seg(&path, &classes()).unwrap();
        assert_eq!(seg.slices.len(), 6);
        assert!(seg.on_grid(&labels.geometry).unwrap().data.iter().all(|v| *v == 0));
    }

    #[test]
    fn a_source_without_series_uid_gets_no_seg() {
        let dir = Scratch::new("no_uid");
        let (mut source, labels) = case(&dir.0.join("ct"));
        source.series_instance_uid = None;
        let err = write_seg(&dir.0.join("seg.dcm"), &labels, &source, &classes(), &description()).unwrap_err();
        assert!(matches!(err, DicomSegError::SourceIncomplete { what: "SeriesInstanceUID" }), "{err}");
    }

    #[test]
    fn what_labels_cannot_represent_is_refused_and_said() {
        let dir = Scratch::new("refusals");
        let (source, labels) = case(&dir.0.join("ct"));
        let path = dir.0.join("seg.dcm");
        write_seg(&path, &labels, &source, &classes(), &description()).unwrap();
        // A segment of a type the classes do not know.
        let err = read_seg(&path, &classes()[..2]).unwrap_err();
        assert!(matches!(&err, DicomSegError::UnknownSegment { number: 3, .. }), "{err}");
        assert!(err.to_string().contains("15825003"), "{err}");
        // Two segments with the same voxels, of different classes: overlapping.
        let mut twice = classes();
        twice[1].label = 1;
        write_seg(&path, &labels, &source, &twice, &description()).unwrap();
        let err = read_seg(&path, &classes()).unwrap_err();
        assert!(matches!(&err, DicomSegError::Overlap { .. }), "{err}");
        assert!(err.to_string().contains("overlap"), "{err}");
        // FRACTIONAL.
        write_seg(&path, &labels, &source, &classes(), &description()).unwrap();
        let mut obj = dicom_object::open_file(&path).unwrap();
        obj.put(el(tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL"));
        obj.write_to_file(&path).unwrap();
        let err = read_seg(&path, &classes()).unwrap_err();
        assert!(matches!(&err, DicomSegError::NotBinary { kind, .. } if kind == "FRACTIONAL"), "{err}");
        // A CT image is not a SEG.
        let ct_file = source.slices[0].path.clone();
        assert!(matches!(read_seg(&ct_file, &classes()), Err(DicomSegError::NotSeg { .. })));
    }

    #[test]
    fn another_frame_of_reference_or_grid_is_refused() {
        let dir = Scratch::new("placement");
        let (source, labels) = case(&dir.0.join("ct"));
        let path = dir.0.join("seg.dcm");
        write_seg(&path, &labels, &source, &classes(), &description()).unwrap();
        let same = source.frame_of_reference_uid.as_deref();
        let (on_grid, warnings) = read_seg_on_grid(&path, &classes(), &labels.geometry, same).unwrap();
        assert_eq!((on_grid.data, warnings.len()), (labels.data.clone(), 0));
        let err = read_seg_on_grid(&path, &classes(), &labels.geometry, Some("1.2.3")).unwrap_err();
        assert!(matches!(err, DicomSegError::FrameOfReference { .. }), "{err}");
        // Half a slice off.
        let mut shifted = labels.geometry.clone();
        shifted.origin_mm[2] += 1.25;
        let err = read_seg_on_grid(&path, &classes(), &shifted, same).unwrap_err();
        assert!(matches!(&err, DicomSegError::NotOnGrid { reason, .. } if reason.contains("slice index")), "{err}");
        // Another pixel size.
        let mut coarser = labels.geometry.clone();
        coarser.spacing_mm[0] = 1.0;
        assert!(matches!(read_seg_on_grid(&path, &classes(), &coarser, same), Err(DicomSegError::NotOnGrid { .. })));
        // A longer grid holding the SEG's slices: placed, the rest empty.
        let mut longer = labels.geometry.clone();
        longer.dims[2] = 8;
        longer.origin_mm[2] -= 2.5;
        let (placed, _) = read_seg_on_grid(&path, &classes(), &longer, same).unwrap();
        assert_eq!(&placed.data[15..15 + 90], labels.data.as_slice());
        assert!(placed.data[..15].iter().chain(&placed.data[105..]).all(|v| *v == 0));
    }

    #[test]
    fn cielab_of_white_and_black() {
        assert_eq!(rgb_to_dicom_lab([255, 255, 255])[0], 65535);
        assert_eq!(rgb_to_dicom_lab([0, 0, 0])[0], 0);
        let grey = rgb_to_dicom_lab([128, 128, 128]);
        assert!((grey[1] as i32 - 32896).abs() < 80 && (grey[2] as i32 - 32896).abs() < 80, "{grey:?}");
    }
}
