//! Files a segmentation run leaves behind: the label map on the input geometry (NIfTI, which
//! nibabel and 3D Slicer read with the same affine), a JSON summary, and a downsampled surface
//! point cloud (PLY, metres in the `ct` frame) for rviz and the planner.
//!
//! The three are written under temporary names in the output folder and renamed into place
//! together, the summary last, once all are complete ([`needle_nav_imaging::output_files`]): a failed write
//! leaves an earlier result as it was. An earlier result is replaced only with
//! [`SegmentationOptions::overwrite`]; then a surface from the earlier run that this run does not
//! write is removed, so the folder never mixes two runs.

use crate::result::{SegmentationOptions, SegmentationResult};
use needle_nav_core::volume::Volume;
use needle_nav_imaging::nifti;
use needle_nav_imaging::output_files::{refuse_existing, OutputError, Staged};
use std::collections::BTreeMap;
use std::io::Write;

pub const LABEL_MAP_FILE: &str = "vessel_labels.nii.gz";
pub const SUMMARY_FILE: &str = "vessel_summary.json";
pub const SURFACE_FILE: &str = "vessel_surface.ply";
/// Every file of a result: what `overwrite` replaces.
pub const RESULT_FILES: [&str; 3] = [LABEL_MAP_FILE, SUMMARY_FILE, SURFACE_FILE];
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

/// Label map and surface (when asked) under temporary names in `options.output_dir`; the
/// result's paths are the final ones. The caller adds the summary once the timings are final
/// ([`write_summary`]), which also puts everything in place.
pub fn write_all(result: &mut SegmentationResult, options: &SegmentationOptions) -> Result<Staged, OutputError> {
    check_output_dir(options)?;
    let mut staged = Staged::new(&options.output_dir)?;
    let label_tmp = staged.path(LABEL_MAP_FILE);
    let label_path = staged.final_path(LABEL_MAP_FILE);
    nifti::write(&label_tmp, &result.labels.geometry, &result.labels.data, "needle_nav vessels 1a 2v 3ao")
        .map_err(|e| OutputError::Write { path: label_path.display().to_string(), reason: e.to_string() })?;
    result.label_map_path = label_path;
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
/// renamed into place (a surface left from an earlier run that this one did not write is removed).
pub fn write_summary(result: &SegmentationResult, mut staged: Staged) -> Result<(), OutputError> {
    let path = &result.summary_json_path;
    let failed = |reason: String| OutputError::Write { path: path.display().to_string(), reason };
    let text = serde_json::to_string_pretty(result).map_err(|e| failed(e.to_string()))?;
    let tmp = staged.path(SUMMARY_FILE);
    std::fs::write(&tmp, text).map_err(|e| failed(e.to_string()))?;
    let obsolete: Vec<std::path::PathBuf> =
        if result.surface_path.is_none() { vec![staged.final_path(SURFACE_FILE)] } else { Vec::new() };
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
