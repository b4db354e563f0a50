//! Images: volumes with patient geometry, and reading/writing DICOM and NIfTI.
//!
//! Image code works in millimetres and DICOM patient axes (LPS), as DICOM does; positions
//! crossing into tracking and ROS are converted to metres at that boundary.

pub mod dicom_read;
pub mod dicom_write;
pub mod nifti;
pub mod resample;
pub mod volume;
