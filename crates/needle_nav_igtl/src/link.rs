//! One OpenIGTLink connection, kept up: as a client it connects and reconnects with exponential
//! back-off; as a server it listens and serves the newest peer. Bytes become packets through
//! [`FrameDecoder`]; every bad packet is counted by kind and logged (rate-limited), and the link
//! stays up. Messages to send arrive on a channel: stream messages are dropped while no peer is
//! connected, latched ones (the newest per key) are sent again to every new peer.
//!
//! Why not `openigtlink-rust`'s clients and servers: they end the connection on the first decode
//! error, take no size limit, and their reconnect helper has no server side.

use crate::frame::{BadPacket, FrameDecoder, Packet};
use crate::messages::{decode, Incoming};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// We connect to the peer's server (a PLUS Server, Slicer's OpenIGTLinkIF in server mode).
    Client,
    /// We listen; the peer connects.
    Server,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Name in logs (`tracker`, `slicer`).
    pub name: &'static str,
    pub mode: LinkMode,
    /// Client: the peer's host; server: the address to listen on.
    pub host: String,
    pub port: u16,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_body_bytes: usize,
}

/// Counts of what the link saw, read by the node's diagnostics.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub connected: std::sync::atomic::AtomicBool,
    pub connections: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Messages to send dropped because no peer was connected.
    pub dropped_unconnected: AtomicU64,
    pub garbage: AtomicU64,
    pub garbage_bytes: AtomicU64,
    pub oversized: AtomicU64,
    pub crc_failed: AtomicU64,
    pub unknown_type: AtomicU64,
    pub malformed: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub connected: bool,
    pub connections: u64,
    pub received: u64,
    pub sent: u64,
    pub dropped_unconnected: u64,
    pub garbage: u64,
    pub garbage_bytes: u64,
    pub oversized: u64,
    pub crc_failed: u64,
    pub unknown_type: u64,
    pub malformed: u64,
}

impl CounterSnapshot {
    /// Bad packets of every kind.
    pub fn bad(&self) -> u64 {
        self.garbage + self.oversized + self.crc_failed + self.unknown_type + self.malformed
    }
}

impl LinkCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            connections: g(&self.connections),
            received: g(&self.received),
            sent: g(&self.sent),
            dropped_unconnected: g(&self.dropped_unconnected),
            garbage: g(&self.garbage),
            garbage_bytes: g(&self.garbage_bytes),
            oversized: g(&self.oversized),
            crc_failed: g(&self.crc_failed),
            unknown_type: g(&self.unknown_type),
            malformed: g(&self.malformed),
        }
    }

    fn count(&self, bad: &BadPacket) {
        let c = match bad {
            BadPacket::Garbage { skipped } => {
                self.garbage_bytes.fetch_add(*skipped as u64, Ordering::Relaxed);
                &self.garbage
            }
            BadPacket::Oversized { .. } => &self.oversized,
            BadPacket::CrcMismatch { .. } => &self.crc_failed,
            BadPacket::UnknownType { .. } => &self.unknown_type,
            BadPacket::Malformed { .. } => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A message received and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub device_name: String,
    /// The sender's timestamp [ns since the epoch]; None when it sent none.
    pub timestamp_ns: Option<i64>,
    pub message: Incoming,
}

/// What the link tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    Connected { peer: String },
    Disconnected { reason: String },
    Message(Received),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Sent now if a peer is connected, else dropped.
    Stream(Vec<u8>),
    /// Sent now if connected, and again to every peer that connects later; a newer one with the
    /// same key replaces it.
    Latched { key: String, bytes: Vec<u8> },
}

/// Logs each kind of bad packet at most once a second, with how many were seen since.
struct BadPacketLog {
    name: &'static str,
    /// Per kind: when it was last logged, and how many were seen since.
    last: BTreeMap<&'static str, (Option<Instant>, u64)>,
}

impl BadPacketLog {
    fn log(&mut self, bad: &BadPacket) {
        let kind = match bad {
            BadPacket::Garbage { .. } => "garbage",
            BadPacket::Oversized { .. } => "oversized",
            BadPacket::CrcMismatch { .. } => "crc",
            BadPacket::UnknownType { .. } => "unknown",
            BadPacket::Malformed { .. } => "malformed",
        };
        let now = Instant::now();
        let entry = self.last.entry(kind).or_insert((None, 0));
        entry.1 += 1;
        if !matches!(entry.0, Some(t) if now.duration_since(t) < Duration::from_secs(1)) {
            tracing::warn!(
                link = self.name,
                "bad OpenIGTLink packet ({} of this kind since the last such line): {bad}",
                entry.1
            );
            *entry = (Some(now), 0);
        }
    }
}

/// Runs the link until `events`' receiver is dropped or `outgoing` closes. Spawn it on the node's
/// runtime; dropping the task closes the connection.
pub async fn run(
    cfg: LinkConfig,
    counters: Arc<LinkCounters>,
    events: mpsc::Sender<LinkEvent>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let mut latched: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut log = BadPacketLog { name: cfg.name, last: BTreeMap::new() };
    let mut delay = cfg.backoff_initial;
    let mut listener: Option<TcpListener> = None;
    let mut last_failure = String::new();
    // A peer that connected while another was served (server mode): served next.
    let mut next_peer: Option<(TcpStream, String)> = None;
    loop {
        let connected: Result<(TcpStream, String), String> = if let Some(p) = next_peer.take() {
            Ok(p)
        } else {
            match cfg.mode {
                LinkMode::Client => TcpStream::connect((cfg.host.as_str(), cfg.port))
                    .await
                    .map(|s| {
                        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                        (s, peer)
                    })
                    .map_err(|e| format!("cannot connect to {}:{}: {e}", cfg.host, cfg.port)),
                LinkMode::Server => {
                    if listener.is_none() {
                        match TcpListener::bind((cfg.host.as_str(), cfg.port)).await {
                            Ok(l) => {
                                tracing::info!(link = cfg.name, "listening on {}:{}", cfg.host, cfg.port);
                                listener = Some(l);
                            }
                            Err(e) => {
                                tracing::warn!(link = cfg.name, "cannot listen on {}:{}: {e}", cfg.host, cfg.port)
                            }
                        }
                    }
                    match &listener {
                        Some(l) => accept(l, &mut outgoing, &mut latched, &counters).await,
                        None => Err(format!("not listening on {}:{}", cfg.host, cfg.port)),
                    }
                }
            }
        };
        match connected {
            Ok((stream, peer)) => {
                delay = cfg.backoff_initial;
                last_failure.clear();
                let _ = stream.set_nodelay(true);
                tracing::info!(link = cfg.name, "connected to {peer}");
                counters.connected.store(true, Ordering::Relaxed);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                if events.send(LinkEvent::Connected { peer: peer.clone() }).await.is_err() {
                    return;
                }
                let end =
                    serve(stream, &cfg, &counters, &events, &mut outgoing, &mut latched, &mut log, listener.as_ref())
                        .await;
                counters.connected.store(false, Ordering::Relaxed);
                let reason = match end {
                    End::OwnerGone => return,
                    End::Closed(reason) => reason,
                    End::Replaced(stream, addr) => {
                        next_peer = Some((stream, addr.clone()));
                        format!("{addr} connected and replaces it")
                    }
                };
                tracing::warn!(link = cfg.name, "connection to {peer} ended: {reason}");
                if events.send(LinkEvent::Disconnected { reason }).await.is_err() {
                    return;
                }
                // A server takes the next peer at once; a client waits before reconnecting.
                if cfg.mode == LinkMode::Server {
                    continue;
                }
            }
            Err(failure) => {
                // Say it once per kind of failure, not on every retry.
                if failure != last_failure {
                    tracing::warn!(link = cfg.name, "{failure}; retrying with back-off up to {:?}", cfg.backoff_max);
                    last_failure = failure;
                }
            }
        }
        // Wait out the back-off, still taking messages to send (latched ones are kept).
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                m = outgoing.recv() => match m {
                    None => return,
                    Some(m) => keep_while_unconnected(m, &mut latched, &counters),
                },
            }
        }
        delay = (delay * 2).min(cfg.backoff_max);
    }
}

/// Takes what arrives to send while nobody is connected.
fn keep_while_unconnected(m: Outgoing, latched: &mut BTreeMap<String, Vec<u8>>, counters: &LinkCounters) {
    match m {
        Outgoing::Stream(_) => {
            counters.dropped_unconnected.fetch_add(1, Ordering::Relaxed);
        }
        Outgoing::Latched { key, bytes } => {
            latched.insert(key, bytes);
        }
    }
}

/// Waits for a peer, keeping what arrives to send meanwhile.
async fn accept(
    l: &TcpListener,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    latched: &mut BTreeMap<String, Vec<u8>>,
    counters: &LinkCounters,
) -> Result<(TcpStream, String), String> {
    loop {
        tokio::select! {
            a = l.accept() => return a.map(|(s, addr)| (s, addr.to_string())).map_err(|e| format!("accept failed: {e}")),
            m = outgoing.recv() => match m {
                None => return Err("closed".into()),
                Some(m) => keep_while_unconnected(m, latched, counters),
            },
        }
    }
}

/// How a connection ended.
enum End {
    Closed(String),
    /// A new peer connected to our server: it is served instead.
    Replaced(TcpStream, String),
    /// The node stopped listening or sending.
    OwnerGone,
}

/// Serves one connection until it ends.
#[allow(clippy::too_many_arguments)]
async fn serve(
    stream: TcpStream,
    cfg: &LinkConfig,
    counters: &LinkCounters,
    events: &mpsc::Sender<LinkEvent>,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    latched: &mut BTreeMap<String, Vec<u8>>,
    log: &mut BadPacketLog,
    listener: Option<&TcpListener>,
) -> End {
    let (mut reader, mut writer) = stream.into_split();
    for bytes in latched.values() {
        if let Err(e) = writer.write_all(bytes).await {
            return End::Closed(format!("write failed: {e}"));
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut decoder = FrameDecoder::new(cfg.max_body_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = reader.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return End::Closed("the peer closed the connection".into()),
                    Ok(n) => n,
                    Err(e) => return End::Closed(format!("read failed: {e}")),
                };
                decoder.push(&buf[..n]);
                while let Some(p) = decoder.next_packet() {
                    match p.and_then(|p: Packet| decode(&p).map(|m| (p, m))) {
                        Ok((p, message)) => {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            let r = Received { timestamp_ns: p.timestamp_ns(), device_name: p.device_name, message };
                            if events.send(LinkEvent::Message(r)).await.is_err() {
                                return End::OwnerGone;
                            }
                        }
                        Err(bad) => {
                            counters.count(&bad);
                            log.log(&bad);
                        }
                    }
                }
            }
            m = outgoing.recv() => {
                let Some(m) = m else { return End::OwnerGone };
                let bytes = match m {
                    Outgoing::Stream(b) => b,
                    Outgoing::Latched { key, bytes } => {
                        latched.insert(key, bytes.clone());
                        bytes
                    }
                };
                if let Err(e) = writer.write_all(&bytes).await {
                    return End::Closed(format!("write failed: {e}"));
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            // A server serves the newest peer: a peer that reconnects (after a crash, say) must not
            // wait for this socket to time out.
            a = accept_next(listener) => {
                if let Ok((s, addr)) = a {
                    return End::Replaced(s, addr.to_string());
                }
            }
        }
    }
}

async fn accept_next(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
