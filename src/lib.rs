//! needle_nav: breathing-compensated needle guidance and vessel segmentation.
//!
//! * [`core`]: the algorithms, no ROS types.
//! * [`config`]: typed, validated node configuration (ROS 2 parameter-file format).
//! * [`interfaces`]: every node, topic, service, type and QoS, in one place.
//! * `ros` (feature `ros`): the thin ROS 2 shell: conversions, QoS, node loops.

pub mod bag;
pub mod config;
pub mod core;
pub mod evaluation;
pub mod evaluation_combination;
pub mod imaging;
pub mod interfaces;
pub mod logging;
pub mod output_files;
pub mod patient_case;
pub mod planning;
pub mod report;
pub mod segmentation;

#[cfg(feature = "ros")]
pub mod ros;
