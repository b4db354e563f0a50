//! vessel_segmentation: serves needle_nav/segment_vessels. Requests are handled one at a
//! time in arrival order; every request gets a response, errors included.

use super::config;
use crate::config::VesselSegmentationConfig;
use crate::core::segmentation_request;
use crate::interfaces::SEGMENT_VESSELS;
use crate::ros::qos;
use crate::ros::runtime::{NodeContext, NodeError, RosContext};
use crate::ros::srv::SegmentVessels;
use futures::StreamExt;

const NAME: &str = "vessel_segmentation";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    let _cfg: VesselSegmentationConfig = config(node, NAME)?;
    let mut requests = node
        .create_service::<SegmentVessels::Service>(SEGMENT_VESSELS.name, qos::profile(SEGMENT_VESSELS.qos))
        .ros(format!("cannot serve {}", SEGMENT_VESSELS.name))?;
    cx.spawn(async move {
        while let Some(req) = requests.next().await {
            let started = std::time::Instant::now();
            let r = &req.message;
            let mut response = SegmentVessels::Response::default();
            match segmentation_request::validate(&r.input_path, &r.output_dir, r.patch_overlap) {
                Err(e) => {
                    response.message = format!("bad request: {e}");
                }
                Ok(_input) => {
                    response.message =
                        "the vessel segmentation pipeline is not available in this version; request was valid".into();
                }
            }
            response.success = false;
            response.total_seconds = started.elapsed().as_secs_f64();
            tracing::info!(node = NAME, input = %r.input_path, success = response.success, "{}", response.message);
            if let Err(e) = req.respond(response) {
                tracing::warn!(node = NAME, "could not send the response: {e}");
            }
        }
    });
    Ok(())
}
