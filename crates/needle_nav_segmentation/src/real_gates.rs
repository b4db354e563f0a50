//! Real-data gates of the vessel segmentation (issue 12), on the real scans in ../shared/data,
//! run through the same pipeline code as the nodes ([`VesselSegmenter`], inputs read by
//! [`load_input`]) and scored three ways from one inference: network labels, after the HU-window
//! refinement (default pass limit; what `needle_nav segment` writes) and after the refinement
//! repeated until nothing changes.
//!
//! The references are TotalSegmentator outputs (see ../shared/data/MANIFEST.md): a Dice here is
//! agreement with that model, not clinical accuracy.
//!
//! Every figure carries its direction (`better`: higher / lower; none for figures that are only
//! reported, such as volumes) and, where the issue sets one, its gate. The regression test
//! (tests/python/test_vessel_real_gates.py) compares every figure with a direction against the
//! recorded models/vessel_unet_report/real_gates.json.

use super::pipeline::{class_volumes, load_input, SegmentationOptions, VesselSegmenter};
use crate::metrics::{dice_against_mask, fraction_labelled};
use crate::model_info::CLASS_NAMES;
use crate::preprocess::BODY_HU;
use crate::request::SegmentationInput;
use needle_nav_core::volume::Volume;
use needle_nav_imaging::dicom_read::LoadOptions;
use needle_nav_imaging::{nifti, resample};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The three label maps scored for every case, in this order.
pub const VARIANTS: [(&str, &str); 3] = [
    ("network", "network labels only (no HU refinement)"),
    ("refined", "after the HU-window refinement, default pass limit (what `needle_nav segment` writes)"),
    ("refined_unbounded", "after the HU-window refinement repeated until nothing changes"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// A threshold the issue sets: `value op threshold` passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// ">=" or "<=".
    pub op: String,
    pub threshold: f64,
}

impl Gate {
    fn at_least(threshold: f64) -> Option<Gate> {
        Some(Gate { op: ">=".into(), threshold })
    }
    fn at_most(threshold: f64) -> Option<Gate> {
        Some(Gate { op: "<=".into(), threshold })
    }
    fn passes(&self, v: f64) -> bool {
        if self.op == ">=" {
            v >= self.threshold
        } else {
            v <= self.threshold
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Stable identifier (snake case), unique within a case.
    pub name: String,
    pub description: String,
    /// None where undefined (e.g. a Dice with nothing on either side).
    pub value: Option<f64>,
    /// "dice", "fraction", "voxels" or "mL".
    pub unit: String,
    /// Which way is better; None: only reported.
    pub better: Option<Better>,
    pub gate: Option<Gate>,
    /// Whether the gate is met; None without a gate or a value.
    pub passed: Option<bool>,
}

fn figure(
    name: &str,
    description: &str,
    value: Option<f64>,
    unit: &str,
    better: Option<Better>,
    gate: Option<Gate>,
) -> Figure {
    let passed = gate.as_ref().and_then(|g| value.map(|v| g.passes(v)));
    Figure { name: name.into(), description: description.into(), value, unit: unit.into(), better, gate, passed }
}

/// How the voxels of one reference structure were labelled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfusionRow {
    pub structure: String,
    /// The reference label ids that make the structure (empty for background and derived masks).
    pub reference_ids: Vec<u32>,
    pub voxels: u64,
    /// Voxels that got label 0 background, 1 artery, 2 vein, 3 aorta.
    pub labelled: [u64; 4],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantScore {
    /// "network", "refined" or "refined_unbounded" (see [`VARIANTS`]).
    pub variant: String,
    pub description: String,
    /// Voxels per label 0..3 on the input grid.
    pub label_voxels: Vec<u64>,
    /// Volume per label 0..3 [mL].
    pub label_volumes_ml: Vec<f64>,
    pub figures: Vec<Figure>,
    pub confusion: Vec<ConfusionRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealCaseScore {
    /// Stable identifier: chest_cta, abdomen_plain, abdomen_contrast, thorax_plain.
    pub id: String,
    pub name: String,
    /// Input, relative to the shared data folder.
    pub input: String,
    pub reference: String,
    /// Why the case could not be scored (missing or unreadable file, failed segmentation);
    /// then `variants` is empty.
    pub error: Option<String>,
    pub dims: Option<[usize; 3]>,
    pub spacing_mm: Option<[f64; 3]>,
    pub detected_contrast: Option<bool>,
    pub vessel_median_hu: Option<f32>,
    /// Reading, segmenting and scoring the case.
    pub seconds: f64,
    pub variants: Vec<VariantScore>,
}

/// One structure of a reference: name, label ids, voxel mask on the CT grid.
struct Structure {
    name: String,
    ids: Vec<u32>,
    mask: Vec<bool>,
}

/// The figures of one label map, given the reference structures.
type FigureFn = Box<dyn Fn(&Volume<u8>, &[Structure]) -> Vec<Figure>>;

/// What a case compares the labels with; computes the figures of one label map.
struct Reference {
    /// Disjoint structures; the voxels in none of them form the "background" row (when
    /// `background` names it).
    structures: Vec<Structure>,
    background: Option<String>,
    figures: FigureFn,
}

impl Reference {
    fn confusion(&self, labels: &[u8]) -> Vec<ConfusionRow> {
        let mut rows: Vec<ConfusionRow> = self
            .structures
            .iter()
            .map(|s| ConfusionRow {
                structure: s.name.clone(),
                reference_ids: s.ids.clone(),
                voxels: 0,
                labelled: [0; 4],
            })
            .collect();
        let mut background = ConfusionRow {
            structure: self.background.clone().unwrap_or_default(),
            reference_ids: Vec::new(),
            voxels: 0,
            labelled: [0; 4],
        };
        for (v, l) in labels.iter().enumerate() {
            let l = (*l as usize).min(3);
            let row = self.structures.iter().position(|s| s.mask[v]).map(|i| &mut rows[i]).unwrap_or(&mut background);
            row.voxels += 1;
            row.labelled[l] += 1;
        }
        if self.background.is_some() {
            rows.push(background);
        }
        rows
    }
}

fn union(structures: &[Structure], names: &[&str]) -> Vec<bool> {
    let n = structures.first().map_or(0, |s| s.mask.len());
    let picked: Vec<&Structure> = structures.iter().filter(|s| names.contains(&s.name.as_str())).collect();
    (0..n).map(|v| picked.iter().any(|s| s.mask[v])).collect()
}

/// The patient: the largest 6-connected component of voxels above `hu`, with the holes of each
/// slice (the grid's third axis, axial for axial series) filled. The CT table, which does not
/// touch the patient, and air in the lungs and bowel are told apart this way.
pub fn body_mask(ct: &Volume<f32>, hu: f32) -> Vec<bool> {
    let [nx, ny, nz] = ct.geometry.dims;
    let n = nx * ny * nz;
    let above: Vec<bool> = ct.data.iter().map(|v| *v > hu).collect();
    // Largest component: sizes first (flood each once), then flood the largest again into the mask.
    let mut seen = vec![false; n];
    let mut queue = VecDeque::new();
    let neighbours = |v: usize, out: &mut [usize; 6]| -> usize {
        let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
        let mut c = 0;
        let mut push = |w: usize| {
            out[c] = w;
            c += 1;
        };
        if i > 0 {
            push(v - 1);
        }
        if i + 1 < nx {
            push(v + 1);
        }
        if j > 0 {
            push(v - nx);
        }
        if j + 1 < ny {
            push(v + nx);
        }
        if k > 0 {
            push(v - nx * ny);
        }
        if k + 1 < nz {
            push(v + nx * ny);
        }
        c
    };
    let mut flood = |seed: usize, seen: &mut [bool], mark: &mut dyn FnMut(usize)| -> usize {
        let mut size = 0;
        let mut nb = [0usize; 6];
        seen[seed] = true;
        queue.push_back(seed);
        while let Some(v) = queue.pop_front() {
            size += 1;
            mark(v);
            let count = neighbours(v, &mut nb);
            for &w in &nb[..count] {
                if above[w] && !seen[w] {
                    seen[w] = true;
                    queue.push_back(w);
                }
            }
        }
        size
    };
    let mut best = (0, None);
    for v in 0..n {
        if above[v] && !seen[v] {
            let size = flood(v, &mut seen, &mut |_| {});
            if size > best.0 {
                best = (size, Some(v));
            }
        }
    }
    let mut body = vec![false; n];
    let Some(seed) = best.1 else { return body };
    seen.iter_mut().for_each(|s| *s = false);
    flood(seed, &mut seen, &mut |v| body[v] = true);
    // Holes per slice: what the slice's border cannot reach through non-body pixels is inside.
    let mut outside = vec![false; nx * ny];
    let mut stack = Vec::new();
    for k in 0..nz {
        let slice = &mut body[k * nx * ny..(k + 1) * nx * ny];
        outside.iter_mut().for_each(|o| *o = false);
        for i in 0..nx {
            stack.extend([i, (ny - 1) * nx + i]);
        }
        for j in 0..ny {
            stack.extend([j * nx, j * nx + nx - 1]);
        }
        while let Some(p) = stack.pop() {
            if slice[p] || outside[p] {
                continue;
            }
            outside[p] = true;
            let (i, j) = (p % nx, p / nx);
            if i > 0 {
                stack.push(p - 1);
            }
            if i + 1 < nx {
                stack.push(p + 1);
            }
            if j > 0 {
                stack.push(p - nx);
            }
            if j + 1 < ny {
                stack.push(p + nx);
            }
        }
        for (b, o) in slice.iter_mut().zip(&outside) {
            *b = !*o;
        }
    }
    body
}

/// Why a real case could not be scored (written into the report's `error` as text).
#[derive(Debug, thiserror::Error)]
pub enum RealCaseError {
    #[error("{0} not found")]
    NotFound(PathBuf),
    #[error("{0}")]
    Load(String),
    #[error("{path}: {reason}")]
    Labels { path: PathBuf, reason: String },
    #[error("{0}: not a label image (values outside the integers 0..255)")]
    NotLabels(PathBuf),
    #[error("{0} holds no voxel on the CT grid")]
    EmptyLabels(&'static str),
    #[error("the reference holds no {name} (ids {ids:?}){where_}")]
    EmptyStructure { name: String, ids: Vec<u32>, where_: &'static str },
    #[error("no voxel above -500 HU: no body found")]
    NoBody,
    #[error("segmentation failed: {0}")]
    Segmentation(String),
    #[error("the pipeline returned no {0} labels")]
    NoLabelsReturned(&'static str),
}

/// A label image (NIfTI) as integer ids on the CT's grid: through the two affines, nearest
/// neighbour; voxels of the CT outside the label image get 0.
fn labels_on_ct_grid(path: &Path, ct: &Volume<f32>) -> Result<Vec<u32>, RealCaseError> {
    let img =
        nifti::read(path).map_err(|e| RealCaseError::Labels { path: path.to_path_buf(), reason: e.to_string() })?;
    if img.data.iter().any(|v| !(0.0..=255.0).contains(v) || v.fract() != 0.0) {
        return Err(RealCaseError::NotLabels(path.to_path_buf()));
    }
    let src = Volume { geometry: img.geometry, data: img.data.iter().map(|v| *v as u8).collect() };
    let mapped = if src.geometry == ct.geometry { src } else { resample::nearest_labels(&src, &ct.geometry) };
    Ok(mapped.data.into_iter().map(u32::from).collect())
}

fn structure(name: &str, ids: &[u32], labels: &[u32]) -> Structure {
    Structure { name: name.into(), ids: ids.to_vec(), mask: labels.iter().map(|l| ids.contains(l)).collect() }
}

/// Runs every real case found under `shared`; a case that cannot be read or segmented is
/// returned with its `error`, never aborts the others.
pub fn evaluate_real(segmenter: &mut VesselSegmenter, shared: &Path) -> Vec<RealCaseScore> {
    let cases: [(&str, &str, &str, &str, ReferenceLoader); 4] = [
        (
            "chest_cta",
            "chest CTA (real, contrast)",
            "chest_cta_pulmonary_artery/ct_cropped.nii.gz",
            "TotalSegmentator pulmonary artery (pulmonary_artery.nii.gz) and heart (heart.nii.gz, other grid)",
            chest_cta_reference,
        ),
        (
            "abdomen_plain",
            "abdomen CT, full volume (real, plain)",
            "abdomen_ct_vessels/example_ct.nii.gz",
            "TotalSegmentator v2 example_seg_fast_force_split.nii.gz: 52 aorta, 63 IVC, 64 portal/splenic vein, \
             65/66 iliac artery, 67/68 iliac vein",
            abdomen_plain_reference,
        ),
        (
            "abdomen_contrast",
            "abdomen CT, 20-slice JPEG 2000 DICOM series (real, contrast)",
            "abdomen_ct_vessels/example_ct_dicom_j2k",
            "TotalSegmentator v2 example_seg_dicom.nii.gz: 52 aorta, 63 IVC, 64 portal/splenic vein",
            abdomen_contrast_reference,
        ),
        (
            "thorax_plain",
            "thorax CT DICOM series (real, plain; no labels)",
            "thorax_ct_dicom",
            "none: body mask (largest connected component above -500 HU, holes filled per slice)",
            thorax_reference,
        ),
    ];
    cases
        .into_iter()
        .map(|(id, name, input, reference, loader)| {
            let started = Instant::now();
            let mut score = RealCaseScore {
                id: id.into(),
                name: name.into(),
                input: input.into(),
                reference: reference.into(),
                error: None,
                dims: None,
                spacing_mm: None,
                detected_contrast: None,
                vessel_median_hu: None,
                seconds: 0.0,
                variants: Vec::new(),
            };
            if let Err(e) = run_case(segmenter, shared, &mut score, loader) {
                tracing::error!(case = id, "{e}");
                score.error = Some(e.to_string());
            }
            score.seconds = started.elapsed().as_secs_f64();
            score
        })
        .collect()
}

type ReferenceLoader = fn(&Path, &Volume<f32>) -> Result<Reference, RealCaseError>;

fn run_case(
    segmenter: &mut VesselSegmenter,
    shared: &Path,
    score: &mut RealCaseScore,
    loader: ReferenceLoader,
) -> Result<(), RealCaseError> {
    let path = shared.join(&score.input);
    if !path.exists() {
        return Err(RealCaseError::NotFound(path));
    }
    let input = if path.is_dir() { SegmentationInput::DicomDirectory(path) } else { SegmentationInput::Nifti(path) };
    let options = SegmentationOptions {
        keep_unrefined: true,
        keep_unbounded_refinement: true,
        write_surface: false,
        ..SegmentationOptions::new("")
    };
    let (ct, _, _) = load_input(&input, options.max_input_voxels, &LoadOptions::default())
        .map_err(|e| RealCaseError::Load(e.to_string()))?;
    score.dims = Some(ct.geometry.dims);
    score.spacing_mm = Some(ct.geometry.spacing_mm);
    let reference = loader(shared, &ct)?;
    let result =
        segmenter.segment(&ct, &options, &mut |_, _, _| {}).map_err(|e| RealCaseError::Segmentation(e.to_string()))?;
    score.detected_contrast = Some(result.contrast_enhanced);
    score.vessel_median_hu = result.vessel_median_hu;
    let maps = [result.unrefined_labels, Some(result.labels), result.unbounded_refined_labels];
    for ((variant, description), labels) in VARIANTS.iter().zip(maps) {
        let labels = labels.ok_or(RealCaseError::NoLabelsReturned(variant))?;
        let (counts, volumes) = class_volumes(&labels);
        score.variants.push(VariantScore {
            variant: variant.to_string(),
            description: description.to_string(),
            label_voxels: counts,
            label_volumes_ml: volumes,
            figures: (reference.figures)(&labels, &reference.structures),
            confusion: reference.confusion(&labels.data),
        });
    }
    Ok(())
}

fn chest_cta_reference(shared: &Path, ct: &Volume<f32>) -> Result<Reference, RealCaseError> {
    let dir = shared.join("chest_cta_pulmonary_artery");
    let pa = labels_on_ct_grid(&dir.join("pulmonary_artery.nii.gz"), ct)?;
    // heart.nii.gz lies on another grid (233x167x191): mapped through both affines.
    let heart = labels_on_ct_grid(&dir.join("heart.nii.gz"), ct)?;
    let pa_mask: Vec<bool> = pa.iter().map(|v| *v > 0).collect();
    if !pa_mask.contains(&true) {
        return Err(RealCaseError::EmptyLabels("pulmonary_artery.nii.gz"));
    }
    let heart_mask: Vec<bool> = heart.iter().zip(&pa_mask).map(|(h, p)| *h > 0 && !*p).collect();
    if !heart_mask.contains(&true) {
        return Err(RealCaseError::EmptyLabels("heart.nii.gz"));
    }
    Ok(Reference {
        structures: vec![
            Structure { name: "pulmonary artery".into(), ids: vec![1], mask: pa_mask },
            Structure { name: "heart (not pulmonary artery)".into(), ids: vec![1], mask: heart_mask },
        ],
        background: Some("background".into()),
        figures: Box::new(|labels, s| {
            let l = &labels.data;
            vec![
                figure(
                    "pulmonary_artery_dice",
                    "Dice of label artery vs the pulmonary artery",
                    dice_against_mask(l, 1, &s[0].mask),
                    "dice",
                    Some(Better::Higher),
                    Gate::at_least(0.70),
                ),
                figure(
                    "pulmonary_artery_labelled_artery_fraction",
                    "fraction of pulmonary-artery voxels labelled artery",
                    fraction_labelled(l, &[1], &s[0].mask),
                    "fraction",
                    Some(Better::Higher),
                    None,
                ),
                figure(
                    "heart_labelled_vessel_fraction",
                    "fraction of heart voxels (not pulmonary artery) labelled any vessel class",
                    fraction_labelled(l, &[1, 2, 3], &s[1].mask),
                    "fraction",
                    Some(Better::Lower),
                    Gate::at_most(0.05),
                ),
            ]
        }),
    })
}

fn abdomen_plain_reference(shared: &Path, ct: &Volume<f32>) -> Result<Reference, RealCaseError> {
    let seg = labels_on_ct_grid(&shared.join("abdomen_ct_vessels/example_seg_fast_force_split.nii.gz"), ct)?;
    let structures = vec![
        structure("aorta", &[52], &seg),
        structure("inferior vena cava", &[63], &seg),
        structure("portal and splenic vein", &[64], &seg),
        structure("iliac artery left", &[65], &seg),
        structure("iliac artery right", &[66], &seg),
        structure("iliac vein left", &[67], &seg),
        structure("iliac vein right", &[68], &seg),
    ];
    if let Some(empty) = structures.iter().find(|s| !s.mask.contains(&true)) {
        return Err(RealCaseError::EmptyStructure { name: empty.name.clone(), ids: empty.ids.clone(), where_: "" });
    }
    Ok(Reference {
        structures,
        background: Some("background (all other ids and 0)".into()),
        figures: Box::new(|labels, s| {
            let l = &labels.data;
            let iliac_artery = union(s, &["iliac artery left", "iliac artery right"]);
            let iliac_vein = union(s, &["iliac vein left", "iliac vein right"]);
            let veins =
                union(s, &["inferior vena cava", "portal and splenic vein", "iliac vein left", "iliac vein right"]);
            vec![
                figure(
                    "aorta_dice",
                    "Dice of label aorta vs id 52",
                    dice_against_mask(l, 3, &s[0].mask),
                    "dice",
                    Some(Better::Higher),
                    Gate::at_least(0.70),
                ),
                figure(
                    "iliac_artery_labelled_artery_fraction",
                    "fraction of iliac-artery voxels (65, 66) labelled artery",
                    fraction_labelled(l, &[1], &iliac_artery),
                    "fraction",
                    Some(Better::Higher),
                    Gate::at_least(0.5),
                ),
                figure(
                    "iliac_vein_labelled_vein_fraction",
                    "fraction of iliac-vein voxels (67, 68) labelled vein",
                    fraction_labelled(l, &[2], &iliac_vein),
                    "fraction",
                    Some(Better::Higher),
                    Gate::at_least(0.5),
                ),
                figure(
                    "vein_dice",
                    "Dice of label vein vs ids 63, 64, 67, 68",
                    dice_against_mask(l, 2, &veins),
                    "dice",
                    Some(Better::Higher),
                    None,
                ),
                figure(
                    "artery_dice",
                    "Dice of label artery vs ids 65, 66",
                    dice_against_mask(l, 1, &iliac_artery),
                    "dice",
                    Some(Better::Higher),
                    None,
                ),
            ]
        }),
    })
}

fn abdomen_contrast_reference(shared: &Path, ct: &Volume<f32>) -> Result<Reference, RealCaseError> {
    // example_seg_dicom.nii.gz is LAS, the series LPS: mapped through both affines.
    let seg = labels_on_ct_grid(&shared.join("abdomen_ct_vessels/example_seg_dicom.nii.gz"), ct)?;
    let structures = vec![
        structure("aorta", &[52], &seg),
        structure("inferior vena cava", &[63], &seg),
        structure("portal and splenic vein", &[64], &seg),
    ];
    if let Some(empty) = structures.iter().find(|s| !s.mask.contains(&true)) {
        return Err(RealCaseError::EmptyStructure {
            name: empty.name.clone(),
            ids: empty.ids.clone(),
            where_: " on the series' grid",
        });
    }
    Ok(Reference {
        structures,
        background: Some("background (all other ids and 0)".into()),
        figures: Box::new(|labels, s| {
            let l = &labels.data;
            let veins = union(s, &["inferior vena cava", "portal and splenic vein"]);
            vec![
                figure(
                    "aorta_dice",
                    "Dice of label aorta vs id 52",
                    dice_against_mask(l, 3, &s[0].mask),
                    "dice",
                    Some(Better::Higher),
                    Gate::at_least(0.70),
                ),
                figure(
                    "ivc_portal_splenic_labelled_vein_fraction",
                    "fraction of IVC + portal/splenic vein voxels (63, 64) labelled vein",
                    fraction_labelled(l, &[2], &veins),
                    "fraction",
                    Some(Better::Higher),
                    Gate::at_least(0.5),
                ),
                figure(
                    "vein_dice",
                    "Dice of label vein vs ids 63, 64",
                    dice_against_mask(l, 2, &veins),
                    "dice",
                    Some(Better::Higher),
                    None,
                ),
            ]
        }),
    })
}

fn thorax_reference(_shared: &Path, ct: &Volume<f32>) -> Result<Reference, RealCaseError> {
    let body = body_mask(ct, BODY_HU);
    let voxel_ml = ct.geometry.spacing_mm.iter().product::<f64>() / 1000.0;
    let body_voxels = body.iter().filter(|b| **b).count();
    if body_voxels == 0 {
        return Err(RealCaseError::NoBody);
    }
    let outside: Vec<bool> = body.iter().map(|b| !b).collect();
    Ok(Reference {
        structures: vec![Structure { name: "body".into(), ids: Vec::new(), mask: body }],
        background: Some("outside the body".into()),
        figures: Box::new(move |labels, s| {
            let l = &labels.data;
            let vessel = l.iter().filter(|v| **v > 0).count();
            let out = l.iter().zip(&outside).filter(|(v, o)| **v > 0 && **o).count();
            let (_, volumes) = class_volumes(labels);
            let body_ml = s[0].mask.iter().filter(|b| **b).count() as f64 * voxel_ml;
            let mut figures = vec![
                figure(
                    "outside_body_vessel_voxels",
                    "vessel voxels (any class) outside the body",
                    Some(out as f64),
                    "voxels",
                    None,
                    Gate::at_most(0.0),
                ),
                figure(
                    "outside_body_vessel_ml",
                    "vessel volume outside the body",
                    Some(out as f64 * voxel_ml),
                    "mL",
                    None,
                    None,
                ),
                figure(
                    "outside_body_vessel_fraction",
                    "fraction of all vessel voxels that lie outside the body (0 when there are none)",
                    Some(if vessel == 0 { 0.0 } else { out as f64 / vessel as f64 }),
                    "fraction",
                    Some(Better::Lower),
                    None,
                ),
                figure("body_ml", "volume of the body mask", Some(body_ml), "mL", None, None),
            ];
            for c in 1..CLASS_NAMES.len() {
                let name = CLASS_NAMES[c];
                figures.push(figure(
                    &format!("{name}_ml"),
                    &format!("volume labelled {name}"),
                    Some(volumes[c]),
                    "mL",
                    None,
                    None,
                ));
            }
            figures
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle_nav_core::volume::Geometry;

    #[test]
    fn dice_and_fractions_match_hand_counts() {
        let labels = [0, 1, 1, 2, 3, 0];
        let reference = [false, true, false, true, true, true];
        // label 1: predicted {1, 2}, reference {1, 3, 4, 5}: 2 * 1 / 6
        assert_eq!(dice_against_mask(&labels, 1, &reference), Some(2.0 / 6.0));
        assert_eq!(dice_against_mask(&labels, 1, &[false; 6]), Some(0.0));
        assert_eq!(dice_against_mask(&[0; 6], 1, &[false; 6]), None);
        assert_eq!(fraction_labelled(&labels, &[1, 2, 3], &reference), Some(0.75));
        assert_eq!(fraction_labelled(&labels, &[2], &reference), Some(0.25));
        assert_eq!(fraction_labelled(&labels, &[2], &[false; 6]), None);
    }

    #[test]
    fn gates_pass_and_fail_on_their_side() {
        let f = figure("x", "", Some(0.7), "dice", Some(Better::Higher), Gate::at_least(0.70));
        assert_eq!(f.passed, Some(true));
        let f = figure("x", "", Some(0.69), "dice", Some(Better::Higher), Gate::at_least(0.70));
        assert_eq!(f.passed, Some(false));
        let f = figure("x", "", Some(0.06), "fraction", Some(Better::Lower), Gate::at_most(0.05));
        assert_eq!(f.passed, Some(false));
        assert_eq!(figure("x", "", None, "dice", None, Gate::at_most(0.05)).passed, None);
        assert_eq!(figure("x", "", Some(1.0), "mL", None, None).passed, None);
    }

    #[test]
    fn confusion_counts_every_voxel_once_with_background_last() {
        let reference = Reference {
            structures: vec![
                Structure { name: "a".into(), ids: vec![1], mask: vec![true, true, false, false, false] },
                Structure { name: "b".into(), ids: vec![2], mask: vec![false, false, true, false, false] },
            ],
            background: Some("bg".into()),
            figures: Box::new(|_, _| Vec::new()),
        };
        let rows = reference.confusion(&[1, 0, 2, 3, 0]);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].voxels, rows[0].labelled), (2, [1, 1, 0, 0]));
        assert_eq!((rows[1].voxels, rows[1].labelled), (1, [0, 0, 1, 0]));
        assert_eq!((rows[2].structure.as_str(), rows[2].voxels, rows[2].labelled), ("bg", 2, [1, 0, 0, 1]));
    }

    #[test]
    fn body_is_the_largest_component_with_slice_holes_filled_and_the_table_outside() {
        // 20x20x3: a ring (body with an air-filled hole, like the lungs) and a separate slab (the table).
        let g = Geometry::axial([20, 20, 3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        let mut ct = Volume::filled(g, -1000.0f32);
        for k in 0..3 {
            for j in 2..14 {
                for i in 2..18 {
                    let ring = !(5..11).contains(&j) || !(5..15).contains(&i);
                    if ring {
                        let o = ct.geometry.offset(i, j, k);
                        ct.data[o] = 40.0;
                    }
                }
            }
            for i in 0..20 {
                let o = ct.geometry.offset(i, 17, k);
                ct.data[o] = 200.0; // table, two voxels of air away
            }
        }
        let body = body_mask(&ct, BODY_HU);
        let at = |i, j, k| body[ct.geometry.offset(i, j, k)];
        assert!(at(2, 2, 0) && at(17, 13, 2), "ring");
        assert!(at(8, 8, 1), "the hole inside the ring is body");
        assert!(!at(5, 17, 1), "the table is not body");
        assert!(!at(0, 0, 0) && !at(19, 15, 1), "air outside");
        assert_eq!(body.iter().filter(|b| **b).count(), 3 * 16 * 12);
        assert!(body_mask(&Volume::filled(ct.geometry.clone(), -1000.0), BODY_HU).iter().all(|b| !b));
    }

    /// Label 1 (artery) wherever the normalised HU is above the threshold (closed form, no model file).
    struct BrightIsArtery(f32);
    impl crate::sliding_window::PatchPredictor for BrightIsArtery {
        fn classes(&self) -> usize {
            4
        }
        fn predict(
            &mut self,
            p: &[f32],
            count: usize,
            patch: [usize; 3],
        ) -> Result<Vec<f32>, crate::sliding_window::PredictError> {
            let n: usize = patch.iter().product();
            let mut out = vec![0.0; count * 4 * n];
            for b in 0..count {
                for v in 0..n {
                    let c = if p[b * n + v] > self.0 { 1 } else { 0 };
                    out[(b * 4 + c) * n + v] = 1.0;
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn real_cases_are_scored_through_the_pipeline_and_missing_ones_reported_per_case() {
        use crate::model_info::{example_json, ModelInfo};
        let shared = std::env::temp_dir().join(format!("nn_real_gates_{}", std::process::id()));
        let dir = shared.join("chest_cta_pulmonary_artery");
        std::fs::create_dir_all(&dir).unwrap();
        // CT: 40 HU tissue with two bright bars; the first is the pulmonary artery.
        let g = Geometry::axial([40, 40, 40], [2.0; 3], [0.0; 3]);
        let mut hu = vec![40.0f32; g.voxel_count()];
        let mut pa = vec![0.0f32; g.voxel_count()];
        for k in 10..30 {
            for j in 8..16 {
                for i in 8..16 {
                    hu[g.offset(i, j, k)] = 300.0;
                    pa[g.offset(i, j, k)] = 1.0;
                    hu[g.offset(i + 16, j + 16, k)] = 300.0;
                }
            }
        }
        needle_nav_imaging::nifti::write(&dir.join("ct_cropped.nii.gz"), &g, &hu, "ct").unwrap();
        needle_nav_imaging::nifti::write(&dir.join("pulmonary_artery.nii.gz"), &g, &pa, "pa").unwrap();
        // The heart on another grid, shifted by (-10, -10, -5) voxels: it covers CT voxels
        // (20..40, 20..40, 10..30), which hold the second bar (8 x 8 x 20 of 20 x 20 x 20).
        let hg = Geometry::axial([60, 60, 50], [2.0; 3], [-20.0, -20.0, -10.0]);
        let mut heart = vec![0.0f32; hg.voxel_count()];
        for k in 15..35 {
            for j in 30..50 {
                for i in 30..50 {
                    heart[hg.offset(i, j, k)] = 1.0;
                }
            }
        }
        needle_nav_imaging::nifti::write(&dir.join("heart.nii.gz"), &hg, &heart, "heart").unwrap();
        let info = ModelInfo::from_json(&example_json()).unwrap();
        let mut segmenter = VesselSegmenter::with_predictor(Box::new(BrightIsArtery(1.0)), info, "closed-form");
        let cases = evaluate_real(&mut segmenter, &shared);
        let _ = std::fs::remove_dir_all(&shared);
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["chest_cta", "abdomen_plain", "abdomen_contrast", "thorax_plain"]);
        let chest = &cases[0];
        assert_eq!(chest.error, None);
        assert_eq!(chest.variants.iter().map(|v| v.variant.as_str()).collect::<Vec<_>>(), VARIANTS.map(|v| v.0));
        let network = &chest.variants[0];
        let value = |name: &str| network.figures.iter().find(|f| f.name == name).unwrap().value.unwrap();
        // Both bars are labelled artery, only the first is pulmonary artery: 2 * 1280 / (2560 + 1280).
        assert!((value("pulmonary_artery_dice") - 2.0 / 3.0).abs() < 1e-12, "{network:?}");
        assert_eq!(value("pulmonary_artery_labelled_artery_fraction"), 1.0);
        assert!((value("heart_labelled_vessel_fraction") - 0.16).abs() < 1e-12, "{network:?}");
        let heart_row = &network.confusion[1];
        assert_eq!((heart_row.voxels, heart_row.labelled), (8000, [6720, 1280, 0, 0]));
        assert_eq!(network.confusion[0].labelled, [0, 1280, 0, 0]);
        assert_eq!(network.confusion.iter().map(|r| r.voxels).sum::<u64>(), 64000);
        for missing in &cases[1..] {
            let e = missing.error.as_deref().unwrap_or_default();
            assert!(e.contains("not found") && e.contains(&missing.input), "{e}");
            assert!(missing.variants.is_empty());
        }
    }

    #[test]
    fn the_unbounded_variant_equals_a_run_refined_until_stable_from_the_same_inference() {
        use crate::model_info::{example_json, ModelInfo};
        // A 400 HU core the network finds (normalised > 1.6) inside an 8-voxel shell of 200 HU that
        // only the refinement takes (contrast artery window 150..700): 3 passes stop inside it.
        let g = Geometry::axial([40, 40, 40], [2.0; 3], [0.0; 3]);
        let mut ct = Volume::filled(g.clone(), 40.0f32);
        for k in 0..40 {
            for j in 2..38 {
                for i in 2..38 {
                    let core = (10..30).contains(&i) && (10..30).contains(&j);
                    ct.data[g.offset(i, j, k)] = if core { 400.0 } else { 200.0 };
                }
            }
        }
        let info = ModelInfo::from_json(&example_json()).unwrap();
        let mut segmenter = VesselSegmenter::with_predictor(Box::new(BrightIsArtery(1.6)), info, "closed-form");
        let options = SegmentationOptions {
            keep_unrefined: true,
            keep_unbounded_refinement: true,
            ..SegmentationOptions::new("")
        };
        let r = segmenter.segment(&ct, &options, &mut |_, _, _| {}).unwrap();
        let until_stable = SegmentationOptions { refinement_max_passes: usize::MAX, ..SegmentationOptions::new("") };
        let separate = segmenter.segment(&ct, &until_stable, &mut |_, _, _| {}).unwrap();
        let count = |v: &Volume<u8>| v.data.iter().filter(|l| **l == 1).count();
        let (network, refined, unbounded) =
            (r.unrefined_labels.unwrap(), r.labels, r.unbounded_refined_labels.unwrap());
        assert_eq!(unbounded, separate.labels);
        assert!(count(&network) < count(&refined) && count(&refined) < count(&unbounded));
        assert_eq!(count(&unbounded), 36 * 36 * 40);
    }
}
