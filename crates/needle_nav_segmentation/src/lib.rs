//! Artery / vein / aorta segmentation from chest CT: the network run patch by patch and
//! stitched (ONNX Runtime), HU-window refinement, outputs, the service's scheduling, and the
//! evaluation gates on real and digital-patient CT. No ROS here.

pub mod classic;
pub mod evaluation;
pub mod metrics;
pub mod model_info;
pub mod onnx_model;
pub mod outputs;
pub mod pipeline;
pub mod preprocess;
pub mod real_gates;
pub mod refine;
pub mod report;
pub mod request;
pub mod result;
pub mod scheduling;
pub mod service;
pub mod sliding_window;
pub mod tiling;

use serde::{Deserialize, Serialize};

/// An HU window [low, high] per vessel class (index = label: 1 artery, 2 vein, 3 aorta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HuWindows {
    pub windows: Vec<(u8, f32, f32)>,
}

impl HuWindows {
    /// Contrast-enhanced CT: vessels in the hundreds of HU.
    pub fn contrast() -> HuWindows {
        HuWindows { windows: vec![(1, 150.0, 700.0), (2, 120.0, 600.0), (3, 150.0, 700.0)] }
    }

    /// Plain CT: blood around 40 HU.
    pub fn plain() -> HuWindows {
        HuWindows { windows: vec![(1, 10.0, 80.0), (2, 10.0, 80.0), (3, 10.0, 80.0)] }
    }

    pub fn window(&self, label: u8) -> Option<(f32, f32)> {
        self.windows.iter().find(|w| w.0 == label).map(|w| (w.1, w.2))
    }

    pub fn contains(&self, label: u8, hu: f32) -> bool {
        self.window(label).is_some_and(|(lo, hi)| hu >= lo && hu <= hi)
    }

    pub fn any_contains(&self, hu: f32) -> bool {
        self.windows.iter().any(|w| hu >= w.1 && hu <= w.2)
    }
}

pub use onnx_model::{ModelError, OnnxVesselModel};
pub use pipeline::{SegmentationError, SegmentationOptions, SegmentationResult, VesselSegmenter};
