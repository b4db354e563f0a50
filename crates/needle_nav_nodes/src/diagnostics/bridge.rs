//! igtl_bridge: its two OpenIGTLink links and the samples it publishes.

use super::monitors::RateMonitor;
use super::{HealthReport, Level, Status};
use needle_nav_core::diagnostics_thresholds::TrackerDiagnostics;
use needle_nav_igtl::link::CounterSnapshot;

/// What the bridge feeds in: the published samples (`output`), and the links' counters, read
/// from the links when the report is made.
#[derive(Debug, Clone)]
pub struct BridgeHealth {
    hardware_id: String,
    pub output: RateMonitor,
    pub tracker: CounterSnapshot,
    /// None when Slicer is not enabled.
    pub slicer: Option<CounterSnapshot>,
    /// Device names the tracker sent that are not in the map.
    pub unmapped: Vec<String>,
    pub unmapped_count: u64,
    /// Messages from the tracker per second, over the last report period.
    tracker_rate: (i64, u64, f64),
}

impl BridgeHealth {
    pub fn new(d: &TrackerDiagnostics, expected_rate_hz: f64, hardware_id: &str, now_ns: i64) -> BridgeHealth {
        BridgeHealth {
            hardware_id: hardware_id.into(),
            output: RateMonitor::new(d.output, expected_rate_hz, now_ns),
            tracker: CounterSnapshot::default(),
            slicer: None,
            unmapped: Vec::new(),
            unmapped_count: 0,
            tracker_rate: (now_ns, 0, 0.0),
        }
    }

    /// Thresholds changed at run time (`diagnostics.*` set); what was measured is kept.
    pub fn set_thresholds(&mut self, d: &TrackerDiagnostics, expected_rate_hz: f64) {
        self.output.set_thresholds(d.output, expected_rate_hz);
    }
}

fn link_status(node: &str, what: &str, hardware_id: &str, c: &CounterSnapshot) -> Status {
    let mut s = Status::new(node, what, hardware_id);
    s.value("connected", c.connected);
    s.value("connections", c.connections);
    s.value("messages received", c.received);
    s.value("messages sent", c.sent);
    s.value("dropped while unconnected", c.dropped_unconnected);
    s.value("bad packets", c.bad());
    s.value("garbage runs", c.garbage);
    s.value("garbage bytes", c.garbage_bytes);
    s.value("oversized", c.oversized);
    s.value("crc failed", c.crc_failed);
    s.value("unknown type", c.unknown_type);
    s.value("malformed", c.malformed);
    if !c.connected {
        s.raise(Level::Warn, "not connected: retrying".into());
    }
    if c.bad() > 0 {
        s.raise(Level::Ok, format!("{} bad packets skipped", c.bad()));
    }
    s
}

impl HealthReport for BridgeHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut tracker = link_status("igtl_bridge", "tracker link", &self.hardware_id, &self.tracker);
        let (t0, n0, _) = self.tracker_rate;
        if now_ns > t0 {
            let rate = (self.tracker.received.saturating_sub(n0)) as f64 / super::seconds(now_ns - t0);
            self.tracker_rate = (now_ns, self.tracker.received, rate);
        }
        tracker.value("message rate [Hz]", format!("{:.1}", self.tracker_rate.2));
        tracker.value("unmapped device messages", self.unmapped_count);
        if !self.unmapped.is_empty() {
            tracker.value("unmapped devices", self.unmapped.join(", "));
        }
        let mut out = vec![tracker.finish()];
        if let Some(c) = &self.slicer {
            out.push(link_status("igtl_bridge", "slicer link", &self.hardware_id, c).finish());
        }
        let mut o = Status::new("igtl_bridge", "output", &self.hardware_id);
        self.output.grade(now_ns, "published samples", &mut o);
        out.push(o.finish());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_that_is_down_warns_and_bad_packets_are_listed() {
        let mut h = BridgeHealth::new(&TrackerDiagnostics::default(), 60.0, "igtl_bridge", 0);
        h.tracker =
            CounterSnapshot { connected: true, received: 120, crc_failed: 2, oversized: 1, ..Default::default() };
        h.slicer = Some(CounterSnapshot::default());
        let r = h.report(2_000_000_000);
        assert_eq!(r[0].level, Level::Ok);
        assert!(r[0].values.contains(&("crc failed".into(), "2".into())));
        assert!(r[0].values.contains(&("bad packets".into(), "3".into())));
        assert!(r[0].values.contains(&("message rate [Hz]".into(), "60.0".into())));
        assert_eq!(r[1].level, Level::Warn);
        assert!(r[1].name.ends_with("igtl_bridge slicer link"));
    }
}
