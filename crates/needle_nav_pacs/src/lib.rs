//! needle_nav's PACS client, without ROS: how to reach the PACS (`config`), the operations the
//! segmentation service, the planner and the `needle_nav pacs` command use (`client`), and
//! errors that say what happened (`error`, `status`). Blocking: callers run it on a worker
//! thread, never on a ROS executor.

pub mod association;
pub mod client;
pub mod config;
pub mod error;
pub mod status;
pub mod tls;

pub use client::{echo, find_series, get_series, locate_series, store_file, Retrieved, SeriesInfo, Stored};
pub use config::{PacsConfig, PacsTls};
pub use error::PacsError;

/// A series in a PACS, by its UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRef {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
}

/// The folder a series is retrieved into, below a request's output folder.
pub fn retrieve_folder(output_dir: &std::path::Path, series_instance_uid: &str) -> std::path::PathBuf {
    let safe: String = series_instance_uid.chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
    output_dir.join("pacs_input").join(safe)
}

/// A UID as PS3.5 9.1 allows it: digits in dot-separated components without leading zeros, at
/// most 64 characters.
pub fn check_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        return Err("is empty".into());
    }
    if uid.len() > 64 {
        return Err(format!("{uid:?} is longer than 64 characters"));
    }
    let good = uid
        .split('.')
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()) && (c == "0" || !c.starts_with('0')));
    if !good {
        return Err(format!("{uid:?} is not a DICOM UID (digits in dot-separated components, no leading zeros)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_follow_ps3_5() {
        check_uid("1.2.840.10008.1.1").unwrap();
        check_uid("2.25.0").unwrap();
        assert!(check_uid("").is_err());
        assert!(check_uid("1.2.03").unwrap_err().contains("leading zeros"));
        assert!(check_uid("1..2").is_err());
        assert!(check_uid("1.2.a").is_err());
        assert!(check_uid("../../etc").is_err());
        assert!(check_uid(&"1.".repeat(40)).unwrap_err().contains("64"));
    }

    #[test]
    fn the_retrieve_folder_stays_below_the_output_folder() {
        let f = retrieve_folder(std::path::Path::new("/out"), "1.2.3");
        assert_eq!(f, std::path::PathBuf::from("/out/pacs_input/1.2.3"));
    }
}
