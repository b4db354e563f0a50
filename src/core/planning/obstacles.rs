//! Obstacle layers computed from the CT itself, on its own grid, independent of the vessel
//! network's recall. The planner takes their union with the network's labels: the network can
//! add obstacles, never remove them. Each layer is kept apart so a refusal names the layer.
//!
//! (Interface first; the CT-derived layers are filled in below.)

use super::outside_body;
use crate::imaging::volume::Volume;

/// One obstacle layer: what blocked a path is reported by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The segmentation network's artery / vein / aorta labels.
    NetworkVessels,
    /// HU at or above the bone threshold.
    Bone,
    /// Soft tissue between the lungs (heart, great vessels, oesophagus, trachea): no-go.
    Mediastinum,
    /// Tubular structures brighter than the aerated lung around them (Hessian vesselness).
    LungVessels,
    /// Air tubes from the trachea down to a configured diameter.
    Airways,
    /// Contrast-enhanced blood: HU window voxels connected to the network's vessels.
    ContrastVessels,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::NetworkVessels,
        Layer::Bone,
        Layer::Mediastinum,
        Layer::LungVessels,
        Layer::Airways,
        Layer::ContrastVessels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::NetworkVessels => "network_vessels",
            Layer::Bone => "bone",
            Layer::Mediastinum => "mediastinum",
            Layer::LungVessels => "lung_vessels",
            Layer::Airways => "airways",
            Layer::ContrastVessels => "contrast_vessels",
        }
    }

    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObstacleOptions {
    /// Voxels above this HU are body (air connected to the slice border is outside).
    pub body_hu: f32,
    /// Aerated lung: body voxels below this HU, in components of at least `min_lung_volume_ml`.
    pub lung_hu: f32,
    pub min_lung_volume_ml: f64,
    /// Bone: HU at or above this.
    pub bone_hu: f32,
    /// Lung vessels: tubular bright structures in the lung of at least this diameter [mm] ...
    pub lung_vessel_min_diameter_mm: f64,
    /// ... scales searched up to this diameter [mm] ...
    pub lung_vessel_max_diameter_mm: f64,
    /// ... with a vesselness (0..1) of at least this.
    pub lung_vessel_vesselness: f64,
    /// Airways of at least this lumen diameter [mm] are obstacles.
    pub airway_min_diameter_mm: f64,
    /// Contrast vessels: HU window [low, high] grown from the network's vessel voxels.
    pub contrast_vessel_hu: [f32; 2],
    /// Look for lung fissures (plate-like sheets inside the lung); a path crossing one is refused.
    pub detect_fissures: bool,
}

impl Default for ObstacleOptions {
    fn default() -> Self {
        ObstacleOptions {
            body_hu: -400.0,
            lung_hu: -400.0,
            min_lung_volume_ml: 100.0,
            bone_hu: 300.0,
            lung_vessel_min_diameter_mm: 3.0,
            lung_vessel_max_diameter_mm: 12.0,
            lung_vessel_vesselness: 0.1,
            airway_min_diameter_mm: 4.0,
            contrast_vessel_hu: [150.0, 700.0],
            detect_fissures: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObstacleLayer {
    pub layer: Layer,
    /// One flag per CT voxel (x fastest).
    pub mask: Vec<bool>,
}

/// What the planner knows about the patient from the CT: body, lungs and obstacle layers, all on
/// the CT's grid (one flag per voxel, x fastest).
#[derive(Debug, Clone)]
pub struct CtAnatomy {
    /// Outside the body (air connected to the slice border).
    pub outside: Vec<bool>,
    /// Aerated lung parenchyma (what "lung length crossed" counts).
    pub aerated_lung: Vec<bool>,
    /// The lungs inside their pleura: aerated lung with the vessels and nodules it encloses filled
    /// in. Entering it is a pleural crossing.
    pub lung_region: Vec<bool>,
    /// Fissures found inside the lungs (empty flags when detection is off or found none).
    pub fissures: Vec<bool>,
    pub fissures_detected: bool,
    pub layers: Vec<ObstacleLayer>,
}

impl CtAnatomy {
    pub fn layer(&self, layer: Layer) -> Option<&ObstacleLayer> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

/// Derives the body, lungs and every obstacle layer from the CT (`hu`) and the network's labels
/// (same grid, vessels > 0).
pub fn ct_anatomy(hu: &Volume<f32>, network_labels: &Volume<u8>, o: &ObstacleOptions) -> CtAnatomy {
    let outside = outside_body(hu, o.body_hu);
    let aerated_lung: Vec<bool> = hu.data.iter().zip(&outside).map(|(h, out)| !out && *h < o.lung_hu).collect();
    let n = hu.data.len();
    let layers = vec![
        ObstacleLayer { layer: Layer::NetworkVessels, mask: network_labels.data.iter().map(|l| *l > 0).collect() },
        ObstacleLayer { layer: Layer::Bone, mask: hu.data.iter().map(|h| *h >= o.bone_hu).collect() },
        ObstacleLayer { layer: Layer::Mediastinum, mask: vec![false; n] },
        ObstacleLayer { layer: Layer::LungVessels, mask: vec![false; n] },
        ObstacleLayer { layer: Layer::Airways, mask: vec![false; n] },
        ObstacleLayer { layer: Layer::ContrastVessels, mask: vec![false; n] },
    ];
    CtAnatomy {
        outside,
        lung_region: aerated_lung.clone(),
        aerated_lung,
        fissures: vec![false; n],
        fissures_detected: false,
        layers,
    }
}
