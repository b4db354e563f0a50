//! igtl_bridge's rules, without ROS: which tracker messages make one `TrackedMarkerArray` sample,
//! which markers in it are visible, and the links' settings. The ROS node feeds messages in and
//! publishes what comes out; the wire format is `needle_nav_igtl`'s.
//!
//! Grouping: PLUS sends one TRANSFORM per tool, all with the timestamp of the tracker frame they
//! come from. Messages with one timestamp are one frame. A frame is published
//! - at once when every mapped device has reported in it, or when it came as one message (TDATA,
//!   POINT carry a whole frame);
//! - when a message with a newer timestamp arrives (the frame is over);
//! - at the latest `frame_window_s` after its first message arrived ([`FrameAssembler::poll`]).
//!
//! Visibility: each sample holds every mapped marker seen so far, at its newest position; a marker
//! is visible when its newest report is at most `device_timeout_s` older than the frame (tracker
//! time). A device that stops sending therefore turns invisible, it does not stay frozen at its
//! last pose. Messages stamped older than the newest published frame update a marker's position
//! only (no sample goes back in time); unstamped messages (timestamp 0) take their arrival time.

use crate::config::{IgtlBridgeConfig, IgtlEndpointConfig, IgtlMode};
use needle_nav_core::tracking::{MarkerObservation, TrackerSample};
use needle_nav_igtl::link::{LinkConfig, LinkMode};
use needle_nav_igtl::tracker::DeviceObservation;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// The link settings of one of the bridge's connections.
pub fn link_config(name: &'static str, e: &IgtlEndpointConfig, c: &IgtlBridgeConfig) -> LinkConfig {
    LinkConfig {
        name,
        mode: match e.mode {
            IgtlMode::Client => LinkMode::Client,
            IgtlMode::Server => LinkMode::Server,
        },
        host: e.host.clone(),
        port: e.port,
        backoff_initial: Duration::from_secs_f64(c.backoff_initial_s),
        backoff_max: Duration::from_secs_f64(c.backoff_max_s),
        max_body_bytes: usize::try_from(c.max_message_bytes).unwrap_or(usize::MAX),
    }
}

/// What one message did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Assembled {
    /// Samples to publish, oldest first.
    pub samples: Vec<TrackerSample>,
    /// Device names not in the map seen for the first time (log them once).
    pub new_unmapped: Vec<String>,
}

#[derive(Debug, Clone)]
struct Pending {
    stamp_ns: i64,
    first_arrival_ns: i64,
    reported: BTreeSet<u32>,
}

/// Groups tracker messages into samples (see the module documentation).
#[derive(Debug, Clone)]
pub struct FrameAssembler {
    ids: HashMap<String, u32>,
    timeout_ns: i64,
    window_ns: i64,
    /// Newest report of each marker: (tracker stamp, position).
    newest: BTreeMap<u32, (i64, nalgebra::Point3<f64>)>,
    pending: Option<Pending>,
    last_published_ns: Option<i64>,
    sequence: u64,
    unmapped: BTreeSet<String>,
    /// Observations of unmapped devices.
    pub unmapped_count: u64,
    /// Messages without a timestamp (stamped with their arrival time).
    pub unstamped_count: u64,
}

impl FrameAssembler {
    pub fn new(c: &IgtlBridgeConfig) -> FrameAssembler {
        FrameAssembler {
            ids: c.device_names.iter().cloned().zip(c.marker_ids.iter().copied()).collect(),
            timeout_ns: (c.device_timeout_s * 1e9) as i64,
            window_ns: (c.frame_window_s * 1e9) as i64,
            newest: BTreeMap::new(),
            pending: None,
            last_published_ns: None,
            sequence: 0,
            unmapped: BTreeSet::new(),
            unmapped_count: 0,
            unstamped_count: 0,
        }
    }

    /// Device names seen that are not in the map.
    pub fn unmapped(&self) -> &BTreeSet<String> {
        &self.unmapped
    }

    /// One tracker message: its positions, its timestamp (None: not stamped), whether it is a
    /// whole frame, and when it arrived (node clock).
    pub fn observe(
        &mut self,
        obs: &[DeviceObservation],
        stamp_ns: Option<i64>,
        whole_frame: bool,
        arrival_ns: i64,
    ) -> Assembled {
        let mut out = Assembled::default();
        let stamp = stamp_ns.unwrap_or_else(|| {
            self.unstamped_count += 1;
            arrival_ns
        });
        let mut mapped = Vec::with_capacity(obs.len());
        for o in obs {
            match self.ids.get(&o.name) {
                Some(&id) => mapped.push((id, o.position_m)),
                None => {
                    self.unmapped_count += 1;
                    if self.unmapped.insert(o.name.clone()) {
                        out.new_unmapped.push(o.name.clone());
                    }
                }
            }
        }
        if mapped.is_empty() {
            return out;
        }
        let pending_stamp = self.pending.as_ref().map(|p| p.stamp_ns);
        // A straggler of a published frame, or of an older one than the pending frame: it updates
        // positions only.
        let late = self.last_published_ns.is_some_and(|last| stamp <= last) || pending_stamp.is_some_and(|p| p > stamp);
        // A newer frame closes the pending one, before its positions are taken.
        if !late && pending_stamp.is_some_and(|p| p < stamp) {
            if let Some(s) = self.publish() {
                out.samples.push(s);
            }
        }
        for (id, p) in &mapped {
            let entry = self.newest.entry(*id).or_insert((stamp, *p));
            if stamp >= entry.0 {
                *entry = (stamp, *p);
            }
        }
        if late {
            return out;
        }
        let pending = self.pending.get_or_insert(Pending {
            stamp_ns: stamp,
            first_arrival_ns: arrival_ns,
            reported: BTreeSet::new(),
        });
        pending.reported.extend(mapped.iter().map(|(id, _)| *id));
        let complete = whole_frame || pending.reported.len() >= self.ids.len();
        if complete {
            if let Some(s) = self.publish() {
                out.samples.push(s);
            }
        }
        out
    }

    /// The pending frame, once `frame_window_s` has passed since its first message arrived.
    pub fn poll(&mut self, now_ns: i64) -> Option<TrackerSample> {
        let due = self.pending.as_ref().is_some_and(|p| now_ns - p.first_arrival_ns >= self.window_ns);
        if due {
            self.publish()
        } else {
            None
        }
    }

    /// When [`poll`](Self::poll) should next be called; None when no frame is pending.
    pub fn next_deadline_ns(&self) -> Option<i64> {
        self.pending.as_ref().map(|p| p.first_arrival_ns + self.window_ns)
    }

    fn publish(&mut self) -> Option<TrackerSample> {
        let p = self.pending.take()?;
        self.last_published_ns = Some(p.stamp_ns);
        self.sequence += 1;
        let markers = self
            .newest
            .iter()
            .map(|(&id, &(t, position))| MarkerObservation {
                id,
                position,
                visible: p.stamp_ns - t <= self.timeout_ns,
                quality: f64::NAN,
            })
            .collect();
        Some(TrackerSample { sequence: self.sequence, stamp_ns: p.stamp_ns, markers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Point3;

    fn config() -> IgtlBridgeConfig {
        IgtlBridgeConfig {
            device_names: vec!["AToTracker".into(), "BToTracker".into(), "CToTracker".into()],
            marker_ids: vec![7, 8, 9],
            device_timeout_s: 0.1,
            frame_window_s: 0.005,
            ..Default::default()
        }
    }

    fn o(name: &str, x: f64) -> DeviceObservation {
        DeviceObservation { name: name.into(), position_m: Point3::new(x, 0.0, 0.0) }
    }

    const MS: i64 = 1_000_000;

    #[test]
    fn transforms_with_one_timestamp_make_one_sample_when_all_devices_reported() {
        let mut a = FrameAssembler::new(&config());
        assert!(a.observe(&[o("AToTracker", 0.1)], Some(1000 * MS), false, 0).samples.is_empty());
        assert!(a.observe(&[o("BToTracker", 0.2)], Some(1000 * MS), false, MS / 10).samples.is_empty());
        let s = a.observe(&[o("CToTracker", 0.3)], Some(1000 * MS), false, MS / 5).samples;
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].stamp_ns, 1000 * MS);
        let ids: Vec<(u32, f64, bool)> = s[0].markers.iter().map(|m| (m.id, m.position.x, m.visible)).collect();
        assert_eq!(ids, vec![(7, 0.1, true), (8, 0.2, true), (9, 0.3, true)]);
        assert!(a.poll(10 * MS).is_none());
    }

    #[test]
    fn a_newer_timestamp_or_the_window_closes_a_frame() {
        let mut a = FrameAssembler::new(&config());
        a.observe(&[o("AToTracker", 0.1)], Some(1000 * MS), false, 0);
        let s = a.observe(&[o("AToTracker", 0.2)], Some(1016 * MS), false, 16 * MS).samples;
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].stamp_ns, 1000 * MS);
        // The closed frame keeps its own positions, not those of the message that closed it.
        assert_eq!(s[0].markers[0].position.x, 0.1);
        assert!(a.poll(16 * MS + 4 * MS).is_none());
        let s = a.poll(16 * MS + 5 * MS).unwrap();
        assert_eq!((s.stamp_ns, s.markers[0].position.x, s.sequence), (1016 * MS, 0.2, 2));
    }

    #[test]
    fn a_device_that_stops_becomes_invisible_not_frozen() {
        let mut a = FrameAssembler::new(&config());
        for k in 0..20 {
            let t = (1000 + 10 * k) * MS;
            let mut obs = vec![o("AToTracker", 0.1), o("BToTracker", 0.2), o("CToTracker", 0.3)];
            if k >= 5 {
                obs.remove(1); // B stops after frame 4 (at 1040 ms)
            }
            let whole = true;
            let s = a.observe(&obs, Some(t), whole, t).samples;
            let b = s[0].markers.iter().find(|m| m.id == 8).unwrap();
            // Visible while its newest report is at most 100 ms old.
            assert_eq!(b.visible, t - 1040 * MS <= 100 * MS, "frame {k}");
        }
    }

    #[test]
    fn unmapped_names_are_counted_and_reported_once_and_old_stamps_do_not_go_back() {
        let mut a = FrameAssembler::new(&config());
        let r = a.observe(&[o("Stylus", 0.0)], Some(MS), true, 0);
        assert_eq!((r.new_unmapped, r.samples.len()), (vec!["Stylus".to_string()], 0));
        let r = a.observe(&[o("Stylus", 0.0), o("AToTracker", 0.5)], Some(2 * MS), true, 0);
        assert!(r.new_unmapped.is_empty());
        assert_eq!(a.unmapped_count, 2);
        assert_eq!(r.samples.len(), 1);
        // An older frame updates nothing that was published and publishes nothing.
        assert!(a.observe(&[o("AToTracker", 0.9)], Some(MS), true, 0).samples.is_empty());
        let s = a.observe(&[o("AToTracker", 0.6)], None, true, 5 * MS).samples;
        assert_eq!((s[0].stamp_ns, s[0].markers[0].position.x), (5 * MS, 0.6));
        assert_eq!(a.unstamped_count, 1);
    }
}
