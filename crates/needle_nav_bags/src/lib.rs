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
    #[error("metadata.yaml disagrees with the MCAP file (the MCAP file is the authority): {}", join(.0))]
    Disagrees(Vec<BagProblem>),
}

fn join(problems: &[BagProblem]) -> String {
    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
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

/// One topic as metadata.yaml declares it.
#[derive(Debug, Clone, PartialEq)]
struct DeclaredTopic {
    name: String,
    type_name: String,
    serialization_format: String,
    offered_qos_yaml: String,
    messages: u64,
}

/// What metadata.yaml declares about the messages: checked against the MCAP file, never trusted.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    start_ns: u64,
    duration_ns: u64,
    messages: u64,
    topics: Vec<DeclaredTopic>,
    /// Per-file entries (`files:`), when present: path, start, duration, message count.
    files: Vec<(String, u64, u64, u64)>,
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

    fn field_err(&self, field: &str, reason: &str) -> BagError {
        io_err(&self.path, format!("{field}: {reason}"))
    }

    /// A required unsigned integer field (`a.b.c` path), named in the error when missing or not a count.
    fn count(&self, value: &serde_yaml::Value, field: &str) -> Result<u64, BagError> {
        let mut v = value;
        for key in field.split('.') {
            v = &v[key];
        }
        match v {
            serde_yaml::Value::Null => Err(self.field_err(field, "missing")),
            other => other.as_u64().ok_or_else(|| self.field_err(field, &format!("{other:?} is not a count"))),
        }
    }

    fn string(&self, value: &serde_yaml::Value, field: &str) -> Result<String, BagError> {
        value[field].as_str().map(String::from).ok_or_else(|| self.field_err(field, "missing or not a string"))
    }

    /// Everything metadata.yaml says about the messages; a missing or malformed field is an error.
    fn declared(&self) -> Result<Declared, BagError> {
        let info = self.info();
        let list = info["topics_with_message_count"]
            .as_sequence()
            .ok_or_else(|| self.field_err("topics_with_message_count", "missing or not a list"))?;
        let mut topics = Vec::new();
        for t in list {
            let m = &t["topic_metadata"];
            let name = self.string(m, "name")?;
            let type_name = self.string(m, "type").map_err(|_| self.field_err(&format!("{name}: type"), "missing"))?;
            let serialization_format = self
                .string(m, "serialization_format")
                .map_err(|_| self.field_err(&format!("{name}: serialization_format"), "missing"))?;
            // rosbag2 writes the QoS either as one YAML string or as a list.
            let offered_qos_yaml = match &m["offered_qos_profiles"] {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Null => String::new(),
                other => serde_yaml::to_string(other).unwrap_or_default(),
            };
            let messages = self
                .count(t, "message_count")
                .map_err(|_| self.field_err(&format!("{name}: message_count"), "missing or not a count"))?;
            topics.push(DeclaredTopic { name, type_name, serialization_format, offered_qos_yaml, messages });
        }
        let mut files = Vec::new();
        for f in info["files"].as_sequence().into_iter().flatten() {
            let path = self.string(f, "path")?;
            files.push((
                path,
                self.count(f, "starting_time.nanoseconds_since_epoch")?,
                self.count(f, "duration.nanoseconds")?,
                self.count(f, "message_count")?,
            ));
        }
        Ok(Declared {
            start_ns: self.count(info, "starting_time.nanoseconds_since_epoch")?,
            duration_ns: self.count(info, "duration.nanoseconds")?,
            messages: self.count(info, "message_count")?,
            topics,
            files,
        })
    }

    /// The MCAP files the metadata names, in its order.
    fn files(&self) -> Result<Vec<String>, BagError> {
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
        for f in &files {
            // The files are inside the bag folder: metadata naming /dev/zero (read without end, memory
            // until killed) or another folder's file is refused (found writing the bag fuzz target).
            let relative = Path::new(f);
            if relative.is_absolute() || relative.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(io_err(&self.path, format!("relative_file_paths names {f}, outside the bag folder")));
            }
        }
        Ok(files)
    }
}

/// One topic as the MCAP file records it (channel + schema records): the authority.
#[derive(Debug, Clone, PartialEq)]
struct McapTopic {
    type_name: String,
    message_encoding: String,
    /// rosbag2's `offered_qos_profiles` channel metadata (empty when absent).
    offered_qos_yaml: String,
    messages: u64,
}

/// What the MCAP files contain: topics from their channel and schema records, and every message.
struct McapContents {
    topics: BTreeMap<String, McapTopic>,
    /// Per file: name, first and last log time, message count.
    files: Vec<(String, Option<(u64, u64)>, u64)>,
    messages: Vec<BagMessage>,
    /// Problems of the MCAP file itself (a channel without a schema, one topic with two types).
    problems: Vec<BagProblem>,
}

fn read_mcap(dir: &Path, files: &[String]) -> Result<McapContents, BagError> {
    let mut contents =
        McapContents { topics: BTreeMap::new(), files: Vec::new(), messages: Vec::new(), problems: Vec::new() };
    for f in files {
        let path = dir.join(f);
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Err(io_err(&path, "not a regular file")),
            Err(e) => return Err(io_err(&path, e)),
            Ok(_) => {}
        }
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        // mcap 0.26 panics (overflow checks) or wraps around (release) on a chunk record longer
        // than its chunk (found by the bag fuzz target): its panics become this file's error.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_mcap_file(&mut contents, f, &bytes)));
        match read {
            Ok(result) => result?,
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
    contents.messages.sort_by_key(|m| m.log_ns);
    Ok(contents)
}

/// Adds one MCAP file's topics and messages to `contents`.
fn read_mcap_file(contents: &mut McapContents, f: &str, bytes: &[u8]) -> Result<(), BagError> {
    {
        let mcap_err = |e: mcap::McapError| BagError::Mcap(format!("{f}: {e}"));
        // Schemas and channels from their records, so that channels without messages count too.
        let mut schemas: BTreeMap<u16, (String, String)> = BTreeMap::new();
        for record in mcap::read::ChunkFlattener::new(bytes).map_err(mcap_err)? {
            match record.map_err(mcap_err)? {
                mcap::records::Record::Schema { header, .. } => {
                    schemas.insert(header.id, (header.name, header.encoding));
                }
                mcap::records::Record::Channel(c) => {
                    let type_name = match schemas.get(&c.schema_id) {
                        Some((name, _)) => name.clone(),
                        None => {
                            contents.problems.push(BagProblem::NoSchema { topic: c.topic.clone() });
                            String::new()
                        }
                    };
                    let qos = c.metadata.get("offered_qos_profiles").cloned().unwrap_or_default();
                    match contents.topics.get(&c.topic) {
                        Some(known) if known.type_name != type_name => {
                            contents.problems.push(BagProblem::TwoTypes {
                                topic: c.topic.clone(),
                                first: known.type_name.clone(),
                                second: type_name,
                            });
                        }
                        Some(_) => {}
                        None => {
                            contents.topics.insert(
                                c.topic.clone(),
                                McapTopic {
                                    type_name,
                                    message_encoding: c.message_encoding.clone(),
                                    offered_qos_yaml: qos,
                                    messages: 0,
                                },
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        // The messages, with mcap's own checks (every message on a declared channel).
        let mut span: Option<(u64, u64)> = None;
        let mut count = 0u64;
        for m in mcap::MessageStream::new(bytes).map_err(mcap_err)? {
            let m = m.map_err(mcap_err)?;
            let topic = &m.channel.topic;
            if let Some(t) = contents.topics.get_mut(topic) {
                t.messages += 1;
            }
            span = Some(span.map_or((m.log_time, m.log_time), |(a, b)| (a.min(m.log_time), b.max(m.log_time))));
            count += 1;
            contents.messages.push(BagMessage {
                topic: topic.clone(),
                // The schema of the message's own channel, never the metadata's word.
                type_name: m.channel.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                log_ns: m.log_time,
                cdr: m.data.into_owned(),
            });
        }
        contents.files.push((f.to_string(), span, count));
    }
    Ok(())
}

/// A way in which metadata.yaml disagrees with the MCAP file, or the MCAP file is unusable as a
/// ROS bag. Any of them makes `bag-info` exit 1 and the player refuse the bag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BagProblem {
    #[error("{topic}: metadata.yaml says type {metadata}, the MCAP schema says {mcap}")]
    TopicType { topic: String, metadata: String, mcap: String },
    #[error(
        "{topic}: metadata.yaml says serialization_format {metadata}, the MCAP channel's message encoding is {mcap}"
    )]
    SerializationFormat { topic: String, metadata: String, mcap: String },
    #[error("{topic}: metadata.yaml says {metadata} messages, the MCAP file has {mcap}")]
    TopicCount { topic: String, metadata: u64, mcap: u64 },
    #[error("metadata.yaml says message_count {metadata}, the MCAP file has {mcap} messages")]
    TotalCount { metadata: u64, mcap: u64 },
    #[error("metadata.yaml says starting_time {metadata} ns, the first message in the MCAP file is at {mcap} ns")]
    StartTime { metadata: u64, mcap: u64 },
    #[error("metadata.yaml says duration {metadata} ns, the messages in the MCAP file span {mcap} ns")]
    Duration { metadata: u64, mcap: u64 },
    #[error("{topic}: listed in metadata.yaml, but the MCAP file has no channel for it")]
    NotInMcap { topic: String },
    #[error("{topic}: the MCAP file has this topic ({messages} messages), metadata.yaml does not list it")]
    NotInMetadata { topic: String, messages: u64 },
    #[error("{topic}: listed more than once in metadata.yaml")]
    ListedTwice { topic: String },
    #[error("{file}: metadata.yaml's files entry says {what} {metadata}, the file has {mcap}")]
    FileEntry { file: String, what: &'static str, metadata: u64, mcap: u64 },
    #[error("{topic}: the MCAP channel has no schema, so its message type is unknown")]
    NoSchema { topic: String },
    #[error("{topic}: the MCAP file has channels of two types for it, {first} and {second}")]
    TwoTypes { topic: String, first: String, second: String },
}

/// Every disagreement between what metadata.yaml declares and what the MCAP file holds.
fn compare(declared: &Declared, mcap: &McapContents) -> Vec<BagProblem> {
    let mut problems = mcap.problems.clone();
    let mut seen: Vec<&str> = Vec::new();
    for d in &declared.topics {
        if seen.contains(&d.name.as_str()) {
            problems.push(BagProblem::ListedTwice { topic: d.name.clone() });
            continue;
        }
        seen.push(&d.name);
        let Some(m) = mcap.topics.get(&d.name) else {
            problems.push(BagProblem::NotInMcap { topic: d.name.clone() });
            continue;
        };
        if d.type_name != m.type_name {
            problems.push(BagProblem::TopicType {
                topic: d.name.clone(),
                metadata: d.type_name.clone(),
                mcap: m.type_name.clone(),
            });
        }
        if d.serialization_format != m.message_encoding {
            problems.push(BagProblem::SerializationFormat {
                topic: d.name.clone(),
                metadata: d.serialization_format.clone(),
                mcap: m.message_encoding.clone(),
            });
        }
        if d.messages != m.messages {
            problems.push(BagProblem::TopicCount { topic: d.name.clone(), metadata: d.messages, mcap: m.messages });
        }
    }
    for (name, m) in &mcap.topics {
        if !seen.contains(&name.as_str()) {
            problems.push(BagProblem::NotInMetadata { topic: name.clone(), messages: m.messages });
        }
    }
    let total = mcap.messages.len() as u64;
    if declared.messages != total {
        problems.push(BagProblem::TotalCount { metadata: declared.messages, mcap: total });
    }
    // An empty bag has no first message to compare times with (rosbag2 writes arbitrary ones).
    if let (Some(first), Some(last)) = (mcap.messages.first(), mcap.messages.last()) {
        if declared.start_ns != first.log_ns {
            problems.push(BagProblem::StartTime { metadata: declared.start_ns, mcap: first.log_ns });
        }
        if declared.duration_ns != last.log_ns - first.log_ns {
            problems.push(BagProblem::Duration { metadata: declared.duration_ns, mcap: last.log_ns - first.log_ns });
        }
    }
    for (path, start, duration, count) in &declared.files {
        let Some((_, span, n)) = mcap.files.iter().find(|(f, _, _)| f == path) else {
            continue; // relative_file_paths names the files that are read; an extra entry has no messages to compare
        };
        let entry = |what, metadata, mcap| BagProblem::FileEntry { file: path.clone(), what, metadata, mcap };
        if count != n {
            problems.push(entry("message_count", *count, *n));
        }
        if let Some((a, b)) = span {
            if start != a {
                problems.push(entry("starting_time", *start, *a));
            }
            if *duration != b - a {
                problems.push(entry("duration", *duration, b - a));
            }
        }
    }
    problems
}

/// A bag read and checked: topics as the MCAP file records them, every message, and the
/// disagreements with metadata.yaml.
struct CheckedBag {
    declared: Declared,
    mcap: McapContents,
    problems: Vec<BagProblem>,
}

fn read_checked(dir: &Path) -> Result<CheckedBag, BagError> {
    let meta = Metadata::load(dir)?;
    let declared = meta.declared()?;
    let mcap = read_mcap(dir, &meta.files()?)?;
    let problems = compare(&declared, &mcap);
    Ok(CheckedBag { declared, mcap, problems })
}

/// The bag's topics as its MCAP file records them (name, type from the schema, offered QoS from
/// the channel, else from metadata.yaml), and every message sorted by log time. Refuses a bag
/// whose metadata.yaml disagrees with the MCAP file in any way ([`BagError::Disagrees`]).
pub fn read_all(dir: &Path) -> Result<(Vec<TopicInfo>, Vec<BagMessage>), BagError> {
    let bag = read_checked(dir)?;
    if !bag.problems.is_empty() {
        return Err(BagError::Disagrees(bag.problems));
    }
    let topics = bag
        .mcap
        .topics
        .iter()
        .map(|(name, t)| {
            let declared_qos = bag.declared.topics.iter().find(|d| &d.name == name).map(|d| d.offered_qos_yaml.clone());
            TopicInfo {
                name: name.clone(),
                type_name: t.type_name.clone(),
                offered_qos_yaml: if t.offered_qos_yaml.is_empty() {
                    declared_qos.unwrap_or_default()
                } else {
                    t.offered_qos_yaml.clone()
                },
                definition: String::new(),
            }
        })
        .collect();
    Ok((topics, bag.mcap.messages))
}

/// Every message of a sound bag, sorted by log time (see [`read_all`]).
pub fn read_bag(dir: &Path) -> Result<Vec<BagMessage>, BagError> {
    Ok(read_all(dir)?.1)
}

/// The header stamp [ns] of a serialised message whose first field is a `std_msgs/Header` (CDR
/// with its 4-byte encapsulation header: `sec` int32 at offset 4, `nanosec` uint32 at offset 8).
/// None for a message too short or in an encapsulation other than plain CDR.
pub fn cdr_header_stamp_ns(cdr: &[u8]) -> Option<i64> {
    let word = |at: usize| -> Option<[u8; 4]> { cdr.get(at..at + 4)?.try_into().ok() };
    let (sec, nanosec) = match cdr.get(0..2)? {
        [0, 1] => (i32::from_le_bytes(word(4)?), u32::from_le_bytes(word(8)?)),
        [0, 0] => (i32::from_be_bytes(word(4)?), u32::from_be_bytes(word(8)?)),
        _ => return None,
    };
    Some(i64::from(sec) * 1_000_000_000 + i64::from(nanosec))
}

/// One topic of [`info`], as the MCAP file records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopicSummary {
    pub name: String,
    /// The MCAP schema's type (the authority).
    pub type_name: String,
    /// Messages found in the MCAP file(s).
    pub messages: u64,
    /// Messages the metadata says there are (None: metadata.yaml does not list the topic).
    pub metadata_messages: Option<u64>,
    /// The type metadata.yaml names (None: not listed).
    pub metadata_type_name: Option<String>,
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
    /// Disagreements between the metadata and the MCAP file (empty for a sound bag).
    pub problems: Vec<String>,
}

/// Reads the whole bag and checks it against its metadata.
pub fn info(dir: &Path) -> Result<BagSummary, BagError> {
    let bag = read_checked(dir)?;
    let topics = bag
        .mcap
        .topics
        .iter()
        .map(|(name, t)| {
            let declared = bag.declared.topics.iter().find(|d| &d.name == name);
            TopicSummary {
                name: name.clone(),
                type_name: t.type_name.clone(),
                messages: t.messages,
                metadata_messages: declared.map(|d| d.messages),
                metadata_type_name: declared.map(|d| d.type_name.clone()),
                offered_qos: if t.offered_qos_yaml.is_empty() {
                    declared.map(|d| d.offered_qos_yaml.clone()).unwrap_or_default()
                } else {
                    t.offered_qos_yaml.clone()
                },
            }
        })
        .collect();
    let messages = &bag.mcap.messages;
    let start_ns = messages.first().map_or(0, |m| m.log_ns);
    let end_ns = messages.last().map_or(0, |m| m.log_ns);
    Ok(BagSummary {
        messages: messages.len() as u64,
        start_ns,
        end_ns,
        duration_s: (end_ns - start_ns) as f64 * 1e-9,
        topics,
        problems: bag.problems.iter().map(|p| p.to_string()).collect(),
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
        assert_eq!(problems, ["/a: metadata.yaml says 5 messages, the MCAP file has 2"]);
        assert!(matches!(read_all(&dir), Err(BagError::Disagrees(p)) if p.len() == 1));
        std::fs::write(dir.join("metadata.yaml"), meta).unwrap();
        let (topics, _) = read_all(&dir).unwrap();
        assert_eq!(topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["/a", "/b"]);
        assert_eq!(topics[0].offered_qos_yaml, "- history: 1\n  depth: 10\n");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    /// A bag of two topics (3 messages of /a at 1, 2, 4 us; 1 of /b at 3 us) for the metadata checks.
    fn two_topic_bag(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nn_bag_{}_{name}", std::process::id())).join("b");
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = BagWriter::create(&dir).unwrap();
        let info = |name: &str, type_name: &str| TopicInfo {
            name: name.into(),
            type_name: type_name.into(),
            offered_qos_yaml: String::new(),
            definition: "string data\n".into(),
        };
        w.add_topic(info("/a", "std_msgs/msg/String")).unwrap();
        w.add_topic(info("/b", "std_msgs/msg/Empty")).unwrap();
        for (t, ns) in [("/a", 1_000), ("/a", 2_000), ("/b", 3_000), ("/a", 4_000)] {
            w.write(t, ns, &[0, 1, 0, 0]).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn header_stamps_are_read_from_cdr_in_either_byte_order() {
        let mut le = vec![0, 1, 0, 0];
        le.extend(1_795_267_668i32.to_le_bytes());
        le.extend(25_587_764u32.to_le_bytes());
        assert_eq!(cdr_header_stamp_ns(&le), Some(1_795_267_668_025_587_764));
        let mut be = vec![0, 0, 0, 0];
        be.extend((-2i32).to_be_bytes());
        be.extend(5u32.to_be_bytes());
        assert_eq!(cdr_header_stamp_ns(&be), Some(-1_999_999_995));
        assert_eq!(cdr_header_stamp_ns(&le[..10]), None, "too short");
        assert_eq!(cdr_header_stamp_ns(&[0, 2, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), None, "PL_CDR is not plain CDR");
    }

    /// Each way metadata.yaml can disagree with the MCAP file is named, and the player's reader refuses it.
    #[test]
    fn every_metadata_disagreement_is_named_and_refused() {
        let dir = two_topic_bag("disagree");
        let good = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
        assert!(info(&dir).unwrap().problems.is_empty());
        let cases: [(&str, &str, &str); 9] = [
            (
                "type: std_msgs/msg/String",
                "type: std_msgs/msg/Int32",
                "/a: metadata.yaml says type std_msgs/msg/Int32, the MCAP schema says std_msgs/msg/String",
            ),
            (
                "serialization_format: cdr",
                "serialization_format: json",
                "/a: metadata.yaml says serialization_format json, the MCAP channel's message encoding is cdr",
            ),
            (
                "      message_count: 3\n",
                "      message_count: 7\n",
                "/a: metadata.yaml says 7 messages, the MCAP file has 3",
            ),
            (
                "  message_count: 4\n  topics",
                "  message_count: 9\n  topics",
                "metadata.yaml says message_count 9, the MCAP file has 4 messages",
            ),
            (
                "  starting_time:\n    nanoseconds_since_epoch: 1000\n  message_count",
                "  starting_time:\n    nanoseconds_since_epoch: 500\n  message_count",
                "metadata.yaml says starting_time 500 ns, the first message in the MCAP file is at 1000 ns",
            ),
            (
                "  duration:\n    nanoseconds: 3000\n  starting",
                "  duration:\n    nanoseconds: 9000\n  starting",
                "metadata.yaml says duration 9000 ns, the messages in the MCAP file span 3000 ns",
            ),
            ("name: /b", "name: /c", "/c: listed in metadata.yaml, but the MCAP file has no channel for it"),
            ("name: /b", "name: /a", "/a: listed more than once in metadata.yaml"),
            (
                "      message_count: 4\n  custom",
                "      message_count: 5\n  custom",
                "b_0.mcap: metadata.yaml's files entry says message_count 5, the file has 4",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(good.contains(from), "{from:?} not in\n{good}");
            std::fs::write(dir.join("metadata.yaml"), good.replacen(from, to, 1)).unwrap();
            let problems = info(&dir).unwrap().problems;
            assert!(problems.iter().any(|p| p == expected), "{expected}: got {problems:?}");
            match read_all(&dir) {
                Err(e @ BagError::Disagrees(_)) => assert!(e.to_string().contains(expected), "{e}"),
                other => panic!("{expected}: the player's reader accepted the bag: {:?}", other.map(|r| r.0)),
            }
        }
        // A topic of the MCAP file that metadata.yaml leaves out.
        let without_b = good.replacen("name: /b", "name: /c", 1);
        std::fs::write(dir.join("metadata.yaml"), without_b).unwrap();
        let problems = info(&dir).unwrap().problems;
        assert!(
            problems
                .contains(&"/b: the MCAP file has this topic (1 messages), metadata.yaml does not list it".to_string()),
            "{problems:?}"
        );
        // A missing count is an error naming the field, not a zero.
        std::fs::write(dir.join("metadata.yaml"), good.replacen("  message_count: 4\n  topics", "  topics", 1))
            .unwrap();
        let e = info(&dir).unwrap_err().to_string();
        assert!(e.contains("message_count: missing"), "{e}");
        // The types the player publishes come from the MCAP schema.
        std::fs::write(dir.join("metadata.yaml"), &good).unwrap();
        let (topics, messages) = read_all(&dir).unwrap();
        assert_eq!(
            topics.iter().map(|t| t.type_name.as_str()).collect::<Vec<_>>(),
            ["std_msgs/msg/String", "std_msgs/msg/Empty"]
        );
        assert_eq!(messages.iter().map(|m| m.type_name.as_str()).collect::<Vec<_>>()[2], "std_msgs/msg/Empty");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_chunk_record_longer_than_its_chunk_is_an_error() {
        // Found by the bag fuzz target: the seed bag (3 messages written by rosbags) with one record
        // length inside the chunk enlarged; mcap's `compressed_remaining -= len` overflowed (a panic
        // with overflow checks, as in the dev-profile tests; a wrap-around in release).
        let input = include_bytes!("../../../fuzz/regressions/bag/mcap_chunk_record_longer_than_chunk");
        let separator = b"\n--NNFUZZ-FILE--\n";
        let at = input.windows(separator.len()).position(|w| w == separator).unwrap();
        let dir = std::env::temp_dir().join(format!("nn_bag_chunk_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The fuzzer also mutated the metadata's start time into a string; the reader now names that
        // before it reaches the MCAP file, so it is put back to reach the MCAP parser's defect.
        let metadata = String::from_utf8_lossy(&input[..at]).replace("0999999999", "999999999");
        std::fs::write(dir.join("metadata.yaml"), metadata).unwrap();
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
