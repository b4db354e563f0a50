//! Reads a CT series from a folder of single-frame DICOM files into one volume (HU, LPS mm).
//!
//! Slices are grouped by SeriesInstanceUID, sorted along the slice normal (never by file name
//! or InstanceNumber) and checked before they are stacked: a series whose geometry cannot be
//! represented by a regular grid (gantry tilt, uneven spacing, duplicate or missing positions,
//! mixed matrix sizes) is refused with a message saying what was found, never resampled or
//! averaged behind the user's back.
//!
//! A file that looks like a slice (DICOM preamble, or a name that is not a known non-DICOM kind
//! such as `.txt` or `.json`) but cannot be read refuses the series, naming the file: skipping
//! it would make the planning CT silently shorter. [`LoadOptions::skip_unreadable_slices`]
//! allows skipping such files (with a warning); a gap they leave is still refused as uneven
//! spacing, naming them.

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use nalgebra::Vector3;
use needle_nav_core::volume::{Geometry, Volume};
use needle_nav_dicom_guard::{check_file, guarded};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// HU given to padding voxels (PixelPaddingValue): outside the reconstructed field, air-like.
pub const PADDING_HU: f32 = -1024.0;
/// Slice steps may differ from their median by this fraction ...
const SPACING_REL_TOL: f64 = 0.01;
/// ... or by this much [mm], whichever is larger.
const SPACING_ABS_TOL_MM: f64 = 0.01;
/// Slice positions may lie off the normal through the first one by this fraction of a pixel (rounding in the
/// files); beyond it the stack is tilted (gantry tilt) or crooked.
const LATERAL_TOL_PIXELS: f64 = 0.1;
/// Image orientation cosines of one series may differ by this much (rounding in the files).
const IOP_TOL: f64 = 1e-3;
/// Pixel spacings of one series may differ by this much [mm].
const PIXEL_SPACING_TOL_MM: f64 = 1e-4;

/// Endings of files that are not DICOM slices (skipped with a warning when they do not parse).
const NON_DICOM_EXTENSIONS: [&str; 22] = [
    "txt", "md", "json", "yaml", "yml", "xml", "csv", "nii", "gz", "png", "jpg", "jpeg", "pdf", "html", "htm", "log",
    "ply", "zip", "ini", "cfg", "sh", "py",
];
/// SOP classes of single-frame CT images: such a file without a usable Rows/Columns is a broken slice.
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// How [`load_series_with`] treats slices it cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip files that look like slices but cannot be read (header or pixel data), with a
    /// warning, instead of refusing the series. A gap they leave is still refused.
    pub skip_unreadable_slices: bool,
}

/// A CT series as one volume.
#[derive(Debug, Clone, PartialEq)]
pub struct CtSeries {
    /// Hounsfield units (RescaleSlope/Intercept applied).
    pub volume: Volume<f32>,
    pub series_uid: Option<String>,
    pub description: String,
    /// Seconds since midnight: the earliest AcquisitionTime of the slices (else ContentTime, else SeriesTime).
    pub acquisition_time_s: Option<f64>,
    /// Things the user should know that did not stop the loading (skipped files, missing UIDs, padding).
    pub warnings: Vec<String>,
}

/// One series found in a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSummary {
    /// None when the files carry no SeriesInstanceUID (then grouped by frame of reference, orientation and size).
    pub series_uid: Option<String>,
    pub description: String,
    pub files: usize,
    /// Seconds since midnight, as in [`CtSeries::acquisition_time_s`].
    pub acquisition_time_s: Option<f64>,
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.series_uid {
            Some(uid) => write!(f, "series {uid}")?,
            None => write!(f, "series without SeriesInstanceUID")?,
        }
        write!(f, " \"{}\" ({} files", self.description, self.files)?;
        if let Some(t) = self.acquisition_time_s {
            let s = t.round() as u64;
            write!(f, ", acquired {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)?;
        }
        write!(f, ")")
    }
}

fn list_summaries(series: &[SeriesSummary]) -> String {
    series.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; ")
}

fn list_gaps(gaps: &[(String, String, f64)]) -> String {
    let shown: Vec<String> = gaps.iter().take(5).map(|(a, b, d)| format!("{d:.2} mm between {a} and {b}")).collect();
    match gaps.len() {
        0 => String::new(),
        n if n > 5 => format!("; {} and {} more", shown.join(", "), n - 5),
        _ => format!("; {}", shown.join(", ")),
    }
}

fn list_skipped(skipped: &[String]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    format!("; unreadable files were skipped, a gap may be where they belonged: {}", skipped.join(", "))
}

fn list_mm(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.2} mm")).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum DicomReadError {
    #[error("cannot read the folder {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("no CT image series in {dir} ({skipped} files skipped as not readable DICOM images)")]
    NoSeries { dir: String, skipped: usize },
    #[error("the folder holds {} series; choose one by its SeriesInstanceUID: {}", .series.len(), list_summaries(.series))]
    SeveralSeries { series: Vec<SeriesSummary> },
    #[error("series {uid} is not in the folder; it holds: {}", list_summaries(.available))]
    SeriesNotFound { uid: String, available: Vec<SeriesSummary> },
    #[error("{path}: the image has no usable {tag}, so its position in the volume is unknown")]
    MissingTag { path: String, tag: &'static str },
    #[error(
        "{path} is a multi-frame (enhanced) image with {frames} frames; only single-frame CT series are supported"
    )]
    MultiFrame { path: String, frames: u32 },
    #[error("{path} has {samples} samples per pixel; CT images have one (greyscale)")]
    NotGreyscale { path: String, samples: u16 },
    #[error(
        "the slices of one series differ in {what}: {path_a} has {value_a}, {path_b} has {value_b}; \
         they cannot be stacked into one volume"
    )]
    Inconsistent { what: &'static str, path_a: String, value_a: String, path_b: String, value_b: String },
    #[error("{path}: ImageOrientationPatient {iop:?} does not give two perpendicular unit directions")]
    BadOrientation { path: String, iop: [f64; 6] },
    #[error("the series has a single slice ({path}); a volume needs at least two")]
    SingleSlice { path: String },
    #[error(
        "{path_a} and {path_b} lie at the same slice position ({position_mm:.2} mm along the slice normal): \
         duplicate slices, or several acquisitions (e.g. breathing phases) mixed in one series"
    )]
    DuplicatePosition { path_a: String, path_b: String, position_mm: f64 },
    #[error(
        "the slices are stacked at {degrees:.1}° to the slice normal (gantry tilt: positions drift {drift_mm:.1} mm \
         sideways over the series); this loader does not resample tilted series: reconstruct without tilt or \
         resample first (steps between slice positions found: {})",
        list_mm(.steps_mm)
    )]
    GantryTilt { degrees: f64, drift_mm: f64, steps_mm: Vec<f64> },
    #[error(
        "{path} is {offset_mm:.2} mm sideways off the line of the other slice positions; \
         the slices do not form a straight stack"
    )]
    MisalignedSlice { path: String, offset_mm: f64 },
    #[error(
        "the slice spacing is not uniform (spacings found: {}{}); missing slices or a variable-spacing \
         reconstruction: refused rather than resampled{}",
        list_mm(.spacings_mm),
        list_gaps(.gaps),
        list_skipped(.skipped)
    )]
    UnevenSpacing {
        spacings_mm: Vec<f64>,
        /// The slices on either side of each step that differs from the median, and the step.
        gaps: Vec<(String, String, f64)>,
        /// Unreadable files skipped on request: a gap may be where one of them belonged.
        skipped: Vec<String>,
    },
    #[error(
        "{} in the folder look like slices but cannot be read: {}; the series would be incomplete, so it is \
         refused (repair or remove the files, or allow skipping them: segment --skip-unreadable-slices, \
         parameter skip_unreadable_slices)",
        if .files.len() == 1 { "1 file".to_string() } else { format!("{} files", .files.len()) },
        .files.iter().map(|(p, r)| format!("{p} ({r})")).collect::<Vec<_>>().join("; ")
    )]
    UnreadableSlices { files: Vec<(String, String)> },
    #[error("the series' grid is not physical ({path} and the other slices): {reason}")]
    Geometry { path: String, reason: String },
    #[error("cannot read the image of {path}: {reason}")]
    Decode { path: String, reason: String },
}

/// What the header of one file says.
#[derive(Debug, Clone)]
struct SliceHeader {
    path: PathBuf,
    series_uid: Option<String>,
    frame_of_reference: Option<String>,
    description: String,
    modality: Option<String>,
    time_s: Option<f64>,
    iop: Option<[f64; 6]>,
    ipp: Option<[f64; 3]>,
    rows: u16,
    cols: u16,
    pixel_spacing: Option<[f64; 2]>,
    frames: u32,
    samples: u16,
    padding: Option<f64>,
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn floats<const N: usize>(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.get(..N)?.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

/// Seconds since midnight of a DICOM TM value ("HHMMSS.FFFFFF", also the old "HH:MM:SS.FFF").
pub fn parse_dicom_time(tm: &str) -> Option<f64> {
    let tm: String = tm.trim().chars().filter(|&c| c != ':').collect();
    let (whole, frac) = tm.split_once('.').unwrap_or((&tm, ""));
    if whole.is_empty() || whole.len() % 2 != 0 || whole.len() > 6 || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let part = |a: usize| whole.get(a..a + 2).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let (h, m, s) = (part(0), part(2), part(4));
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let frac = if frac.is_empty() { 0.0 } else { format!("0.{frac}").parse::<f64>().ok()? };
    Some((h * 3600 + m * 60 + s) as f64 + frac)
}

/// Why a file gave no slice header.
#[derive(Debug, Clone, PartialEq)]
enum Unread {
    /// Not meant as a slice (another kind of file, or a DICOM object that is not an image): skipped.
    NotASlice(String),
    /// Looks like a slice but cannot be read: refused unless skipping is allowed.
    Broken(String),
}

/// Whether an unparsable file was meant as a slice: it has the DICOM preamble, or its name
/// is not that of a known other kind of file (slices often have no or numeric endings).
pub(crate) fn looks_like_a_slice(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    let preamble =
        std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM";
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    preamble
        || !(name.starts_with('.')
            || extension.is_some_and(|e| NON_DICOM_EXTENSIONS.contains(&e.as_str()))
            || name.eq_ignore_ascii_case("DICOMDIR"))
}

/// Reads the header of `path` (up to the pixel data). Err: no slice header, with the reason.
fn read_header(path: &Path) -> Result<SliceHeader, Unread> {
    let bytes = std::fs::read(path).map_err(|e| Unread::Broken(format!("cannot read: {e}")))?;
    check_file(&bytes, false).map_err(|e| {
        let reason = format!("corrupt: {e}");
        if looks_like_a_slice(path) {
            Unread::Broken(reason)
        } else {
            Unread::NotASlice(reason)
        }
    })?;
    let obj = guarded(|| {
        OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| format!("not DICOM: {e}"))
    })
    .map_err(|reason| if looks_like_a_slice(path) { Unread::Broken(reason) } else { Unread::NotASlice(reason) })?;
    let ct_image = obj.meta().media_storage_sop_class_uid().trim_end_matches('\0') == CT_IMAGE_STORAGE;
    let not_image = |what: &str| {
        if ct_image {
            Unread::Broken(format!("a CT image without {what}"))
        } else {
            Unread::NotASlice(format!("no {what}: not an image"))
        }
    };
    let rows = int(&obj, tags::ROWS).ok_or_else(|| not_image("Rows"))?;
    let cols = int(&obj, tags::COLUMNS).ok_or_else(|| not_image("Columns"))?;
    let (Ok(rows), Ok(cols)) = (u16::try_from(rows), u16::try_from(cols)) else {
        return Err(Unread::Broken(format!("invalid matrix size {rows} x {cols}")));
    };
    if rows == 0 || cols == 0 {
        return Err(Unread::Broken(format!("invalid matrix size {rows} x {cols}")));
    }
    let time_s = [tags::ACQUISITION_TIME, tags::CONTENT_TIME, tags::SERIES_TIME]
        .into_iter()
        .find_map(|t| text(&obj, t).and_then(|s| parse_dicom_time(&s)));
    Ok(SliceHeader {
        path: path.to_path_buf(),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        frame_of_reference: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        modality: text(&obj, tags::MODALITY),
        time_s,
        iop: floats::<6>(&obj, tags::IMAGE_ORIENTATION_PATIENT),
        ipp: floats::<3>(&obj, tags::IMAGE_POSITION_PATIENT),
        rows,
        cols,
        pixel_spacing: floats::<2>(&obj, tags::PIXEL_SPACING),
        frames: int(&obj, tags::NUMBER_OF_FRAMES).and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
        samples: int(&obj, tags::SAMPLES_PER_PIXEL).and_then(|n| u16::try_from(n).ok()).unwrap_or(1),
        padding: obj.get(tags::PIXEL_PADDING_VALUE).and_then(|e| e.to_float64().ok()),
    })
}

/// Key grouping files into series: the UID, or without one the geometry that must be shared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Uid(String),
    NoUid { frame_of_reference: String, iop: Option<[i64; 6]>, rows: u16, cols: u16 },
}

fn group_key(h: &SliceHeader) -> GroupKey {
    match &h.series_uid {
        Some(uid) => GroupKey::Uid(uid.clone()),
        None => GroupKey::NoUid {
            frame_of_reference: h.frame_of_reference.clone().unwrap_or_default(),
            iop: h.iop.map(|v| v.map(|c| (c / IOP_TOL).round() as i64)),
            rows: h.rows,
            cols: h.cols,
        },
    }
}

struct Scan {
    groups: BTreeMap<GroupKey, Vec<SliceHeader>>,
    warnings: Vec<String>,
    skipped: usize,
    /// Files that look like slices but cannot be read, with the reason.
    broken: Vec<(String, String)>,
}

/// The files directly in `dir`, sorted by name (a series folder as the readers see it).
pub(crate) fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn scan(dir: &Path) -> Result<Scan, DicomReadError> {
    let paths = files_in(dir).map_err(|source| DicomReadError::Io { path: dir.display().to_string(), source })?;
    let mut scan = Scan { groups: BTreeMap::new(), warnings: Vec::new(), skipped: 0, broken: Vec::new() };
    for path in paths {
        match read_header(&path) {
            Ok(h) => scan.groups.entry(group_key(&h)).or_default().push(h),
            Err(Unread::NotASlice(reason)) => {
                scan.skipped += 1;
                scan.warnings.push(format!("skipped {}: {reason}", path.display()));
            }
            Err(Unread::Broken(reason)) => {
                scan.skipped += 1;
                scan.broken.push((path.display().to_string(), reason));
            }
        }
    }
    Ok(scan)
}

fn summary(files: &[SliceHeader]) -> SeriesSummary {
    SeriesSummary {
        series_uid: files.first().and_then(|h| h.series_uid.clone()),
        description: files.iter().map(|h| h.description.as_str()).find(|d| !d.is_empty()).unwrap_or("").to_string(),
        files: files.len(),
        acquisition_time_s: files.iter().filter_map(|h| h.time_s).reduce(f64::min),
    }
}

/// The image series in a folder (files that are not DICOM images are left out).
pub fn list_series(dir: &Path) -> Result<Vec<SeriesSummary>, DicomReadError> {
    Ok(scan(dir)?.groups.values().map(|files| summary(files)).collect())
}

/// Loads one CT series from a folder. `series_uid` selects a series when the folder mixes several;
/// with None and several series present -> error listing them. Unreadable slices are refused
/// (see [`load_series_with`]).
pub fn load_series(dir: &Path, series_uid: Option<&str>) -> Result<CtSeries, DicomReadError> {
    load_series_with(dir, series_uid, &LoadOptions::default())
}

/// [`load_series`] with options: a file that looks like a slice but cannot be read (header or
/// pixel data) refuses the series, naming it, unless `options.skip_unreadable_slices`; then it is
/// left out with a warning, and a gap it leaves is refused as uneven spacing, naming it.
pub fn load_series_with(
    dir: &Path,
    series_uid: Option<&str>,
    options: &LoadOptions,
) -> Result<CtSeries, DicomReadError> {
    let Scan { mut groups, mut warnings, skipped, broken } = scan(dir)?;
    // Which series a broken file belonged to is unknown: it refuses whatever series is asked for.
    if !broken.is_empty() && !options.skip_unreadable_slices {
        return Err(DicomReadError::UnreadableSlices { files: broken });
    }
    let mut skipped_files: Vec<String> = Vec::new();
    for (path, reason) in broken {
        warnings.push(format!("skipped unreadable slice {path} (skip_unreadable_slices): {reason}"));
        skipped_files.push(path);
    }
    let summaries: Vec<SeriesSummary> = groups.values().map(|files| summary(files)).collect();
    let key = match series_uid {
        Some(uid) => {
            let key = GroupKey::Uid(uid.to_string());
            if !groups.contains_key(&key) {
                return Err(DicomReadError::SeriesNotFound { uid: uid.to_string(), available: summaries });
            }
            key
        }
        None => match groups.len() {
            0 => return Err(DicomReadError::NoSeries { dir: dir.display().to_string(), skipped }),
            1 => groups
                .keys()
                .next()
                .cloned()
                .ok_or(DicomReadError::NoSeries { dir: dir.display().to_string(), skipped })?,
            _ => return Err(DicomReadError::SeveralSeries { series: summaries }),
        },
    };
    let files = groups.remove(&key).unwrap_or_default();
    if let GroupKey::NoUid { .. } = key {
        warnings.push(format!(
            "the {} files of this series have no SeriesInstanceUID; grouped by frame of reference, orientation \
             and matrix size",
            files.len()
        ));
    }
    let info = summary(&files);
    let stack = check_geometry(&files, &skipped_files, &mut warnings)?;
    let (mut data, failed) = decode_all(&stack.slices, stack.rows, stack.cols, &mut warnings)?;
    let mut geometry = stack.geometry;
    if !failed.is_empty() {
        if !options.skip_unreadable_slices {
            let files = failed.into_iter().map(|(i, reason)| (p(stack.slices[i]), reason)).collect();
            return Err(DicomReadError::UnreadableSlices { files });
        }
        // Leave the failed slices out and check the rest again: the grid may now have a gap.
        let failed_paths: Vec<&Path> = failed.iter().map(|(i, _)| stack.slices[*i].path.as_path()).collect();
        for (i, reason) in &failed {
            let path = p(stack.slices[*i]);
            warnings.push(format!("skipped unreadable slice {path} (skip_unreadable_slices): {reason}"));
            skipped_files.push(path);
        }
        let kept: Vec<SliceHeader> =
            files.iter().filter(|h| !failed_paths.contains(&h.path.as_path())).cloned().collect();
        let restacked = check_geometry(&kept, &skipped_files, &mut warnings)?;
        let plane = stack.rows * stack.cols;
        let mut compact = Vec::with_capacity(plane * restacked.slices.len());
        for h in &restacked.slices {
            let Some(old) = stack.slices.iter().position(|o| o.path == h.path) else {
                continue;
            };
            compact.extend_from_slice(&data[old * plane..(old + 1) * plane]);
        }
        data = compact;
        geometry = restacked.geometry;
    }
    Ok(CtSeries {
        volume: Volume { geometry, data },
        series_uid: info.series_uid,
        description: info.description,
        acquisition_time_s: info.acquisition_time_s,
        warnings,
    })
}

struct Stack<'a> {
    geometry: Geometry,
    slices: Vec<&'a SliceHeader>,
    rows: usize,
    cols: usize,
}

fn p(h: &SliceHeader) -> String {
    h.path.display().to_string()
}

/// Checks that the slices form one regular grid and returns it, slices sorted along the normal.
/// `skipped`: unreadable files left out, named if the spacing turns out uneven.
fn check_geometry<'a>(
    files: &'a [SliceHeader],
    skipped: &[String],
    warnings: &mut Vec<String>,
) -> Result<Stack<'a>, DicomReadError> {
    let first = files.first().ok_or(DicomReadError::NoSeries { dir: String::new(), skipped: 0 })?;
    if let Some(m) = files.iter().filter_map(|h| h.modality.as_deref()).find(|m| *m != "CT") {
        warnings.push(format!("modality is {m}, not CT: values may not be Hounsfield units"));
    }
    let mut entries = Vec::with_capacity(files.len());
    for h in files {
        if h.frames > 1 {
            return Err(DicomReadError::MultiFrame { path: p(h), frames: h.frames });
        }
        if h.samples != 1 {
            return Err(DicomReadError::NotGreyscale { path: p(h), samples: h.samples });
        }
        let missing = |tag| DicomReadError::MissingTag { path: p(h), tag };
        let iop = h.iop.ok_or_else(|| missing("ImageOrientationPatient"))?;
        let ipp = h.ipp.ok_or_else(|| missing("ImagePositionPatient"))?;
        let ps = h.pixel_spacing.ok_or_else(|| missing("PixelSpacing"))?;
        if ps.iter().any(|&s| s <= 0.0) {
            return Err(missing("PixelSpacing (must be positive)"));
        }
        entries.push((h, iop, ipp, ps));
    }
    let (_, iop0, _, ps0) = entries[0];
    let inconsistent = |what, a: String, h: &SliceHeader, b: String| DicomReadError::Inconsistent {
        what,
        path_a: p(first),
        value_a: a,
        path_b: p(h),
        value_b: b,
    };
    for &(h, iop, _, ps) in &entries {
        if (h.rows, h.cols) != (first.rows, first.cols) {
            let size = |h: &SliceHeader| format!("{} rows x {} columns", h.rows, h.cols);
            return Err(inconsistent("matrix size", size(first), h, size(h)));
        }
        if ps.iter().zip(&ps0).any(|(a, b)| (a - b).abs() > PIXEL_SPACING_TOL_MM) {
            return Err(inconsistent("PixelSpacing", format!("{ps0:?} mm"), h, format!("{ps:?} mm")));
        }
        if iop.iter().zip(&iop0).any(|(a, b)| (a - b).abs() > IOP_TOL) {
            return Err(inconsistent("ImageOrientationPatient", format!("{iop0:?}"), h, format!("{iop:?}")));
        }
        if h.frame_of_reference != first.frame_of_reference {
            let f = |h: &SliceHeader| h.frame_of_reference.clone().unwrap_or_else(|| "none".into());
            return Err(inconsistent("FrameOfReferenceUID", f(first), h, f(h)));
        }
    }
    let row = Vector3::new(iop0[0], iop0[1], iop0[2]);
    let col = Vector3::new(iop0[3], iop0[4], iop0[5]);
    if (row.norm() - 1.0).abs() > 1e-2 || (col.norm() - 1.0).abs() > 1e-2 || row.dot(&col).abs() > 1e-2 {
        return Err(DicomReadError::BadOrientation { path: p(first), iop: iop0 });
    }
    let row = row.normalize();
    // Remove rounding so that the direction matrix is orthonormal.
    let col = (col - row * row.dot(&col)).normalize();
    let normal = row.cross(&col);

    let mut sorted: Vec<(&SliceHeader, Vector3<f64>, f64)> = entries
        .iter()
        .map(|&(h, _, ipp, _)| {
            let v = Vector3::from(ipp);
            (h, v, v.dot(&normal))
        })
        .collect();
    sorted.sort_by(|a, b| a.2.total_cmp(&b.2).then_with(|| a.0.path.cmp(&b.0.path)));
    if sorted.len() < 2 {
        return Err(DicomReadError::SingleSlice { path: p(first) });
    }
    for w in sorted.windows(2) {
        if (w[1].2 - w[0].2).abs() < SPACING_ABS_TOL_MM {
            return Err(DicomReadError::DuplicatePosition {
                path_a: p(w[0].0),
                path_b: p(w[1].0),
                position_mm: w[0].2,
            });
        }
    }
    let steps: Vec<Vector3<f64>> = sorted.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let along: Vec<f64> = steps.iter().map(|s| s.dot(&normal)).collect();

    // Slice positions may wander sideways (off the normal through the first slice) by a tenth of a pixel:
    // stacking them as a straight grid then misplaces no voxel by more than that.
    let lateral = |v: Vector3<f64>| v - normal * v.dot(&normal);
    let lateral_tol = (LATERAL_TOL_PIXELS * ps0[0].min(ps0[1])).max(SPACING_ABS_TOL_MM);
    // Tilt: the positions advance along a line that is not the slice normal.
    let total = sorted[sorted.len() - 1].1 - sorted[0].1;
    let drift_mm = lateral(total).norm();
    if drift_mm > lateral_tol {
        let mut found: Vec<f64> = Vec::new();
        for s in &steps {
            if !found.iter().any(|f| (f - s.norm()).abs() <= SPACING_ABS_TOL_MM.max(SPACING_REL_TOL * f)) {
                found.push(s.norm());
            }
        }
        let degrees = drift_mm.atan2(total.dot(&normal)).to_degrees();
        return Err(DicomReadError::GantryTilt { degrees, drift_mm, steps_mm: found });
    }
    // A single slice shifted sideways: the stack is not straight.
    for (h, v, _) in &sorted {
        let offset_mm = lateral(v - sorted[0].1).norm();
        if offset_mm > lateral_tol {
            return Err(DicomReadError::MisalignedSlice { path: p(h), offset_mm });
        }
    }
    let mut ordered = along.clone();
    ordered.sort_by(f64::total_cmp);
    let median = ordered[ordered.len() / 2];
    let tolerance = SPACING_ABS_TOL_MM.max(SPACING_REL_TOL * median);
    if along.iter().any(|d| (d - median).abs() > tolerance) {
        let mut found: Vec<f64> = Vec::new();
        for &d in &along {
            if !found.iter().any(|f| (f - d).abs() <= tolerance) {
                found.push(d);
            }
        }
        let gaps = sorted
            .windows(2)
            .zip(&along)
            .filter(|(_, d)| (*d - median).abs() > tolerance)
            .map(|(w, d)| (p(w[0].0), p(w[1].0), *d))
            .collect();
        return Err(DicomReadError::UnevenSpacing { spacings_mm: found, gaps, skipped: skipped.to_vec() });
    }
    let n = sorted.len();
    let step = (sorted[n - 1].2 - sorted[0].2) / (n - 1) as f64;
    let geometry = Geometry {
        dims: [first.cols as usize, first.rows as usize, n],
        // PixelSpacing is (between rows, between columns).
        spacing_mm: [ps0[1], ps0[0], step],
        origin_mm: sorted[0].1.into(),
        direction: [row.into(), col.into(), normal.into()],
    };
    geometry.validate().map_err(|e| DicomReadError::Geometry { path: p(first), reason: e.to_string() })?;
    Ok(Stack {
        geometry,
        slices: sorted.into_iter().map(|s| s.0).collect(),
        rows: first.rows as usize,
        cols: first.cols as usize,
    })
}

/// Decodes one slice to HU (the decoder applies RescaleSlope/Intercept); padding voxels become [`PADDING_HU`].
fn decode_slice(h: &SliceHeader, rows: usize, cols: usize, out: &mut [f32]) -> Result<usize, DicomReadError> {
    let err = |reason: String| DicomReadError::Decode { path: p(h), reason };
    guarded(|| {
        let bytes = std::fs::read(&h.path).map_err(|e| format!("cannot read: {e}"))?;
        check_file(&bytes, true).map_err(|e| format!("corrupt pixel data: {e}"))?;
        let obj = OpenFileOptions::new().open_file(&h.path).map_err(|e| format!("{e}"))?;
        let decoded = obj.decode_pixel_data().map_err(|e| format!("{e}"))?;
        let hu = decoded.to_ndarray::<f32>().map_err(|e| format!("{e}"))?;
        if hu.shape() != [1, rows, cols, 1] {
            return Err(format!(
                "decoded image is {:?} (frames, rows, columns, samples), header says {rows} x {cols}",
                hu.shape()
            ));
        }
        for (o, v) in out.iter_mut().zip(hu.iter()) {
            *o = *v;
        }
        let mut padded = 0;
        if let Some(pad) = h.padding {
            let raw = decoded
                .to_ndarray_with_options::<f64>(&ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
                .map_err(|e| format!("{e}"))?;
            for (o, v) in out.iter_mut().zip(raw.iter()) {
                if *v == pad {
                    *o = PADDING_HU;
                    padded += 1;
                }
            }
        }
        Ok(padded)
    })
    .map_err(err)
}

/// Decodes every slice; the data, and the slices (index, reason) whose pixel data could not be read.
#[allow(clippy::type_complexity)]
fn decode_all(
    slices: &[&SliceHeader],
    rows: usize,
    cols: usize,
    warnings: &mut Vec<String>,
) -> Result<(Vec<f32>, Vec<(usize, String)>), DicomReadError> {
    let plane = rows * cols;
    let mut data = vec![0f32; plane * slices.len()];
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let per_thread = slices.len().div_ceil(threads);
    let results: Vec<Result<(usize, Vec<(usize, String)>), DicomReadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks_mut(plane * per_thread)
            .zip(slices.chunks(per_thread))
            .enumerate()
            .map(|(t, (chunk, hs))| {
                scope.spawn(move || {
                    let mut padded = 0;
                    let mut failed = Vec::new();
                    for (n, (out, h)) in chunk.chunks_mut(plane).zip(hs).enumerate() {
                        match decode_slice(h, rows, cols, out) {
                            Ok(count) => padded += count,
                            Err(DicomReadError::Decode { reason, .. }) => failed.push((t * per_thread + n, reason)),
                            Err(other) => return Err(other),
                        }
                    }
                    Ok((padded, failed))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DicomReadError::Decode { path: "?".into(), reason: "decoder thread failed".into() })
                })
            })
            .collect()
    });
    let (mut padded, mut failed) = (0, Vec::new());
    for r in results {
        let (count, mut f) = r?;
        padded += count;
        failed.append(&mut f);
    }
    if padded > 0 {
        warnings.push(format!("{padded} padding voxels (PixelPaddingValue) set to {PADDING_HU} HU"));
    }
    Ok((data, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_write::{self, SeriesInfo};
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use needle_nav_sim::phantom::{MotionState, Phantom, PhantomConfig};

    const DATA: &str = "/work/shared/data";

    fn data_dir(rel: &str) -> PathBuf {
        let dir = Path::new(DATA).join(rel);
        assert!(dir.is_dir(), "test data folder {} is missing (see ../shared/data/MANIFEST.md)", dir.display());
        dir
    }

    /// A scratch folder removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("nn_dcmread_{}_{name}", std::process::id()));
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

    fn info(n: u64, time: &str) -> SeriesInfo {
        SeriesInfo {
            patient_name: "Digital^Patient".into(),
            patient_id: "NN-1".into(),
            study_uid: dicom_write::uid_from_seed(7, "study"),
            series_uid: dicom_write::uid_from_seed(n, "series"),
            frame_of_reference_uid: dicom_write::uid_from_seed(7, "for"),
            series_number: n as u32,
            series_description: format!("digital patient {n}"),
            date: "20260101".into(),
            acquisition_time: time.into(),
            contrast_agent: None,
        }
    }

    /// A small digital-patient CT (HU) with an anisotropic grid.
    fn patient_ct(inhale: f64) -> Volume<i16> {
        let cfg = PhantomConfig { dims: [48, 40, 24], spacing_mm: [4.0, 3.5, 5.0], ..Default::default() };
        let state = MotionState { skin_inhale: inhale, organ_inhale: inhale, organ_velocity: 0.0 };
        Phantom::new(cfg).unwrap().render(&state, 0).hu
    }

    fn write(dir: &Path, vol: &Volume<i16>, info: &SeriesInfo) -> Vec<PathBuf> {
        dicom_write::write_ct_series(dir, vol, info).unwrap()
    }

    fn assert_same_grid(a: &Geometry, b: &Geometry) {
        assert_eq!(a.dims, b.dims);
        for x in 0..3 {
            assert!(
                (a.spacing_mm[x] - b.spacing_mm[x]).abs() < 1e-6,
                "spacing {:?} vs {:?}",
                a.spacing_mm,
                b.spacing_mm
            );
            assert!((a.origin_mm[x] - b.origin_mm[x]).abs() < 1e-5, "origin {:?} vs {:?}", a.origin_mm, b.origin_mm);
            for y in 0..3 {
                assert!((a.direction[x][y] - b.direction[x][y]).abs() < 1e-9, "{:?} vs {:?}", a.direction, b.direction);
            }
        }
    }

    fn as_f32(v: &Volume<i16>) -> Vec<f32> {
        v.data.iter().map(|&h| h as f32).collect()
    }

    #[test]
    fn dicom_times_parse_to_seconds_since_midnight() {
        assert_eq!(parse_dicom_time("144105"), Some(52865.0));
        assert!((parse_dicom_time("140352.457").unwrap() - 50632.457).abs() < 1e-9);
        assert_eq!(parse_dicom_time("10:15:30.5"), Some(36930.5));
        assert_eq!(parse_dicom_time("1015"), Some(36900.0));
        assert_eq!(parse_dicom_time("25"), None);
        assert_eq!(parse_dicom_time("abc"), None);
        assert_eq!(parse_dicom_time(""), None);
    }

    #[test]
    fn thorax_series_matches_pydicom() {
        let ct = load_series(&data_dir("thorax_ct_dicom"), None).unwrap();
        let g = &ct.volume.geometry;
        assert_eq!(g.dims, [512, 512, 141]);
        assert_eq!(g.spacing_mm[..2], [0.9765625, 0.9765625]);
        assert!((g.spacing_mm[2] - 2.0).abs() < 1e-9, "{:?}", g.spacing_mm);
        // File names run head to feet (00-slice140 is the lowest); the volume runs along +z (the normal).
        assert_eq!(g.origin_mm, [-250.0, -164.0, -164.5]);
        assert_eq!(g.direction, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!(ct.acquisition_time_s, Some(52865.0));
        assert!(ct.series_uid.as_deref().is_some_and(|u| u.starts_with("1.2.826.0.1.3680043.2.1143.")));
        assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
        // Values read by pydicom 3.0.1 (pixel_array * RescaleSlope + RescaleIntercept, slices sorted by z).
        for ((i, j, k), hu) in [
            ((0, 0, 0), -1024.0),
            ((256, 256, 0), 158.0),
            ((200, 300, 10), -420.0),
            ((400, 100, 140), -997.0),
            ((100, 256, 5), -16.0),
        ] {
            assert_eq!(ct.volume.get(i, j, k), hu, "voxel ({i}, {j}, {k})");
        }
        let sum: f64 = ct.volume.data.iter().map(|&v| v as f64).sum();
        assert_eq!(sum, -24678725164.0, "sum of all HU, pydicom");
        // Air in front of the chest (mid slice): about -1000 HU.
        let mut air = Vec::new();
        for j in 40..60 {
            for i in 236..276 {
                air.push(ct.volume.get(i, j, 70) as f64);
            }
        }
        let mean = air.iter().sum::<f64>() / air.len() as f64;
        assert!((mean + 1000.0).abs() < 15.0, "air {mean} HU");
    }

    /// The decoder applies RescaleSlope/Intercept: default output = raw stored values * slope + intercept.
    #[test]
    fn decoder_applies_the_rescale_of_the_header() {
        for rel in ["thorax_ct_dicom", "abdomen_ct_vessels/example_ct_dicom_j2k"] {
            let dir = data_dir(rel);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            let obj = dicom_object::open_file(&files[0]).unwrap();
            let slope = obj.element(tags::RESCALE_SLOPE).unwrap().to_float64().unwrap();
            let intercept = obj.element(tags::RESCALE_INTERCEPT).unwrap().to_float64().unwrap();
            assert_eq!((slope, intercept), (1.0, -1024.0), "{rel}");
            let decoded = obj.decode_pixel_data().unwrap();
            let hu = decoded.to_ndarray::<f32>().unwrap();
            let none = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
            let raw = decoded.to_ndarray_with_options::<f64>(&none).unwrap();
            assert!(raw.iter().all(|&r| r >= 0.0), "{rel}: stored values are unsigned");
            assert!(hu.iter().zip(raw.iter()).all(|(h, r)| *h as f64 == r * slope + intercept), "{rel}");
        }
    }

    #[test]
    fn gantry_tilted_head_ct_is_refused_with_the_angle_and_the_spacings() {
        let err = load_series(&data_dir("head_ct_gantry_tilt_dicom"), None).unwrap_err();
        let msg = err.to_string();
        match &err {
            DicomReadError::GantryTilt { degrees, steps_mm, .. } => {
                assert!((degrees - 18.5).abs() < 0.05, "{msg}");
                assert_eq!(steps_mm.len(), 3, "{msg}");
            }
            other => panic!("expected a gantry tilt refusal, got {other}"),
        }
        for s in ["18.5°", "gantry tilt", "4.22 mm", "1.14 mm", "7.38 mm"] {
            assert!(msg.contains(s), "`{s}` not in: {msg}");
        }
    }

    #[test]
    fn jpeg2000_series_without_series_uid_loads_with_a_warning_and_matches_pydicom() {
        let ct = load_series(&data_dir("abdomen_ct_vessels/example_ct_dicom_j2k"), None).unwrap();
        let g = &ct.volume.geometry;
        assert_eq!(g.dims, [512, 512, 20]);
        assert_eq!(g.spacing_mm[..2], [0.9765625, 0.9765625]);
        assert!((g.spacing_mm[2] - 2.0).abs() < 1e-9);
        assert_eq!(g.origin_mm, [-249.51171875, -437.51171875, -804.5]);
        assert_eq!(ct.series_uid, None);
        assert_eq!(ct.description, "CT Body 3.0");
        assert!((ct.acquisition_time_s.unwrap() - 50632.457).abs() < 1e-6);
        assert!(ct.warnings.iter().any(|w| w.contains("no SeriesInstanceUID")), "{:?}", ct.warnings);
        // pydicom 3.0.1 with pylibjpeg-openjpeg 2.6.0.
        for ((i, j, k), hu) in [
            ((0, 0, 0), -1024.0),
            ((256, 256, 0), 86.0),
            ((200, 300, 10), 96.0),
            ((400, 100, 19), -995.0),
            ((100, 256, 5), 15.0),
        ] {
            assert_eq!(ct.volume.get(i, j, k), hu, "voxel ({i}, {j}, {k})");
        }
        let sum: f64 = ct.volume.data.iter().map(|&v| v as f64).sum();
        assert_eq!(sum, -3272217339.0, "sum of all HU, pydicom");
    }

    #[test]
    fn our_series_round_trips_whatever_the_file_names_and_order() {
        let vol = patient_ct(0.0);
        let written = Scratch::new("written");
        let paths = write(&written.0, &vol, &info(1, "101500.250000"));
        // Copy under scrambled names, so neither name nor directory order follows the slices.
        let shuffled = Scratch::new("shuffled");
        for (n, p) in paths.iter().enumerate() {
            let name = format!("{:08x}", (n as u64 * 2_654_435_761) % 4_294_967_291);
            std::fs::copy(p, shuffled.0.join(name)).unwrap();
        }
        let ct = load_series(&shuffled.0, None).unwrap();
        assert_same_grid(&ct.volume.geometry, &vol.geometry);
        assert_eq!(ct.volume.data, as_f32(&vol));
        assert_eq!(ct.series_uid.as_deref(), Some(info(1, "").series_uid.as_str()));
        assert_eq!(ct.description, "digital patient 1");
        assert_eq!(ct.acquisition_time_s, Some(36900.25));
        assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    }

    #[test]
    fn two_series_in_one_folder_are_listed_and_one_is_chosen_by_uid() {
        let (rest, inhale) = (patient_ct(0.0), patient_ct(1.0));
        let a = Scratch::new("two_a");
        let b = Scratch::new("two_b");
        let mixed = Scratch::new("two_mixed");
        for (dir, vol, info, prefix) in [(&a, &rest, info(1, "100000"), "a"), (&b, &inhale, info(2, "100002.5"), "b")] {
            for p in write(&dir.0, vol, &info) {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                std::fs::copy(&p, mixed.0.join(format!("{prefix}_{name}"))).unwrap();
            }
        }
        let (uid1, uid2) = (info(1, "").series_uid, info(2, "").series_uid);
        let err = load_series(&mixed.0, None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, DicomReadError::SeveralSeries { series } if series.len() == 2), "{msg}");
        assert!(msg.contains(&uid1) && msg.contains(&uid2) && msg.contains("24 files"), "{msg}");
        let mut listed = list_series(&mixed.0).unwrap();
        listed.sort_by(|x, y| x.description.cmp(&y.description));
        assert_eq!(
            listed,
            vec![
                SeriesSummary {
                    series_uid: Some(uid1.clone()),
                    description: "digital patient 1".into(),
                    files: 24,
                    acquisition_time_s: Some(36000.0)
                },
                SeriesSummary {
                    series_uid: Some(uid2.clone()),
                    description: "digital patient 2".into(),
                    files: 24,
                    acquisition_time_s: Some(36002.5)
                },
            ]
        );
        let second = load_series(&mixed.0, Some(&uid2)).unwrap();
        assert_eq!(second.volume.data, as_f32(&inhale));
        assert_eq!(second.acquisition_time_s, Some(36002.5));
        let first = load_series(&mixed.0, Some(&uid1)).unwrap();
        assert_eq!(first.volume.data, as_f32(&rest));
        let missing = load_series(&mixed.0, Some("1.2.3")).unwrap_err();
        assert!(matches!(missing, DicomReadError::SeriesNotFound { .. }), "{missing}");
    }

    #[test]
    fn garbage_and_truncated_files_are_skipped_or_refused_by_name_without_panic() {
        let vol = patient_ct(0.0);
        let dir = Scratch::new("garbage");
        let paths = write(&dir.0, &vol, &info(1, "100000"));
        std::fs::write(dir.0.join("notes.txt"), "not an image").unwrap();
        let ct = load_series(&dir.0, None).unwrap();
        assert!(ct.warnings.iter().any(|w| w.contains("notes.txt") && w.starts_with("skipped")), "{:?}", ct.warnings);
        let mut noise = vec![0u8; 4096];
        for (n, b) in noise.iter_mut().enumerate() {
            *b = (n * 7919 % 251) as u8;
        }
        std::fs::write(dir.0.join("junk.dcm"), &noise).unwrap();
        let bytes = std::fs::read(&paths[3]).unwrap();
        // Cut inside the header.
        std::fs::write(dir.0.join("cut_header.dcm"), &bytes[..400]).unwrap();
        std::fs::write(dir.0.join("empty.dcm"), b"").unwrap();
        // Files named like slices that cannot be read may be missing slices: refused, named.
        let err = load_series(&dir.0, None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(&err, DicomReadError::UnreadableSlices { files } if files.len() == 3), "{err}");
        for name in ["junk.dcm", "cut_header.dcm", "empty.dcm"] {
            assert!(text.contains(name), "{name}: {text}");
        }
        assert!(!text.contains("notes.txt"), "{text}");
        // Skipping allowed: the series loads, and each skipped file is in the warnings.
        let skip = LoadOptions { skip_unreadable_slices: true };
        let ct = load_series_with(&dir.0, None, &skip).unwrap();
        assert_eq!(ct.volume.data, as_f32(&vol));
        for name in ["notes.txt", "junk.dcm", "cut_header.dcm", "empty.dcm"] {
            assert!(
                ct.warnings.iter().any(|w| w.contains(name) && w.starts_with("skipped")),
                "{name}: {:?}",
                ct.warnings
            );
        }
        // Cut inside the pixel data of a slice of the series: refused by name, even when skipping
        // is allowed, since the gap it leaves in the middle makes the spacing uneven.
        for name in ["junk.dcm", "cut_header.dcm", "empty.dcm"] {
            std::fs::remove_file(dir.0.join(name)).unwrap();
        }
        std::fs::write(&paths[3], &bytes[..bytes.len() - 1000]).unwrap();
        let err = load_series(&dir.0, None).unwrap_err();
        assert!(
            matches!(&err, DicomReadError::UnreadableSlices { files } if files.iter().any(|f| f.0.ends_with("IM_00004.dcm"))),
            "{err}"
        );
        let err = load_series_with(&dir.0, None, &skip).unwrap_err();
        assert!(matches!(err, DicomReadError::UnevenSpacing { .. }), "{err}");
        assert!(err.to_string().contains("IM_00004.dcm"), "{err}");
    }

    /// Issue 11: a corrupt first or last slice was skipped with only a warning (a shorter CT), a
    /// corrupt middle one gave "slice spacing is not uniform" without naming it.
    #[test]
    fn a_corrupt_first_middle_or_last_slice_is_refused_by_name_and_skipped_only_on_request() {
        let vol = patient_ct(0.0);
        let skip = LoadOptions { skip_unreadable_slices: true };
        let n = vol.geometry.dims[2];
        for (at, name) in [(0, "first"), (n / 2, "middle"), (n - 1, "last")] {
            for corruption in ["truncated", "garbage"] {
                let dir = Scratch::new(&format!("corrupt_{name}_{corruption}"));
                let paths = write(&dir.0, &vol, &info(1, "100000"));
                let bytes = std::fs::read(&paths[at]).unwrap();
                match corruption {
                    "truncated" => std::fs::write(&paths[at], &bytes[..300]).unwrap(),
                    _ => std::fs::write(&paths[at], vec![0xA5u8; bytes.len()]).unwrap(),
                }
                let file = paths[at].file_name().unwrap().to_string_lossy().to_string();
                let err = load_series(&dir.0, None).unwrap_err();
                assert!(matches!(err, DicomReadError::UnreadableSlices { .. }), "{name} {corruption}: {err}");
                assert!(err.to_string().contains(&file), "{name} {corruption}: {err}");
                match load_series_with(&dir.0, None, &skip) {
                    Ok(ct) => {
                        assert_ne!(name, "middle");
                        assert_eq!(ct.volume.geometry.dims[2], n - 1);
                        assert!(ct.warnings.iter().any(|w| w.contains(&file)), "{:?}", ct.warnings);
                    }
                    Err(e) => {
                        assert_eq!(name, "middle", "{e}");
                        assert!(
                            matches!(e, DicomReadError::UnevenSpacing { .. }) && e.to_string().contains(&file),
                            "{e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_value_length_beyond_the_file_is_refused_before_dicom_rs_allocates_it() {
        // Found by the dicom_series fuzz target (mutated 3.4 KB phantom slices declaring values far
        // longer than the file: dicom-rs allocated and zero-filled them, over 100 s per file instrumented).
        // Here: SeriesDescription (0008,103E) rewritten as OB with a 4-byte length of 0xFFFFFF00.
        let vol = patient_ct(0.0);
        let dir = Scratch::new("huge_length");
        let paths = write(&dir.0, &vol, &info(1, "100000"));
        let mut bytes = std::fs::read(&paths[3]).unwrap();
        let at = bytes.windows(6).position(|w| w == b"\x08\x00\x3e\x10LO").unwrap();
        bytes.splice(at + 4..at + 8, *b"OB\0\0\x00\xff\xff\xff");
        std::fs::write(&paths[3], &bytes).unwrap();
        let scan = scan(&dir.0).unwrap();
        // A slice file that cannot be read: recorded as broken (the series is refused naming it
        // unless skipping is allowed).
        assert_eq!(scan.skipped, 1, "{:?}", scan.warnings);
        let expected =
            format!("element (0008,103E) declares 4294967040 bytes but only {} remain", bytes.len() - at - 12);
        assert!(
            scan.broken.len() == 1
                && scan.broken[0].0.ends_with("IM_00004.dcm")
                && scan.broken[0].1.contains(&expected),
            "{:?}",
            scan.broken
        );
        // The same in the pixel data: refused when the slice is decoded, naming the file.
        let mut bytes = std::fs::read(&paths[5]).unwrap();
        let at = bytes.windows(6).position(|w| w == b"\xe0\x7f\x10\x00OW").unwrap();
        bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        std::fs::write(&paths[5], &bytes).unwrap();
        let header = read_header(&paths[5]).unwrap();
        let mut out = vec![0f32; header.rows as usize * header.cols as usize];
        let err = decode_slice(&header, header.rows as usize, header.cols as usize, &mut out).unwrap_err();
        assert!(
            matches!(&err, DicomReadError::Decode { path, reason } if path.ends_with("IM_00006.dcm") && reason.contains("(7FE0,0010) declares 4294967040 bytes")),
            "{err}"
        );
    }

    #[test]
    fn a_missing_slice_duplicate_slice_or_single_slice_is_refused() {
        let vol = patient_ct(0.0);
        let dir = Scratch::new("gaps");
        let paths = write(&dir.0, &vol, &info(1, "100000"));
        std::fs::remove_file(&paths[10]).unwrap();
        let err = load_series(&dir.0, None).unwrap_err();
        match &err {
            DicomReadError::UnevenSpacing { spacings_mm, gaps, .. } => {
                assert_eq!(gaps.len(), 1, "{err}");
                assert!(gaps[0].0.ends_with("IM_00010.dcm") && gaps[0].1.ends_with("IM_00012.dcm"), "{err}");
                assert_eq!(spacings_mm.len(), 2, "{err}");
                assert!((spacings_mm[0] - 5.0).abs() < 1e-6 && (spacings_mm[1] - 10.0).abs() < 1e-6, "{err}");
            }
            other => panic!("expected uneven spacing, got {other}"),
        }
        assert!(err.to_string().contains("5.00 mm, 10.00 mm"), "{err}");

        std::fs::copy(&paths[0], &paths[10]).unwrap(); // position of slice 0 twice
        let err = load_series(&dir.0, None).unwrap_err();
        assert!(matches!(err, DicomReadError::DuplicatePosition { .. }), "{err}");

        let one = Scratch::new("single");
        std::fs::copy(&paths[5], one.0.join("only.dcm")).unwrap();
        assert!(matches!(load_series(&one.0, None), Err(DicomReadError::SingleSlice { .. })));
        let empty = Scratch::new("empty");
        assert!(matches!(load_series(&empty.0, None), Err(DicomReadError::NoSeries { .. })));
    }

    fn edit(path: &Path, f: impl FnOnce(&mut DefaultDicomObject)) {
        let mut obj = dicom_object::open_file(path).unwrap();
        f(&mut obj);
        obj.write_to_file(path).unwrap();
    }

    fn put_ds(obj: &mut DefaultDicomObject, tag: dicom_core::Tag, values: &[f64]) {
        let s = values.iter().map(|v| dicom_write::ds(*v)).collect::<Vec<_>>().join("\\");
        obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(s.as_str())));
    }

    /// Rewrites a written axial series as an oblique one (rotated rows/columns, positions along the new normal).
    fn make_oblique(paths: &[PathBuf], row: Vector3<f64>, col: Vector3<f64>, origin: Vector3<f64>, step: Vector3<f64>) {
        for (k, p) in paths.iter().enumerate() {
            let pos = origin + step * k as f64;
            edit(p, |obj| {
                put_ds(obj, tags::IMAGE_ORIENTATION_PATIENT, &[row.x, row.y, row.z, col.x, col.y, col.z]);
                put_ds(obj, tags::IMAGE_POSITION_PATIENT, &[pos.x, pos.y, pos.z]);
            });
        }
    }

    #[test]
    fn oblique_series_get_their_direction_and_tilted_stacks_are_refused() {
        let vol = patient_ct(0.0);
        let dir = Scratch::new("oblique");
        let paths = write(&dir.0, &vol, &info(1, "100000"));
        let a = 30f64.to_radians();
        // Rows along x rotated about z, columns tipped about x: a double-oblique plane.
        let row = Vector3::new(a.cos(), a.sin(), 0.0);
        let col = Vector3::new(-a.sin() * a.cos(), a.cos() * a.cos(), a.sin());
        let normal = row.cross(&col);
        let origin = Vector3::new(-10.0, 20.0, 30.0);
        // Written in reverse, so that the files' order runs against the normal.
        let reversed: Vec<PathBuf> = paths.iter().rev().cloned().collect();
        make_oblique(&reversed, row, col, origin, -normal * 5.0);
        let ct = load_series(&dir.0, None).unwrap();
        let g = &ct.volume.geometry;
        let last = origin - normal * 5.0 * 23.0;
        for x in 0..3 {
            assert!((g.direction[0][x] - row[x]).abs() < 1e-5 && (g.direction[1][x] - col[x]).abs() < 1e-5);
            assert!((g.direction[2][x] - normal[x]).abs() < 1e-5);
            assert!((g.origin_mm[x] - last[x]).abs() < 1e-4, "{:?} vs {last:?}", g.origin_mm);
        }
        assert!((g.spacing_mm[2] - 5.0).abs() < 1e-5);
        // Slice 0 of the volume is the last file written, i.e. the original first slice.
        assert_eq!(ct.volume.data, as_f32(&vol));

        // The same slices stepping 10° off the normal: refused with the angle.
        let tilt = 10f64.to_radians();
        let step = (normal * tilt.cos() + col * tilt.sin()) * 5.0;
        make_oblique(&paths, row, col, origin, step);
        match load_series(&dir.0, None) {
            Err(DicomReadError::GantryTilt { degrees, steps_mm, .. }) => {
                assert!((degrees - 10.0).abs() < 0.01, "{degrees}");
                assert_eq!(steps_mm.len(), 1);
                assert!((steps_mm[0] - 5.0).abs() < 1e-4);
            }
            other => panic!("expected a tilt refusal, got {other:?}"),
        }
        // One slice shifted sideways by 1 mm.
        make_oblique(&paths, row, col, origin, normal * 5.0);
        edit(&paths[7], |obj| {
            let p = origin + normal * 35.0 + row;
            put_ds(obj, tags::IMAGE_POSITION_PATIENT, &[p.x, p.y, p.z]);
        });
        match load_series(&dir.0, None) {
            Err(DicomReadError::MisalignedSlice { path, offset_mm }) => {
                assert!(path.ends_with("IM_00008.dcm") && (offset_mm - 1.0).abs() < 0.1, "{path} {offset_mm}");
            }
            other => panic!("expected a misaligned slice, got {other:?}"),
        }
        // Rounding-sized wobble (0.05 mm, a 15th of a pixel) is accepted.
        edit(&paths[7], |obj| {
            let p = origin + normal * 35.0 + row * 0.05;
            put_ds(obj, tags::IMAGE_POSITION_PATIENT, &[p.x, p.y, p.z]);
        });
        assert!(load_series(&dir.0, None).is_ok());
    }

    #[test]
    fn slices_that_disagree_on_pixel_spacing_or_orientation_are_refused() {
        let vol = patient_ct(0.0);
        let dir = Scratch::new("inconsistent");
        let paths = write(&dir.0, &vol, &info(1, "100000"));
        edit(&paths[4], |obj| put_ds(obj, tags::PIXEL_SPACING, &[3.5, 4.1]));
        let err = load_series(&dir.0, None).unwrap_err();
        assert!(matches!(err, DicomReadError::Inconsistent { what: "PixelSpacing", .. }), "{err}");
        edit(&paths[4], |obj| {
            put_ds(obj, tags::PIXEL_SPACING, &[3.5, 4.0]);
            put_ds(obj, tags::IMAGE_ORIENTATION_PATIENT, &[1.0, 0.0, 0.0, 0.0, 0.995, 0.0998]);
        });
        let err = load_series(&dir.0, None).unwrap_err();
        assert!(matches!(err, DicomReadError::Inconsistent { what: "ImageOrientationPatient", .. }), "{err}");
        edit(&paths[4], |obj| {
            put_ds(obj, tags::IMAGE_ORIENTATION_PATIENT, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
            obj.remove_element(tags::IMAGE_POSITION_PATIENT);
        });
        let err = load_series(&dir.0, None).unwrap_err();
        assert!(matches!(err, DicomReadError::MissingTag { tag: "ImagePositionPatient", .. }), "{err}");
    }
}
