//! What goes to 3D Slicer's OpenIGTLinkIF, as wire bytes, from plain values. Device names are
//! what Slicer shows as node names; see docs/openigtlink.md.

use crate::coords::{ct_m_to_ras_mm, ijk_to_ras_mm, needle_to_tracker_mm, to_rows, tracker_to_ct_ras_mm};
use crate::messages::{encode, image_body, EncodeError, ImageVoxels};
use nalgebra::{Isometry3, Point3};
use openigtlink_rust::protocol::types::{PointElement, PointMessage, StatusMessage, StringMessage, TransformMessage};

/// TRANSFORM: the needle pose in the tracker frame (see [`needle_to_tracker_mm`]).
pub const NEEDLE_DEVICE: &str = "NeedleToTracker";
/// STATUS and STRING: whether the target is valid, and why not.
pub const TARGET_STATUS_DEVICE: &str = "NeedleTarget";
/// TRANSFORM: tracker (mm) to CT RAS (mm).
pub const REGISTRATION_DEVICE: &str = "TrackerToCT";
/// POINT: the plan in CT RAS (mm).
pub const PLAN_DEVICE: &str = "NeedlePlan";
/// IMAGE (on GET_IMAGE with this device name): the vessel label map in CT RAS.
pub const LABEL_MAP_DEVICE: &str = "VesselLabels";

/// OpenIGTLink STATUS codes used.
pub const STATUS_OK: u16 = 1;
/// "not ready": the target exists but must not be used now.
pub const STATUS_NOT_READY: u16 = 13;
pub const STATUS_NOT_FOUND: u16 = 4;

/// The needle target as needle_nav_core knows it (tracker frame, metres).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetValues {
    pub entry_m: Point3<f64>,
    pub target_m: Point3<f64>,
    pub valid: bool,
    /// needle_nav_msgs/NeedleTarget's reason code (0 when valid).
    pub reason_code: u8,
    /// Short label of the reason (`stale_data`), at most 20 characters on the wire.
    pub reason_label: String,
    /// The reason in words; empty when valid.
    pub reason: String,
}

/// The target's messages: the TRANSFORM (only when the pose is defined), the STATUS and the
/// STRING, all stamped with the target's stamp.
pub fn target_messages(t: &TargetValues, stamp_ns: i64) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut out = Vec::with_capacity(3);
    if let Some(m) = needle_to_tracker_mm(&t.entry_m, &t.target_m) {
        out.push(encode(&TransformMessage { matrix: to_rows(&m) }, NEEDLE_DEVICE, stamp_ns)?);
    }
    let status = if t.valid {
        StatusMessage { code: STATUS_OK, subcode: 0, error_name: String::new(), status_string: "valid".into() }
    } else {
        StatusMessage {
            code: STATUS_NOT_READY,
            subcode: t.reason_code as i64,
            error_name: t.reason_label.chars().take(20).collect(),
            status_string: t.reason.clone(),
        }
    };
    out.push(encode(&status, TARGET_STATUS_DEVICE, stamp_ns)?);
    let text = if t.valid { "valid".to_string() } else { format!("invalid: {}", t.reason) };
    out.push(encode(&StringMessage::utf8(text), TARGET_STATUS_DEVICE, stamp_ns)?);
    Ok(out)
}

/// The registration as Slicer's `TrackerToCT` TRANSFORM.
pub fn registration_message(image_to_tracker: &Isometry3<f64>, stamp_ns: i64) -> Result<Vec<u8>, EncodeError> {
    let m = tracker_to_ct_ras_mm(image_to_tracker);
    encode(&TransformMessage { matrix: to_rows(&m) }, REGISTRATION_DEVICE, stamp_ns)
}

/// The plan as a POINT list in CT RAS millimetres: `entry`, `target`, then for each alternative
/// path `alt<N>_entry` (N from 1). Group `plan` for the chosen path, `alternative` for the others.
pub fn plan_message(
    entry_ct_m: &Point3<f64>,
    target_ct_m: &Point3<f64>,
    alternative_entries_ct_m: &[Point3<f64>],
    stamp_ns: i64,
) -> Result<Vec<u8>, EncodeError> {
    let mut points = vec![
        PointElement::new("entry", "plan", ct_m_to_ras_mm(entry_ct_m)),
        PointElement::new("target", "plan", ct_m_to_ras_mm(target_ct_m)),
    ];
    for (i, e) in alternative_entries_ct_m.iter().enumerate() {
        points.push(PointElement::new(format!("alt{}_entry", i + 1), "alternative", ct_m_to_ras_mm(e)));
    }
    encode(&PointMessage { points }, PLAN_DEVICE, stamp_ns)
}

/// A label map (voxel values, i fastest, on its LPS geometry) as an IMAGE in RAS: uint8 when every
/// label fits, else uint16. Labels that are not whole numbers in 0..=65535 are refused.
pub fn label_map_message(
    geometry: &needle_nav_core::volume::Geometry,
    labels: &[f32],
    stamp_ns: i64,
) -> Result<Vec<u8>, EncodeError> {
    if labels.len() != geometry.voxel_count() {
        return Err(EncodeError::Codec(format!(
            "{} labels for a grid of {} voxels",
            labels.len(),
            geometry.voxel_count()
        )));
    }
    if let Some(bad) = labels.iter().find(|v| !(v.fract() == 0.0 && **v >= 0.0 && **v <= 65535.0)) {
        return Err(EncodeError::Codec(format!("label {bad} is not a whole number in 0..=65535")));
    }
    let voxels = if labels.iter().all(|v| *v <= 255.0) {
        ImageVoxels::U8(labels.iter().map(|v| *v as u8).collect())
    } else {
        ImageVoxels::U16(labels.iter().map(|v| *v as u16).collect())
    };
    let body = image_body(geometry.dims, &ijk_to_ras_mm(geometry), &voxels)?;
    Ok(crate::frame::encode_packet("IMAGE", LABEL_MAP_DEVICE, stamp_ns, &body))
}

/// A STATUS answering a GET_IMAGE that cannot be served (no plan yet, unknown device, unreadable file).
pub fn image_refusal(device_name: &str, why: &str, stamp_ns: i64) -> Result<Vec<u8>, EncodeError> {
    let s = StatusMessage {
        code: STATUS_NOT_FOUND,
        subcode: 0,
        error_name: "no image".into(),
        status_string: why.to_string(),
    };
    encode(&s, device_name, stamp_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use crate::messages::{decode, Incoming};

    fn decode_all(wires: &[Vec<u8>]) -> Vec<(String, Incoming)> {
        let mut d = FrameDecoder::new(1 << 24);
        for w in wires {
            d.push(w);
        }
        let mut out = Vec::new();
        while let Some(p) = d.next_packet() {
            let p = p.unwrap();
            if p.type_name == "IMAGE" {
                continue;
            }
            out.push((p.device_name.clone(), decode(&p).unwrap()));
        }
        out
    }

    #[test]
    fn an_invalid_target_says_why_in_status_and_string() {
        let t = TargetValues {
            entry_m: Point3::new(0.0, 0.0, 0.1),
            target_m: Point3::new(0.01, 0.02, 0.03),
            valid: false,
            reason_code: 2,
            reason_label: "stale_data".into(),
            reason: "newest sample 0.3 s old".into(),
        };
        let got = decode_all(&target_messages(&t, 1).unwrap());
        assert_eq!(got.len(), 3);
        let Incoming::Transform(tr) = &got[0].1 else { panic!() };
        assert_eq!((tr.matrix[0][3], tr.matrix[1][3], tr.matrix[2][3]), (10.0, 20.0, 30.0));
        let Incoming::Status(s) = &got[1].1 else { panic!() };
        assert_eq!((s.code, s.subcode, s.error_name.as_str()), (STATUS_NOT_READY, 2, "stale_data"));
        let Incoming::String(m) = &got[2].1 else { panic!() };
        assert_eq!(m.string, "invalid: newest sample 0.3 s old");
    }

    #[test]
    fn plan_points_are_ras_millimetres() {
        let w = plan_message(
            &Point3::new(0.1, 0.2, 0.3),
            &Point3::new(-0.01, 0.0, 0.05),
            &[Point3::new(0.0, 0.001, 0.0)],
            1,
        )
        .unwrap();
        let got = decode_all(&[w]);
        let Incoming::Point(p) = &got[0].1 else { panic!() };
        let names: Vec<&str> = p.points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["entry", "target", "alt1_entry"]);
        assert_eq!(p.points[0].position, [-100.0, -200.0, 300.0]);
        assert_eq!(p.points[2].position, [0.0, -1.0, 0.0]);
    }

    #[test]
    fn label_maps_refuse_fractions_and_wrong_sizes() {
        let g = needle_nav_core::volume::Geometry::axial([2, 1, 1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        assert!(label_map_message(&g, &[0.0, 1.5], 0).is_err());
        assert!(label_map_message(&g, &[0.0], 0).is_err());
        assert_eq!(label_map_message(&g, &[0.0, 3.0], 0).unwrap().len(), 58 + 72 + 2);
        assert_eq!(label_map_message(&g, &[0.0, 300.0], 0).unwrap().len(), 58 + 72 + 4);
    }
}
