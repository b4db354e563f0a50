//! The message types the bridge reads and writes, decoded and encoded with `openigtlink-rust`'s
//! content codecs, except IMAGE (written here: see [`image_body`]).

use crate::frame::{encode_packet, BadPacket, Packet};
use openigtlink_rust::protocol::message::Message;
use openigtlink_rust::protocol::types::{PointMessage, StatusMessage, StringMessage, TDataMessage, TransformMessage};

/// A decoded message the bridge knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Transform(TransformMessage),
    /// POSITION: one position (the specification's layout), or several named ones (pyigtl's).
    Position(Vec<NamedPosition>),
    Point(PointMessage),
    TData(TDataMessage),
    Status(StatusMessage),
    String(StringMessage),
    /// A request for an image; the packet's device name says which.
    GetImage,
}

/// Decodes a packet's content. A type not in [`Incoming`] is [`BadPacket::UnknownType`]; content
/// that the codec refuses (or that would make it panic) is [`BadPacket::Malformed`].
pub fn decode(packet: &Packet) -> Result<Incoming, BadPacket> {
    let content = packet.content()?;
    let malformed = |reason: String| BadPacket::Malformed { type_name: packet.type_name.clone(), reason };
    fn run<T: Message>(content: &[u8]) -> Result<T, String> {
        // The codecs read with `bytes::Buf`, which panics on a short buffer; their own length checks
        // should prevent that, and this keeps a slip in them from taking the node down.
        match std::panic::catch_unwind(|| T::decode_content(content)) {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the decoder gave up on this content".into()),
        }
    }
    let decoded = match packet.type_name.as_str() {
        "TRANSFORM" => run::<TransformMessage>(content).map(Incoming::Transform),
        "POSITION" => decode_position(content).map(Incoming::Position),
        "POINT" => run::<PointMessage>(content).map(Incoming::Point),
        "TDATA" => run::<TDataMessage>(content).map(Incoming::TData),
        "STATUS" => run::<StatusMessage>(content).map(Incoming::Status),
        "STRING" => run::<StringMessage>(content).map(Incoming::String),
        "GET_IMAGE" => Ok(Incoming::GetImage),
        _ => {
            return Err(BadPacket::UnknownType {
                type_name: packet.type_name.clone(),
                device_name: packet.device_name.clone(),
            })
        }
    };
    decoded.map_err(malformed)
}

/// A position from a POSITION message [mm]; `name` only in pyigtl's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedPosition {
    pub name: Option<String>,
    pub position_mm: [f32; 3],
}

/// pyigtl's POSITION element: name[64], group[32], rgba[4], xyz f32[3], quaternion f32[4],
/// diameter f32, owner[20].
const PYIGTL_POSITION_SIZE: usize = 152;

/// POSITION as the specification has it (x, y, z, then 0, 1, 3 or 4 quaternion floats: 12, 16,
/// 24 or 28 bytes), or as pyigtl 0.3 writes it (a list of 152-byte named elements, like POINT).
/// `openigtlink-rust`'s codec takes only the 28-byte form.
fn decode_position(c: &[u8]) -> Result<Vec<NamedPosition>, String> {
    let f = |b: &[u8], o: usize| f32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    match c.len() {
        12 | 16 | 24 | 28 => Ok(vec![NamedPosition { name: None, position_mm: [f(c, 0), f(c, 4), f(c, 8)] }]),
        n if n > 0 && n % PYIGTL_POSITION_SIZE == 0 => Ok(c
            .chunks_exact(PYIGTL_POSITION_SIZE)
            .map(|e| {
                let len = e[..64].iter().position(|&b| b == 0).unwrap_or(64);
                NamedPosition {
                    name: Some(String::from_utf8_lossy(&e[..len]).into_owned()),
                    position_mm: [f(e, 100), f(e, 104), f(e, 108)],
                }
            })
            .collect()),
        n => Err(format!(
            "a POSITION body of {n} bytes is neither 12, 16, 24, 28 nor a multiple of {PYIGTL_POSITION_SIZE}"
        )),
    }
}

/// Why an outgoing message could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0}")]
    Codec(String),
    #[error("image of {dims:?} voxels: OpenIGTLink IMAGE sizes are 16-bit")]
    ImageTooLarge { dims: [usize; 3] },
}

/// One message as bytes on the wire.
pub fn encode<T: Message>(content: &T, device_name: &str, timestamp_ns: i64) -> Result<Vec<u8>, EncodeError> {
    let body = content.encode_content().map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(encode_packet(T::message_type(), device_name, timestamp_ns, &body))
}

/// Voxel values of an IMAGE.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageVoxels {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// The IMAGE body (header version 1 of the content): `openigtlink-rust` 0.4.1's `ImageMessage`
/// leaves out the sub-volume offset and size the specification, the C++ library, pyigtl and
/// Slicer have (a 60-byte instead of a 72-byte image header), so this one is written here.
///
/// `ijk_to_ras_mm`: columns i, j, k (direction times spacing) and the position of voxel (0,0,0),
/// in RAS millimetres. The wire carries the position of the image centre, as the specification says.
pub fn image_body(
    dims: [usize; 3],
    ijk_to_ras_mm: &nalgebra::Matrix4<f64>,
    voxels: &ImageVoxels,
) -> Result<Vec<u8>, EncodeError> {
    let size: [u16; 3] = match (u16::try_from(dims[0]), u16::try_from(dims[1]), u16::try_from(dims[2])) {
        (Ok(a), Ok(b), Ok(c)) => [a, b, c],
        _ => return Err(EncodeError::ImageTooLarge { dims }),
    };
    let (scalar_type, bytes): (u8, Vec<u8>) = match voxels {
        ImageVoxels::U8(v) => (3, v.clone()),
        // Little endian, flagged so (2).
        ImageVoxels::U16(v) => (5, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    };
    let mut b = Vec::with_capacity(72 + bytes.len());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.push(1); // one component
    b.push(scalar_type);
    b.push(2); // voxel data little endian
    b.push(1); // RAS
    for s in size {
        b.extend_from_slice(&s.to_be_bytes());
    }
    let m = ijk_to_ras_mm;
    let centre_ijk = nalgebra::Vector4::new(
        (dims[0] as f64 - 1.0) / 2.0,
        (dims[1] as f64 - 1.0) / 2.0,
        (dims[2] as f64 - 1.0) / 2.0,
        1.0,
    );
    let centre = m * centre_ijk;
    for col in 0..3 {
        for row in 0..3 {
            b.extend_from_slice(&(m[(row, col)] as f32).to_be_bytes());
        }
    }
    for row in 0..3 {
        b.extend_from_slice(&(centre[row] as f32).to_be_bytes());
    }
    for _ in 0..3 {
        b.extend_from_slice(&0u16.to_be_bytes());
    }
    for s in size {
        b.extend_from_slice(&s.to_be_bytes());
    }
    b.extend_from_slice(&bytes);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn roundtrip(wire: &[u8]) -> Result<Incoming, BadPacket> {
        let mut d = FrameDecoder::new(1 << 20);
        d.push(wire);
        decode(&d.next_packet().unwrap()?)
    }

    #[test]
    fn known_types_decode_and_others_are_unknown() {
        let mut pos = Vec::new();
        for v in [1.5f32, -2.0, 3.25, 0.0, 0.0, 0.0, 1.0] {
            pos.extend_from_slice(&v.to_be_bytes());
        }
        for len in [12, 16, 24, 28] {
            let got = roundtrip(&encode_packet("POSITION", "P", 0, &pos[..len])).unwrap();
            assert_eq!(got, Incoming::Position(vec![NamedPosition { name: None, position_mm: [1.5, -2.0, 3.25] }]));
        }
        let t = TransformMessage::translation(1.0, 2.0, 3.0);
        assert_eq!(roundtrip(&encode(&t, "A", 5).unwrap()).unwrap(), Incoming::Transform(t));
        let s = StringMessage::utf8("hello");
        assert_eq!(roundtrip(&encode(&s, "A", 5).unwrap()).unwrap(), Incoming::String(s));
        let wire = encode_packet("GET_IMAGE", "VesselLabels", 0, &[]);
        assert_eq!(roundtrip(&wire).unwrap(), Incoming::GetImage);
        let wire = encode_packet("SENSOR", "A", 0, &[1, 2, 3]);
        assert!(matches!(roundtrip(&wire), Err(BadPacket::UnknownType { .. })));
    }

    #[test]
    fn short_or_odd_content_is_malformed_not_a_panic() {
        for (t, body) in [
            ("TRANSFORM", vec![0u8; 47]),
            ("POSITION", vec![0u8; 5]),
            ("POSITION", vec![0u8; 153]),
            ("POINT", vec![0u8; 137]),
            ("TDATA", vec![0u8; 70]),
            ("STATUS", vec![0u8; 3]),
            ("STRING", vec![0, 3, 255, 255, b'x']),
        ] {
            let r = roundtrip(&encode_packet(t, "A", 0, &body));
            assert!(matches!(r, Err(BadPacket::Malformed { .. })), "{t}: {r:?}");
        }
    }

    #[test]
    fn image_header_is_72_bytes_with_the_centre_as_position() {
        let mut m = nalgebra::Matrix4::identity();
        m[(0, 0)] = -2.0; // RAS from LPS flips x
        m[(0, 3)] = 10.0;
        let body = image_body([3, 1, 1], &m, &ImageVoxels::U8(vec![0, 1, 2])).unwrap();
        assert_eq!(body.len(), 72 + 3);
        let f = |o: usize| f32::from_be_bytes(body[o..o + 4].try_into().unwrap());
        assert_eq!(f(12), -2.0);
        // Centre of i in 0..3 is i = 1: x = 10 - 2.
        assert_eq!(f(48), 8.0);
        assert!(image_body([70_000, 1, 1], &m, &ImageVoxels::U8(vec![])).is_err());
    }
}
