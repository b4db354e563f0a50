//! What a tracker delivers: one sample of all markers at one instant.

use nalgebra::Point3;

/// One marker in one sample. Positions are in metres in the tracker frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerObservation {
    pub id: u32,
    pub position: Point3<f64>,
    pub visible: bool,
    /// Tracker fit residual (RMS) [m]; NaN when unknown.
    pub quality: f64,
}

/// All markers at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSample {
    pub sequence: u64,
    /// Acquisition time [ns] on the tracker's clock (ROS time in the nodes).
    pub stamp_ns: i64,
    pub markers: Vec<MarkerObservation>,
}

impl TrackerSample {
    /// Visible markers whose coordinates are all finite; the others must not be used.
    pub fn usable(&self) -> impl Iterator<Item = &MarkerObservation> {
        self.markers.iter().filter(|m| m.visible && m.position.iter().all(|c| c.is_finite()))
    }

    /// Ids of the markers the tracker reports visible.
    pub fn visible_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.markers.iter().filter(|m| m.visible).map(|m| m.id)
    }

    /// Ids of markers that claim to be visible but carry a non-finite coordinate.
    pub fn malformed_ids(&self) -> Vec<u32> {
        self.markers.iter().filter(|m| m.visible && !m.position.iter().all(|c| c.is_finite())).map(|m| m.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_invisible_markers_are_not_usable() {
        let m = |id, x: f64, visible| MarkerObservation {
            id,
            position: Point3::new(x, 0.0, 0.0),
            visible,
            quality: f64::NAN,
        };
        let s = TrackerSample {
            sequence: 0,
            stamp_ns: 0,
            markers: vec![m(1, 0.0, true), m(2, f64::NAN, true), m(3, 1.0, false)],
        };
        assert_eq!(s.usable().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.malformed_ids(), vec![2]);
    }
}
