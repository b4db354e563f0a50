//! A listener that records what the stack publishes and reports it in human units
//! (`needle_nav_stack --summary`).

use crate::context::{lock, subscription};
use crate::context::{NodeContext, NodeError};
use crate::convert::time_to_ns;
use crate::msg;
use futures::StreamExt;
use needle_nav_core::interfaces::{CLASSIFICATION, GROUND_TRUTH, MARKERS, PLAN, REGISTRATION, TARGET};
use needle_nav_core::run_timeline::{secs, ClockStart, RunClock, TargetCounts, TargetTally};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When things first happened, after the stack started (the summary's timeline).
    classified_at: Option<Duration>,
    plan_done_at: Option<Duration>,
    registered_at: Option<Duration>,
    first_valid_target_at: Option<Duration>,
    stopped_at: Option<Duration>,
    /// Targets before and after the first usable registration.
    targets: TargetTally,
    /// Receive time minus tracker-sample stamp of each target [ns].
    target_latency_ns: Vec<i64>,
    /// Simulator truth (lesion in the tracker frame) by sample stamp, oldest first, recent only.
    truth: VecDeque<(i64, [f64; 3])>,
    /// Valid targets waiting for the truth at the time they are for: (due [ns], target).
    pending: VecDeque<(i64, [f64; 3])>,
    /// Distance of each valid target from the true lesion at the time it is for (sample time
    /// plus prediction horizon) [m].
    target_errors: Vec<f64>,
    /// Same for the registered (uncorrected) lesion.
    uncorrected_errors: Vec<f64>,
}

pub struct Monitor {
    seen: Arc<Mutex<Seen>>,
    /// When the stack started, and its stop rule (for the timeline).
    started: Instant,
    clock: RunClock,
}

/// The truth at `t_ns`, linearly interpolated between the two samples around it (at most
/// 50 ms apart); None outside the recorded span or across a gap.
fn truth_at(truth: &VecDeque<(i64, [f64; 3])>, t_ns: i64) -> Option<[f64; 3]> {
    let after = truth.partition_point(|(t, _)| *t < t_ns);
    let &(t1, p1) = truth.get(after)?;
    if t1 == t_ns {
        return Some(p1);
    }
    let &(t0, p0) = truth.get(after.checked_sub(1)?)?;
    if t1 - t0 > 50_000_000 {
        return None;
    }
    let f = (t_ns - t0) as f64 / (t1 - t0) as f64;
    Some([p0[0] + (p1[0] - p0[0]) * f, p0[1] + (p1[1] - p0[1]) * f, p0[2] + (p1[2] - p0[2]) * f])
}

fn distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

impl Seen {
    /// Scores the pending targets whose time the truth has reached, against the corrected and the
    /// registered (uncorrected) lesion.
    fn score_due_targets(&mut self) {
        let Some(&(newest, _)) = self.truth.back() else { return };
        while let Some(&(due, target)) = self.pending.front() {
            if due > newest {
                break;
            }
            self.pending.pop_front();
            let Some(truth) = truth_at(&self.truth, due) else { continue };
            self.target_errors.push(distance(&target, &truth));
            if let Some(r) = &self.registration {
                let l = &r.lesion_position;
                self.uncorrected_errors.push(distance(&[l.x, l.y, l.z], &truth));
            }
        }
    }
}

fn percentile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

impl Monitor {
    pub fn start(
        node: &mut r2r::Node,
        cx: &NodeContext,
        started: Instant,
        clock: RunClock,
    ) -> Result<Monitor, NodeError> {
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
                if g.truth.back().is_some_and(|(last, _)| *last >= t) {
                    g.truth.clear(); // time went back (a replay restarted)
                }
                g.truth.push_back((t, [m.lesion_position.x, m.lesion_position.y, m.lesion_position.z]));
                while g.truth.len() > 5000 {
                    g.truth.pop_front();
                }
                g.score_due_targets();
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
                let mut g = lock(&s);
                g.classified_at.get_or_insert(started.elapsed());
                g.classification = Some(m);
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = regs.next().await {
                let mut g = lock(&s);
                if crate::convert::registration_usable(&m) {
                    g.registered_at.get_or_insert(started.elapsed());
                }
                g.registration = Some(m);
            }
        });
        let s = seen.clone();
        cx.spawn(async move {
            while let Some(m) = plans.next().await {
                let mut g = lock(&s);
                if m.status != msg::NeedlePlan::STATUS_PENDING as u8 {
                    g.plan_done_at.get_or_insert(started.elapsed());
                }
                g.plan = Some(m);
            }
        });
        let s = seen.clone();
        let cx2 = cx.clone();
        cx.spawn(async move {
            while let Some(m) = targets.next().await {
                let now = cx2.now_ns();
                let mut g = lock(&s);
                let registered = g.registered_at.is_some();
                g.targets.add(registered, m.valid, &m.reason);
                if m.valid {
                    g.first_valid_target_at.get_or_insert(started.elapsed());
                    // Scored against the truth at the time the target is for, once that has come.
                    let horizon_ns = if m.prediction_horizon.is_finite() { m.prediction_horizon * 1e9 } else { 0.0 };
                    let due = time_to_ns(&m.source_stamp) + horizon_ns.round() as i64;
                    let p = &m.target_point;
                    g.pending.push_back((due, [p.x, p.y, p.z]));
                    if g.pending.len() > 5000 {
                        g.pending.pop_front();
                    }
                    g.score_due_targets();
                }
                let source = time_to_ns(&m.source_stamp);
                if source > 0 {
                    g.target_latency_ns.push(now - source);
                }
            }
        });
        Ok(Monitor { seen, started, clock })
    }

    /// Notes that the stack was asked to stop (the timeline's end; the report comes after shutdown).
    pub fn mark_stopped(&self) {
        lock(&self.seen).stopped_at.get_or_insert(self.started.elapsed());
    }

    /// Human-readable summary (millimetres, milliseconds).
    pub fn report(&self) -> String {
        let g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from("\n=== needle_nav stack summary ===\n");
        out += &timeline(&g, self.clock, g.stopped_at.unwrap_or_else(|| self.started.elapsed()));
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
        out += &planning_status(&g, self.clock);
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
                    let c = &p.chosen;
                    let clearances: Vec<String> = p
                        .obstacle_layers
                        .iter()
                        .zip(&c.layer_clearances)
                        .filter(|(_, d)| d.is_finite())
                        .map(|(l, d)| format!("{l} {:.1}", d * 1e3))
                        .collect();
                    let _ = writeln!(
                        out,
                        "                 lung {:.1} mm, {} pleural crossing(s), pleural angle {}, rib clearance {:.1} mm; \
                         clearance mm: {}; {} alternative(s)",
                        c.lung_length * 1e3,
                        c.pleural_crossings,
                        if c.pleural_angle.is_finite() { format!("{:.0}°", c.pleural_angle.to_degrees()) } else { "-".into() },
                        c.rib_clearance * 1e3,
                        clearances.join(", "),
                        p.alternatives.len()
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
        match &g.registration {
            Some(r) if crate::convert::registration_usable(r) => {
                if let Some(t) = g.registered_at {
                    let _ = writeln!(out, "registration   : first usable {} after the start", secs(t));
                }
                let _ = writeln!(
                    out,
                    "                 {} (markers {:?}), FRE {:.2} mm, predicted TRE lesion {:.2} mm, entry {:.2} mm",
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
        out += &targets_section(&g.targets, g.registered_at);
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
            let _ = writeln!(out, "                 (each against the lesion at its sample time + prediction horizon)");
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
        use nalgebra::Point3;
        use needle_nav_segmentation::report::{render, write_png, MarkerRole, Overlay};
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
                .map(|m| crate::convert::sample_from_msg(m).usable().map(|o| (o.id, o.position)).collect())
                .unwrap_or_default();
            (g.plan.clone(), g.registration.clone(), g.classification.clone(), markers)
        };
        let mut md = String::from("# needle_nav run report\n\n");
        let picture = match &plan {
            Some(p) if !p.ct_path.is_empty() && !p.label_map_path.is_empty() => {
                let (ct, labels) = needle_nav_planning::plan_files::load_ct_and_labels(
                    std::path::Path::new(&p.ct_path),
                    Some(std::path::Path::new(&p.label_map_path)),
                    1 << 31,
                )?;
                // Tracked markers into the CT with the registration (tracker -> CT is its inverse).
                let usable = registration.as_ref().filter(|r| crate::convert::registration_usable(r));
                let markers_mm = match usable {
                    Some(r) => {
                        let to_ct = crate::convert::transform_from_msg(&r.image_to_tracker).inverse();
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

/// What happened when, in seconds after the stack started, oldest first.
fn timeline(g: &Seen, clock: RunClock, now: Duration) -> String {
    let mut events: Vec<(Duration, String)> = vec![(Duration::ZERO, "stack started".into())];
    if let Some(t) = g.classified_at {
        events.push((t, "markers classified".into()));
    }
    match (g.plan_done_at, &g.plan) {
        (Some(t), Some(p)) => events.push((t, format!("plan published (status {})", p.status))),
        _ => events.push((now, "planning not finished".into())),
    }
    match (clock.run_for, clock.start(now, g.plan_done_at)) {
        (Some(run_for), Some(ClockStart::PlanFinished(t))) => {
            events.push((t, format!("guidance run time starts: {} after the plan (--plan-wait)", secs(run_for))))
        }
        (Some(run_for), Some(ClockStart::PlanWaitOver(t))) => events.push((
            t,
            format!("--plan-wait ran out without a finished plan: guidance run time of {} starts", secs(run_for)),
        )),
        _ => {}
    }
    if let Some(t) = g.registered_at {
        events.push((t, "registration first usable".into()));
    }
    if let Some(t) = g.first_valid_target_at {
        events.push((t, "first valid target".into()));
    }
    events.push((now, "end".into()));
    // Stable: events at the same time keep the order above (cause before effect).
    events.sort_by_key(|(t, _)| *t);
    let mut out = String::from("timeline       : seconds after the stack started\n");
    for (t, what) in events {
        let _ = writeln!(out, "                 {:>6.1}  {what}", t.as_secs_f64());
    }
    out
}

/// The planning line: when the plan was finished, or that it was not.
fn planning_status(g: &Seen, clock: RunClock) -> String {
    match (g.plan_done_at, clock.plan_wait) {
        (Some(t), _) => format!("planning       : finished {} after the start\n", secs(t)),
        (None, Some(wait)) => format!(
            "planning       : NOT finished (--plan-wait {} ran out; the guidance ran without a plan)\n",
            secs(wait)
        ),
        (None, None) => "planning       : NOT finished when the stack stopped\n".into(),
    }
}

/// Targets in all, then after and before the first usable registration with their invalid reasons.
fn targets_section(t: &TargetTally, registered_at: Option<Duration>) -> String {
    let percent = |c: &TargetCounts| c.valid_percent().map(|p| format!(" ({p:.1} %)")).unwrap_or_default();
    let reasons = |out: &mut String, c: &TargetCounts| {
        for (reason, n) in c.reasons() {
            let _ = writeln!(out, "                   {n:>6} x {reason}");
        }
    };
    let all = t.all();
    let mut out = format!("targets        : {} in all, {} valid{}\n", all.total(), all.valid, percent(&all));
    let after = &t.after_registration;
    match registered_at {
        Some(at) => {
            let _ = writeln!(
                out,
                "                 after the first usable registration ({}): {}, {} valid{}",
                secs(at),
                after.total(),
                after.valid,
                percent(after)
            );
            reasons(&mut out, after);
        }
        None => {
            let _ = writeln!(out, "                 no usable registration: no target could be valid");
        }
    }
    let before = &t.before_registration;
    if before.total() > 0 {
        let _ = writeln!(out, "                 before it: {}, {} valid", before.total(), before.valid);
        reasons(&mut out, before);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_and_the_targets_read_in_order() {
        let s = |x: f64| Duration::from_secs_f64(x);
        let mut g = Seen {
            classified_at: Some(s(10.2)),
            plan_done_at: Some(s(25.0)),
            registered_at: Some(s(25.1)),
            first_valid_target_at: Some(s(35.2)),
            plan: Some(msg::NeedlePlan::default()),
            ..Default::default()
        };
        let clock = RunClock { run_for: Some(s(45.0)), plan_wait: Some(s(120.0)) };
        let text = timeline(&g, clock, s(70.0));
        let order = [
            "stack started",
            "markers classified",
            "plan published",
            "run time starts",
            "registration",
            "first valid",
            "end",
        ];
        let at: Vec<usize> = order.iter().map(|w| text.find(w).unwrap_or_else(|| panic!("{w} in {text}"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(planning_status(&g, clock).contains("finished 25.0 s"));
        g.plan_done_at = None;
        assert!(planning_status(&g, clock).contains("NOT finished (--plan-wait 120.0 s ran out"));
        assert!(timeline(&g, clock, s(130.0)).contains("--plan-wait ran out"));

        for _ in 0..3 {
            g.targets.add(false, false, "no usable registration");
        }
        g.targets.add(true, false, "no calm-breathing baseline recorded yet");
        g.targets.add(true, true, "");
        let text = targets_section(&g.targets, g.registered_at);
        assert!(text.starts_with("targets        : 5 in all, 1 valid (20.0 %)"), "{text}");
        assert!(text.contains("after the first usable registration (25.1 s): 2, 1 valid (50.0 %)"), "{text}");
        assert!(text.contains("before it: 3, 0 valid\n                        3 x no usable registration"), "{text}");
    }

    #[test]
    fn truth_is_interpolated_between_its_samples_and_absent_outside_or_across_a_gap() {
        let truth: VecDeque<(i64, [f64; 3])> =
            [(0, [0.0, 0.0, 0.0]), (4_000_000, [4.0, 0.0, -4.0]), (100_000_000, [9.0, 9.0, 9.0])].into();
        assert_eq!(truth_at(&truth, 0), Some([0.0, 0.0, 0.0]));
        assert_eq!(truth_at(&truth, 1_000_000), Some([1.0, 0.0, -1.0]));
        assert_eq!(truth_at(&truth, 4_000_000), Some([4.0, 0.0, -4.0]));
        assert_eq!(truth_at(&truth, 50_000_000), None, "96 ms between samples: a gap");
        assert_eq!(truth_at(&truth, -1), None);
        assert_eq!(truth_at(&truth, 100_000_001), None);
    }

    #[test]
    fn a_target_is_scored_when_the_truth_reaches_its_time() {
        let mut seen = Seen::default();
        seen.truth = (0..10).map(|k| (k * 4_000_000, [k as f64 * 1e-3, 0.0, 0.0])).collect();
        // One target due at 20 ms (truth known), one due at 50 ms (after the newest truth, 36 ms).
        seen.pending.push_back((20_000_000, [5e-3, 0.0, 0.0]));
        seen.pending.push_back((50_000_000, [12.5e-3, 0.0, 0.0]));
        seen.score_due_targets();
        assert_eq!(seen.target_errors.len(), 1);
        assert!(seen.target_errors[0].abs() < 1e-12, "{:?}", seen.target_errors);
        assert_eq!(seen.pending.len(), 1);
        seen.truth.extend((10..15).map(|k| (k * 4_000_000, [k as f64 * 1e-3, 0.0, 0.0])));
        seen.score_due_targets();
        assert_eq!(seen.pending.len(), 0);
        assert!(seen.target_errors[1].abs() < 1e-12, "{:?}", seen.target_errors);
    }
}
