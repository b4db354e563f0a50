//! rosbag2-compatible bags without ROS: an MCAP file (profile `ros2`, schemas as `ros2msg`
//! definitions, messages as CDR) plus the `metadata.yaml` that `ros2 bag info/play` and the
//! `rosbags` library read. The recorder and player nodes move raw CDR bytes in and out.

pub mod definitions;

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BagError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("MCAP: {0}")]
    Mcap(String),
    #[error("{0}")]
    Definition(String),
    #[error("topic {0} was not added to the bag")]
    UnknownTopic(String),
}

/// One topic as recorded: name, ROS type ("pkg/msg/Type"), QoS (rosbag2's YAML) and the
/// full message definition (with dependencies) used as the MCAP schema.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub type_name: String,
    pub offered_qos_yaml: String,
    pub definition: String,
}

struct TopicState {
    info: TopicInfo,
    channel: u16,
    count: u64,
}

/// Writes `<dir>/<dir name>_0.mcap` and, on `finish`, `<dir>/metadata.yaml`.
pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    writer: mcap::Writer<BufWriter<std::fs::File>>,
    topics: BTreeMap<String, TopicState>,
    sequence: u32,
    first_ns: Option<u64>,
    last_ns: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> BagError {
    BagError::Io { path: path.display().to_string(), reason: e.to_string() }
}

impl BagWriter {
    /// Creates the bag folder (which must not exist yet, as with `ros2 bag record -o`).
    pub fn create(dir: &Path) -> Result<BagWriter, BagError> {
        if dir.exists() {
            return Err(io_err(dir, "already exists; choose a new bag folder"));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let stem = dir.file_name().and_then(|n| n.to_str()).unwrap_or("bag").to_string();
        let file_name = format!("{stem}_0.mcap");
        let path = dir.join(&file_name);
        let file = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
        let writer = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("needle_nav ", env!("CARGO_PKG_VERSION")))
            .compression(None)
            .create(BufWriter::new(file))
            .map_err(|e| BagError::Mcap(e.to_string()))?;
        Ok(BagWriter {
            dir: dir.to_path_buf(),
            file_name,
            writer,
            topics: BTreeMap::new(),
            sequence: 0,
            first_ns: None,
            last_ns: 0,
        })
    }

    pub fn add_topic(&mut self, info: TopicInfo) -> Result<(), BagError> {
        if self.topics.contains_key(&info.name) {
            return Ok(());
        }
        let mcap = |e: mcap::McapError| BagError::Mcap(e.to_string());
        let schema = self.writer.add_schema(&info.type_name, "ros2msg", info.definition.as_bytes()).map_err(mcap)?;
        let mut metadata = BTreeMap::new();
        metadata.insert("offered_qos_profiles".to_string(), info.offered_qos_yaml.clone());
        let channel = self.writer.add_channel(schema, &info.name, "cdr", &metadata).map_err(mcap)?;
        self.topics.insert(info.name.clone(), TopicState { info, channel, count: 0 });
        Ok(())
    }

    /// Appends one serialised message (CDR with its encapsulation header) received at `log_ns`.
    pub fn write(&mut self, topic: &str, log_ns: u64, cdr: &[u8]) -> Result<(), BagError> {
        let state = self.topics.get_mut(topic).ok_or_else(|| BagError::UnknownTopic(topic.into()))?;
        self.sequence = self.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id: state.channel,
            sequence: self.sequence,
            log_time: log_ns,
            publish_time: log_ns,
        };
        self.writer.write_to_known_channel(&header, cdr).map_err(|e| BagError::Mcap(e.to_string()))?;
        state.count += 1;
        self.first_ns = Some(self.first_ns.map_or(log_ns, |f| f.min(log_ns)));
        self.last_ns = self.last_ns.max(log_ns);
        Ok(())
    }

    pub fn message_counts(&self) -> BTreeMap<String, u64> {
        self.topics.iter().map(|(k, v)| (k.clone(), v.count)).collect()
    }

    /// Closes the MCAP file and writes metadata.yaml; returns the bag folder.
    pub fn finish(mut self) -> Result<PathBuf, BagError> {
        self.writer.finish().map_err(|e| BagError::Mcap(e.to_string()))?;
        let start = self.first_ns.unwrap_or(0);
        let duration = self.last_ns.saturating_sub(start);
        let total: u64 = self.topics.values().map(|t| t.count).sum();
        let mut y = String::new();
        y += "rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: mcap\n";
        y += &format!(
            "  duration:\n    nanoseconds: {duration}\n  starting_time:\n    nanoseconds_since_epoch: {start}\n"
        );
        y += &format!("  message_count: {total}\n  topics_with_message_count:\n");
        for t in self.topics.values() {
            y += &format!(
                "    - topic_metadata:\n        name: {}\n        type: {}\n        serialization_format: cdr\n        offered_qos_profiles: {}\n        type_description_hash: \"\"\n      message_count: {}\n",
                t.info.name,
                t.info.type_name,
                yaml_quote(&t.info.offered_qos_yaml),
                t.count
            );
        }
        y += "  compression_format: \"\"\n  compression_mode: \"\"\n";
        y += &format!("  relative_file_paths:\n    - {}\n", self.file_name);
        y += &format!(
            "  files:\n    - path: {}\n      starting_time:\n        nanoseconds_since_epoch: {start}\n      duration:\n        nanoseconds: {duration}\n      message_count: {total}\n",
            self.file_name
        );
        y += "  custom_data: ~\n  ros_distro: kilted\n";
        let path = self.dir.join("metadata.yaml");
        std::fs::write(&path, y).map_err(|e| io_err(&path, e))?;
        Ok(self.dir)
    }
}

fn yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// One recorded message.
#[derive(Debug, Clone, PartialEq)]
pub struct BagMessage {
    pub topic: String,
    pub type_name: String,
    pub log_ns: u64,
    pub cdr: Vec<u8>,
}

/// A bag's metadata.yaml, parsed (with its path, for error messages).
struct Metadata {
    path: PathBuf,
    value: serde_yaml::Value,
}

impl Metadata {
    fn load(dir: &Path) -> Result<Metadata, BagError> {
        let path = dir.join("metadata.yaml");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let value = serde_yaml::from_str(&text).map_err(|e| io_err(&path, e))?;
        Ok(Metadata { path, value })
    }

    fn info(&self) -> &serde_yaml::Value {
        &self.value["rosbag2_bagfile_information"]
    }

    /// The listed topics with the message count the metadata declares for each.
    fn topics(&self) -> Result<Vec<(TopicInfo, u64)>, BagError> {
        let list = self.info()["topics_with_message_count"]
            .as_sequence()
            .ok_or_else(|| io_err(&self.path, "no topics_with_message_count"))?;
        let mut out = Vec::new();
        for t in list {
            let m = &t["topic_metadata"];
            let (Some(name), Some(type_name)) = (m["name"].as_str(), m["type"].as_str()) else {
                return Err(io_err(&self.path, "a topic without name or type"));
            };
            // rosbag2 writes the QoS either as one YAML string or as a list.
            let qos = match &m["offered_qos_profiles"] {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Null => String::new(),
                other => serde_yaml::to_string(other).unwrap_or_default(),
            };
            let info = TopicInfo {
                name: name.into(),
                type_name: type_name.into(),
                offered_qos_yaml: qos,
                definition: String::new(),
            };
            out.push((info, t["message_count"].as_u64().unwrap_or(0)));
        }
        Ok(out)
    }

    /// Every message of the bag's MCAP files (in metadata order), sorted by log time.
    fn messages(&self, dir: &Path) -> Result<Vec<BagMessage>, BagError> {
        if self.info()["storage_identifier"].as_str() != Some("mcap") {
            return Err(io_err(&self.path, "only MCAP storage is supported"));
        }
        let files: Vec<String> = self.info()["relative_file_paths"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if files.is_empty() {
            return Err(io_err(&self.path, "names no files"));
        }
        let mut out = Vec::new();
        for f in files {
            // The files are inside the bag folder: metadata naming /dev/zero (read without end, memory
            // until killed) or another folder's file is refused.
            let relative = Path::new(&f);
            if relative.is_absolute() || relative.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(io_err(&self.path, format!("relative_file_paths names {f}, outside the bag folder")));
            }
            let path = dir.join(&f);
            match std::fs::metadata(&path) {
                Ok(m) if !m.is_file() => return Err(io_err(&path, "not a regular file")),
                Err(e) => return Err(io_err(&path, e)),
                Ok(_) => {}
            }
            let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            // mcap 0.26 panics (overflow checks) or wraps around (release) on a chunk record longer
            // than its chunk (found by the bag fuzz target): its panics become this file's error.
            let read = std::panic::catch_unwind(|| -> Result<Vec<BagMessage>, BagError> {
                let stream = mcap::MessageStream::new(&bytes).map_err(|e| BagError::Mcap(format!("{f}: {e}")))?;
                let mut messages = Vec::new();
                for m in stream {
                    let m = m.map_err(|e| BagError::Mcap(format!("{f}: {e}")))?;
                    messages.push(BagMessage {
                        topic: m.channel.topic.clone(),
                        type_name: m.channel.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                        log_ns: m.log_time,
                        cdr: m.data.into_owned(),
                    });
                }
                Ok(messages)
            });
            match read {
                Ok(messages) => out.extend(messages?),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(BagError::Mcap(format!("{f}: corrupt (the MCAP parser failed: {what})")));
                }
            }
        }
        out.sort_by_key(|m| m.log_ns);
        Ok(out)
    }
}

/// The topics listed in the bag's metadata.yaml (the definition is left empty: it is in the MCAP schema).
pub fn read_topics(dir: &Path) -> Result<Vec<TopicInfo>, BagError> {
    Ok(Metadata::load(dir)?.topics()?.into_iter().map(|(t, _)| t).collect())
}

/// Every message of the bag in `dir` (its MCAP files in metadata order), sorted by log time.
pub fn read_bag(dir: &Path) -> Result<Vec<BagMessage>, BagError> {
    Metadata::load(dir)?.messages(dir)
}

/// The topics and every message, reading the metadata once (what a player needs).
pub fn read_all(dir: &Path) -> Result<(Vec<TopicInfo>, Vec<BagMessage>), BagError> {
    let meta = Metadata::load(dir)?;
    Ok((meta.topics()?.into_iter().map(|(t, _)| t).collect(), meta.messages(dir)?))
}

/// One topic of [`info`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopicSummary {
    pub name: String,
    pub type_name: String,
    /// Messages found in the MCAP file(s).
    pub messages: u64,
    /// Messages the metadata says there are.
    pub metadata_messages: u64,
    pub offered_qos: String,
}

/// What `ros2 bag info` shows, from reading every message (not only the metadata).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BagSummary {
    pub messages: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_s: f64,
    pub topics: Vec<TopicSummary>,
    /// Disagreements between the metadata and the messages (empty for a sound bag).
    pub problems: Vec<String>,
}

/// Reads the whole bag and checks it against its metadata.
pub fn info(dir: &Path) -> Result<BagSummary, BagError> {
    let meta = Metadata::load(dir)?;
    let topics = meta.topics()?;
    let messages = meta.messages(dir)?;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &messages {
        *counts.entry(m.topic.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (t, declared) in topics {
        let found = counts.remove(t.name.as_str()).unwrap_or(0);
        if found != declared {
            problems.push(format!("{}: metadata says {declared} messages, the file has {found}", t.name));
        }
        out.push(TopicSummary {
            name: t.name,
            type_name: t.type_name,
            messages: found,
            metadata_messages: declared,
            offered_qos: t.offered_qos_yaml,
        });
    }
    for (topic, n) in counts {
        problems.push(format!("{topic}: {n} messages on a topic the metadata does not list"));
    }
    let start_ns = messages.first().map_or(0, |m| m.log_ns);
    let end_ns = messages.last().map_or(0, |m| m.log_ns);
    Ok(BagSummary {
        messages: messages.len() as u64,
        start_ns,
        end_ns,
        duration_s: (end_ns - start_ns) as f64 * 1e-9,
        topics: out,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_bag_reads_back_with_its_topics_counts_and_times() {
        let dir = std::env::temp_dir().join(format!("nn_bag_{}", std::process::id())).join("session");
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = BagWriter::create(&dir).unwrap();
        let info = |name: &str| TopicInfo {
            name: name.into(),
            type_name: "std_msgs/msg/String".into(),
            offered_qos_yaml: "- history: 1\n  depth: 10\n".into(),
            definition: "string data\n".into(),
        };
        w.add_topic(info("/a")).unwrap();
        w.add_topic(info("/b")).unwrap();
        // CDR little endian: encapsulation 00 01 00 00, u32 length incl. NUL, bytes.
        let cdr = |s: &str| {
            let mut v = vec![0, 1, 0, 0];
            v.extend(((s.len() + 1) as u32).to_le_bytes());
            v.extend(s.as_bytes());
            v.push(0);
            v
        };
        w.write("/a", 2_000, &cdr("two")).unwrap();
        w.write("/a", 1_000, &cdr("one")).unwrap();
        w.write("/b", 3_000, &cdr("three")).unwrap();
        assert!(matches!(w.write("/c", 1, &[]), Err(BagError::UnknownTopic(_))));
        let dir = w.finish().unwrap();
        assert!(BagWriter::create(&dir).is_err(), "an existing bag is never overwritten");
        let msgs = read_bag(&dir).unwrap();
        assert_eq!(msgs.iter().map(|m| m.log_ns).collect::<Vec<_>>(), [1_000, 2_000, 3_000]);
        assert_eq!(msgs[0].cdr, cdr("one"));
        assert_eq!(msgs[2].topic, "/b");
        assert_eq!(msgs[2].type_name, "std_msgs/msg/String");
        let meta: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("metadata.yaml")).unwrap()).unwrap();
        let info = &meta["rosbag2_bagfile_information"];
        assert_eq!(info["message_count"].as_u64(), Some(3));
        assert_eq!(info["duration"]["nanoseconds"].as_u64(), Some(2_000));
        assert_eq!(info["starting_time"]["nanoseconds_since_epoch"].as_u64(), Some(1_000));
        assert_eq!(info["topics_with_message_count"][0]["message_count"].as_u64(), Some(2));
        assert_eq!(info["relative_file_paths"][0].as_str(), Some("session_0.mcap"));
        let summary = super::info(&dir).unwrap();
        assert_eq!((summary.messages, summary.start_ns, summary.end_ns), (3, 1_000, 3_000));
        assert_eq!(summary.topics[0].messages, 2);
        assert!(summary.problems.is_empty(), "{:?}", summary.problems);
        // A metadata file that disagrees with the messages is reported, not trusted.
        let meta = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
        std::fs::write(dir.join("metadata.yaml"), meta.replacen("message_count: 2", "message_count: 5", 1)).unwrap();
        let problems = super::info(&dir).unwrap().problems;
        assert_eq!(problems, ["/a: metadata says 5 messages, the file has 2"]);
        std::fs::write(dir.join("metadata.yaml"), meta).unwrap();
        let topics = read_topics(&dir).unwrap();
        assert_eq!(topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["/a", "/b"]);
        assert_eq!(topics[0].offered_qos_yaml, "- history: 1\n  depth: 10\n");
    }

    #[test]
    fn a_chunk_record_longer_than_its_chunk_is_an_error() {
        // Found by the bag fuzz target: the seed bag (3 messages written by rosbags) with one record
        // length inside the chunk enlarged; mcap's `compressed_remaining -= len` overflowed (a panic
        // with overflow checks, as in the dev-profile tests; a wrap-around in release).
        let input = include_bytes!("../../fuzz/regressions/bag/mcap_chunk_record_longer_than_chunk");
        let separator = b"\n--NNFUZZ-FILE--\n";
        let at = input.windows(separator.len()).position(|w| w == separator).unwrap();
        let dir = std::env::temp_dir().join(format!("nn_bag_chunk_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metadata.yaml"), &input[..at]).unwrap();
        std::fs::write(dir.join("bag_0.mcap"), &input[at + separator.len()..]).unwrap();
        let err = read_bag(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(&err, BagError::Mcap(reason) if reason.starts_with("bag_0.mcap: ")), "{err}");
    }

    #[test]
    fn metadata_naming_files_outside_the_bag_folder_is_refused() {
        // The bag fuzz target had to skip such metadata: `relative_file_paths: [/dev/zero]` made
        // the reader read a device without end. Here the bag's own file, named from outside.
        let root = std::env::temp_dir().join(format!("nn_bag_outside_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut w = BagWriter::create(&root.join("session")).unwrap();
        w.add_topic(TopicInfo {
            name: "/a".into(),
            type_name: "std_msgs/msg/String".into(),
            offered_qos_yaml: String::new(),
            definition: "string data\n".into(),
        })
        .unwrap();
        w.write("/a", 1_000, &[0, 1, 0, 0, 1, 0, 0, 0, 0]).unwrap();
        let dir = w.finish().unwrap();
        let meta = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
        let own = dir.join("session_0.mcap").display().to_string();
        for (named, expected) in [
            (own.as_str(), "outside the bag folder"),
            ("../session/session_0.mcap", "outside the bag folder"),
            (".", "not a regular file"),
        ] {
            let edited = meta.replace("- session_0.mcap", &format!("- \"{named}\""));
            std::fs::write(dir.join("metadata.yaml"), edited).unwrap();
            let err = read_bag(&dir).unwrap_err().to_string();
            assert!(err.contains(expected), "{named}: {err}");
        }
        std::fs::write(dir.join("metadata.yaml"), meta).unwrap();
        assert_eq!(read_bag(&dir).unwrap().len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
