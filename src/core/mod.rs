//! The algorithms, free of ROS types: testable with plain `cargo test --no-default-features --lib`.

pub mod breathing;
pub mod case_file;
pub mod classification;
pub mod correction;
pub mod correspondence;
pub mod ct_markers;
pub mod extmarker;
pub mod guidance;
pub mod phantom;
pub mod planning;
pub mod registration;
pub mod run_timeline;
pub mod sample_validation;
pub mod segmentation;
pub mod segmentation_request;
pub mod target_gate;
pub mod tracker_sim;
pub mod tracking;
