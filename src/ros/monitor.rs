//! A listener that records what the stack publishes and reports it in human units
//! (`needle_nav_stack --summary`).

use crate::interfaces::{CLASSIFICATION, GROUND_TRUTH, MARKERS, PLAN, REGISTRATION, TARGET};
use crate::ros::convert::time_to_ns;
use crate::ros::msg;
use crate::ros::nodes::{lock, subscription};
use crate::ros::runtime::{NodeContext, NodeError};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    samples: u64,
    first_sample_ns: Option<i64>,
    last_sample_ns: Option<i64>,
    markers_per_sample: usize,
    /// The newest tracker sample (for the report's markers).
    last_sample: Option<msg::TrackedMarkerArray>,
    classification: Option<msg::MarkerClassification>,
    registration: Option<msg::LesionRegistration>,
    plan: Option<msg::NeedlePlan>,
    targets_valid: u64,
    targets_invalid: BTreeMap<String, u64>,
    /// Receive time minus tracker-sample stamp of each target [ns].
    target_latency_ns: Vec<i64>,
    /// Simulator truth (lesion in the tracker frame) by sample stamp, recent only.
    truth: std::collections::HashMap<i64, [f64; 3]>,
    truth_order: std::collections::VecDeque<i64>,
    /// Distance of each valid target from the true lesion at its sample's time [m].
    target_errors: Vec<f64>,
    /// Same for the registered (uncorrected) lesion.
    uncorrected_errors: Vec<f64>,
}

pub struct Monitor {
    seen: Arc<Mutex<Seen>>,
}

fn percentile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

impl Monitor {
    pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<Monitor, NodeError> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
        let mut classes = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
        let mut regs = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
        let mut targets = subscription::<msg::NeedleTarget>(node, TARGET)?;
        let mut plans = subscription::<msg::NeedlePlan>(node, PLAN)?;
        let mut truths = subscription::<msg::PhantomGroundTruth>(node, GROUND_TRUTH)?;
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = truths.next().await {
                let mut g = lock(&s);
                let t = time_to_ns(&m.header.stamp);
                g.truth.insert(t, [m.lesion_position.x, m.lesion_position.y, m.lesion_position.z]);
                g.truth_order.push_back(t);
                while g.truth_order.len() > 5000 {
                    if let Some(old) = g.truth_order.pop_front() {
                        g.truth.remove(&old);
                    }
                }
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = samples.next().await {
                let mut g = lock(&s);
                let t = time_to_ns(&m.header.stamp);
                g.samples += 1;
                g.first_sample_ns.get_or_insert(t);
                g.last_sample_ns = Some(t);
                g.markers_per_sample = m.markers.len();
                g.last_sample = Some(m);
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = classes.next().await {
                lock(&s).classification = Some(m);
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = regs.next().await {
                lock(&s).registration = Some(m);
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = plans.next().await {
                lock(&s).plan = Some(m);
            }
        });
        let s = seen.clone();
        let cx2 = cx.clone();
        cx.spawn(async move {
            while let Some(m) = targets.next().await {
                let now = cx2.now_ns();
                let mut g = lock(&s);
                if m.valid {
                    g.targets_valid += 1;
                    if let Some(t) = g.truth.get(&time_to_ns(&m.source_stamp)).copied() {
                        let p = &m.target_point;
                        g.target_errors
                            .push(((p.x - t[0]).powi(2) + (p.y - t[1]).powi(2) + (p.z - t[2]).powi(2)).sqrt());
                        if let Some(r) = &g.registration {
                            let l = &r.lesion_position;
                            let e = ((l.x - t[0]).powi(2) + (l.y - t[1]).powi(2) + (l.z - t[2]).powi(2)).sqrt();
                            g.uncorrected_errors.push(e);
                        }
                    }
                } else {
                    *g.targets_invalid.entry(reason_kind(&m.reason)).or_default() += 1;
                }
                let source = time_to_ns(&m.source_stamp);
                if source > 0 {
                    g.target_latency_ns.push(now - source);
                }
            }
        });
        Ok(Monitor { seen })
    }

    /// Human-readable summary (millimetres, milliseconds).
    pub fn report(&self) -> String {
        let g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from("\n=== needle_nav stack summary ===\n");
        let rate = match (g.first_sample_ns, g.last_sample_ns) {
            (Some(a), Some(b)) if b > a && g.samples > 1 => (g.samples - 1) as f64 / ((b - a) as f64 * 1e-9),
            _ => f64::NAN,
        };
        let _ =
            writeln!(out, "tracker        : {} samples of {} markers, {:.1} Hz", g.samples, g.markers_per_sample, rate);
        match &g.classification {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "classification : registration markers {:?}, correction markers {:?} ({} >= {:.1} mm)",
                    c.registration_marker_ids,
                    c.correction_marker_ids,
                    c.feature,
                    c.threshold * 1e3
                );
                for m in &c.markers {
                    let _ = writeln!(
                        out,
                        "                 marker {:>2}: feature {:6.2} mm",
                        m.id,
                        m.displacement_feature * 1e3
                    );
                }
            }
            None => {
                let _ = writeln!(out, "classification : none yet (window not filled)");
            }
        }
        match &g.registration {
            Some(r) if crate::ros::convert::registration_usable(r) => {
                let _ = writeln!(
                    out,
                    "registration   : {} (markers {:?}), FRE {:.2} mm, predicted TRE lesion {:.2} mm, entry {:.2} mm",
                    r.status_message,
                    r.marker_ids_used,
                    r.fre_rms * 1e3,
                    r.predicted_tre_lesion * 1e3,
                    r.predicted_tre_entry * 1e3
                );
            }
            Some(r) => {
                let _ = writeln!(out, "registration   : status {} - {}", r.status, r.status_message);
            }
            None => {
                let _ = writeln!(out, "registration   : nothing received");
            }
        }
        match &g.plan {
            Some(p) => {
                let _ = writeln!(out, "plan           : status {} - {}", p.status, p.status_message);
                if p.path_length.is_finite() {
                    let _ = writeln!(
                        out,
                        "                 {}: entry {:.1?} mm, length {:.1} mm, minimum clearance {:.1} mm (margin {:.1} mm)",
                        if p.status == msg::NeedlePlan::STATUS_OK as u8 { "planned path" } else { "best path (refused)" },
                        [p.entry_point.x * 1e3, p.entry_point.y * 1e3, p.entry_point.z * 1e3],
                        p.path_length * 1e3,
                        p.minimum_clearance * 1e3,
                        p.safety_margin * 1e3
                    );
                }
                if !p.vessel_classes.is_empty() {
                    let volumes: Vec<String> = p
                        .vessel_classes
                        .iter()
                        .zip(&p.vessel_volumes)
                        .filter(|(c, _)| c.as_str() != "background")
                        .map(|(c, v)| format!("{c} {:.1} mL", v * 1e6))
                        .collect();
                    let _ = writeln!(out, "vessels        : {}", volumes.join(", "));
                }
            }
            None => {
                let _ = writeln!(out, "plan           : nothing received");
            }
        }
        let invalid: u64 = g.targets_invalid.values().sum();
        let _ = writeln!(out, "targets        : {} valid, {} invalid", g.targets_valid, invalid);
        for (reason, n) in &g.targets_invalid {
            let _ = writeln!(out, "                 {n:>6} x {reason}");
        }
        // RMS, p95, max [mm] and count.
        let stats = |v: &[f64]| -> String {
            if v.is_empty() {
                return format!("{:>8} {:>8} {:>8} {:>6}", "-", "-", "-", 0);
            }
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len() as f64).sqrt();
            let p95 = s[((s.len() - 1) as f64 * 0.95) as usize];
            let max = s[s.len() - 1];
            format!("{:>8.2} {:>8.2} {:>8.2} {:>6}", rms * 1e3, p95 * 1e3, max * 1e3, s.len())
        };
        if !g.target_errors.is_empty() {
            let _ = writeln!(out, "target error   : vs the true lesion   RMS mm   p95 mm   max mm      n");
            let _ = writeln!(out, "                 corrected target  {}", stats(&g.target_errors));
            let _ = writeln!(out, "                 uncorrected       {}", stats(&g.uncorrected_errors));
        }
        let mut lat = g.target_latency_ns.clone();
        lat.sort_unstable();
        let _ = writeln!(
            out,
            "latency        : tracker sample -> target received, p50 {:.2} ms, p99 {:.2} ms (n = {})",
            percentile(&lat, 0.5) * 1e-6,
            percentile(&lat, 0.99) * 1e-6,
            lat.len()
        );
        out
    }
}

impl Monitor {
    /// Writes `summary.txt` (the printed summary), `plan.png` (CT planes with vessels, lesion,
    /// markers and path; when a plan with its CT was received) and `report.md`. Returns the files.
    pub fn write_report(&self, dir: &std::path::Path, summary: &str) -> Result<Vec<String>, String> {
        use crate::report::{render, write_png, MarkerRole, Overlay};
        use nalgebra::Point3;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut files = Vec::new();
        let summary_path = dir.join("summary.txt");
        std::fs::write(&summary_path, summary).map_err(|e| format!("{}: {e}", summary_path.display()))?;
        files.push(summary_path.display().to_string());
        let (plan, registration, classification, markers) = {
            let g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let markers: Vec<(u32, Point3<f64>)> = g
                .last_sample
                .as_ref()
                .map(|m| crate::ros::convert::sample_from_msg(m).usable().map(|o| (o.id, o.position)).collect())
                .unwrap_or_default();
            (g.plan.clone(), g.registration.clone(), g.classification.clone(), markers)
        };
        let mut md = String::from("# needle_nav run report\n\n");
        let picture = match &plan {
            Some(p) if !p.ct_path.is_empty() && !p.label_map_path.is_empty() => {
                let (ct, labels) = crate::planning::load_ct_and_labels(
                    std::path::Path::new(&p.ct_path),
                    std::path::Path::new(&p.label_map_path),
                    1 << 31,
                )?;
                // Tracked markers into the CT with the registration (tracker -> CT is its inverse).
                let usable = registration.as_ref().filter(|r| crate::ros::convert::registration_usable(r));
                let markers_mm = match usable {
                    Some(r) => {
                        let to_ct = crate::ros::convert::transform_from_msg(&r.image_to_tracker).inverse();
                        markers
                            .iter()
                            .map(|(id, p)| {
                                let c = classification.as_ref();
                                let role = if c.is_some_and(|c| c.registration_marker_ids.contains(id)) {
                                    MarkerRole::Registration
                                } else if c.is_some_and(|c| c.correction_marker_ids.contains(id)) {
                                    MarkerRole::Correction
                                } else {
                                    MarkerRole::Unclassified
                                };
                                (Point3::from((to_ct * p).coords * 1000.0), role)
                            })
                            .collect()
                    }
                    None => Vec::new(),
                };
                let overlay = Overlay {
                    target_mm: Point3::new(p.target_point.x, p.target_point.y, p.target_point.z) * 1000.0,
                    entry_mm: p
                        .path_length
                        .is_finite()
                        .then(|| Point3::new(p.entry_point.x, p.entry_point.y, p.entry_point.z) * 1000.0),
                    lesion_radius_mm: p.lesion_radius * 1000.0,
                    path_safe: p.status == msg::NeedlePlan::STATUS_OK as u8,
                    markers_mm,
                };
                let png_path = dir.join("plan.png");
                write_png(&png_path, &render(&ct, &labels, &overlay))?;
                files.push(png_path.display().to_string());
                true
            }
            _ => false,
        };
        md += "## Summary\n\n```\n";
        md += summary.trim();
        md += "\n```\n\n";
        if picture {
            md += "## Plan\n\n![CT with vessels, lesion, markers and the planned path](plan.png)\n\n";
            md += "Left: axial CT slice through the target (patient's right on the left, anterior up); path and \
                   markers are projected onto it. Right: the oblique plane containing the whole path. Vessel \
                   labels: artery red, vein blue, aorta orange. Lesion: magenta circle; target: red dot; entry: \
                   green dot; path: green when it keeps the safety margin, red when refused. Tracked markers \
                   mapped into the CT by the registration: registration markers blue, correction markers \
                   orange rings.\n";
        } else {
            md += "No picture: no plan with its CT and vessel labels was received.\n";
        }
        let md_path = dir.join("report.md");
        std::fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
        files.push(md_path.display().to_string());
        Ok(files)
    }
}

/// Groups reasons that differ only in numbers ("stale ... 0.031 s" and "stale ... 0.032 s").
fn reason_kind(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_string()
}
