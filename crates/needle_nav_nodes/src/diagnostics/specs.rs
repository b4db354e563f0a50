//! The `diagnostics.*` parameters each node declares.

use crate::parameters::{Mutability, ParameterSpec, Range};
use needle_nav_core::interfaces::NodeKind;

const FRACTION: Range = Range::Float { min: 0.0, max: 1.0, step: 0.0 };

fn spec(name: &'static str, description: &'static str, unit: &'static str, range: Range) -> ParameterSpec {
    let constraints = "";
    ParameterSpec { name, description, unit, range, mutability: Mutability::Dynamic, constraints }
}

fn rate_specs(output: bool) -> Vec<ParameterSpec> {
    // The names are static: one literal set per prefix.
    let names: [&'static str; 5] = if output {
        [
            "diagnostics.output.window_s",
            "diagnostics.output.min_rate_fraction_warn",
            "diagnostics.output.min_rate_fraction_error",
            "diagnostics.output.max_age_warn_s",
            "diagnostics.output.max_age_error_s",
        ]
    } else {
        [
            "diagnostics.inputs.window_s",
            "diagnostics.inputs.min_rate_fraction_warn",
            "diagnostics.inputs.min_rate_fraction_error",
            "diagnostics.inputs.max_age_warn_s",
            "diagnostics.inputs.max_age_error_s",
        ]
    };
    vec![
        spec(
            names[0],
            "Sliding window the message rate is measured over",
            "s",
            Range::Float { min: 0.1, max: 60.0, step: 0.0 },
        ),
        spec(names[1], "WARN below this fraction of the expected message rate", "", FRACTION),
        spec(
            names[2],
            "ERROR below this fraction of the expected message rate (at most the warn fraction)",
            "",
            FRACTION,
        ),
        spec(
            names[3],
            "WARN when the newest message's stamp is older than this; a marker unseen this long is reported missing",
            "s",
            Range::Float { min: 0.0, max: 60.0, step: 0.0 },
        ),
        spec(
            names[4],
            "ERROR when the newest message's stamp is older than this (at least the warn age)",
            "s",
            Range::Float { min: 0.0, max: 3600.0, step: 0.0 },
        ),
    ]
}

fn expected_rate() -> ParameterSpec {
    spec(
        "diagnostics.expected_input_rate_hz",
        "Tracker rate the input rate is compared with",
        "Hz",
        Range::Float { min: 0.0, max: 10_000.0, step: 0.0 },
    )
}

/// The diagnostics thresholds `kind` declares as parameters (`diagnostics.*`).
pub fn parameter_specs(kind: NodeKind) -> Vec<ParameterSpec> {
    let metres = Range::Float { min: 0.0, max: 0.05, step: 0.0 };
    match kind {
        NodeKind::MarkerTracker => rate_specs(true),
        NodeKind::MarkerClassifier => {
            let mut v = rate_specs(false);
            v.push(expected_rate());
            v
        }
        NodeKind::LesionRegistration => {
            let mut v = rate_specs(false);
            v.push(expected_rate());
            v.extend([
                spec("diagnostics.registration.fre_warn_m", "WARN above this fiducial registration error", "m", metres),
                spec(
                    "diagnostics.registration.fre_error_m",
                    "ERROR above this fiducial registration error (at least the warn value)",
                    "m",
                    metres,
                ),
                spec(
                    "diagnostics.registration.predicted_tre_warn_m",
                    "WARN above this predicted target registration error at the lesion",
                    "m",
                    metres,
                ),
                spec(
                    "diagnostics.registration.predicted_tre_error_m",
                    "ERROR above this predicted target registration error at the lesion (at least the warn value)",
                    "m",
                    metres,
                ),
            ]);
            v
        }
        NodeKind::NeedleTarget => {
            let mut v = rate_specs(false);
            v.extend([
                spec(
                    "diagnostics.targets.window_s",
                    "Sliding window the share of invalid targets is measured over",
                    "s",
                    Range::Float { min: 0.1, max: 600.0, step: 0.0 },
                ),
                spec(
                    "diagnostics.targets.invalid_share_warn",
                    "WARN above this share of targets invalid for a fault (not waiting, not gated by breathing)",
                    "",
                    FRACTION,
                ),
                spec(
                    "diagnostics.targets.invalid_share_error",
                    "ERROR above this share of targets invalid for a fault (at least the warn share)",
                    "",
                    FRACTION,
                ),
            ]);
            v
        }
        NodeKind::VesselSegmentation => vec![spec(
            "diagnostics.queue_depth_warn",
            "WARN when this many segmentation requests or more wait behind the running one",
            "",
            Range::Integer { min: 1, max: 64, step: 1 },
        )],
        NodeKind::TrajectoryPlanner => vec![spec(
            "diagnostics.planning_time_warn_s",
            "WARN when planning takes longer than this",
            "s",
            Range::Float { min: 0.0, max: 3600.0, step: 0.0 },
        )],
    }
}
