//! rviz markers (`visualization_msgs/MarkerArray`) built from plain data: tracked markers
//! coloured by class, and the plan in the CT frame (vessel surface coloured by class, lesion,
//! entry, target, needle path). Colours match the report picture and the PLY surface.

use crate::convert;
use nalgebra::Point3;
use needle_nav_segmentation::outputs::{VesselPoint, CLASS_COLOURS};
pub use needle_nav_segmentation::report::MarkerRole;
#[cfg(test)]
use needle_nav_segmentation::report::{CORRECTION_RGB, REGISTRATION_RGB};
use r2r::visualization_msgs::msg::{Marker, MarkerArray};

/// Sphere diameter of a tracked marker [m].
const MARKER_DIAMETER_M: f64 = 0.008;

fn base(stamp_ns: i64, frame: &str, ns: &str, id: i32, type_: i32, rgb: [f32; 3]) -> Marker {
    let mut m = Marker::default();
    m.header = convert::header(stamp_ns, frame);
    m.ns = ns.into();
    m.id = id;
    m.type_ = type_;
    m.action = Marker::ADD as i32;
    m.pose.orientation.w = 1.0;
    (m.color.r, m.color.g, m.color.b, m.color.a) = (rgb[0], rgb[1], rgb[2], 1.0);
    m
}

fn sphere(stamp_ns: i64, frame: &str, ns: &str, id: i32, p: &Point3<f64>, diameter_m: f64, rgb: [f32; 3]) -> Marker {
    let mut m = base(stamp_ns, frame, ns, id, Marker::SPHERE as i32, rgb);
    m.pose.position = convert::point_msg(p);
    (m.scale.x, m.scale.y, m.scale.z) = (diameter_m, diameter_m, diameter_m);
    m
}

fn text(stamp_ns: i64, frame: &str, ns: &str, id: i32, p: &Point3<f64>, label: String) -> Marker {
    let mut m = base(stamp_ns, frame, ns, id, Marker::TEXT_VIEW_FACING as i32, [1.0, 1.0, 1.0]);
    m.pose.position = convert::point_msg(p);
    m.scale.z = 0.01;
    m.text = label;
    m
}

/// Tracked markers (id, position in `frame`, role) as coloured spheres with their ids.
pub fn marker_classes(stamp_ns: i64, frame: &str, markers: &[(u32, Point3<f64>, MarkerRole)]) -> MarkerArray {
    let mut out = Vec::with_capacity(markers.len() * 2);
    for (id, p, role) in markers {
        out.push(sphere(stamp_ns, frame, "marker_classes", *id as i32, p, MARKER_DIAMETER_M, role.rgb()));
        let above = p + nalgebra::Vector3::new(0.0, 0.0, 0.012);
        out.push(text(stamp_ns, frame, "marker_ids", *id as i32, &above, format!("{id}")));
    }
    MarkerArray { markers: out }
}

/// What the plan view shows, in the CT frame [m].
#[derive(Debug, Clone, PartialEq)]
pub struct PlanView {
    pub target: Point3<f64>,
    /// None when no path was found.
    pub entry: Option<Point3<f64>>,
    pub lesion_radius_m: f64,
    /// A path that keeps the safety margin is drawn green, a refused best path red.
    pub safe: bool,
    pub status: String,
    /// Entries of the runner-up paths (drawn thin and grey, so the chosen one stands out).
    pub alternatives: Vec<Point3<f64>>,
}

/// The plan: vessel surface per class (cube lists), lesion, entry, target, needle path and status.
pub fn plan(stamp_ns: i64, frame: &str, view: &PlanView, vessels: &[VesselPoint], cell_m: f64) -> MarkerArray {
    // Start from a clean slate: a new plan replaces everything of the previous one.
    let mut clear = Marker::default();
    clear.header = convert::header(stamp_ns, frame);
    clear.action = Marker::DELETEALL as i32;
    let mut out = vec![clear];
    for label in 1..CLASS_COLOURS.len() as u8 {
        let [r, g, b] = CLASS_COLOURS[label as usize].map(|c| c as f32 / 255.0);
        let mut m = base(stamp_ns, frame, "vessels", label as i32, Marker::CUBE_LIST as i32, [r, g, b]);
        m.color.a = 0.6;
        (m.scale.x, m.scale.y, m.scale.z) = (cell_m, cell_m, cell_m);
        m.points = vessels
            .iter()
            .filter(|v| v.label == label)
            .map(|v| convert::point_msg(&Point3::from(v.position_m)))
            .collect();
        if !m.points.is_empty() {
            out.push(m);
        }
    }
    let mut lesion =
        sphere(stamp_ns, frame, "lesion", 0, &view.target, (2.0 * view.lesion_radius_m).max(0.004), [0.8, 0.2, 0.8]);
    lesion.color.a = 0.5;
    out.push(lesion);
    out.push(sphere(stamp_ns, frame, "target", 0, &view.target, 0.004, [0.9, 0.1, 0.1]));
    if let Some(entry) = &view.entry {
        out.push(sphere(stamp_ns, frame, "entry", 0, entry, 0.006, [0.1, 0.9, 0.1]));
        let rgb = if view.safe { [0.1, 0.9, 0.1] } else { [0.9, 0.1, 0.1] };
        let mut path = base(stamp_ns, frame, "needle_path", 0, Marker::LINE_STRIP as i32, rgb);
        path.scale.x = 0.002;
        path.points = vec![convert::point_msg(entry), convert::point_msg(&view.target)];
        out.push(path);
    }
    for (i, alt) in view.alternatives.iter().enumerate() {
        let mut path = base(stamp_ns, frame, "alternative_paths", i as i32, Marker::LINE_STRIP as i32, [0.6, 0.6, 0.6]);
        path.scale.x = 0.001;
        path.points = vec![convert::point_msg(alt), convert::point_msg(&view.target)];
        out.push(path);
    }
    let above = view.target + nalgebra::Vector3::new(0.0, 0.0, 0.03);
    out.push(text(stamp_ns, frame, "plan_status", 0, &above, view.status.clone()));
    MarkerArray { markers: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_classes_colour_by_role_and_label_each_marker() {
        let a = marker_classes(
            5,
            "tracker",
            &[(3, Point3::new(0.1, 0.0, 0.0), MarkerRole::Registration), (7, Point3::origin(), MarkerRole::Correction)],
        );
        assert_eq!(a.markers.len(), 4);
        let s = &a.markers[0];
        assert_eq!((s.id, s.type_, s.header.frame_id.as_str()), (3, Marker::SPHERE as i32, "tracker"));
        assert_eq!([s.color.r, s.color.g, s.color.b], REGISTRATION_RGB);
        assert_eq!(a.markers[1].text, "3");
        assert_eq!([a.markers[2].color.r, a.markers[2].color.g, a.markers[2].color.b], CORRECTION_RGB);
    }

    #[test]
    fn the_plan_draws_vessels_by_class_and_the_path_from_entry_to_target() {
        let vessels = [
            VesselPoint { position_m: [0.0, 0.0, 0.0], label: 1 },
            VesselPoint { position_m: [0.01, 0.0, 0.0], label: 1 },
            VesselPoint { position_m: [0.0, 0.02, 0.0], label: 3 },
        ];
        let view = PlanView {
            target: Point3::new(0.0, 0.0, 0.05),
            entry: Some(Point3::new(0.0, -0.08, 0.05)),
            lesion_radius_m: 0.01,
            safe: true,
            status: "ok".into(),
            alternatives: vec![Point3::new(0.01, -0.08, 0.05)],
        };
        let a = plan(1, "ct", &view, &vessels, 0.004);
        let alt = a.markers.iter().filter(|m| m.ns == "alternative_paths").collect::<Vec<_>>();
        assert_eq!((alt.len(), alt[0].points[0].x, alt[0].points[1].z), (1, 0.01, 0.05));
        assert_eq!(a.markers[0].action, Marker::DELETEALL as i32);
        let by_ns = |ns: &str| a.markers.iter().filter(|m| m.ns == ns).collect::<Vec<_>>();
        let v = by_ns("vessels");
        assert_eq!(v.len(), 2, "artery and aorta; no empty vein list");
        assert_eq!(v[0].points.len(), 2);
        assert_eq!((v[1].id, v[1].color.r), (3, 240.0 / 255.0));
        let path = by_ns("needle_path");
        assert_eq!(path[0].points.len(), 2);
        assert_eq!((path[0].points[0].y, path[0].points[1].z), (-0.08, 0.05));
        assert!((by_ns("lesion")[0].scale.x - 0.02).abs() < 1e-12);
        let refused = plan(1, "ct", &PlanView { entry: None, safe: false, alternatives: vec![], ..view }, &[], 0.004);
        assert!(refused
            .markers
            .iter()
            .all(|m| m.ns != "needle_path" && m.ns != "vessels" && m.ns != "alternative_paths"));
    }
}
