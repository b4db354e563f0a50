//! The `diagnostics.*` parameters each node declares: the thresholds its `/diagnostics` statuses
//! are graded with (`crate::diagnostics`; the values are `needle_nav_core::diagnostics_thresholds`).

use super::{Mutability, ParameterSpec, Range};
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
        NodeKind::MarkerTracker | NodeKind::IgtlBridge => rate_specs(true),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_threshold_has_one_dynamic_spec_with_a_unit_or_none() {
        use needle_nav_core::diagnostics_thresholds::*;
        for kind in NodeKind::ALL {
            let specs = parameter_specs(kind);
            assert!(!specs.is_empty(), "{kind:?}");
            for s in &specs {
                assert!(s.name.starts_with("diagnostics."), "{}", s.name);
                assert_eq!(s.mutability, Mutability::Dynamic);
                assert!(!s.description.is_empty());
                // The unit matches the key's suffix.
                let unit = if s.name.ends_with("_s") {
                    "s"
                } else if s.name.ends_with("_m") {
                    "m"
                } else if s.name.ends_with("_hz") {
                    "Hz"
                } else {
                    ""
                };
                assert_eq!(s.unit, unit, "{}", s.name);
            }
        }
        // The specs name exactly the keys the configuration has (no more, no fewer).
        let keys = |yaml: serde_yaml::Value| {
            let mut out = Vec::new();
            fn walk(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
                match v {
                    serde_yaml::Value::Mapping(m) => {
                        for (k, v) in m {
                            walk(&format!("{prefix}.{}", k.as_str().unwrap_or("")), v, out)
                        }
                    }
                    _ => out.push(prefix.to_string()),
                }
            }
            walk("diagnostics", &yaml, &mut out);
            out.sort();
            out
        };
        let names = |kind| {
            let mut n: Vec<String> = parameter_specs(kind).iter().map(|s| s.name.to_string()).collect();
            n.sort();
            n
        };
        let to = |v: serde_yaml::Result<serde_yaml::Value>| v.unwrap();
        assert_eq!(names(NodeKind::MarkerTracker), keys(to(serde_yaml::to_value(TrackerDiagnostics::default()))));
        assert_eq!(names(NodeKind::IgtlBridge), keys(to(serde_yaml::to_value(TrackerDiagnostics::default()))));
        assert_eq!(names(NodeKind::MarkerClassifier), keys(to(serde_yaml::to_value(ClassifierDiagnostics::default()))));
        assert_eq!(
            names(NodeKind::LesionRegistration),
            keys(to(serde_yaml::to_value(RegistrationDiagnostics::default())))
        );
        assert_eq!(names(NodeKind::NeedleTarget), keys(to(serde_yaml::to_value(TargetDiagnostics::default()))));
        assert_eq!(
            names(NodeKind::VesselSegmentation),
            keys(to(serde_yaml::to_value(SegmentationDiagnostics::default())))
        );
        assert_eq!(names(NodeKind::TrajectoryPlanner), keys(to(serde_yaml::to_value(PlannerDiagnostics::default()))));
    }
}
