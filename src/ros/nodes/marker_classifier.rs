//! marker_classifier: splits markers into registration and correction markers from their
//! motion over a sliding window; publishes (latched) whenever the split changes.

use super::{config, publisher, subscription};
use crate::config::MarkerClassifierConfig;
use crate::core::classification::{MarkerClass, WindowClassifier};
use crate::interfaces::{frames, CLASSIFICATION, MARKERS};
use crate::ros::convert;
use crate::ros::msg;
use crate::ros::runtime::{NodeContext, NodeError};
use futures::StreamExt;

const NAME: &str = "marker_classifier";
/// Re-evaluate the classes at most this often [ns].
const CLASSIFY_PERIOD_NS: i64 = 100_000_000;

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let cfg: MarkerClassifierConfig = config(node, NAME)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let classification_pub = publisher::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let parameters_yaml = serde_yaml::to_string(&cfg).unwrap_or_default();
    let mut classifier = WindowClassifier::new(cfg);

    cx.spawn(async move {
        let mut last_classified_ns = i64::MIN;
        while let Some(m) = samples.next().await {
            let sample = convert::sample_from_msg(&m);
            for obs in sample.usable() {
                classifier.push(obs.id, sample.stamp_ns, obs.position);
            }
            if sample.stamp_ns.saturating_sub(last_classified_ns) < CLASSIFY_PERIOD_NS {
                continue;
            }
            last_classified_ns = sample.stamp_ns;
            let (results, changed) = classifier.classify();
            if !changed {
                continue;
            }
            let cfg = classifier.config();
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
                    motion_mode: msg::MarkerFeature::MODE_NONE as u8,
                    mode_similarity: 0.0,
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
        }
    });
    Ok(())
}
