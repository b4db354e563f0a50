//! Conversions between messages and core types. SI units on both sides.

use super::msg;
use nalgebra::{Isometry3, Point3, Vector3};
use needle_nav_core::tracking::{MarkerObservation, TrackerSample};
use needle_nav_sim::tracker_sim::GroundTruth;
use r2r::builtin_interfaces::msg::Time;
use r2r::geometry_msgs::msg::{Point, Quaternion, Transform, Vector3 as VectorMsg};
use r2r::std_msgs::msg::Header;

pub fn time_to_ns(t: &Time) -> i64 {
    t.sec as i64 * 1_000_000_000 + t.nanosec as i64
}

pub fn ns_to_time(ns: i64) -> Time {
    Time { sec: ns.div_euclid(1_000_000_000) as i32, nanosec: ns.rem_euclid(1_000_000_000) as u32 }
}

pub fn header(stamp_ns: i64, frame_id: &str) -> Header {
    Header { stamp: ns_to_time(stamp_ns), frame_id: frame_id.to_string() }
}

pub fn point_msg(p: &Point3<f64>) -> Point {
    Point { x: p.x, y: p.y, z: p.z }
}

pub fn point_from_msg(p: &Point) -> Point3<f64> {
    Point3::new(p.x, p.y, p.z)
}

pub fn vector_msg(v: &Vector3<f64>) -> VectorMsg {
    VectorMsg { x: v.x, y: v.y, z: v.z }
}

pub fn transform_msg(t: &Isometry3<f64>) -> Transform {
    let q = t.rotation.quaternion();
    Transform {
        translation: vector_msg(&t.translation.vector),
        rotation: Quaternion { x: q.i, y: q.j, z: q.k, w: q.w },
    }
}

pub fn transform_from_msg(t: &Transform) -> Isometry3<f64> {
    let q = &t.rotation;
    Isometry3::from_parts(
        nalgebra::Translation3::new(t.translation.x, t.translation.y, t.translation.z),
        nalgebra::UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q.w, q.x, q.y, q.z)),
    )
}

/// A registration that can be used (OK, or OK after excluding outliers).
pub fn registration_usable(r: &msg::LesionRegistration) -> bool {
    r.status == msg::LesionRegistration::STATUS_OK as u8
        || r.status == msg::LesionRegistration::STATUS_OUTLIER_EXCLUDED as u8
}

pub fn sample_msg(s: &TrackerSample, frame_id: &str) -> msg::TrackedMarkerArray {
    msg::TrackedMarkerArray {
        header: header(s.stamp_ns, frame_id),
        sequence: s.sequence,
        markers: s
            .markers
            .iter()
            .map(|m| msg::TrackedMarker {
                id: m.id,
                position: point_msg(&m.position),
                visible: m.visible,
                quality: m.quality,
            })
            .collect(),
    }
}

pub fn sample_from_msg(m: &msg::TrackedMarkerArray) -> TrackerSample {
    TrackerSample {
        sequence: m.sequence,
        stamp_ns: time_to_ns(&m.header.stamp),
        markers: m
            .markers
            .iter()
            .map(|k| MarkerObservation {
                id: k.id,
                position: point_from_msg(&k.position),
                visible: k.visible,
                quality: k.quality,
            })
            .collect(),
    }
}

pub fn ground_truth_msg(g: &GroundTruth, frame_id: &str) -> msg::PhantomGroundTruth {
    msg::PhantomGroundTruth {
        header: header(g.stamp_ns, frame_id),
        sequence: g.sequence,
        lesion_position: point_msg(&g.lesion_tracker),
        image_to_tracker: transform_msg(&g.ct_to_tracker),
        breathing_phase: g.breathing_phase,
        breathing_amplitude: g.inhale_fraction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion};

    #[test]
    fn time_round_trips_including_negative() {
        for ns in [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1, -1_500_000_000] {
            assert_eq!(time_to_ns(&ns_to_time(ns)), ns);
            assert!(ns_to_time(ns).nanosec < 1_000_000_000);
        }
    }

    #[test]
    fn sample_round_trips_through_the_message() {
        let s = TrackerSample {
            sequence: 42,
            stamp_ns: 5_000_000_123,
            markers: vec![MarkerObservation {
                id: 3,
                position: Point3::new(0.1, -0.2, 0.3),
                visible: false,
                quality: 1e-4,
            }],
        };
        assert_eq!(sample_from_msg(&sample_msg(&s, "tracker")), s);
    }

    #[test]
    fn transform_message_has_a_unit_quaternion_matching_the_rotation() {
        let iso =
            Isometry3::from_parts(Translation3::new(1.0, 2.0, 3.0), UnitQuaternion::from_euler_angles(0.1, -0.4, 1.2));
        let back = transform_from_msg(&transform_msg(&iso));
        let p = Point3::new(0.3, -0.7, 0.2);
        approx::assert_relative_eq!(iso * p, back * p, epsilon = 1e-12);
    }
}
