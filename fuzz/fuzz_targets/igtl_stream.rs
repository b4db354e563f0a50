//! OpenIGTLink input (`igtl_stream`), as igtl_bridge's links read it from a tracker or Slicer: the
//! framing (size limit, CRC, resynchronisation after garbage), the message decoders and the
//! tracker's observations. Input: byte 0 even: the rest is a raw byte stream, fed in two pieces
//! (cut where byte 1 says) so that headers arrive split. Byte 0 odd: byte 1 picks a message type,
//! byte 2 the header version, bytes 3..23 the device name, the rest is the body, sent as one packet
//! with a correct CRC, so that mutations reach the decoders instead of stopping at the CRC check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_igtl::frame::{FrameDecoder, HEADER_SIZE};
use needle_nav_igtl::{messages, tracker, Received};
use openigtlink_rust::protocol::crc::calculate_crc;

const TYPES: [&str; 9] = ["TRANSFORM", "POSITION", "POINT", "TDATA", "STATUS", "STRING", "GET_IMAGE", "IMAGE", "NOPE"];
/// Small, so that the oversized path is reached too.
const MAX_BODY: usize = 1 << 16;

fn packet(type_name: &str, version: u16, device: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + body.len());
    out.extend_from_slice(&version.to_be_bytes());
    let mut name = [0u8; 12];
    name[..type_name.len()].copy_from_slice(type_name.as_bytes());
    out.extend_from_slice(&name);
    let mut dev = [0u8; 20];
    let n = device.len().min(20);
    dev[..n].copy_from_slice(&device[..n]);
    out.extend_from_slice(&dev);
    out.extend_from_slice(&0x6000_0000_8000_0000u64.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&calculate_crc(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    // The decoders catch their codec's panics on purpose (a panic that escapes still crashes).
    needle_nav_fuzz::let_caught_panics_unwind();
    let Some((&mode, rest)) = data.split_first() else { return };
    let stream = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        if rest.len() < 22 {
            return;
        }
        let type_name = TYPES[rest[0] as usize % TYPES.len()];
        packet(type_name, 1 + (rest[1] % 3) as u16, &rest[2..22], &rest[22..])
    };
    let cut = rest.first().map_or(0, |&b| b as usize % (stream.len() + 1));
    let mut decoder = FrameDecoder::new(MAX_BODY);
    for piece in [&stream[..cut], &stream[cut..]] {
        decoder.push(piece);
        while let Some(next) = decoder.next_packet() {
            let Ok(packet) = next else { continue };
            if let Ok(message) = messages::decode(&packet) {
                let received =
                    Received { device_name: packet.device_name.clone(), timestamp_ns: packet.timestamp_ns(), message };
                let _ = tracker::observations(&received);
            }
        }
    }
});
