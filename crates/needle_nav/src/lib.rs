//! The `needle_nav` command line's library part: the evaluation of the guidance method on the
//! digital patients and the shared ExtMarker recordings, run through the same state machines
//! as the nodes.

pub mod evaluation;
pub mod pacs_command;
