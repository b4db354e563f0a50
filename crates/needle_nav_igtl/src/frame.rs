//! OpenIGTLink framing on a byte stream: the 58-byte header, our size limit, the CRC, and
//! resynchronisation after garbage. Nothing here allocates more than the limit allows, and no
//! input can make it panic.
//!
//! Why not `openigtlink_rust::IgtlMessage::decode`: it adds `body_size` to an index unchecked
//! (a hostile size wraps and panics on the slice), subtracts the v3 metadata sizes unchecked, and
//! takes the extended header only from version 3 on while the C++ library and pyigtl write it
//! from header version 2 on. So the framing is ours; the crate's content codecs and its CRC are used.

use openigtlink_rust::protocol::crc::calculate_crc;

/// Size of the fixed OpenIGTLink header.
pub const HEADER_SIZE: usize = 58;
/// Size of the extended header (header version 2 and later).
const EXTENDED_HEADER_SIZE: usize = 12;

/// One received message whose header was plausible, whose size was within the limit and whose
/// CRC matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub header_version: u16,
    pub type_name: String,
    pub device_name: String,
    /// The sender's timestamp as on the wire (seconds << 32 | fraction of 2^32); 0: not stamped.
    pub timestamp: u64,
    pub body: Vec<u8>,
}

impl Packet {
    /// The sender's timestamp in nanoseconds since the Unix epoch; None when it did not stamp it.
    pub fn timestamp_ns(&self) -> Option<i64> {
        timestamp_to_ns(self.timestamp)
    }

    /// The message content: the body without the extended header and the metadata (header version
    /// 2 and later carry both around the content).
    pub fn content(&self) -> Result<&[u8], BadPacket> {
        if self.header_version < 2 {
            return Ok(&self.body);
        }
        let bad = |reason: String| BadPacket::Malformed { type_name: self.type_name.clone(), reason };
        if self.body.len() < EXTENDED_HEADER_SIZE {
            return Err(bad(format!("header version {} without an extended header", self.header_version)));
        }
        let b = &self.body;
        let ext_size = u16::from_be_bytes([b[0], b[1]]) as usize;
        let meta_header = u16::from_be_bytes([b[2], b[3]]) as usize;
        let meta_body = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let end = b.len().checked_sub(meta_header).and_then(|e| e.checked_sub(meta_body));
        match end {
            Some(end) if ext_size >= EXTENDED_HEADER_SIZE && ext_size <= end => Ok(&b[ext_size..end]),
            _ => Err(bad(format!(
                "extended header ({ext_size} bytes) and metadata ({meta_header} + {meta_body} bytes) do not fit a body of {} bytes",
                b.len()
            ))),
        }
    }
}

/// The wire timestamp in nanoseconds since the epoch; None for 0 (not stamped).
pub fn timestamp_to_ns(raw: u64) -> Option<i64> {
    if raw == 0 {
        return None;
    }
    let seconds = (raw >> 32) as i64;
    let fraction = (raw & 0xFFFF_FFFF) as i64;
    Some(seconds * 1_000_000_000 + ((fraction * 1_000_000_000) >> 32))
}

/// Nanoseconds since the epoch as the wire timestamp (rounded to the nearest fraction).
pub fn ns_to_timestamp(ns: i64) -> u64 {
    let ns = ns.max(0);
    let seconds = (ns / 1_000_000_000) as u64;
    let rem = (ns % 1_000_000_000) as u64;
    // At most 0xFFFF_FFFC for a remainder of 999 999 999 ns: never carries into the seconds.
    let fraction = ((rem << 32) + 500_000_000) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// What was wrong with bytes that did not make a usable message. Each kind has its counter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadPacket {
    /// Bytes that are no OpenIGTLink header (the link skipped them to the next plausible one).
    #[error("{skipped} bytes that are no OpenIGTLink header skipped")]
    Garbage { skipped: usize },
    #[error("{type_name} of {body_size} bytes is over the limit of {limit} bytes")]
    Oversized { type_name: String, body_size: u64, limit: usize },
    #[error("{type_name} from {device_name}: CRC mismatch (header {expected:#018x}, body {actual:#018x})")]
    CrcMismatch { type_name: String, device_name: String, expected: u64, actual: u64 },
    #[error("unknown message type {type_name} (device {device_name})")]
    UnknownType { type_name: String, device_name: String },
    #[error("malformed {type_name}: {reason}")]
    Malformed { type_name: String, reason: String },
}

/// The header fields the framing needs.
struct RawHeader {
    version: u16,
    type_name: String,
    device_name: String,
    timestamp: u64,
    body_size: u64,
    crc: u64,
}

/// The header at the start of `b` (at least [`HEADER_SIZE`] bytes) if it looks like one: a
/// version 1 to 3, a type name of capitals, digits and `_` padded with NULs, a device name of
/// printable characters padded with NULs. Garbage passes this rarely, and then fails the CRC.
fn plausible_header(b: &[u8]) -> Option<RawHeader> {
    let version = u16::from_be_bytes([b[0], b[1]]);
    if !(1..=3).contains(&version) {
        return None;
    }
    let type_name = padded_text(&b[2..14], |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')?;
    if type_name.is_empty() {
        return None;
    }
    let device_name = padded_text(&b[14..34], |c| c >= 0x20 && c != 0x7f)?;
    let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    Some(RawHeader { version, type_name, device_name, timestamp: u64_at(34), body_size: u64_at(42), crc: u64_at(50) })
}

/// The text of a NUL-padded field whose characters all pass `ok`; None otherwise.
fn padded_text(field: &[u8], ok: impl Fn(u8) -> bool) -> Option<String> {
    let len = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    if !field[..len].iter().all(|&c| ok(c)) || !field[len..].iter().all(|&c| c == 0) {
        return None;
    }
    Some(String::from_utf8_lossy(&field[..len]).into_owned())
}

/// Splits a byte stream into packets. Push what the socket gave, then take packets until `None`.
#[derive(Debug)]
pub struct FrameDecoder {
    max_body: usize,
    buf: Vec<u8>,
    /// Garbage skipped since the last plausible header, not yet reported.
    skipped: usize,
}

impl FrameDecoder {
    /// `max_body`: the largest body accepted; a header announcing more is reported oversized and
    /// skipped (its body is never buffered).
    pub fn new(max_body: usize) -> FrameDecoder {
        FrameDecoder { max_body, buf: Vec::new(), skipped: 0 }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered, waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next packet, or what was wrong with the next bytes; None when more bytes are needed.
    pub fn next_packet(&mut self) -> Option<Result<Packet, BadPacket>> {
        loop {
            if self.buf.len() < HEADER_SIZE {
                return None;
            }
            let Some(h) = plausible_header(&self.buf[..HEADER_SIZE]) else {
                // Skip to the next byte that starts a plausible header; keep a tail that may be
                // the start of one still arriving.
                let found = (1..=self.buf.len() - HEADER_SIZE)
                    .find(|&p| plausible_header(&self.buf[p..p + HEADER_SIZE]).is_some());
                let skip = found.unwrap_or(self.buf.len() - HEADER_SIZE + 1);
                self.buf.drain(..skip);
                self.skipped += skip;
                return Some(Err(BadPacket::Garbage { skipped: std::mem::take(&mut self.skipped) }));
            };
            if self.skipped > 0 {
                return Some(Err(BadPacket::Garbage { skipped: std::mem::take(&mut self.skipped) }));
            }
            if h.body_size > self.max_body as u64 {
                // The body is not buffered: resynchronise on the bytes after this header's start.
                self.buf.drain(..1);
                return Some(Err(BadPacket::Oversized {
                    type_name: h.type_name,
                    body_size: h.body_size,
                    limit: self.max_body,
                }));
            }
            let end = HEADER_SIZE + h.body_size as usize;
            if self.buf.len() < end {
                return None;
            }
            let body = self.buf[HEADER_SIZE..end].to_vec();
            self.buf.drain(..end);
            let actual = calculate_crc(&body);
            if actual != h.crc {
                return Some(Err(BadPacket::CrcMismatch {
                    type_name: h.type_name,
                    device_name: h.device_name,
                    expected: h.crc,
                    actual,
                }));
            }
            return Some(Ok(Packet {
                header_version: h.version,
                type_name: h.type_name,
                device_name: h.device_name,
                timestamp: h.timestamp,
                body,
            }));
        }
    }
}

/// A whole message: header (version 1, no extended header: every peer reads it) and body.
pub fn encode_packet(type_name: &str, device_name: &str, timestamp_ns: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + body.len());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&padded(type_name, 12));
    out.extend_from_slice(&padded(device_name, 20));
    out.extend_from_slice(&ns_to_timestamp(timestamp_ns).to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&calculate_crc(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `text` cut to `n` bytes (at a character boundary) and NUL-padded.
fn padded(text: &str, n: usize) -> Vec<u8> {
    let mut end = text.len().min(n);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = text.as_bytes()[..end].to_vec();
    v.resize(n, 0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform_body() -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 10.0, 20.0, 30.0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn a_packet_round_trips_and_splits_anywhere() {
        let wire = encode_packet("TRANSFORM", "StylusToTracker", 1_700_000_000_250_000_000, &transform_body());
        for cut in [1, 30, 57, 58, 70, wire.len()] {
            let mut d = FrameDecoder::new(1024);
            d.push(&wire[..cut]);
            let first = d.next_packet();
            if cut < wire.len() {
                assert!(first.is_none(), "cut {cut}");
                d.push(&wire[cut..]);
            } else {
                d.push(&[]);
            }
            let p = match first {
                Some(p) => p.unwrap(),
                None => d.next_packet().unwrap().unwrap(),
            };
            assert_eq!(p.type_name, "TRANSFORM");
            assert_eq!(p.device_name, "StylusToTracker");
            assert_eq!(p.body, transform_body());
            // The fraction has 2^-32 s resolution: within a nanosecond.
            assert!((p.timestamp_ns().unwrap() - 1_700_000_000_250_000_000).abs() <= 1);
            assert!(d.next_packet().is_none());
        }
    }

    #[test]
    fn a_huge_body_size_is_oversized_without_buffering_and_the_next_message_still_arrives() {
        let mut evil = encode_packet("TRANSFORM", "Evil", 1, &transform_body());
        evil[42..50].copy_from_slice(&(1u64 << 63).to_be_bytes());
        evil.truncate(HEADER_SIZE);
        let good = encode_packet("TRANSFORM", "Good", 1, &transform_body());
        let mut d = FrameDecoder::new(1 << 20);
        d.push(&evil);
        d.push(&good);
        assert!(matches!(d.next_packet(), Some(Err(BadPacket::Oversized { body_size, .. })) if body_size == 1 << 63));
        // The 57 bytes after the bad header's first byte are garbage, then the good message.
        assert!(matches!(d.next_packet(), Some(Err(BadPacket::Garbage { skipped: 57 }))));
        assert_eq!(d.next_packet().unwrap().unwrap().device_name, "Good");
        assert!(d.buffered() == 0);
    }

    #[test]
    fn every_body_size_and_header_byte_is_safe() {
        // No header value may panic or allocate beyond the limit.
        for size in [u64::MAX, u64::MAX - 57, u64::MAX - 58, 1 << 63, 1 << 32, 1025] {
            let mut w = encode_packet("IMAGE", "X", 1, &[]);
            w[42..50].copy_from_slice(&size.to_be_bytes());
            let mut d = FrameDecoder::new(1024);
            d.push(&w);
            assert!(matches!(d.next_packet(), Some(Err(BadPacket::Oversized { .. }))));
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut d = FrameDecoder::new(4096);
        for _ in 0..2000 {
            let mut chunk = [0u8; 97];
            for c in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *c = state as u8;
            }
            d.push(&chunk);
            while let Some(r) = d.next_packet() {
                assert!(r.is_err(), "random bytes made a packet with a matching CRC");
            }
            assert!(d.buffered() <= 4096 + HEADER_SIZE);
        }
    }

    #[test]
    fn a_bad_crc_is_reported_and_the_stream_stays_in_step() {
        let mut bad = encode_packet("TRANSFORM", "A", 1, &transform_body());
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let good = encode_packet("STRING", "B", 1, &[0, 3, 0, 2, b'h', b'i']);
        let mut d = FrameDecoder::new(1024);
        d.push(&bad);
        d.push(&good);
        assert!(matches!(d.next_packet(), Some(Err(BadPacket::CrcMismatch { .. }))));
        assert_eq!(d.next_packet().unwrap().unwrap().device_name, "B");
    }

    #[test]
    fn extended_header_and_metadata_are_cut_off_the_content() {
        let content = transform_body();
        let meta_header = [0u8, 1, 0, 1, 0, 3, 0, 0, 0, 1];
        let meta_body = [b'k', b'v'];
        let mut body = Vec::new();
        body.extend_from_slice(&12u16.to_be_bytes());
        body.extend_from_slice(&(meta_header.len() as u16).to_be_bytes());
        body.extend_from_slice(&(meta_body.len() as u32).to_be_bytes());
        body.extend_from_slice(&7u32.to_be_bytes());
        body.extend_from_slice(&content);
        body.extend_from_slice(&meta_header);
        body.extend_from_slice(&meta_body);
        let p =
            Packet { header_version: 2, type_name: "TRANSFORM".into(), device_name: "A".into(), timestamp: 0, body };
        assert_eq!(p.content().unwrap(), &content[..]);
        // Metadata sizes that do not fit are malformed, not a panic.
        let mut q = p.clone();
        q.body[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(q.content(), Err(BadPacket::Malformed { .. })));
        assert_eq!(p.timestamp_ns(), None);
    }

    #[test]
    fn timestamps_convert_both_ways() {
        assert_eq!(timestamp_to_ns((1000u64 << 32) | 0x8000_0000), Some(1_000_500_000_000));
        assert_eq!(ns_to_timestamp(1_000_500_000_000), (1000u64 << 32) | 0x8000_0000);
        assert_eq!(ns_to_timestamp(999_999_999_999), (999u64 << 32) | 0xFFFF_FFFC);
        // Round trip within a nanosecond over a spread of values.
        for ns in [1i64, 123_456_789, 1_700_000_000_123_456_789, 4_000_000_000_999_999_999] {
            assert!((timestamp_to_ns(ns_to_timestamp(ns)).unwrap() - ns).abs() <= 1, "{ns}");
        }
    }
}
