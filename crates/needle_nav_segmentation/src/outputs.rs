//! Files a segmentation run leaves behind: the label map on the input geometry (NIfTI, which
//! nibabel and 3D Slicer read with the same affine), for DICOM input the same labels as a DICOM
//! Segmentation referencing the source series (one segment per class, standard anatomy codes),
//! a JSON summary, and a downsampled surface point cloud (PLY, metres in the `ct` frame) for
//! rviz and the planner.
//!
//! They are written under temporary names in the output folder and renamed into place
//! together, the summary last, once all are complete ([`needle_nav_imaging::output_files`]): a failed write
//! leaves an earlier result as it was. An earlier result is replaced only with
//! [`SegmentationOptions::overwrite`]; then a surface from the earlier run that this run does not
//! write is removed, so the folder never mixes two runs.

use crate::request::SegmentationInput;
use crate::result::{SegmentationOptions, SegmentationResult};
use needle_nav_core::volume::Geometry;
use needle_nav_core::volume::Volume;
use needle_nav_imaging::dicom_seg::{self, Code, SegDescription, SegmentClass};
use needle_nav_imaging::dicom_source::{self, SourceSeries};
use needle_nav_imaging::nifti;
use needle_nav_imaging::output_files::{refuse_existing, OutputError, Staged};
use std::collections::BTreeMap;
use std::io::Write;

pub const LABEL_MAP_FILE: &str = "vessel_labels.nii.gz";
pub const SUMMARY_FILE: &str = "vessel_summary.json";
pub const SURFACE_FILE: &str = "vessel_surface.ply";
pub const DICOM_SEG_FILE: &str = "vessel_seg.dcm";
/// Every file of a result: what `overwrite` replaces.
pub const RESULT_FILES: [&str; 4] = [LABEL_MAP_FILE, SUMMARY_FILE, SURFACE_FILE, DICOM_SEG_FILE];
/// What the refusal of an existing result tells the user to do.
pub const HOW_TO_REPLACE: &str =
    "needle_nav segment --overwrite, or the vessel_segmentation parameter overwrite_results: true";

/// Refuses an output folder holding an earlier result unless `options.overwrite`.
pub fn check_output_dir(options: &SegmentationOptions) -> Result<(), OutputError> {
    refuse_existing(&options.output_dir, &RESULT_FILES, options.overwrite, HOW_TO_REPLACE)
}

/// Display colour per label (artery red, vein blue, aorta orange).
pub const CLASS_COLOURS: [[u8; 3]; 4] = [[0, 0, 0], [220, 40, 40], [40, 90, 220], [240, 150, 30]];

pub use crate::result::VesselPoint;

/// The DICOM SEG segments of the vessel labels: category SCT 91723000 "Anatomical Structure"
/// (CID 7150), types SCT 51114001 Artery, 29092000 Vein, 15825003 Aorta (CID 7192, as in
/// pydicom's `codes.SCT` and highdicom).
pub fn vessel_segment_classes() -> Vec<SegmentClass> {
    let category = Code::new("91723000", "SCT", "Anatomical Structure");
    [(1u8, "51114001", "Artery"), (2, "29092000", "Vein"), (3, "15825003", "Aorta")]
        .into_iter()
        .map(|(label, value, meaning)| SegmentClass {
            label,
            name: crate::model_info::CLASS_NAMES[label as usize].to_string(),
            category: category.clone(),
            property_type: Code::new(value, "SCT", meaning),
            rgb: CLASS_COLOURS[label as usize],
        })
        .collect()
}

/// What a DICOM SEG of a run references and says about its algorithm.
#[derive(Debug, Clone, Copy)]
pub struct SegSource<'a> {
    pub series: &'a SourceSeries,
    pub algorithm_name: &'a str,
    pub algorithm_version: &'a str,
}

/// The source series a DICOM SEG of `input` (loaded on `grid`) references, or why it cannot have one.
pub fn seg_source(input: &SegmentationInput, grid: &Geometry) -> Result<SourceSeries, String> {
    let dir = match input {
        SegmentationInput::Nifti(_) => {
            return Err("the input is NIfTI: a DICOM Segmentation references the UIDs of its source DICOM series, \
                        which a NIfTI file does not carry"
                .into())
        }
        SegmentationInput::DicomDirectory(dir) => dir,
    };
    let series = dicom_source::read_source(dir, grid).map_err(|e| e.to_string())?;
    for (what, uid) in [
        ("StudyInstanceUID", &series.study_instance_uid),
        ("SeriesInstanceUID", &series.series_instance_uid),
        ("FrameOfReferenceUID", &series.frame_of_reference_uid),
    ] {
        if uid.is_none() {
            return Err(format!(
                "the source series has no {what} (empty in its files), which a DICOM Segmentation must reference"
            ));
        }
    }
    Ok(series)
}

/// Writes `labels` (on the grid of `source.series`) as the vessel DICOM SEG at `path`; its SOPInstanceUID.
pub fn write_seg_file(
    path: &std::path::Path,
    labels: &Volume<u8>,
    source: &SegSource,
) -> Result<String, dicom_seg::DicomSegError> {
    dicom_seg::write_seg(path, labels, source.series, &vessel_segment_classes(), &seg_description(source))
}

fn seg_description(source: &SegSource) -> SegDescription {
    let series = if source.series.series_description.is_empty() {
        "vessels (needle_nav)".to_string()
    } else {
        format!("{} vessels (needle_nav)", source.series.series_description)
    };
    SegDescription {
        series_description: series.chars().take(64).collect(),
        series_number: 901,
        content_label: "VESSELS".into(),
        algorithm_name: source.algorithm_name.into(),
        algorithm_version: source.algorithm_version.into(),
        manufacturer: "needle_nav".into(),
        model_name: "needle_nav vessel segmentation".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Boundary voxels of every vessel class (a 6-neighbour has another label), thinned to one
/// point per class per `cell_mm` cube at the mean position of its voxels.
pub fn surface_points(labels: &Volume<u8>, cell_mm: f64) -> Vec<VesselPoint> {
    let g = &labels.geometry;
    let [nx, ny, nz] = g.dims;
    let cell = cell_mm.max(0.1);
    let mut cells: BTreeMap<(i64, i64, i64, u8), ([f64; 3], usize)> = BTreeMap::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let l = labels.data[g.offset(i, j, k)];
                if l == 0 {
                    continue;
                }
                let differs = |a: i64, b: i64, c: i64| {
                    a < 0
                        || b < 0
                        || c < 0
                        || a >= nx as i64
                        || b >= ny as i64
                        || c >= nz as i64
                        || labels.data[g.offset(a as usize, b as usize, c as usize)] != l
                };
                let (a, b, c) = (i as i64, j as i64, k as i64);
                let boundary = differs(a - 1, b, c)
                    || differs(a + 1, b, c)
                    || differs(a, b - 1, c)
                    || differs(a, b + 1, c)
                    || differs(a, b, c - 1)
                    || differs(a, b, c + 1);
                if !boundary {
                    continue;
                }
                let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                let key = ((p.x / cell).floor() as i64, (p.y / cell).floor() as i64, (p.z / cell).floor() as i64, l);
                let e = cells.entry(key).or_insert(([0.0; 3], 0));
                e.0 = [e.0[0] + p.x, e.0[1] + p.y, e.0[2] + p.z];
                e.1 += 1;
            }
        }
    }
    cells
        .into_iter()
        .map(|((_, _, _, label), (sum, n))| VesselPoint { position_m: sum.map(|s| s / n as f64 / 1000.0), label })
        .collect()
}

/// ASCII PLY with colour and label per vertex.
pub fn write_ply(path: &std::path::Path, points: &[VesselPoint]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    write_ply_to(&mut out, points)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn write_ply_to(out: &mut impl Write, points: &[VesselPoint]) -> std::io::Result<()> {
    writeln!(out, "ply\nformat ascii 1.0")?;
    writeln!(out, "comment needle_nav vessel surface, frame ct (LPS), metres; label 1 artery 2 vein 3 aorta")?;
    writeln!(out, "element vertex {}", points.len())?;
    writeln!(out, "property float x\nproperty float y\nproperty float z")?;
    writeln!(out, "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar label")?;
    writeln!(out, "end_header")?;
    for p in points {
        let [r, g, b] = CLASS_COLOURS[(p.label as usize).min(3)];
        let [x, y, z] = p.position_m;
        writeln!(out, "{x:.5} {y:.5} {z:.5} {r} {g} {b} {}", p.label)?;
    }
    out.flush()
}

/// Label map, DICOM SEG (when `seg` is a source; else its Err says why not) and surface (when
/// asked) under temporary names in `options.output_dir`; the result's paths are the final ones.
/// The caller adds the summary once the timings are final ([`write_summary`]), which also puts
/// everything in place.
pub fn write_all(
    result: &mut SegmentationResult,
    options: &SegmentationOptions,
    seg: Result<&SegSource, &str>,
) -> Result<Staged, OutputError> {
    check_output_dir(options)?;
    let mut staged = Staged::new(&options.output_dir)?;
    let label_tmp = staged.path(LABEL_MAP_FILE);
    let label_path = staged.final_path(LABEL_MAP_FILE);
    nifti::write(&label_tmp, &result.labels.geometry, &result.labels.data, "needle_nav vessels 1a 2v 3ao")
        .map_err(|e| OutputError::Write { path: label_path.display().to_string(), reason: e.to_string() })?;
    result.label_map_path = label_path;
    (result.dicom_seg_path, result.dicom_seg_sop_instance_uid, result.dicom_seg_note) = (None, None, None);
    match seg {
        Ok(source) => {
            let tmp = staged.path(DICOM_SEG_FILE);
            let path = staged.final_path(DICOM_SEG_FILE);
            let started = std::time::Instant::now();
            let uid = write_seg_file(&tmp, &result.labels, source)
                .map_err(|e| OutputError::Write { path: path.display().to_string(), reason: e.to_string() })?;
            result.stages.push(crate::result::StageTime {
                stage: "write DICOM SEG".into(),
                seconds: started.elapsed().as_secs_f64(),
            });
            result.dicom_seg_path = Some(path);
            result.dicom_seg_sop_instance_uid = Some(uid);
        }
        Err(note) => result.dicom_seg_note = Some(note.to_string()),
    }
    result.surface_path = None;
    if options.write_surface {
        result.surface = surface_points(&result.labels, options.surface_cell_mm);
        let tmp = staged.path(SURFACE_FILE);
        let path = staged.final_path(SURFACE_FILE);
        write_ply(&tmp, &result.surface)
            .map_err(|e| OutputError::Write { path: path.display().to_string(), reason: e.to_string() })?;
        result.surface_path = Some(path);
    }
    result.summary_json_path = staged.final_path(SUMMARY_FILE);
    Ok(staged)
}

/// The summary JSON (everything in the result but the voxels), staged last; then every file is
/// renamed into place (a surface or SEG left from an earlier run that this one did not write is removed).
pub fn write_summary(result: &SegmentationResult, mut staged: Staged) -> Result<(), OutputError> {
    let path = &result.summary_json_path;
    let failed = |reason: String| OutputError::Write { path: path.display().to_string(), reason };
    let text = serde_json::to_string_pretty(result).map_err(|e| failed(e.to_string()))?;
    let tmp = staged.path(SUMMARY_FILE);
    std::fs::write(&tmp, text).map_err(|e| failed(e.to_string()))?;
    let mut obsolete: Vec<std::path::PathBuf> = Vec::new();
    if result.surface_path.is_none() {
        obsolete.push(staged.final_path(SURFACE_FILE));
    }
    if result.dicom_seg_path.is_none() {
        obsolete.push(staged.final_path(DICOM_SEG_FILE));
    }
    staged.commit(&obsolete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle_nav_core::volume::Geometry;

    #[test]
    fn surface_of_a_solid_block_is_its_shell_thinned_per_cell() {
        let g = Geometry::axial([10, 10, 10], [1.0; 3], [0.0; 3]);
        let mut vol = Volume::filled(g.clone(), 0u8);
        for k in 2..8 {
            for j in 2..8 {
                for i in 2..8 {
                    let o = g.offset(i, j, k);
                    vol.data[o] = 2;
                }
            }
        }
        // 1 mm cells: every shell voxel is a point: 6^3 - 4^3.
        let pts = surface_points(&vol, 0.5);
        assert_eq!(pts.len(), 216 - 64);
        assert!(pts.iter().all(|p| p.label == 2));
        // Coarse cells: fewer points, all inside the block's extent (2..7 mm, in metres).
        let coarse = surface_points(&vol, 4.0);
        assert!(coarse.len() < 20 && !coarse.is_empty());
        for p in &coarse {
            assert!(p.position_m.iter().all(|c| (0.002..=0.007).contains(c)), "{p:?}");
        }
    }
}
