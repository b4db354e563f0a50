//! The guidance nodes' rules as plain state machines (sans-I/O): each takes the node's inputs
//! (tracker samples, classifications, registrations, the planning case, ticks) as values and
//! returns what the node publishes, logs and saves, as values. The ROS shell in `ros::nodes`
//! converts messages to and from these; `needle_nav evaluate` drives the same machines.

pub mod lesion_registration;
pub mod marker_classifier;
pub mod needle_target;
