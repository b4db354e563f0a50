//! marker_tracker: publishes tracked marker positions at the configured rate.

use super::{config, lock, log_publish_error, publisher};
use crate::context::{NodeContext, NodeError};
use crate::convert;
use crate::msg;
use needle_nav_core::interfaces::{GROUND_TRUTH, MARKERS, VIZ_MARKERS};
use needle_nav_nodes::config::{MarkerTrackerConfig, TrackerSource};
use needle_nav_nodes::diagnostics::TrackerHealth;
use needle_nav_sim::breathing::BreathingSignal;
use needle_nav_sim::phantom::{Phantom, PhantomConfig};
use needle_nav_sim::tracker_sim::SimulatedTracker;
use r2r::visualization_msgs::msg::{Marker, MarkerArray};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NAME: &str = "marker_tracker";
/// rviz does not need every sample.
const VIZ_EVERY_N_SAMPLES: u64 = 25;

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    // Only the diagnostics thresholds of this node change at run time; the diagnostics take them on.
    let (cfg, diagnostics_parameters): (MarkerTrackerConfig, _) = config(node, cx, NAME)?;
    let markers_pub = publisher::<msg::TrackedMarkerArray>(node, cx, MARKERS)?;
    // Both sources simulate the patient, so both know the truth.
    let truth_pub = if cfg.publish_ground_truth {
        Some(publisher::<msg::PhantomGroundTruth>(node, cx, GROUND_TRUTH)?)
    } else {
        None
    };
    let viz_pub = if cfg.publish_visualization { Some(publisher::<MarkerArray>(node, cx, VIZ_MARKERS)?) } else { None };

    let invalid = |key: &str, e: String| {
        NodeError::Config(needle_nav_nodes::config::ConfigError::BadKey {
            node: NAME.into(),
            key: key.into(),
            reason: e,
        })
    };
    let phantom = Phantom::new(PhantomConfig { seed: cfg.seed, ..Default::default() })
        .map_err(|e| invalid("seed", e.to_string()))?;
    let signal = match cfg.source {
        // An hour of distinct breathing; the signal repeats after that.
        TrackerSource::Sim => {
            BreathingSignal::synthetic(&cfg.breathing, 3600.0).map_err(|e| invalid("breathing", e.to_string()))?
        }
        // A real recording; it repeats after its end (a few minutes).
        TrackerSource::Trace => recorded_breathing(&cfg).map_err(|(key, e)| invalid(key, e))?,
    };
    let mut sim = SimulatedTracker::new(phantom, signal, cfg.tracker_sim());
    let latency_ns = (cfg.latency_s * 1e9) as i64;
    let task_cx = cx.clone();
    let health = Arc::new(Mutex::new(TrackerHealth::new(&cfg.diagnostics, cfg.rate_hz, &cx.name, cx.now_ns())));
    crate::diagnostics::start(node, cx, health.clone(), diagnostics_parameters, |h, c: &MarkerTrackerConfig| {
        h.set_thresholds(&c.diagnostics, c.rate_hz)
    })?;
    cx.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate_hz));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let start = Instant::now();
        let mut publish_failed = false;
        loop {
            tick.tick().await;
            // The sample delivered now was acquired `latency_s` ago and is stamped with that time.
            let stamp_ns = task_cx.now_ns() - latency_ns;
            let (sample, truth) = sim.sample(start.elapsed().as_secs_f64() - cfg.latency_s, stamp_ns);
            let result = markers_pub.publish(&convert::sample_msg(&sample, &cfg.frame_id));
            if result.is_ok() {
                lock(&health).output.record(task_cx.now_ns(), sample.stamp_ns, sample.visible_ids());
            }
            log_publish_error(NAME, MARKERS.name, result, &mut publish_failed);
            if let Some(p) = &truth_pub {
                let _ = p.publish(&convert::ground_truth_msg(&truth, &cfg.frame_id));
            }
            if let Some(p) = &viz_pub {
                if sample.sequence % VIZ_EVERY_N_SAMPLES == 0 {
                    let _ = p.publish(&marker_spheres(&sample, &cfg.frame_id));
                }
            }
        }
    });
    Ok(())
}

/// The breathing signal of the configured ExtMarker trace.
fn recorded_breathing(cfg: &MarkerTrackerConfig) -> Result<BreathingSignal, (&'static str, String)> {
    use needle_nav_sim::extmarker;
    let dir = if cfg.trace_dir.is_empty() {
        extmarker::shared_data_dir().join("breathing_traces_extmarker")
    } else {
        std::path::PathBuf::from(&cfg.trace_dir)
    };
    let sessions = extmarker::list_sessions(&dir).map_err(|e| ("trace_dir", e.to_string()))?;
    let session = if cfg.trace_session.is_empty() {
        sessions.first().cloned().ok_or(("trace_dir", format!("no ExtMarker sessions in {}", dir.display())))?
    } else {
        cfg.trace_session.clone()
    };
    let traces = extmarker::read_session(&dir, &session).map_err(|e| ("trace_session", e.to_string()))?;
    let trace =
        if cfg.trace_marker.is_empty() { traces.first() } else { traces.iter().find(|t| t.marker == cfg.trace_marker) }
            .ok_or(("trace_marker", format!("session {session} has no marker `{}`", cfg.trace_marker)))?;
    tracing::info!(
        node = NAME,
        "breathing from ExtMarker session {session}, marker {} ({:.0} s)",
        trace.marker,
        trace.duration_s()
    );
    extmarker::breathing_signal(trace).map_err(|e| ("trace_session", e.to_string()))
}

fn marker_spheres(sample: &needle_nav_core::tracking::TrackerSample, frame_id: &str) -> MarkerArray {
    let markers = sample
        .markers
        .iter()
        .map(|m| {
            let mut k = Marker::default();
            k.header = convert::header(sample.stamp_ns, frame_id);
            k.ns = "tracked_markers".into();
            k.id = m.id as i32;
            k.type_ = Marker::SPHERE as i32;
            k.action = if m.visible { Marker::ADD as i32 } else { Marker::DELETE as i32 };
            k.pose.position = convert::point_msg(&m.position);
            k.pose.orientation.w = 1.0;
            k.scale.x = 0.008;
            k.scale.y = 0.008;
            k.scale.z = 0.008;
            k.color.r = 0.8;
            k.color.g = 0.8;
            k.color.b = 0.8;
            k.color.a = 1.0;
            k
        })
        .collect();
    MarkerArray { markers }
}
