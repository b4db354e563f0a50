//! rosbag2 folders (`bag`): metadata.yaml and one MCAP file, as `needle_nav bag-info` and the
//! replay read them. Input: metadata.yaml, `FILE_SEPARATOR`, the MCAP bytes (named bag_0.mcap).
#![no_main]
use libfuzzer_sys::fuzz_target;
use needle_nav_bags as bag;
use needle_nav_fuzz::{scratch, split_files, write};

fuzz_target!(|data: &[u8]| {
    // The reader turns mcap's panics into errors on purpose (a panic that escapes still crashes).
    needle_nav_fuzz::let_caught_panics_unwind();
    let dir = scratch("bag");
    let parts = split_files(data, 2);
    write(&dir.join("metadata.yaml"), parts[0]);
    if let Some(mcap) = parts.get(1) {
        write(&dir.join("bag_0.mcap"), mcap);
    }
    // Metadata naming files outside the folder (/dev/zero, ../x) is refused by the reader itself.
    let _ = bag::read_all(&dir);
    let _ = bag::info(&dir);
});
