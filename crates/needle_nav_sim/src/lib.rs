//! The digital patient and everything simulated: the phantom CT with markers and vessels, the
//! breathing model, the simulated tracker, ExtMarker recordings, and writing a case to disk.

pub mod breathing;
pub mod classifier_training;
pub mod extmarker;
pub mod patient_case;
pub mod phantom;
pub mod tracker_sim;
