//! The CT-derived obstacle layers on the real scans in `../shared/data` (see its MANIFEST.md;
//! the references are TotalSegmentator's output, not manual annotation). A scan that is not
//! there is skipped with a note, never failed.
//!
//! Measured (2026-11-30, release build, 2 cores shared with other jobs):
//! - chest CTA (`ct_cropped.nii.gz`, 122x102x112 at 1.5 mm): mediastinum ∪ lung vessels ∪ bone
//!   covers 100.0 % of the 14,261 `pulmonary_artery.nii.gz` voxels (100.0 % by the mediastinum
//!   alone) and 99.9 % of the 198,176 `heart.nii.gz` voxels (their centres mapped to CT voxels
//!   through both affines; all fall inside the crop). The mediastinum is generous there: 1.8 L
//!   on this crop, against a heart of 0.67 L. ~2 s for all layers.
//! - thorax DICOM (512x512x141 at 0.98x0.98x2 mm): aerated lung 5.26 L, lung region 5.38 L, two
//!   lungs (2.97 L and 2.41 L); lung vessels 101 ml, 83 % of them inside the lung region (the rest
//!   hilar, within 5 mm of it); airways 41 ml; mediastinum 3.2 L (it takes in the stomach and
//!   spleen under the left dome, see the module doc); no fissure found (the largest sheet
//!   candidate is 168 voxels, 0.3 ml). Seconds per step: body 0.8-1.3, airways 0.7, lungs
//!   1.9-2.6, mediastinum 0.3, lung vessels 5.5-8.5, fissures 1.5, contrast vessels and bone
//!   0.2-0.9: 10.9-15.9 s in all, depending on the other jobs on the machine.

use needle_nav_core::volume::Volume;
use needle_nav_imaging::dicom_read::load_series;
use needle_nav_imaging::nifti;
use needle_nav_planning::morphology::label_components;
use needle_nav_planning::obstacles::{ct_anatomy_timed, CtAnatomy, Layer, ObstacleOptions};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("../shared/data")
}

fn layer(a: &CtAnatomy, l: Layer) -> &[bool] {
    &a.layer(l).expect("every layer is present").mask
}

fn count(mask: &[bool]) -> usize {
    mask.iter().filter(|m| **m).count()
}

/// With NEEDLE_NAV_OBSTACLE_DUMP=<folder>, the CT and the layers as bit flags (NIfTI u8: 1
/// aerated lung, 2 lung region, 4 mediastinum, 8 lung vessels, 16 airways, 32 bone, 64
/// fissures, 128 outside) for looking at them.
fn dump(name: &str, hu: &Volume<f32>, a: &CtAnatomy) {
    let Ok(dir) = std::env::var("NEEDLE_NAV_OBSTACLE_DUMP") else { return };
    let flags: Vec<u8> = (0..hu.data.len())
        .map(|v| {
            [
                a.aerated_lung[v],
                a.lung_region[v],
                layer(a, Layer::Mediastinum)[v],
                layer(a, Layer::LungVessels)[v],
                layer(a, Layer::Airways)[v],
                layer(a, Layer::Bone)[v],
                a.fissures[v],
                a.outside[v],
            ]
            .iter()
            .enumerate()
            .map(|(bit, on)| (*on as u8) << bit)
            .sum()
        })
        .collect();
    let dir = PathBuf::from(dir);
    let written = nifti::write(&dir.join(format!("{name}_layers.nii.gz")), &hu.geometry, &flags, "obstacle layers")
        .and_then(|_| nifti::write(&dir.join(format!("{name}_ct.nii.gz")), &hu.geometry, &hu.data, "ct"));
    if let Err(e) = written {
        eprintln!("dump failed: {e}");
    }
}

fn print_timings(case: &str, timings: &[(&str, f64)]) {
    let total: f64 = timings.iter().map(|(_, s)| s).sum();
    let steps: Vec<String> = timings.iter().map(|(n, s)| format!("{n} {s:.2} s")).collect();
    eprintln!("{case}: {} (total {total:.2} s)", steps.join(", "));
}

#[test]
fn chest_cta_pulmonary_artery_and_heart_lie_in_the_no_go_layers() {
    let dir = shared().join("chest_cta_pulmonary_artery");
    if !dir.join("ct_cropped.nii.gz").exists() {
        eprintln!("skipped: {} not found", dir.display());
        return;
    }
    let ct = nifti::read(&dir.join("ct_cropped.nii.gz")).expect("the CT reads");
    let hu = Volume { geometry: ct.geometry.clone(), data: ct.data };
    let labels = Volume::filled(hu.geometry.clone(), 0u8);
    let (a, timings) = ct_anatomy_timed(&hu, &labels, &ObstacleOptions::default());
    print_timings("chest CTA", &timings);
    dump("chest_cta", &hu, &a);
    let no_go: Vec<bool> = (0..hu.data.len())
        .map(|v| layer(&a, Layer::Mediastinum)[v] || layer(&a, Layer::LungVessels)[v] || layer(&a, Layer::Bone)[v])
        .collect();

    let pa = nifti::read(&dir.join("pulmonary_artery.nii.gz")).expect("the PA mask reads");
    assert_eq!(pa.geometry.dims, hu.geometry.dims, "the PA mask is on the CT grid");
    let pa_voxels: Vec<usize> = (0..pa.data.len()).filter(|&v| pa.data[v] > 0.0).collect();
    let pa_in = pa_voxels.iter().filter(|&&v| no_go[v]).count();
    let pa_med = pa_voxels.iter().filter(|&&v| layer(&a, Layer::Mediastinum)[v]).count();
    let pa_coverage = pa_in as f64 / pa_voxels.len() as f64;

    // heart.nii.gz lies on another grid: each heart voxel centre to the nearest CT voxel.
    let heart = nifti::read(&dir.join("heart.nii.gz")).expect("the heart mask reads");
    let hg = &heart.geometry;
    let g = &hu.geometry;
    let [hx, hy, _] = hg.dims;
    let (mut heart_in_ct, mut heart_in) = (0usize, 0usize);
    for v in (0..heart.data.len()).filter(|&v| heart.data[v] > 0.0) {
        let centre = hg.index_to_patient([(v % hx) as f64, ((v / hx) % hy) as f64, (v / (hx * hy)) as f64]);
        let idx = g.patient_to_index(&centre).map(|x| x.round());
        if (0..3).any(|ax| idx[ax] < 0.0 || idx[ax] > (g.dims[ax] - 1) as f64) {
            continue;
        }
        heart_in_ct += 1;
        heart_in += no_go[g.offset(idx[0] as usize, idx[1] as usize, idx[2] as usize)] as usize;
    }
    let heart_coverage = heart_in as f64 / heart_in_ct.max(1) as f64;
    let ml = |n: usize| n as f64 * g.spacing_mm.iter().product::<f64>() / 1000.0;
    eprintln!(
        "chest CTA: lungs {:.0} ml aerated, {:.0} ml region; mediastinum {:.0} ml, lung vessels {:.0} ml, airways \
         {:.1} ml, fissures {:.1} ml; PA {} voxels, {:.1} % in the no-go union ({:.1} % in the mediastinum); heart {} of {} voxel \
         centres in the crop, {:.1} % in the no-go union",
        ml(count(&a.aerated_lung)),
        ml(count(&a.lung_region)),
        ml(count(layer(&a, Layer::Mediastinum))),
        ml(count(layer(&a, Layer::LungVessels))),
        ml(count(layer(&a, Layer::Airways))),
        ml(count(&a.fissures)),
        pa_voxels.len(),
        100.0 * pa_coverage,
        100.0 * pa_med as f64 / pa_voxels.len() as f64,
        heart_in_ct,
        count(&heart.data.iter().map(|h| *h > 0.0).collect::<Vec<_>>()),
        100.0 * heart_coverage
    );
    assert!(pa_voxels.len() > 10_000 && heart_in_ct > 10_000);
    assert!(pa_coverage >= 0.95, "PA coverage {pa_coverage}");
    assert!(heart_coverage >= 0.95, "heart coverage {heart_coverage}");
}

#[test]
fn thorax_lungs_are_two_of_adult_volume_with_vessels_inside() {
    let dir = shared().join("thorax_ct_dicom");
    if !dir.exists() {
        eprintln!("skipped: {} not found", dir.display());
        return;
    }
    let ct = load_series(&dir, None).expect("the series loads");
    let hu = ct.volume;
    let g = hu.geometry.clone();
    let labels = Volume::filled(g.clone(), 0u8);
    let (a, timings) = ct_anatomy_timed(&hu, &labels, &ObstacleOptions::default());
    print_timings("thorax", &timings);
    dump("thorax", &hu, &a);
    let voxel_ml = g.spacing_mm.iter().product::<f64>() / 1000.0;
    let lung_l = count(&a.aerated_lung) as f64 * voxel_ml / 1000.0;
    let region_l = count(&a.lung_region) as f64 * voxel_ml / 1000.0;
    let (_, sizes) = label_components(&a.lung_region, g.dims);
    let min_voxels = (100.0 / voxel_ml) as usize;
    let big: Vec<f64> = sizes.iter().skip(1).filter(|s| **s >= min_voxels).map(|s| *s as f64 * voxel_ml).collect();
    let vessels = layer(&a, Layer::LungVessels);
    let vessels_in_region = (0..vessels.len()).filter(|&v| vessels[v] && a.lung_region[v]).count();
    let vessel_count = count(vessels);
    eprintln!(
        "thorax {:?} at {:?} mm: aerated lung {lung_l:.2} L, lung region {region_l:.2} L, components >= 100 ml \
         {big:.0?} ml; lung vessels {:.0} ml ({:.1} % inside the lung region); mediastinum {:.0} ml; airways {:.1} \
         ml; fissures detected {} ({:.1} ml); bone {:.0} ml",
        g.dims,
        g.spacing_mm,
        vessel_count as f64 * voxel_ml,
        100.0 * vessels_in_region as f64 / vessel_count.max(1) as f64,
        count(layer(&a, Layer::Mediastinum)) as f64 * voxel_ml,
        count(layer(&a, Layer::Airways)) as f64 * voxel_ml,
        a.fissures_detected,
        count(&a.fissures) as f64 * voxel_ml,
        count(layer(&a, Layer::Bone)) as f64 * voxel_ml,
    );
    assert!((2.0..=8.0).contains(&lung_l), "aerated lung {lung_l} L");
    assert_eq!(big.len(), 2, "lung components {big:?}");
    assert!(vessel_count as f64 * voxel_ml > 10.0, "lung vessels {vessel_count} voxels");
    assert!(vessels_in_region as f64 >= 0.8 * vessel_count as f64);
    assert!(count(layer(&a, Layer::Airways)) > 0, "no airway found");
    let total: f64 = timings.iter().map(|(_, s)| s).sum();
    assert!(total < 60.0, "{total} s");
}
