//! Vessel segmentation, the parts around the network: HU-window refinement of the network's
//! labels, and synthesis of non-contrast training data from contrast CT.

pub mod classic;
pub mod metrics;
pub mod model_info;
pub mod preprocess;
pub mod refine;
pub mod sliding_window;
pub mod synthesis;
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
