//! The guidance nodes without ROS: their configurations (ROS 2 parameter-file format, typed and
//! validated, composing the algorithms' own options) and their rules as plain state machines
//! (sans-I/O): each machine takes the node's inputs (tracker samples, classifications,
//! registrations, the planning case, ticks on tracker time) as values and returns what the node
//! publishes, logs and saves, as values. The ROS shell (`needle_nav_ros::nodes`) converts messages
//! to and from these; `needle_nav evaluate` drives the same machines.

pub mod config;
pub mod diagnostics;
pub mod igtl_bridge;
pub mod lesion_registration;
pub mod lifecycle;
pub mod lifecycle_manager;
pub mod logging;
pub mod marker_classifier;
pub mod needle_target;
pub mod parameters;
