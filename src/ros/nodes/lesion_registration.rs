//! lesion_registration: registers the planning CT to the patient with the registration
//! markers and publishes the lesion and reference entry (latched).
//!
//! Until image marker positions are available (CT marker detection), it publishes
//! STATUS_NO_IMAGE_DATA with the reason, so downstream nodes know why there is no target.

use super::{config, publisher, subscription};
use crate::config::LesionRegistrationConfig;
use crate::interfaces::{frames, CLASSIFICATION, MARKERS, PLAN, REGISTRATION};
use crate::ros::convert;
use crate::ros::msg;
use crate::ros::runtime::{NodeContext, NodeError};
use futures::StreamExt;

const NAME: &str = "lesion_registration";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let cfg: LesionRegistrationConfig = config(node, NAME)?;
    let mut classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
    let mut samples = subscription::<msg::TrackedMarkerArray>(node, MARKERS)?;
    let mut plans = subscription::<msg::NeedlePlan>(node, PLAN)?;
    let registration_pub = publisher::<msg::LesionRegistration>(node, REGISTRATION)?;

    let reason = if cfg.ct_case_dir.trim().is_empty() {
        "no planning CT configured (parameter ct_case_dir is empty)".to_string()
    } else {
        format!("CT marker detection is not available in this version; cannot use {}", cfg.ct_case_dir)
    };
    let status = move |stamp_ns: i64, frame: &str| msg::LesionRegistration {
        header: convert::header(stamp_ns, frame),
        status: msg::LesionRegistration::STATUS_NO_IMAGE_DATA as u8,
        status_message: reason.clone(),
        image_frame_id: cfg.image_frame_id.clone(),
        fle_rms: cfg.fle_rms_m,
        ..Default::default()
    };
    let initial = status(cx.now_ns(), frames::TRACKER);
    tracing::warn!(node = NAME, "no registration: {}", initial.status_message);
    if let Err(e) = registration_pub.publish(&initial) {
        tracing::warn!(node = NAME, "publish failed: {e}");
    }

    cx.spawn(async move {
        // Tracker samples are consumed so that the subscription's queue never backs up.
        let drain = async move { while samples.next().await.is_some() {} };
        let plans = async move {
            while let Some(p) = plans.next().await {
                tracing::info!(node = NAME, status = p.status, "plan received: {}", p.status_message);
            }
        };
        let on_classification = async move {
            while let Some(c) = classifications.next().await {
                let out = status(convert::time_to_ns(&c.header.stamp), &c.header.frame_id);
                if let Err(e) = registration_pub.publish(&out) {
                    tracing::warn!(node = NAME, "publish failed: {e}");
                }
            }
        };
        futures::join!(drain, plans, on_classification);
    });
    Ok(())
}
