//! Recording and replaying rosbag2 bags from any needle_nav process (`--record DIR`,
//! `--play BAG`): raw CDR in and out, no decoding, so every message type r2r knows works.
//! The file format lives in [`needle_nav_bags`]; this is the ROS side.

use crate::context::{lock, subscription};
use crate::context::{NodeContext, NodeError, RosContext};
use crate::convert;
use crate::msg;
use futures::StreamExt;
use needle_nav_bags::{self as bag, BagError, BagMessage, BagWriter, TopicInfo};
use needle_nav_core::interfaces::{Endpoint, QosKind, CLASSIFICATION, CLOCK, MARKERS, REGISTRATION, TARGET};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fully qualified topic name as rosbag2 stores it (the nodes use relative names in the root namespace).
pub fn qualified(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

/// The recorder of needle_nav/target, as a consumer a lockstep player waits for.
const RECORDER_OF_TARGETS: &str = "bag recorder of needle_nav/target";

/// Records topics into a new bag; [`Recorder::finish`] closes it.
pub struct Recorder {
    writer: Arc<Mutex<Option<BagWriter>>>,
    errors: Arc<Mutex<u64>>,
}

impl Recorder {
    /// Subscribes to every topic with its own QoS (latched topics are received even when
    /// published before the recorder started) and writes each message with its receive time.
    pub fn start(
        node: &mut r2r::Node,
        cx: &NodeContext,
        dir: &Path,
        topics: &[Endpoint],
    ) -> Result<Recorder, NodeError> {
        let bag_err = |e: BagError| NodeError::Runtime(format!("bag {}: {e}", dir.display()));
        let mut writer = BagWriter::create(dir).map_err(bag_err)?;
        let writer_slot: Arc<Mutex<Option<BagWriter>>> = Arc::new(Mutex::new(None));
        let errors = Arc::new(Mutex::new(0u64));
        for ep in topics {
            let name = qualified(ep.name);
            let definition = bag::definitions::full_definition(ep.type_name).map_err(bag_err)?;
            writer
                .add_topic(TopicInfo {
                    name: name.clone(),
                    type_name: ep.type_name.into(),
                    offered_qos_yaml: ep.qos.rosbag2_offered_qos(),
                    definition,
                })
                .map_err(bag_err)?;
            let mut stream = node
                .subscribe_raw(ep.name, ep.type_name, super::qos::profile(ep.qos))
                .ros(format!("cannot record {}", ep.name))?;
            let (slot, errors, cx2) = (writer_slot.clone(), errors.clone(), cx.clone());
            // A lockstep player in this process also waits until the answer to each sample is recorded.
            let targets = ep.name == TARGET.name;
            if targets {
                super::replay::register(RECORDER_OF_TARGETS);
            }
            cx.spawn(async move {
                while let Some(cdr) = stream.next().await {
                    if targets {
                        if let Ok(t) = <msg::NeedleTarget as r2r::WrappedTypesupport>::from_serialized_bytes(&cdr) {
                            super::replay::note_taken(RECORDER_OF_TARGETS, convert::time_to_ns(&t.source_stamp));
                        }
                    }
                    let now = cx2.now_ns().max(0) as u64;
                    let mut w = lock(&slot);
                    if let Some(w) = w.as_mut() {
                        if let Err(e) = w.write(&name, now, &cdr) {
                            let mut n = lock(&errors);
                            if *n == 0 {
                                tracing::error!("bag recorder: {name}: {e}");
                            }
                            *n += 1;
                        }
                    }
                }
            });
        }
        tracing::info!("recording {} topics into {}", topics.len(), dir.display());
        *lock(&writer_slot) = Some(writer);
        Ok(Recorder { writer: writer_slot, errors })
    }

    /// Closes the bag (writes metadata.yaml); returns its folder and the message count per topic.
    pub fn finish(&self) -> Result<(PathBuf, BTreeMap<String, u64>), BagError> {
        let writer = lock(&self.writer).take().ok_or_else(|| BagError::Mcap("the bag was already closed".into()))?;
        let counts = writer.message_counts();
        let failed = *lock(&self.errors);
        if failed > 0 {
            tracing::warn!("bag recorder: {failed} messages could not be written");
        }
        Ok((writer.finish()?, counts))
    }
}

/// How a bag is played back.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayOptions {
    /// Playback speed: 1 = as recorded, 2 = twice as fast.
    pub rate: f64,
    /// Publish `/clock` from the bag's time (for nodes with use_sim_time:=true).
    pub clock: bool,
    /// Only these topics (fully qualified); empty: every topic of the bag.
    pub topics: Vec<String>,
    /// Wait this long before the first message, so that subscribers can connect.
    pub start_delay: Duration,
    /// Lockstep: after each tracker sample, wait (at most this long) until `needle_target` has
    /// answered it; None: play on the recorded schedule only.
    pub lockstep: Option<Duration>,
}

/// How long a lockstep player waits for `needle_target`'s answer to one tracker sample.
/// (A hang guard: the first answer also waits for needle_target to load its planning case.)
pub const LOCKSTEP_TIMEOUT: Duration = Duration::from_secs(30);
/// After a classification or registration message, the next tracker sample waits this long, so
/// that the message reaches every node before the sample it came before in the live run.
pub const LOCKSTEP_SETTLE: Duration = Duration::from_millis(50);

/// What a playback did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayOutcome {
    pub published: u64,
    /// Why a lockstep playback stopped before its end (a sample not answered in time, or no
    /// needle_target at all): it did not deliver every sample.
    pub failed: Option<String>,
}

impl PlayOutcome {
    /// Why this playback cannot be trusted to have delivered every sample (None: it can).
    pub fn problem(&self) -> Option<String> {
        self.failed.clone()
    }
}

/// Plans a playback: the messages to publish, each with its offset from the start [ns] at the
/// given rate. Pure, so that timing can be tested without ROS.
pub fn schedule(messages: &[BagMessage], options: &PlayOptions) -> Vec<(u64, usize)> {
    let selected: Vec<usize> = (0..messages.len())
        .filter(|i| options.topics.is_empty() || options.topics.iter().any(|t| t == &messages[*i].topic))
        .collect();
    let Some(first) = selected.first().map(|i| messages[*i].log_ns) else { return Vec::new() };
    let rate = if options.rate.is_finite() && options.rate > 0.0 { options.rate } else { 1.0 };
    selected.into_iter().map(|i| (((messages[i].log_ns - first) as f64 / rate) as u64, i)).collect()
}

/// Lockstep needs the tracker stream in the plan, as the type needle_target answers, with a
/// header stamp in every sample; returns each planned message's sample stamp (None: not a sample).
pub fn lockstep_stamps(messages: &[BagMessage], plan: &[(u64, usize)]) -> Result<Vec<Option<i64>>, String> {
    let samples = qualified(MARKERS.name);
    let mut stamps = Vec::with_capacity(plan.len());
    for (n, (_, i)) in plan.iter().enumerate() {
        let m = &messages[*i];
        if m.topic != samples {
            stamps.push(None);
            continue;
        }
        if bag::definitions::current_type_name(&m.type_name) != MARKERS.type_name {
            return Err(format!(
                "--lockstep: {samples} has type {} in the bag, needle_target answers {}",
                m.type_name, MARKERS.type_name
            ));
        }
        let stamp = bag::cdr_header_stamp_ns(&m.cdr)
            .ok_or_else(|| format!("--lockstep: message {n} on {samples} has no readable header stamp"))?;
        stamps.push(Some(stamp));
    }
    if stamps.iter().all(Option::is_none) {
        return Err(format!("--lockstep: nothing to play on {samples}, the tracker stream needle_target answers"));
    }
    Ok(stamps)
}

/// Publishes the bag's messages with their recorded spacing (scaled by the rate), then calls
/// `done`. Topics keep the QoS they were recorded with (latched stays latched), and each with the
/// type of its MCAP schema: a bag whose metadata.yaml disagrees with its MCAP file is refused.
///
/// With `lockstep`, no tracker sample is published before `needle_target` has answered the
/// previous one (a `NeedleTarget` whose `source_stamp` is the sample's header stamp), and none
/// earlier than `LOCKSTEP_SETTLE` after a classification or registration message; `/clock`
/// advances only with the published messages, so no node sees a sample as stale.
pub fn start_player(
    node: &mut r2r::Node,
    cx: &NodeContext,
    dir: &Path,
    options: PlayOptions,
    done: impl FnOnce(PlayOutcome) + Send + 'static,
) -> Result<(), NodeError> {
    let bag_err = |e: BagError| NodeError::Runtime(format!("bag {}: {e}", dir.display()));
    let (topics, messages) = bag::read_all(dir).map_err(bag_err)?;
    for wanted in &options.topics {
        if !topics.iter().any(|t| &t.name == wanted) {
            let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
            tracing::warn!("bag {} has no topic {wanted} (it has {})", dir.display(), names.join(", "));
        }
    }
    let mut publishers = BTreeMap::new();
    for t in &topics {
        if !options.topics.is_empty() && !options.topics.contains(&t.name) {
            continue;
        }
        let (reliable, latched, depth) = QosKind::parse_rosbag2_qos(&t.offered_qos_yaml);
        let mut qos = r2r::QosProfile::default().keep_last(depth);
        qos = if reliable { qos.reliable() } else { qos.best_effort() };
        qos = if latched { qos.transient_local() } else { qos.volatile() };
        // A bag from before the message package split names the old package: same definitions.
        let type_name = bag::definitions::current_type_name(&t.type_name);
        let publisher = node
            .create_publisher_untyped(&t.name, &type_name, qos)
            .ros(format!("cannot play {} ({})", t.name, t.type_name))?;
        publishers.insert(t.name.clone(), publisher);
    }
    let clock = if options.clock {
        Some(
            node.create_publisher::<r2r::rosgraph_msgs::msg::Clock>(CLOCK.name, super::qos::profile(CLOCK.qos))
                .ros("cannot publish /clock")?,
        )
    } else {
        None
    };
    let plan = schedule(&messages, &options);
    let lockstep = match options.lockstep {
        None => None,
        Some(timeout) => {
            let stamps = lockstep_stamps(&messages, &plan).map_err(NodeError::Runtime)?;
            let answers = subscription::<msg::NeedleTarget>(node, TARGET)?;
            // Messages between the nodes: the player holds the next sample until they have spread.
            let last_inter_node: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::new(Mutex::new(None));
            let classifications = subscription::<msg::MarkerClassification>(node, CLASSIFICATION)?;
            let registrations = subscription::<msg::LesionRegistration>(node, REGISTRATION)?;
            let heard = last_inter_node.clone();
            cx.spawn(async move {
                let mut both = futures::stream::select(classifications.map(|_| ()), registrations.map(|_| ()));
                while both.next().await.is_some() {
                    *lock(&heard) = Some(tokio::time::Instant::now());
                }
            });
            Some((timeout, stamps, answers, last_inter_node))
        }
    };
    tracing::info!(
        "playing {} of {} messages from {} at {}x{}{}",
        plan.len(),
        messages.len(),
        dir.display(),
        options.rate,
        if options.clock { " with /clock" } else { "" },
        if lockstep.is_some() { " in lockstep with needle_target" } else { "" }
    );
    let publish_clock = move |ns: u64| {
        if let Some(c) = &clock {
            let t = r2r::builtin_interfaces::msg::Time {
                sec: (ns / 1_000_000_000) as i32,
                nanosec: (ns % 1_000_000_000) as u32,
            };
            let _ = c.publish(&r2r::rosgraph_msgs::msg::Clock { clock: t });
        }
    };
    cx.spawn(async move {
        if let Some((_, first)) = plan.first() {
            // The clock starts at the first message, so that nodes never see time 0 with data.
            publish_clock(messages[*first].log_ns);
        }
        tokio::time::sleep(options.start_delay).await;
        let mut outcome = PlayOutcome::default();
        let mut lockstep = lockstep;
        if let Some((timeout, _, answers, _)) = lockstep.as_mut() {
            // needle_target answers even without samples (STARTING): wait until it is heard.
            if tokio::time::timeout(*timeout, answers.next()).await.ok().flatten().is_none() {
                let why = format!(
                    "lockstep: nothing heard from needle_target on {} within {} s; is it running?",
                    TARGET.name,
                    timeout.as_secs_f64()
                );
                tracing::error!("bag player: {why}");
                outcome.failed = Some(why);
                done(outcome);
                return;
            }
        }
        let start = tokio::time::Instant::now();
        for (n, (offset_ns, i)) in plan.iter().enumerate() {
            // Never earlier than the recorded spacing; in lockstep later when the nodes need longer.
            tokio::time::sleep_until(start + Duration::from_nanos(*offset_ns)).await;
            let m = &messages[*i];
            let sample = lockstep.as_ref().and_then(|l| l.1[n]);
            if let (Some((_, _, _, heard)), Some(_)) = (lockstep.as_ref(), sample) {
                // Heard over ROS, or published by a node in this process (known at once).
                let in_process = super::replay::last_shared().map(tokio::time::Instant::from_std);
                let last = (*lock(heard)).max(in_process);
                if let Some(t) = last {
                    tokio::time::sleep_until(t + LOCKSTEP_SETTLE).await;
                }
            }
            publish_clock(m.log_ns);
            if let Some(p) = publishers.get(&m.topic) {
                match p.publish_raw(&m.cdr) {
                    Ok(()) => outcome.published += 1,
                    Err(e) => tracing::warn!("bag player: {}: {e}", m.topic),
                }
            }
            if let (Some((timeout, _, answers, _)), Some(stamp)) = (lockstep.as_mut(), sample) {
                let wait = async {
                    while let Some(t) = answers.next().await {
                        if convert::time_to_ns(&t.source_stamp) == stamp {
                            return true;
                        }
                    }
                    false
                };
                // In-process consumers (the other nodes, a recorder) must have taken it too.
                let everyone = async {
                    if !wait.await {
                        return false;
                    }
                    while !super::replay::behind(stamp).is_empty() {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                    true
                };
                if !tokio::time::timeout(*timeout, everyone).await.unwrap_or(false) {
                    // The replay is no longer lossless: stop rather than go on with a gap.
                    let behind = super::replay::behind(stamp);
                    let why = format!(
                        "lockstep: the tracker sample stamped {stamp} ns (message {n} of {}) was not answered by \
                         needle_target{} within {} s; playback stopped",
                        plan.len(),
                        if behind.is_empty() { String::new() } else { format!(" or taken by {}", behind.join(", ")) },
                        timeout.as_secs_f64()
                    );
                    tracing::error!("bag player: {why}");
                    outcome.failed = Some(why);
                    break;
                }
            }
        }
        tracing::info!(
            "bag played: {} messages{}",
            outcome.published,
            if lockstep.is_some() && outcome.failed.is_none() { ", each tracker sample answered" } else { "" }
        );
        done(outcome);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, ns: u64) -> BagMessage {
        BagMessage { topic: topic.into(), type_name: "std_msgs/msg/String".into(), log_ns: ns, cdr: vec![] }
    }

    #[test]
    fn playback_keeps_the_recorded_spacing_scaled_by_the_rate_and_filters_topics() {
        let m = [msg("/a", 10_000), msg("/b", 11_000), msg("/a", 14_000)];
        let all = PlayOptions { rate: 2.0, clock: false, topics: vec![], start_delay: Duration::ZERO, lockstep: None };
        assert_eq!(schedule(&m, &all), [(0, 0), (500, 1), (2_000, 2)]);
        let only_a = PlayOptions { rate: 1.0, topics: vec!["/a".into()], ..all.clone() };
        assert_eq!(schedule(&m, &only_a), [(0, 0), (4_000, 2)]);
        // A nonsensical rate plays as recorded rather than all at once or never.
        assert_eq!(schedule(&m, &PlayOptions { rate: f64::NAN, ..all.clone() })[2], (4_000, 2));
        assert!(schedule(&m, &PlayOptions { topics: vec!["/c".into()], ..all }).is_empty());
        assert_eq!(qualified("needle_nav/target"), "/needle_nav/target");
        assert_eq!(qualified("/tf"), "/tf");
    }
}
