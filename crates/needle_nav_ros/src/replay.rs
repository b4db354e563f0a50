//! Lockstep replay inside one process: every in-process consumer of the replayed tracker stream
//! (the classifier, registration and target nodes, and a recorder of the targets) notes the newest
//! sample it has taken, so that a lockstep player hosted in the same process publishes the next
//! sample only when all of them have taken this one. That makes replay lossless however the
//! threads are scheduled: a consumer can never fall behind by the 5 samples of the tracker
//! subscription's history, nor by the 10 of r2r's stream buffer (which drops silently when full).
//! Nodes in other processes are paced by needle_target's answer over ROS only.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Consumer name -> header stamp [ns] of the newest tracker sample it has taken (None: none yet).
static TAKEN: Mutex<BTreeMap<&'static str, Option<i64>>> = Mutex::new(BTreeMap::new());

fn taken_map() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, Option<i64>>> {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Declares a consumer of the tracker stream (at node start, before any sample).
pub fn register(consumer: &'static str) {
    taken_map().entry(consumer).or_insert(None);
}

/// Notes that `consumer` has taken the tracker sample stamped `stamp_ns` (an older stamp, such as
/// a watchdog's repeat of an earlier sample, does not move it back).
pub fn note_taken(consumer: &'static str, stamp_ns: i64) {
    let mut map = taken_map();
    let newest = map.entry(consumer).or_insert(None);
    *newest = Some(newest.map_or(stamp_ns, |t| t.max(stamp_ns)));
}

/// Notes `consumer`'s sample as taken when dropped: for work a sample starts and another task ends.
pub struct TakenOnDrop(pub &'static str, pub i64);

impl Drop for TakenOnDrop {
    fn drop(&mut self) {
        note_taken(self.0, self.1);
    }
}

/// When a node last published a message for the other nodes (classification, registration).
static LAST_SHARED: Mutex<Option<std::time::Instant>> = Mutex::new(None);

/// Notes that a node has just published a message the other nodes act on.
pub fn note_shared() {
    *LAST_SHARED.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
}

/// When a node in this process last published a message for the other nodes.
pub fn last_shared() -> Option<std::time::Instant> {
    *LAST_SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registered consumers that have not yet taken the sample stamped `stamp_ns` (or a later one).
pub fn behind(stamp_ns: i64) -> Vec<&'static str> {
    taken_map().iter().filter(|(_, t)| t.is_none_or(|t| t < stamp_ns)).map(|(c, _)| *c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_is_behind_until_it_took_the_sample() {
        register("test_a");
        register("test_b");
        note_taken("test_a", 10);
        let behind_of_ours = |s| behind(s).into_iter().filter(|c| c.starts_with("test_")).collect::<Vec<_>>();
        assert_eq!(behind_of_ours(10), ["test_b"]);
        note_taken("test_b", 11);
        note_taken("test_b", 3);
        assert!(behind_of_ours(10).is_empty());
        assert_eq!(behind_of_ours(11), ["test_a"]);
    }
}
