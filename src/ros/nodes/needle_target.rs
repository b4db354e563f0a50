//! needle_target: publishes the needle target at tracker rate, gated. A target that fails
//! any gate is published with valid = false and the reason; the PoseStamped for generic arm
//! controllers is published only for valid targets. A watchdog publishes STALE when the
//! tracker stops, so an old target is never left standing as valid.

use super::{config, publisher, subscription};
use crate::config::NeedleTargetConfig;
use crate::core::target_gate::{self, GateInputs, InvalidReason};
use crate::interfaces::{CLASSIFICATION, MARKERS, REGISTRATION, TARGET, TARGET_POSE, VIZ_TARGET};
use crate::ros::convert;
use crate::ros::msg;
use crate::ros::runtime::{NodeContext, NodeError};
use futures::StreamExt;
use r2r::geometry_msgs::msg::PoseStamped;
use r2r::visualization_msgs::msg::MarkerArray;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "needle_target";

#[derive(Default)]
struct State {
    newest_sample_ns: Option<i64>,
    newest_source_stamp: r2r::builtin_interfaces::msg::Time,
    malformed: Vec<u32>,
    registration: Option<msg::LesionRegistration>,
}

fn registration_usable(r: &Option<msg::LesionRegistration>) -> Result<(), String> {
    match r {
        None => Err("no registration received".into()),
        Some(r)
            if r.status == msg::LesionRegistration::STATUS_OK as u8
                || r.status == msg::LesionRegistration::STATUS_OUTLIER_EXCLUDED as u8 =>
        {
            // The breathing-correction baseline is not recorded by this version yet.
            Ok(())
        }
        Some(r) => Err(format!("registration status {}: {}", r.status, r.status_message)),
    }
}

fn reason_code(r: &InvalidReason) -> u8 {
    match r {
        InvalidReason::Starting => msg::NeedleTarget::REASON_STARTING as u8,
        InvalidReason::InvalidInput(_) => msg::NeedleTarget::REASON_INVALID_INPUT as u8,
        InvalidReason::StaleData { .. } => msg::NeedleTarget::REASON_STALE_DATA as u8,
        InvalidReason::NoRegistration(_) => msg::NeedleTarget::REASON_NO_REGISTRATION as u8,
        InvalidReason::NoBaseline => msg::NeedleTarget::REASON_NO_BASELINE as u8,
        InvalidReason::MissingMarkers(_) => msg::NeedleTarget::REASON_MISSING_MARKERS as u8,
        InvalidReason::DeviationTooLarge { .. } => msg::NeedleTarget::REASON_DEVIATION_TOO_LARGE as u8,
    }
}

fn evaluate(state: &State, cfg: &NeedleTargetConfig, now_ns: i64) -> msg::NeedleTarget {
    let reason = match target_gate::check(&GateInputs {
        newest_sample_ns: state.newest_sample_ns,
        now_ns,
        malformed_marker_ids: state.malformed.clone(),
        registration: registration_usable(&state.registration),
        stale_after_s: cfg.stale_after_s(),
    }) {
        Err(reason) => reason,
        // Every gate passed, but this version records no breathing baseline to correct with.
        Ok(()) => InvalidReason::NoBaseline,
    };
    msg::NeedleTarget {
        header: convert::header(now_ns, &cfg.frame_id),
        valid: false,
        reason_code: reason_code(&reason),
        reason: reason.to_string(),
        predicted_error: f64::NAN,
        breathing_deviation: f64::NAN,
        insertion_depth: f64::NAN,
        source_stamp: state.newest_source_stamp.clone(),
        ..Default::default()
    }
}

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let cfg: NeedleTargetConfig = config(node, NAME)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let target_pub = publisher::<msg::NeedleTarget>(node, TARGET)?;
    let _pose_pub = publisher::<PoseStamped>(node, TARGET_POSE)?;
    let _viz_pub = publisher::<MarkerArray>(node, VIZ_TARGET)?;
    let state = Arc::new(Mutex::new(State::default()));
    let last_reason = Arc::new(Mutex::new(String::new()));

    let publish = {
        let target_pub = target_pub.clone();
        let last_reason = last_reason.clone();
        move |t: msg::NeedleTarget| {
            let mut last = last_reason.lock().unwrap_or_else(|p| p.into_inner());
            if *last != t.reason {
                tracing::info!(node = NAME, valid = t.valid, "target: {}", t.reason);
                *last = t.reason.clone();
            }
            if let Err(e) = target_pub.publish(&t) {
                tracing::warn!(node = NAME, "publish failed: {e}");
            }
        }
    };

    {
        let (state, cfg, publish, cx2) = (state.clone(), cfg.clone(), publish.clone(), cx.clone());
        cx.spawn(async move {
            while let Some(m) = samples.next().await {
                let sample = convert::sample_from_msg(&m);
                let target = {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.newest_sample_ns = Some(sample.stamp_ns);
                    s.newest_source_stamp = m.header.stamp.clone();
                    s.malformed = sample.malformed_ids();
                    evaluate(&s, &cfg, cx2.now_ns())
                };
                publish(target);
            }
        });
    }
    {
        let state = state.clone();
        cx.spawn(async move {
            while let Some(r) = registrations.next().await {
                state.lock().unwrap_or_else(|p| p.into_inner()).registration = Some(r);
            }
        });
    }
    cx.spawn(async move { while classifications.next().await.is_some() {} });
    {
        // Watchdog: when samples stop, say so at least every staleness period.
        let (cfg, cx2) = (cfg.clone(), cx.clone());
        cx.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.stale_after_s().max(0.01)));
            loop {
                tick.tick().await;
                let now = cx2.now_ns();
                let target = {
                    let s = state.lock().unwrap_or_else(|p| p.into_inner());
                    match s.newest_sample_ns {
                        Some(t) if (now - t) as f64 * 1e-9 <= cfg.stale_after_s() => continue,
                        _ => evaluate(&s, &cfg, now),
                    }
                };
                publish(target);
            }
        });
    }
    Ok(())
}
