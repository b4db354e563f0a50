//! Tracker messages as named positions in metres (tracker frame; the tracker's millimetres
//! divided by 1000, axes unchanged).

use crate::coords::{mm_to_m, translation_m};
use crate::link::Received;
use crate::messages::Incoming;
use nalgebra::Point3;

/// One tool, marker or point the tracker reported.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceObservation {
    pub name: String,
    pub position_m: Point3<f64>,
}

/// The positions in a tracker message, and whether the message is a whole tracker frame (TDATA
/// and POINT carry every tool of a frame in one message; TRANSFORM and POSITION carry one tool).
///
/// - TRANSFORM: the tool's origin (the matrix's translation), named by the device name.
/// - POSITION: its position, named by the device name (the orientation is not used: markers are
///   points); in pyigtl's layout each element by its name (a list is a whole frame).
/// - POINT: each point, named by its element name (the device name when that is empty).
/// - TDATA: each element's translation, named by its element name. `openigtlink-rust` reads the
///   12 floats in wire order into rows of 4; the wire order is column-major (R11 R21 R31 ... TX TY
///   TZ), so the translation is floats 9, 10, 11 of that order.
pub fn observations(r: &Received) -> (Vec<DeviceObservation>, bool) {
    let one = |p: Point3<f64>| vec![DeviceObservation { name: r.device_name.clone(), position_m: p }];
    match &r.message {
        Incoming::Transform(t) => (one(translation_m(&t.matrix)), false),
        Incoming::Position(list) => (
            list.iter()
                .map(|p| DeviceObservation {
                    name: p.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| r.device_name.clone()),
                    position_m: mm_to_m(p.position_mm),
                })
                .collect(),
            list.len() > 1,
        ),
        Incoming::Point(p) => (
            p.points
                .iter()
                .map(|e| DeviceObservation {
                    name: if e.name.is_empty() { r.device_name.clone() } else { e.name.clone() },
                    position_m: mm_to_m(e.position),
                })
                .collect(),
            true,
        ),
        Incoming::TData(t) => (
            t.elements
                .iter()
                .map(|e| {
                    let flat: Vec<f32> = e.matrix.iter().flatten().copied().collect();
                    DeviceObservation { name: e.name.clone(), position_m: mm_to_m([flat[9], flat[10], flat[11]]) }
                })
                .collect(),
            true,
        ),
        _ => (Vec::new(), false),
    }
}
