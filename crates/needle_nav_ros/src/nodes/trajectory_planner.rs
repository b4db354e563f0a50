//! trajectory_planner: asks vessel_segmentation for the planning CT's vessels, plans the
//! straight path with the largest clearance from vessels and bone, and publishes the plan
//! (latched). The service client handles absence, timeouts and errors; every outcome is a
//! plan message with its status. The planning CT may be a PACS series (ct_series_instance_uid):
//! it is retrieved off the executor into output_dir/pacs_input/ first, and a PACS that fails
//! is a plan with STATUS_NO_CT and the PACS's reason.

use super::{config, lock, publisher};
use crate::context::{NodeContext, NodeError, RosContext};
use crate::convert;
use crate::msg;
use crate::qos;
use crate::srv::SegmentVessels;
use needle_nav_core::interfaces::{PLAN, SEGMENT_VESSELS, VIZ_PLAN};
use needle_nav_nodes::config::TrajectoryPlannerConfig;
use needle_nav_nodes::diagnostics::PlannerHealth;
use needle_nav_planning::pacs_ct::{pacs_series, retrieve_planning_input};
use needle_nav_planning::plan_files::{plan_from_files, planner_options, planning_input, DISPLAY_CELL_MM};
use needle_nav_planning::{Layer, LayerSummary, PathTerms, PlanError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "trajectory_planner";

pub fn start(node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    // Only the diagnostics thresholds of this node change at run time; the diagnostics take them on.
    let (cfg, diagnostics_parameters): (TrajectoryPlannerConfig, _) = config(node, cx, NAME)?;
    let plan_pub = publisher::<msg::NeedlePlan>(node, cx, PLAN)?;
    let viz_pub = publisher::<r2r::visualization_msgs::msg::MarkerArray>(node, cx, VIZ_PLAN)?;
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
    let health = Arc::new(Mutex::new(PlannerHealth::new(&cfg.diagnostics, &cx.name)));
    crate::diagnostics::start(node, cx, health.clone(), diagnostics_parameters, |h, c: &TrajectoryPlannerConfig| {
        h.set_thresholds(&c.diagnostics)
    })?;
    let publish = move |p: msg::NeedlePlan| {
        tracing::info!(node = NAME, status = p.status, "plan: {}", p.status_message);
        let now = convert::time_to_ns(&p.header.stamp);
        match p.status {
            s if s == msg::NeedlePlan::STATUS_PENDING as u8 => lock(&health).started(now),
            s if s == msg::NeedlePlan::STATUS_OK as u8 => lock(&health).finished(now, Ok(())),
            _ => lock(&health).finished(now, Err(p.status_message.clone())),
        }
        if let Err(e) = plan_pub.publish(&p) {
            tracing::warn!(node = NAME, "publish failed: {e}");
        }
    };

    let from_pacs = pacs_series(&cfg);
    let input = match planning_input(&cfg) {
        // Configuration validation refuses a PACS series with ct_path / ct_case_dir.
        Ok(None) if from_pacs.is_some() => None,
        Ok(Some(i)) => Some(i),
        Ok(None) => {
            publish(plan(
                cx.now_ns(),
                msg::NeedlePlan::STATUS_NO_CT as u8,
                "no planning CT configured (parameters ct_case_dir, ct_path and ct_series_instance_uid are empty)"
                    .into(),
            ));
            return Ok(());
        }
        Err(e) => {
            publish(plan(cx.now_ns(), msg::NeedlePlan::STATUS_NO_CT as u8, e));
            return Ok(());
        }
    };

    let cx2 = cx.clone();
    cx.spawn(async move {
        // Lifecycle: the planner acts (asks for the segmentation) only once active.
        cx2.wait_active().await;
        let no_ct = msg::NeedlePlan::STATUS_NO_CT as u8;
        let input = match (input, from_pacs) {
            (Some(input), _) => input,
            (None, Some(series)) => {
                let m = format!("retrieving series {} from the PACS at {}", series.series_instance_uid, cfg.pacs.address());
                publish(plan(cx2.now_ns(), msg::NeedlePlan::STATUS_PENDING as u8, m));
                let retrieve_cfg = cfg.clone();
                let retrieved =
                    tokio::task::spawn_blocking(move || retrieve_planning_input(&retrieve_cfg, &series)).await;
                match retrieved {
                    Err(e) => return publish(plan(cx2.now_ns(), no_ct, format!("PACS retrieval stopped: {e}"))),
                    Ok(Err(e)) => return publish(plan(cx2.now_ns(), no_ct, e)),
                    Ok(Ok((input, got))) => {
                        tracing::info!(node = NAME, images = got.files.len(), seconds = got.seconds, "planning CT retrieved");
                        input
                    }
                }
            }
            (None, None) => return,
        };
        let ct = input.ct_path.display().to_string();
        publish(plan(cx2.now_ns(), msg::NeedlePlan::STATUS_PENDING as u8, format!("segmenting {ct}")));
        let timeout = Duration::from_secs_f64(cfg.service_timeout_s);
        let request = SegmentVessels::Request {
            input_path: ct.clone(),
            output_dir: cfg.output_dir.clone(),
            hu_refinement: true,
            write_surface: true,
            patch_overlap: 0.0,
            ..Default::default()
        };
        let outcome = tokio::time::timeout(timeout, async {
            available.await.map_err(|e| format!("service never became available: {e}"))?;
            let pending = client.request(&request).map_err(|e| format!("request could not be sent: {e}"))?;
            pending.await.map_err(|e| format!("no response: {e}"))
        })
        .await;
        let failed = msg::NeedlePlan::STATUS_SEGMENTATION_FAILED as u8;
        let response = match outcome {
            Err(_) => {
                let m = format!("{} did not answer within {} s", SEGMENT_VESSELS.name, cfg.service_timeout_s);
                return publish(plan(cx2.now_ns(), failed, m));
            }
            Ok(Err(e)) => return publish(plan(cx2.now_ns(), failed, e)),
            Ok(Ok(r)) if !r.success => {
                return publish(plan(cx2.now_ns(), failed, format!("segmentation failed: {}", r.message)));
            }
            Ok(Ok(r)) => r,
        };
        let options = planner_options(&cfg);
        let labels = std::path::PathBuf::from(&response.label_map_path);
        let layers_dir = std::path::PathBuf::from(&cfg.output_dir);
        let planned = {
            let input = input.clone();
            tokio::task::spawn_blocking(move || {
                plan_from_files(&input, Some(&labels), &options, 1 << 31, Some(&layers_dir))
            })
            .await
        };
        let mut p = plan(cx2.now_ns(), msg::NeedlePlan::STATUS_OK as u8, String::new());
        p.lesion_radius = input.lesion_radius_mm / 1000.0;
        p.ct_path = ct.clone();
        p.label_map_path = response.label_map_path.clone();
        p.vessel_classes = response.class_names.clone();
        p.vessel_volumes = response.volumes_ml.iter().map(|ml| ml * 1e-6).collect();
        p.instrument_length = cfg.instrument_length_m;
        let mut vessel_points = Vec::new();
        match planned {
            Err(e) => {
                p.status = msg::NeedlePlan::STATUS_NO_CT as u8;
                p.status_message = format!("planning stopped: {e}");
            }
            Ok(Err(e)) => {
                p.status = msg::NeedlePlan::STATUS_NO_CT as u8;
                p.status_message = e;
            }
            Ok(Ok(run)) => {
                vessel_points = run.vessel_points;
                fill_layers(&mut p, &run.planning.layers, &run.layer_files, run.planning.anatomy.fissures_detected);
                let network = run.planning.layers.iter().find(|l| l.layer == Layer::NetworkVessels);
                p.lesion_voxels_ignored = network.map_or(0, |l| l.lesion_voxels_ignored as u64);
                match run.planning.result {
                    Err(e) => {
                        p.status = match e {
                            PlanError::TargetInObstacle(_) => msg::NeedlePlan::STATUS_TARGET_IN_OBSTACLE as u8,
                            PlanError::TargetOutsideImage(_) | PlanError::TargetOutsideBody(_) => {
                                msg::NeedlePlan::STATUS_NO_CT as u8
                            }
                            _ => msg::NeedlePlan::STATUS_NO_SAFE_PATH as u8,
                        };
                        p.status_message = e.to_string();
                        p.refused_layer = e.refused_layer().map(|l| l.name().to_string()).unwrap_or_default();
                        // The best path found is reported for the user, with the refusing status.
                        if let PlanError::NoSafePath { best, .. } = &e {
                            fill_path(&mut p, best);
                        }
                    }
                    Ok(plan) => {
                        fill_path(&mut p, &plan.chosen);
                        p.alternatives = plan.alternatives.iter().map(candidate_msg).collect();
                        let c = &plan.chosen;
                        p.status_message = format!(
                            "path of {:.1} mm at {:.0}° from the approach direction, {:.1} mm from the nearest obstacle \
                             ({}), {:.1} mm of lung, {} pleural crossing(s); best of {} passing of {} tried",
                            c.length_mm,
                            c.approach_angle_deg,
                            c.min_clearance_mm,
                            c.nearest_layer.map_or("none", |l| l.name()),
                            c.lung_length_mm,
                            c.pleural_crossings,
                            plan.passing,
                            plan.candidates,
                        );
                    }
                }
            }
        }
        let has_path = p.path_length.is_finite();
        let view = crate::viz::PlanView {
            target: nalgebra::Point3::from(input.target_mm.coords / 1000.0),
            entry: has_path.then(|| convert::point_from_msg(&p.entry_point)),
            lesion_radius_m: p.lesion_radius,
            safe: p.status == msg::NeedlePlan::STATUS_OK as u8,
            status: p.status_message.clone(),
            alternatives: p.alternatives.iter().map(|a| convert::point_from_msg(&a.entry_point)).collect(),
        };
        let viz = crate::viz::plan(
            convert::time_to_ns(&p.header.stamp),
            &cfg.image_frame_id,
            &view,
            &vessel_points,
            DISPLAY_CELL_MM / 1000.0,
        );
        if let Err(e) = viz_pub.publish(&viz) {
            tracing::warn!(node = NAME, "plan markers not published: {e}");
        }
        publish(p);
    });
    Ok(())
}

/// The layers the plan was checked against, in SI units.
fn fill_layers(p: &mut msg::NeedlePlan, layers: &[LayerSummary], files: &[(String, PathBuf)], fissures_detected: bool) {
    for l in layers {
        let name = l.layer.name();
        p.obstacle_layers.push(name.to_string());
        let file = files.iter().find(|(n, _)| n == name).map(|(_, f)| f.display().to_string());
        p.obstacle_layer_paths.push(file.unwrap_or_default());
        p.obstacle_volumes.push(l.volume_ml * 1e-6);
        p.layer_margins.push(l.margin_mm / 1000.0);
    }
    p.fissures_detected = fissures_detected;
}

/// The chosen (or best refused) path into the plan's own fields.
fn fill_path(p: &mut msg::NeedlePlan, path: &PathTerms) {
    p.entry_point = convert::point_msg(&(nalgebra::Point3::from(path.entry_mm) / 1000.0));
    p.target_point = convert::point_msg(&(nalgebra::Point3::from(path.target_mm) / 1000.0));
    p.minimum_clearance = path.min_clearance_mm / 1000.0;
    p.path_length = path.length_mm / 1000.0;
    p.chosen = candidate_msg(path);
}

fn candidate_msg(path: &PathTerms) -> msg::NeedlePathCandidate {
    let d = path.direction;
    msg::NeedlePathCandidate {
        entry_point: convert::point_msg(&(nalgebra::Point3::from(path.entry_mm) / 1000.0)),
        direction: r2r::geometry_msgs::msg::Vector3 { x: d[0], y: d[1], z: d[2] },
        path_length: path.length_mm / 1000.0,
        approach_angle: path.approach_angle_deg.to_radians(),
        layer_clearances: path.clearance_mm.iter().map(|(_, c)| c / 1000.0).collect(),
        lung_length: path.lung_length_mm / 1000.0,
        pleural_crossings: path.pleural_crossings,
        fissure_crossings: path.fissure_crossings,
        pleural_angle: path.pleural_angle_deg.map_or(f64::NAN, f64::to_radians),
        rib_clearance: path.rib_clearance_mm / 1000.0,
        reaches_skin: path.reaches_skin,
        cost: if path.passes() { path.cost } else { f64::NAN },
        passes: path.passes(),
        refusals: path.refusals.iter().map(|r| r.to_string()).collect(),
        refused_layer: path.refused_layer().map(|l| l.name().to_string()).unwrap_or_default(),
    }
}
