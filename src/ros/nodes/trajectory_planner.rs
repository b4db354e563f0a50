//! trajectory_planner: asks vessel_segmentation for the planning CT's vessels and publishes
//! the needle plan (latched). The service client handles absence, timeouts and errors.

use super::{config, publisher};
use crate::config::TrajectoryPlannerConfig;
use crate::interfaces::{PLAN, SEGMENT_VESSELS};
use crate::ros::convert;
use crate::ros::msg;
use crate::ros::qos;
use crate::ros::runtime::{NodeContext, NodeError, RosContext};
use crate::ros::srv::SegmentVessels;
use std::time::Duration;

const NAME: &str = "trajectory_planner";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let cfg: TrajectoryPlannerConfig = config(node, NAME)?;
    let plan_pub = publisher::<msg::NeedlePlan>(node, PLAN)?;
    let client = node
        .create_client::<SegmentVessels::Service>(SEGMENT_VESSELS.name, qos::profile(SEGMENT_VESSELS.qos))
        .ros(format!("cannot create a client for {}", SEGMENT_VESSELS.name))?;
    let available = r2r::Node::is_available(&client).ros("cannot watch the segmentation service")?;

    let plan = {
        let cfg = cfg.clone();
        move |stamp_ns: i64, status: u8, message: String| msg::NeedlePlan {
            header: convert::header(stamp_ns, &cfg.image_frame_id),
            status,
            status_message: message,
            minimum_clearance: f64::NAN,
            path_length: f64::NAN,
            safety_margin: cfg.safety_margin_m,
            ..Default::default()
        }
    };
    let publish = move |p: msg::NeedlePlan| {
        tracing::info!(node = NAME, status = p.status, "plan: {}", p.status_message);
        if let Err(e) = plan_pub.publish(&p) {
            tracing::warn!(node = NAME, "publish failed: {e}");
        }
    };

    if cfg.ct_path.trim().is_empty() {
        publish(plan(
            cx.now_ns(),
            msg::NeedlePlan::STATUS_NO_CT as u8,
            "no planning CT configured (parameter ct_path is empty)".into(),
        ));
        return Ok(());
    }

    let cx2 = cx.clone();
    cx.spawn(async move {
        publish(plan(cx2.now_ns(), msg::NeedlePlan::STATUS_PENDING as u8, format!("segmenting {}", cfg.ct_path)));
        let timeout = Duration::from_secs_f64(cfg.service_timeout_s);
        let request = SegmentVessels::Request {
            input_path: cfg.ct_path.clone(),
            output_dir: cfg.output_dir.clone(),
            hu_refinement: true,
            write_surface: true,
            patch_overlap: 0.0,
        };
        let outcome = tokio::time::timeout(timeout, async {
            available.await.map_err(|e| format!("service never became available: {e}"))?;
            let pending = client.request(&request).map_err(|e| format!("request could not be sent: {e}"))?;
            pending.await.map_err(|e| format!("no response: {e}"))
        })
        .await;
        let (status, message) = match outcome {
            Err(_) => (
                msg::NeedlePlan::STATUS_SEGMENTATION_FAILED as u8,
                format!("{} did not answer within {} s", SEGMENT_VESSELS.name, cfg.service_timeout_s),
            ),
            Ok(Err(e)) => (msg::NeedlePlan::STATUS_SEGMENTATION_FAILED as u8, e),
            Ok(Ok(r)) if !r.success => {
                (msg::NeedlePlan::STATUS_SEGMENTATION_FAILED as u8, format!("segmentation failed: {}", r.message))
            }
            Ok(Ok(_)) => (
                msg::NeedlePlan::STATUS_PENDING as u8,
                "segmentation done; clearance-based path planning is not available in this version".into(),
            ),
        };
        publish(plan(cx2.now_ns(), status, message));
    });
    Ok(())
}
