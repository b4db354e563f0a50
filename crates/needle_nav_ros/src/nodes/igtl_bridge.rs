//! igtl_bridge: OpenIGTLink in and out. Tracker messages (TRANSFORM, POSITION, POINT, TDATA from a
//! PLUS Server) become needle_nav/markers with the tracker's timestamps, grouped into frames by
//! `needle_nav_nodes::igtl_bridge`; the target, the registration, the plan and, on GET_IMAGE, the
//! vessel label map go to 3D Slicer as `needle_nav_igtl::slicer` encodes them. The links reconnect
//! with back-off and count bad packets; nothing a peer sends ends the node.

use super::{config, lock, log_publish_error, publisher, subscription};
use crate::context::{NodeContext, NodeError};
use crate::convert;
use crate::msg;
use futures::StreamExt;
use needle_nav_core::interfaces::{MARKERS, PLAN, REGISTRATION, TARGET};
use needle_nav_igtl::link::{self, LinkCounters, LinkEvent, Outgoing};
use needle_nav_igtl::slicer::{self, TargetValues};
use needle_nav_igtl::Incoming;
use needle_nav_nodes::config::IgtlBridgeConfig;
use needle_nav_nodes::diagnostics::BridgeHealth;
use needle_nav_nodes::igtl_bridge::{link_config, FrameAssembler};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const NAME: &str = "igtl_bridge";
/// How often the links' counters are copied into the health report.
const COUNTER_PERIOD: Duration = Duration::from_millis(250);

/// The label of a NeedleTarget reason code (as /diagnostics counts it), for STATUS's error name.
fn reason_label(code: u8) -> &'static str {
    match code as i32 {
        x if x == msg::NeedleTarget::REASON_NONE as i32 => "none",
        x if x == msg::NeedleTarget::REASON_NO_REGISTRATION as i32 => "no_registration",
        x if x == msg::NeedleTarget::REASON_STALE_DATA as i32 => "stale_data",
        x if x == msg::NeedleTarget::REASON_MISSING_MARKERS as i32 => "missing_markers",
        x if x == msg::NeedleTarget::REASON_DEVIATION_TOO_LARGE as i32 => "deviation_too_large",
        x if x == msg::NeedleTarget::REASON_NO_BASELINE as i32 => "no_baseline",
        x if x == msg::NeedleTarget::REASON_INVALID_INPUT as i32 => "invalid_input",
        x if x == msg::NeedleTarget::REASON_STARTING as i32 => "starting",
        x if x == msg::NeedleTarget::REASON_PREDICTION_UNRELIABLE as i32 => "prediction_unreliable",
        _ => "unknown",
    }
}

fn target_values(t: &msg::NeedleTarget) -> TargetValues {
    TargetValues {
        entry_m: convert::point_from_msg(&t.entry_point),
        target_m: convert::point_from_msg(&t.target_point),
        valid: t.valid,
        reason_code: t.reason_code,
        reason_label: reason_label(t.reason_code).into(),
        reason: t.reason.clone(),
    }
}

/// Sends to Slicer while the node is active; an encoding failure is logged, never fatal.
fn send(
    cx: &NodeContext,
    to: &mpsc::Sender<Outgoing>,
    what: &str,
    m: Result<Outgoing, needle_nav_igtl::messages::EncodeError>,
) {
    if !cx.is_active() {
        return;
    }
    match m {
        // A full queue means Slicer is not reading: drop rather than stall the node.
        Ok(m) => {
            let _ = to.try_send(m);
        }
        Err(e) => tracing::warn!(node = NAME, "cannot encode the {what} for Slicer: {e}"),
    }
}

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    // Only the diagnostics thresholds of this node change at run time; the diagnostics take them on.
    let (cfg, diagnostics_parameters): (IgtlBridgeConfig, _) = config(node, cx, NAME)?;
    let markers_pub = publisher::<msg::TrackedMarkerArray>(node, cx, MARKERS)?;
    let health = Arc::new(Mutex::new(BridgeHealth::new(&cfg.diagnostics, cfg.expected_rate_hz, &cx.name, cx.now_ns())));
    crate::diagnostics::start(node, cx, health.clone(), diagnostics_parameters, |h, c: &IgtlBridgeConfig| {
        h.set_thresholds(&c.diagnostics, c.expected_rate_hz)
    })?;

    // The tracker link: messages in; nothing is sent to the tracker, but the sender must live.
    let tracker_counters = Arc::new(LinkCounters::default());
    let (tracker_events_tx, mut tracker_events) = mpsc::channel::<LinkEvent>(1024);
    let (tracker_out, tracker_out_rx) = mpsc::channel::<Outgoing>(1);
    cx.spawn(link::run(
        link_config("tracker", &cfg.tracker, &cfg),
        tracker_counters.clone(),
        tracker_events_tx,
        tracker_out_rx,
    ));

    // The Slicer link.
    let slicer_counters = Arc::new(LinkCounters::default());
    let (slicer_out, slicer_out_rx) = mpsc::channel::<Outgoing>(256);
    let (slicer_events_tx, mut slicer_events) = mpsc::channel::<LinkEvent>(64);
    if cfg.slicer_enabled {
        cx.spawn(link::run(
            link_config("slicer", &cfg.slicer, &cfg),
            slicer_counters.clone(),
            slicer_events_tx,
            slicer_out_rx,
        ));
    }

    // Tracker messages -> samples.
    let task_cx = cx.clone();
    let task_health = health.clone();
    let task_cfg = cfg.clone();
    let counters = (tracker_counters.clone(), cfg.slicer_enabled.then(|| slicer_counters.clone()));
    cx.spawn(async move {
        let _keep_tracker_sender = tracker_out;
        let mut frames = FrameAssembler::new(&task_cfg);
        let mut publish_failed = false;
        let mut counter_tick = tokio::time::interval(COUNTER_PERIOD);
        // A plain function, not a closure: a borrow of the publisher must not live across an await.
        fn publish(
            p: &crate::context::LifecyclePublisher<msg::TrackedMarkerArray>,
            cx: &NodeContext,
            health: &Mutex<BridgeHealth>,
            frame_id: &str,
            s: &needle_nav_core::tracking::TrackerSample,
            failed: &mut bool,
        ) {
            let result = p.publish(&convert::sample_msg(s, frame_id));
            if result.is_ok() && cx.is_active() {
                lock(health).output.record(cx.now_ns(), s.stamp_ns, s.visible_ids());
            }
            log_publish_error(NAME, MARKERS.name, result, failed);
        }
        loop {
            let wait = frames
                .next_deadline_ns()
                .map(|d| Duration::from_nanos((d - task_cx.now_ns()).max(0) as u64))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                e = tracker_events.recv() => match e {
                    None => return,
                    Some(LinkEvent::Message(r)) => {
                        let (obs, whole_frame) = needle_nav_igtl::tracker::observations(&r);
                        if obs.is_empty() {
                            continue;
                        }
                        let done = frames.observe(&obs, r.timestamp_ns, whole_frame, task_cx.now_ns());
                        for name in &done.new_unmapped {
                            tracing::warn!(node = NAME, "tracker device `{name}` is not in device_names: ignored (logged once)");
                        }
                        for s in &done.samples {
                            publish(&markers_pub, &task_cx, &task_health, &task_cfg.frame_id, s, &mut publish_failed);
                        }
                    }
                    Some(LinkEvent::Connected { peer }) => tracing::info!(node = NAME, "tracker connected: {peer}"),
                    Some(LinkEvent::Disconnected { reason }) => tracing::warn!(node = NAME, "tracker disconnected: {reason}"),
                },
                _ = tokio::time::sleep(wait) => {
                    if let Some(s) = frames.poll(task_cx.now_ns()) {
                        publish(&markers_pub, &task_cx, &task_health, &task_cfg.frame_id, &s, &mut publish_failed);
                    }
                }
                _ = counter_tick.tick() => {
                    let mut h = lock(&task_health);
                    h.tracker = counters.0.snapshot();
                    h.slicer = counters.1.as_ref().map(|c| c.snapshot());
                    h.unmapped = frames.unmapped().iter().cloned().collect();
                    h.unmapped_count = frames.unmapped_count;
                }
            }
        }
    });

    if !cfg.slicer_enabled {
        return Ok(());
    }

    // needle_nav -> Slicer.
    let mut targets = subscription::<msg::NeedleTarget>(node, TARGET)?;
    let (out, task_cx) = (slicer_out.clone(), cx.clone());
    cx.spawn(async move {
        while let Some(t) = targets.next().await {
            // Stamped with the tracker frame the target was computed from (Slicer and the latency
            // benchmark match it to that frame); the publication time while there is none yet.
            let source = convert::time_to_ns(&t.source_stamp);
            let stamp = if source > 0 { source } else { convert::time_to_ns(&t.header.stamp) };
            match slicer::target_messages(&target_values(&t), stamp) {
                Ok(msgs) => {
                    for m in msgs {
                        send(&task_cx, &out, "target", Ok(Outgoing::Stream(m)));
                    }
                }
                Err(e) => send(&task_cx, &out, "target", Err(e)),
            }
        }
    });
    let mut registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
    let (out, task_cx) = (slicer_out.clone(), cx.clone());
    cx.spawn(async move {
        while let Some(r) = registrations.next().await {
            if !convert::registration_usable(&r) {
                continue;
            }
            let transform = convert::transform_from_msg(&r.image_to_tracker);
            let m = slicer::registration_message(&transform, convert::time_to_ns(&r.header.stamp))
                .map(|bytes| Outgoing::Latched { key: "registration".into(), bytes });
            send(&task_cx, &out, "registration", m);
        }
    });
    // The newest finished plan's label map, for GET_IMAGE.
    let label_map: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut plans = subscription::<msg::NeedlePlan>(node, PLAN)?;
    let (out, task_cx, plan_label_map) = (slicer_out.clone(), cx.clone(), label_map.clone());
    cx.spawn(async move {
        while let Some(p) = plans.next().await {
            if p.status != msg::NeedlePlan::STATUS_OK as u8 {
                continue;
            }
            *lock(&plan_label_map) = (!p.label_map_path.is_empty()).then(|| p.label_map_path.clone());
            let alternatives: Vec<_> = p.alternatives.iter().map(|a| convert::point_from_msg(&a.entry_point)).collect();
            let m = slicer::plan_message(
                &convert::point_from_msg(&p.entry_point),
                &convert::point_from_msg(&p.target_point),
                &alternatives,
                convert::time_to_ns(&p.header.stamp),
            )
            .map(|bytes| Outgoing::Latched { key: "plan".into(), bytes });
            send(&task_cx, &out, "plan", m);
        }
    });
    // Slicer -> needle_nav: GET_IMAGE for the label map; anything else is only counted.
    let (out, task_cx) = (slicer_out, cx.clone());
    cx.spawn(async move {
        while let Some(e) = slicer_events.recv().await {
            match e {
                LinkEvent::Message(r) if r.message == Incoming::GetImage => {
                    let now = task_cx.now_ns();
                    let path = lock(&label_map).clone();
                    let reply = if r.device_name != slicer::LABEL_MAP_DEVICE {
                        slicer::image_refusal(
                            &r.device_name,
                            &format!("no image `{}`: ask for `{}`", r.device_name, slicer::LABEL_MAP_DEVICE),
                            now,
                        )
                    } else if let Some(path) = path {
                        tracing::info!(node = NAME, "Slicer asked for the label map: sending {path}");
                        let read = tokio::task::spawn_blocking(move || {
                            needle_nav_imaging::nifti::read(std::path::Path::new(&path))
                                .map_err(|e| e.to_string())
                                .and_then(|img| {
                                    slicer::label_map_message(&img.geometry, &img.data, now).map_err(|e| e.to_string())
                                })
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("reading the label map failed: {e}")));
                        match read {
                            Ok(bytes) => Ok(bytes),
                            Err(why) => {
                                tracing::warn!(node = NAME, "cannot send the label map: {why}");
                                slicer::image_refusal(slicer::LABEL_MAP_DEVICE, &why, now)
                            }
                        }
                    } else {
                        slicer::image_refusal(slicer::LABEL_MAP_DEVICE, "no finished plan with a label map yet", now)
                    };
                    send(&task_cx, &out, "label map", reply.map(Outgoing::Stream));
                }
                LinkEvent::Message(_) => {}
                LinkEvent::Connected { peer } => tracing::info!(node = NAME, "Slicer connected: {peer}"),
                LinkEvent::Disconnected { reason } => tracing::warn!(node = NAME, "Slicer disconnected: {reason}"),
            }
        }
    });
    Ok(())
}
