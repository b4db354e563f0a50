//! marker_classifier: splits markers into registration and correction markers from their
//! motion over a sliding window; publishes (latched) whenever the split changes.

use super::{config, lock, publisher, subscription, SampleGate};
use crate::context::{NodeContext, NodeError};
use crate::convert;
use crate::msg;
use crate::viz::{self, MarkerRole};
use futures::StreamExt;
use needle_nav_core::classification::{LogisticModel, MarkerClass, MotionMode};
use needle_nav_core::interfaces::{frames, CLASSIFICATION, MARKERS, REGISTRATION, VIZ_MARKER_CLASSES};
use needle_nav_nodes::config::ClassificationMethod;
use needle_nav_nodes::config::MarkerClassifierConfig;
use needle_nav_nodes::diagnostics::ClassifierHealth;
use needle_nav_nodes::marker_classifier::{Classified, MarkerClassifierMachine};
use std::sync::{Arc, Mutex};

const NAME: &str = "marker_classifier";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let (cfg, mut parameters): (MarkerClassifierConfig, _) = config(node, cx, NAME)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
    let classification_pub = publisher::<msg::MarkerClassification>(node, cx, CLASSIFICATION)?;
    let viz_pub = publisher::<r2r::visualization_msgs::msg::MarkerArray>(node, cx, VIZ_MARKER_CLASSES)?;
    let mut parameters_yaml = serde_yaml::to_string(&cfg).unwrap_or_default();
    let model = match cfg.method {
        ClassificationMethod::Learned => {
            Some(LogisticModel::load(std::path::Path::new(&cfg.model_path)).map_err(|e| {
                NodeError::Config(needle_nav_nodes::config::ConfigError::BadKey {
                    node: NAME.into(),
                    key: "model_path".into(),
                    reason: e.to_string(),
                })
            })?)
        }
        _ => None,
    };
    let mut gate = SampleGate::new(NAME, cfg.sample_checks.clone());
    let health = Arc::new(Mutex::new(ClassifierHealth::new(&cfg.diagnostics, &cx.name, cx.now_ns())));
    crate::diagnostics::start(node, cx, health.clone(), parameters.clone(), |h, c: &MarkerClassifierConfig| {
        h.set_thresholds(&c.diagnostics)
    })?;
    let machine = Arc::new(Mutex::new(MarkerClassifierMachine::new(cfg, model)));
    {
        let machine = machine.clone();
        cx.spawn(async move {
            while let Some(r) = registrations.next().await {
                let usable = convert::registration_usable(&r);
                let rotation = convert::transform_from_msg(&r.image_to_tracker).rotation;
                lock(&machine).on_registration(usable.then_some(rotation));
            }
        });
    }
    let cx2 = cx.clone();
    crate::replay::register(NAME);

    cx.spawn(async move {
        while let Some(m) = samples.next().await {
            // Parameters set since the last sample: thresholds and checks from this one on.
            if let Some(new) = parameters.take() {
                gate.set_checks(new.sample_checks.clone());
                let mut machine = lock(&machine);
                machine.apply_dynamic(&new);
                parameters_yaml = serde_yaml::to_string(machine.config()).unwrap_or_default();
            }
            crate::replay::note_taken(NAME, convert::time_to_ns(&m.header.stamp));
            // A refused sample leaves the windows untouched.
            let (raw, now) = (convert::sample_from_msg(&m), cx2.now_ns());
            let checked = gate.check(&raw, now);
            match &checked {
                Ok(_) => lock(&health).inputs.record(now, raw.stamp_ns, raw.visible_ids()),
                Err(_) => lock(&health).inputs.refused(now),
            }
            let Ok(checked) = checked else { continue };
            // Classified once per period of tracker time, on a fixed grid (same instants live and in replay).
            let Some(Classified { results, changed }) = lock(&machine).on_sample(&checked) else { continue };
            let sample = checked.sample;
            // rviz: where each marker is now, coloured by its current class.
            let frame = if m.header.frame_id.is_empty() { frames::TRACKER } else { &m.header.frame_id };
            let shown: Vec<_> = sample
                .usable()
                .map(|o| {
                    let role = match results.iter().find(|r| r.id == o.id).and_then(|r| r.class) {
                        Some(MarkerClass::Registration) => MarkerRole::Registration,
                        Some(MarkerClass::Correction) => MarkerRole::Correction,
                        None => MarkerRole::Unclassified,
                    };
                    (o.id, o.position, role)
                })
                .collect();
            let _ = viz_pub.publish(&viz::marker_classes(sample.stamp_ns, frame, &shown));
            if !changed {
                continue;
            }
            let count = |class| results.iter().filter(|r| r.class == Some(class)).count();
            lock(&health).classified(count(MarkerClass::Registration), count(MarkerClass::Correction));
            let cfg = lock(&machine).config().clone();
            let mut out = msg::MarkerClassification {
                header: convert::header(
                    sample.stamp_ns,
                    if m.header.frame_id.is_empty() { frames::TRACKER } else { &m.header.frame_id },
                ),
                feature: cfg.feature.as_str().into(),
                method: cfg.method.as_str().into(),
                threshold: cfg.threshold_m,
                hysteresis: cfg.hysteresis_m,
                window_duration: cfg.window_s,
                parameters_yaml: parameters_yaml.clone(),
                ..Default::default()
            };
            for r in &results {
                let class = match r.class {
                    Some(MarkerClass::Registration) => {
                        out.registration_marker_ids.push(r.id);
                        msg::MarkerFeature::CLASS_REGISTRATION as u8
                    }
                    Some(MarkerClass::Correction) => {
                        out.correction_marker_ids.push(r.id);
                        msg::MarkerFeature::CLASS_CORRECTION as u8
                    }
                    None => msg::MarkerFeature::CLASS_UNASSIGNED as u8,
                };
                out.markers.push(msg::MarkerFeature {
                    id: r.id,
                    marker_class: class,
                    displacement_feature: r.feature,
                    motion_mode: match r.mode {
                        MotionMode::None => msg::MarkerFeature::MODE_NONE as u8,
                        MotionMode::Lateral => msg::MarkerFeature::MODE_LATERAL as u8,
                        MotionMode::Expansion => msg::MarkerFeature::MODE_EXPANSION as u8,
                        MotionMode::Longitudinal => msg::MarkerFeature::MODE_LONGITUDINAL as u8,
                    },
                    mode_similarity: r.mode_similarity,
                    body_region: msg::MarkerFeature::REGION_UNKNOWN as u8,
                    samples_in_window: r.samples as u32,
                });
            }
            tracing::info!(
                node = NAME,
                registration = ?out.registration_marker_ids,
                correction = ?out.correction_marker_ids,
                "marker classes changed"
            );
            if let Err(e) = classification_pub.publish(&out) {
                tracing::warn!(node = NAME, "publish failed: {e}");
            }
            crate::replay::note_shared();
        }
    });
    Ok(())
}
