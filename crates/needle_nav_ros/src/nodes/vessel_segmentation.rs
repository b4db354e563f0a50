//! vessel_segmentation: serves needle_nav/segment_vessels. The network runs on the service's
//! worker thread (one request at a time, later ones queued or refused as configured); this
//! node converts requests and outcomes. Every request gets a response, errors included. A
//! request for a PACS series is retrieved (and its DICOM SEG stored) by the service's worker,
//! never on this node's executor.

use super::{config, lock};
use crate::context::{NodeContext, NodeError, RosContext};
use crate::qos;
use crate::srv::SegmentVessels;
use futures::StreamExt;
use needle_nav_core::interfaces::SEGMENT_VESSELS;
use needle_nav_nodes::config::VesselSegmentationConfig;
use needle_nav_nodes::diagnostics::{ModelState, SegmentationHealth};
use needle_nav_segmentation::pipeline::{default_model_path, SegmentationResult};
use needle_nav_segmentation::service::{Outcome, PacsSeries, SegmentRequest, SegmentationService, ServiceLimits};
use needle_nav_segmentation::{OnnxVesselModel, VesselSegmenter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const NAME: &str = "vessel_segmentation";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    // Only the diagnostics thresholds of this node change at run time; the diagnostics take them on.
    let (cfg, diagnostics_parameters): (VesselSegmentationConfig, _) = config(node, cx, NAME)?;
    let model_path =
        if cfg.model_path.trim().is_empty() { default_model_path() } else { PathBuf::from(&cfg.model_path) };
    let threads = cfg.threads as usize;
    let limits = ServiceLimits {
        max_input_voxels: cfg.max_input_voxels,
        queue_when_busy: cfg.queue_when_busy,
        max_queue: cfg.max_queue as usize,
        overwrite_results: cfg.overwrite_results,
        skip_unreadable_slices: cfg.skip_unreadable_slices,
        scheduling: cfg.worker_scheduling,
        pacs: cfg.pacs.clone(),
    };
    if cfg.pacs.is_configured() {
        tracing::info!(node = NAME, pacs = %cfg.pacs.address(), "requests may name a series in this PACS");
    }
    tracing::info!(node = NAME, model = %model_path.display(), "loading the vessel model");
    // A running segmentation ends once the service is dropped and its job is done: the process waits for it.
    cx.wait_before_exit("a vessel segmentation", needle_nav_segmentation::service::wait_for_workers);
    let shown_path = model_path.display().to_string();
    let health = Arc::new(Mutex::new(SegmentationHealth::new(
        &cfg.diagnostics,
        ModelState::Loading { path: shown_path.clone() },
        &cx.name,
    )));
    crate::diagnostics::start(node, cx, health.clone(), diagnostics_parameters, |h, c: &VesselSegmentationConfig| {
        h.set_thresholds(&c.diagnostics)
    })?;
    let loader_health = health.clone();
    let service = SegmentationService::start(limits, move || {
        let loaded = OnnxVesselModel::load(&model_path, threads).map(VesselSegmenter::new).map_err(|e| e.to_string());
        let state = match &loaded {
            Ok(_) => ModelState::Loaded { path: shown_path },
            Err(reason) => ModelState::Unavailable { path: shown_path, reason: reason.clone() },
        };
        lock(&loader_health).model(state);
        loaded
    });
    let mut requests = node
        .create_service::<SegmentVessels::Service>(SEGMENT_VESSELS.name, qos::profile(SEGMENT_VESSELS.qos))
        .ros(format!("cannot serve {}", SEGMENT_VESSELS.name))?;
    let cx2 = cx.clone();
    cx.spawn(async move {
        while let Some(req) = requests.next().await {
            if !cx2.is_active() {
                // Lifecycle: only an active node takes work.
                let message = format!("{NAME} is not active: a lifecycle manager must activate it first");
                tracing::warn!(node = NAME, "refused: {message}");
                respond(req, SegmentVessels::Response { message, ..Default::default() });
                continue;
            }
            let r = &req.message;
            let pacs_series =
                (!r.series_instance_uid.is_empty() || !r.study_instance_uid.is_empty()).then(|| PacsSeries {
                    study_instance_uid: r.study_instance_uid.clone(),
                    series_instance_uid: r.series_instance_uid.clone(),
                });
            let request = SegmentRequest {
                input_path: r.input_path.clone(),
                pacs_series,
                store_seg_to_pacs: r.store_seg_to_pacs,
                output_dir: r.output_dir.clone(),
                hu_refinement: r.hu_refinement,
                write_surface: r.write_surface,
                patch_overlap: r.patch_overlap,
            };
            match &request.pacs_series {
                Some(p) => tracing::info!(
                    node = NAME,
                    study = %p.study_instance_uid,
                    series = %p.series_instance_uid,
                    pending = service.pending(),
                    "request for a PACS series"
                ),
                None => {
                    tracing::info!(node = NAME, input = %request.input_path, pending = service.pending(), "request")
                }
            }
            match service.submit(request) {
                Err(refusal) => {
                    lock(&health).refused();
                    let response = SegmentVessels::Response { message: refusal.to_string(), ..Default::default() };
                    tracing::warn!(node = NAME, "refused: {}", response.message);
                    respond(req, response);
                }
                Ok(outcome) => {
                    lock(&health).accepted();
                    let health = health.clone();
                    // Answer when the worker is done, without holding up later requests.
                    tokio::spawn(async move {
                        let outcome: Outcome =
                            outcome.await.unwrap_or_else(|_| Err("the segmentation worker stopped".into()));
                        lock(&health).answered(outcome.is_ok());
                        respond(req, to_response(outcome));
                    });
                }
            }
        }
    });
    Ok(())
}

fn respond(req: r2r::ServiceRequest<SegmentVessels::Service>, response: SegmentVessels::Response) {
    if let Err(e) = req.respond(response) {
        tracing::warn!(node = NAME, "could not send the response: {e}");
    }
}

fn to_response(outcome: Outcome) -> SegmentVessels::Response {
    match outcome {
        Err(message) => {
            tracing::warn!(node = NAME, "segmentation failed: {message}");
            SegmentVessels::Response { message, ..Default::default() }
        }
        Ok(r) => {
            let message = summary_message(&r);
            tracing::info!(node = NAME, "{message}");
            let path = |p: &std::path::Path| p.display().to_string();
            SegmentVessels::Response {
                success: true,
                message,
                label_map_path: path(&r.label_map_path),
                summary_json_path: path(&r.summary_json_path),
                surface_path: r.surface_path.as_deref().map(path).unwrap_or_default(),
                dicom_seg_path: r.dicom_seg_path.as_deref().map(path).unwrap_or_default(),
                dicom_seg_sop_instance_uid: r.dicom_seg_sop_instance_uid.clone().unwrap_or_default(),
                stored_seg_to: r.stored_seg_to.clone().unwrap_or_default(),
                class_names: r.class_names.clone(),
                voxel_counts: r.voxel_counts.clone(),
                volumes_ml: r.volumes_ml.clone(),
                stage_names: r.stages.iter().map(|s| s.stage.clone()).collect(),
                stage_seconds: r.stages.iter().map(|s| s.seconds).collect(),
                total_seconds: r.total_seconds,
            }
        }
    }
}

fn summary_message(r: &SegmentationResult) -> String {
    let volumes: Vec<String> =
        r.class_names.iter().zip(&r.volumes_ml).skip(1).map(|(n, v)| format!("{n} {v:.1} ml")).collect();
    let mut m = format!(
        "segmented {} in {:.1} s: {}; {} phase; refinement relabelled {} voxels",
        r.input,
        r.total_seconds,
        volumes.join(", "),
        if r.contrast_enhanced { "contrast" } else { "plain" },
        r.refined_voxels
    );
    for w in &r.warnings {
        m.push_str("; warning: ");
        m.push_str(w);
    }
    m
}
