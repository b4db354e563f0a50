//! The vessel segmentation pipeline as the node and the command line run it: load a CT,
//! run the network patch by patch, refine with the HU windows, write the outputs. No ROS here.

pub mod evaluation;
pub mod onnx_model;
pub mod outputs;
pub mod pipeline;
pub mod real_gates;
pub mod scheduling;
pub mod service;

pub use onnx_model::{ModelError, OnnxVesselModel};
pub use pipeline::{SegmentationError, SegmentationOptions, SegmentationResult, VesselSegmenter};
