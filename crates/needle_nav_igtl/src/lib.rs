//! OpenIGTLink for needle_nav, without ROS: the link to a tracker (PLUS Server) and to 3D Slicer.
//!
//! - [`frame`]: framing on a byte stream with our size limit, the CRC check, resynchronisation
//!   after garbage, and the bad-packet kinds that are counted.
//! - [`messages`]: the message types read and written (codecs of `openigtlink-rust`, IMAGE ours).
//! - [`coords`]: millimetres and metres, LPS and RAS, stated once.
//! - [`tracker`]: tracker messages (TRANSFORM, POSITION, POINT, TDATA) as named positions.
//! - [`slicer`]: what is sent to Slicer (target, validity, registration, plan, label map).
//! - [`link`]: a client or server connection kept up with back-off, with its counters.

pub mod coords;
pub mod frame;
pub mod link;
pub mod messages;
pub mod slicer;
pub mod tracker;

pub use frame::{BadPacket, Packet};
pub use link::{CounterSnapshot, LinkConfig, LinkCounters, LinkEvent, LinkMode, Outgoing, Received};
pub use messages::Incoming;
