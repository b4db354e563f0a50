//! Image I/O: DICOM series and NIfTI in and out, DICOM Segmentation out and in, resampling, atomic output files.
//!
//! Image code works in millimetres and DICOM patient axes (LPS), as DICOM does; positions
//! crossing into tracking and ROS are converted to metres at that boundary. The volume type
//! itself lives in `needle_nav_core::volume`.

pub mod dicom_read;
pub mod dicom_seg;
pub mod dicom_source;
pub mod dicom_write;
pub mod nifti;
pub mod output_files;
pub mod planning_case;
pub mod resample;
