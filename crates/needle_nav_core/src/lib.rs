//! needle_nav's algorithms, free of ROS types and of I/O: testable anywhere.
//!
//! Marker tracking samples and their validation, marker classification (registration vs
//! correction markers), CT marker detection and correspondence, rigid registration, breathing
//! correction, the target gates, and the guidance nodes' rules as state machines.

pub mod case_file;
pub mod classification;
pub mod correction;
pub mod correspondence;
pub mod ct_markers;
pub mod diagnostics_thresholds;
pub mod guidance;
pub mod interfaces;
pub mod registration;
pub mod run_timeline;
pub mod sample_validation;
pub mod target_gate;
pub mod tracking;
pub mod volume;
